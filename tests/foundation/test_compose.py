"""docker-compose.yml cannot run here (no Docker engine), so its promises are checked as data."""

from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
LONG_RUNNING = [name for name in SERVICES if name != "migrate"]


def test_every_service_of_the_seed_is_there():
    assert {"db", "redis", "cache", "web", "ws", "lb", "worker", "beat", "processor"} <= set(SERVICES)


@pytest.mark.parametrize("name", LONG_RUNNING)
def test_service_restarts_unless_stopped(name):
    assert SERVICES[name]["restart"] == "unless-stopped"


@pytest.mark.parametrize("name", list(SERVICES))
def test_service_has_healthcheck(name):
    check = SERVICES[name]["healthcheck"]
    assert check["test"], name


@pytest.mark.parametrize("name", list(SERVICES))
def test_service_has_memory_and_cpu_limits(name):
    limits = SERVICES[name]["deploy"]["resources"]["limits"]
    assert limits["memory"] and float(limits["cpus"]) > 0


@pytest.mark.parametrize("name", list(SERVICES))
def test_service_logs_rotate(name):
    options = SERVICES[name]["logging"]["options"]
    assert options["max-size"] and int(options["max-file"]) >= 1


@pytest.mark.parametrize("name", ["web", "ws", "worker", "beat"])
def test_app_services_wait_for_healthy_dependencies(name):
    depends = SERVICES[name]["depends_on"]
    assert depends["db"]["condition"] == "service_healthy"
    assert depends["redis"]["condition"] == "service_healthy"


def test_lb_waits_for_healthy_web_and_ws():
    assert SERVICES["lb"]["depends_on"]["web"]["condition"] == "service_healthy"
    assert SERVICES["lb"]["depends_on"]["ws"]["condition"] == "service_healthy"


def test_database_healthcheck_is_pg_isready_on_a_volume():
    assert "pg_isready" in " ".join(SERVICES["db"]["healthcheck"]["test"])
    assert any(v.endswith(":/var/lib/postgresql/data") for v in SERVICES["db"]["volumes"])


def test_broker_redis_never_evicts_and_cache_redis_does():
    assert "noeviction" in SERVICES["redis"]["command"]
    assert "allkeys-lru" in SERVICES["cache"]["command"]


def test_two_web_replicas_and_exactly_one_beat():
    assert SERVICES["web"]["deploy"]["replicas"] == 2
    assert SERVICES["ws"]["deploy"]["replicas"] == 2
    assert SERVICES["web"]["command"][0] == "gunicorn" and SERVICES["ws"]["command"][0] == "uvicorn"
    assert SERVICES["beat"]["deploy"].get("replicas", 1) == 1


def test_web_healthcheck_uses_liveness_endpoint():
    assert "/health/live" in " ".join(SERVICES["web"]["healthcheck"]["test"])


def test_nginx_routes_http_and_websocket_with_passive_health_checks():
    conf = (ROOT / "ops" / "nginx" / "nginx.conf").read_text()
    assert "location /ws/" in conf and "proxy_set_header Upgrade $http_upgrade" in conf
    assert conf.count("max_fails=") == 2 and "fail_timeout=" in conf
    ws_block = conf[conf.index("location /ws/") : conf.index("location / {")]
    assert "proxy_pass http://ws" in ws_block
    assert "proxy_pass http://web" in conf[conf.index("location / {") :]
    assert "server web:8000" in conf and "server ws:8001" in conf


def test_app_services_get_their_config_from_the_environment():
    env = SERVICES["web"]["environment"]
    for name in ("DATABASE_URL", "REDIS_URL", "SECRET_KEY", "DEBUG", "ALLOWED_HOSTS", "PAYMENT_PROCESSOR_URL", "PAYMENT_PROCESSOR_SECRET"):
        assert name in env
    assert env["DEBUG"] == "0"
