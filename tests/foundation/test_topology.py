"""One definition of the production processes (ops/processes.yml) serves both `make prod`
and docker-compose.yml: these tests fail when either drifts from it."""

import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from ops import stack as ops_stack

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
PROCESSES = ops_stack.load_processes()


@pytest.mark.parametrize("name", list(PROCESSES))
def test_compose_runs_the_defined_command(name):
    spec = PROCESSES[name]
    expected = ops_stack.render_command(spec, host="0.0.0.0", port=spec.get("port"), var="/tmp")
    assert COMPOSE[name]["command"] == expected


@pytest.mark.parametrize("name", list(PROCESSES))
def test_compose_runs_the_defined_number_of_replicas(name):
    assert COMPOSE[name].get("deploy", {}).get("replicas", 1) == PROCESSES[name]["replicas"]


def test_every_app_service_of_compose_is_defined():
    app_services = {n for n, s in COMPOSE.items() if s.get("image") == "tradesense:latest" and n != "migrate"}
    assert app_services == set(PROCESSES)


@pytest.mark.parametrize("name", ["worker", "beat"])
def test_compose_exports_worker_and_beat_metrics_on_the_defined_port(name):
    assert COMPOSE[name]["environment"]["METRICS_PORT"] == str(PROCESSES[name]["metrics_port"])


def test_make_prod_runs_every_defined_process_with_the_defined_command(tmp_path):
    stack = ops_stack.build_stack({"PROD_PREFIX": str(tmp_path), "PATH": "/usr/bin:/bin"})
    for name, spec in PROCESSES.items():
        programs = stack.of(name)
        assert len(programs) == spec["replicas"]
        for program in programs:
            expected = ops_stack.render_command(spec, host="127.0.0.1", port=program.port, var=str(tmp_path / "var"))
            # make prod runs the venv's copy of each program (and its python for `python`).
            assert program.argv[1:] == expected[1:]
            assert Path(program.argv[0]).name == expected[0] or program.argv[0] == ops_stack.sys.executable
    assert {p.job for p in stack.programs} == {*PROCESSES, "lb", "prometheus"}


def test_make_prod_runs_production_settings_and_no_demo_users(tmp_path):
    stack = ops_stack.build_stack({"PROD_PREFIX": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert stack.env["DEBUG"] == "0"
    assert len(stack.env["SECRET_KEY"]) >= 32 and len(stack.env["PAYMENT_PROCESSOR_SECRET"]) >= 32
    # The secrets are generated once and kept: a restart must not log everybody out.
    again = ops_stack.build_stack({"PROD_PREFIX": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert again.env["SECRET_KEY"] == stack.env["SECRET_KEY"]
    source = (ROOT / "ops" / "stack.py").read_text() + (ROOT / "Makefile").read_text().split("prod:")[1].split("\n\n")[0]
    assert "seed_demo" not in source
    assert "seed_demo" not in " ".join(COMPOSE["migrate"]["command"])
    assert "seed_catalogue" in " ".join(COMPOSE["migrate"]["command"])


def test_make_prod_restarts_every_process_that_dies(tmp_path):
    stack = ops_stack.build_stack({"PROD_PREFIX": str(tmp_path), "PATH": "/usr/bin:/bin"})
    conf = ops_stack.render_supervisor(stack)
    blocks = conf.split("[program:")[1:]
    assert len(blocks) == len(stack.programs)
    for block in blocks:
        assert "autorestart=true" in block and "startretries=1000" in block


def test_compose_nginx_conf_is_the_rendered_template():
    assert (ROOT / "ops" / "nginx" / "nginx.conf").read_text() == ops_stack.compose_nginx(), (
        "ops/nginx/nginx.conf is stale: run `python -m ops.stack compose-nginx`"
    )


def test_compose_nginx_re_resolves_the_replicas():
    conf = ops_stack.compose_nginx()
    assert "resolver 127.0.0.11" in conf
    assert "server web:8000 resolve" in conf and "server ws:8001 resolve" in conf
    assert conf.count("zone ") == 2  # `resolve` needs a shared-memory zone


@pytest.mark.skipif(not shutil.which("nginx") and not Path("/usr/sbin/nginx").exists(), reason="nginx is not installed")
def test_make_prod_nginx_conf_is_accepted_by_nginx(tmp_path):
    stack = ops_stack.build_stack({"PROD_PREFIX": str(tmp_path), "PATH": "/usr/bin:/bin"})
    ops_stack.write_configs(stack)
    nginx = next(p for p in stack.programs if p.name == "nginx")
    argv = [a for a in nginx.argv if a not in {"-g", "daemon off;"}]
    result = subprocess.run([*argv, "-t"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr


@pytest.mark.skipif(not shutil.which("promtool"), reason="promtool is not installed")
def test_make_prod_prometheus_config_is_valid_and_scrapes_every_process(tmp_path):
    stack = ops_stack.build_stack({"PROD_PREFIX": str(tmp_path), "PATH": "/usr/bin:/bin"})
    ops_stack.write_configs(stack)
    config_file = tmp_path / "prometheus" / "prometheus.yml"
    result = subprocess.run(["promtool", "check", "config", str(config_file)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    config = yaml.safe_load(config_file.read_text())
    targets = {t for job in config["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]}
    for program in stack.programs:
        port = program.metrics_port or program.port
        assert f"127.0.0.1:{port}" in targets, program.name
    assert shlex.quote(str(ops_stack.ALERTS_FILE)) in " ".join(config["rule_files"])


def test_the_image_carries_no_history_or_secrets():
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines() if line.strip()}
    assert {".git", ".env", ".venv", "var"} <= ignored
