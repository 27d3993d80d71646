"""`make prod`: the production topology as processes on this machine, no Docker.

    python -m ops.stack up       render the configs, migrate, start everything in the
                                 foreground under supervisord (Ctrl-C stops it all)
    python -m ops.stack status   supervisorctl status of a running stack
    python -m ops.stack ctl ...  any supervisorctl command (stop worker, start worker, ...)
    python -m ops.stack compose-nginx   rewrite ops/nginx/nginx.conf (compose's) from the template

The processes and their commands come from ops/processes.yml, which docker-compose.yml
also follows (tests/foundation/test_topology.py). nginx (Debian's package) listens on
PROD_HTTP_PORT (8080) in front of the HTTP and WebSocket replicas; Prometheus (Debian's
package) on PROD_PROMETHEUS_PORT (9090) scrapes every process and loads
ops/prometheus/alerts.yml. Everything runs with DEBUG=0 on the local PostgreSQL and
Redis. supervisord restarts a process that dies, as compose's `restart: unless-stopped`
would. No demo users are created: the first operator comes from `createsuperuser`.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import yaml

ROOT = Path(__file__).resolve().parent.parent
PROCESSES_FILE = ROOT / "ops" / "processes.yml"
ALERTS_FILE = ROOT / "ops" / "prometheus" / "alerts.yml"
COMPOSE_NGINX_FILE = ROOT / "ops" / "nginx" / "nginx.conf"


# --- The definition ------------------------------------------------------------------


def load_processes(path: Path = PROCESSES_FILE) -> dict[str, dict]:
    return yaml.safe_load(path.read_text())["processes"]


def render_command(spec: dict, *, host: str, port: int | None, var: str) -> list[str]:
    """A process's argv: the definition with its placeholders filled in."""
    return shlex.split(spec["command"].format(host=host, port=port, var=var))


# --- nginx ----------------------------------------------------------------------------

NGINX_TEMPLATE = """\
# {header}
worker_processes {worker_processes};
{top}events {{ worker_connections 4096; }}

http {{
{http_extra}
  # HTTP goes to gunicorn (web), WebSocket to uvicorn (ws): docs/performance.md.
  # Passive health checks: a replica failing 3 times in 10 s is skipped for 10 s; a
  # refused or reset connection is retried on the next replica (a POST only when it
  # was not sent yet: nginx never replays a request a replica may have acted on).
  upstream web {{
{zone_web}{web_servers}    keepalive 32;
  }}

  upstream ws {{
{zone_ws}{ws_servers}  }}

  map $http_upgrade $connection_upgrade {{
    default upgrade;
    ""      "";
  }}

  server {{
    listen {listen};
    client_max_body_size 1m;

    location /ws/ {{
      proxy_pass http://ws;
      proxy_http_version 1.1;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection $connection_upgrade;
      proxy_set_header Host $host;
      proxy_set_header X-Forwarded-For $remote_addr;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_read_timeout 1h;
    }}

    location / {{
      # A request carrying an Idempotency-Key may be replayed on another replica even
      # after it was sent (the key makes the replay answer the first outcome): see
      # @keyed. Everything else is replayed only while it was not sent.
      error_page 418 = @keyed;
      if ($http_idempotency_key) {{ return 418; }}
      proxy_pass http://web;
{web_proxy}      proxy_next_upstream error timeout http_502 http_503;
    }}

    # A replica cut from its database answers an order with 503 (it could not start the
    # transaction) or not at all; the order goes to the other replica at once instead of
    # back to the client, and the failure counts towards skipping the cut replica.
    location @keyed {{
      proxy_pass http://web;
{web_proxy}      proxy_next_upstream error timeout http_502 http_503 non_idempotent;
    }}
  }}
}}
"""

WEB_PROXY = """\
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
      # The client's address as nginx saw it; whatever the client sent is dropped.
      proxy_set_header X-Forwarded-For $remote_addr;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_next_upstream_tries 3;
      proxy_connect_timeout 2s;
      proxy_read_timeout 30s;
"""


def render_nginx(
    *,
    listen: str,
    web: list[str],
    ws: list[str],
    prefix: str | None = None,
    resolver: str | None = None,
) -> str:
    """nginx.conf for a list of replica addresses.

    With `resolver` (compose: Docker's DNS at 127.0.0.11) the upstream names are
    re-resolved while nginx runs (`server NAME resolve`, nginx >= 1.27.3 with a shared
    zone), so a replica that restarts on a new address is found again. Without it the
    addresses are fixed (make prod: 127.0.0.1 ports, nothing to resolve).
    """

    def servers(addresses: list[str]) -> str:
        opts = " resolve" if resolver else ""
        return "".join(f"    server {a}{opts} max_fails=3 fail_timeout=10s;\n" for a in addresses)

    if prefix:
        top = f"pid {prefix}/nginx.pid;\nerror_log {prefix}/error.log warn;\n"
        http_extra = (
            # Which replica answered each request, and how long it took.
            "  log_format upstream '$remote_addr [$time_iso8601] \"$request\" $status "
            "upstream=$upstream_addr upstream_status=$upstream_status rt=$request_time';\n"
            f"  access_log {prefix}/access.log upstream;\n"
            f"  client_body_temp_path {prefix}/client_body;\n"
            f"  proxy_temp_path {prefix}/proxy;\n"
            f"  fastcgi_temp_path {prefix}/fastcgi;\n"
            f"  uwsgi_temp_path {prefix}/uwsgi;\n"
            f"  scgi_temp_path {prefix}/scgi;\n"
        )
        header = "make prod: rendered by ops/stack.py from ops/processes.yml; edits are overwritten."
    else:
        top = ""
        http_extra = ""
        header = "docker compose: rendered by `python -m ops.stack compose-nginx`; edit ops/stack.py, not this file."
    if resolver:
        http_extra += f"  # Docker's DNS: re-resolve the replicas as they restart.\n  resolver {resolver} valid=10s ipv6=off;\n"
    return NGINX_TEMPLATE.format(
        header=header,
        worker_processes="auto" if resolver else 2,
        top=top,
        http_extra=http_extra,
        # Shared memory: nginx's worker processes count a replica's failures together.
        zone_web="    zone web 64k;\n",
        zone_ws="    zone ws 64k;\n",
        web_proxy=WEB_PROXY,
        web_servers=servers(web),
        ws_servers=servers(ws),
        listen=listen,
    )


def compose_nginx() -> str:
    procs = load_processes()
    return render_nginx(
        listen="80",
        web=[f"web:{procs['web']['port']}"],
        ws=[f"ws:{procs['ws']['port']}"],
        resolver="127.0.0.11",
    )


# --- The local stack -----------------------------------------------------------------------


@dataclass
class Program:
    name: str  # supervisord program name, e.g. web-1
    job: str  # Prometheus job / process kind, e.g. web
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    port: int | None = None  # where it serves HTTP (health and metrics)
    metrics_port: int | None = None


@dataclass
class Stack:
    prefix: Path
    http_port: int
    prometheus_port: int
    port_base: int
    scrape_seconds: float
    web_workers: int
    env: dict[str, str]
    programs: list[Program]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def prometheus_url(self) -> str:
        return f"http://127.0.0.1:{self.prometheus_port}"

    def program(self, name: str) -> Program:
        return next(p for p in self.programs if p.name == name)

    def of(self, job: str) -> list[Program]:
        return [p for p in self.programs if p.job == job]

    @property
    def supervisor_conf(self) -> Path:
        return self.prefix / "supervisord.conf"


def _secret(env: dict[str, str], name: str, secrets_file: Path) -> str:
    """The environment's secret, else one generated once and kept in var/prod/secrets.env."""
    if env.get(name):
        return env[name]
    stored = {}
    if secrets_file.exists():
        for line in secrets_file.read_text().splitlines():
            key, _, value = line.partition("=")
            stored[key] = value
    if not stored.get(name):
        stored[name] = secrets.token_urlsafe(48)
        secrets_file.write_text("".join(f"{k}={v}\n" for k, v in stored.items()))
        secrets_file.chmod(0o600)
    return stored[name]


def build_stack(environ: dict[str, str] | None = None) -> Stack:
    environ = dict(os.environ if environ is None else environ)
    prefix = Path(environ.get("PROD_PREFIX") or ROOT / "var" / "prod").resolve()
    http_port = int(environ.get("PROD_HTTP_PORT", "8080"))
    prometheus_port = int(environ.get("PROD_PROMETHEUS_PORT", "9090"))
    base = int(environ.get("PROD_PORT_BASE", "8000"))
    scrape = float(environ.get("PROD_SCRAPE_SECONDS", "5"))
    web_workers = int(environ.get("WEB_CONCURRENCY", "3"))
    prefix.mkdir(parents=True, exist_ok=True)
    bin_dir = Path(sys.executable).parent

    env = {
        "PATH": f"{bin_dir}:{environ.get('PATH', '/usr/bin:/bin')}",
        "DEBUG": "0",
        "SECRET_KEY": _secret(environ, "SECRET_KEY", prefix / "secrets.env"),
        "PAYMENT_PROCESSOR_SECRET": _secret(environ, "PAYMENT_PROCESSOR_SECRET", prefix / "secrets.env"),
        "ALLOWED_HOSTS": environ.get("ALLOWED_HOSTS", "127.0.0.1,localhost"),
        "CSRF_TRUSTED_ORIGINS": environ.get(
            "CSRF_TRUSTED_ORIGINS", f"http://127.0.0.1:{http_port},http://localhost:{http_port}"
        ),
        # Plain HTTP on loopback: TLS belongs to whatever fronts this machine.
        "SECURE_SSL_REDIRECT": environ.get("SECURE_SSL_REDIRECT", "0"),
        "SESSION_COOKIE_SECURE": environ.get("SESSION_COOKIE_SECURE", "0"),
        "CSRF_COOKIE_SECURE": environ.get("CSRF_COOKIE_SECURE", "0"),
        "DATABASE_URL": environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/tradesense_prod"),
        "REDIS_URL": environ.get("REDIS_URL", "redis://127.0.0.1:6379/2"),
        "PAYMENT_PROCESSOR_URL": f"http://127.0.0.1:{base + 21}",
        "FAKE_PROCESSOR_WEBHOOK_URL": f"http://127.0.0.1:{http_port}/api/v1/payments/webhook",
        "TRADESENSE_VAR_DIR": str(prefix / "var"),
        "WORKER_HEARTBEAT_FILE": str(prefix / "var" / "worker-heartbeat"),
        "WEB_CONCURRENCY": str(web_workers),
        "PYTHONUNBUFFERED": "1",
        "LANG": "C.UTF-8",
    }
    # Tuning and the app's optional settings pass through (.env.example lists them).
    for key, value in environ.items():
        if key.startswith(("MARKET_", "RISK_", "PAYMENT_", "PAYMENTS_", "DB_POOL_", "ORDER_", "AUTH_", "LOG_LEVEL")):
            env.setdefault(key, value)

    procs = load_processes()
    var = str(prefix / "var")
    port_offsets = {"web": 1, "ws": 11, "processor": 21}
    metrics_offsets = {"worker": 31, "beat": 32}
    programs: list[Program] = []
    for job, spec in procs.items():
        for i in range(1, int(spec.get("replicas", 1)) + 1):
            name = f"{job}-{i}" if spec.get("replicas", 1) > 1 else job
            port = base + port_offsets[job] + i - 1 if job in port_offsets else None
            argv = render_command(spec, host="127.0.0.1", port=port, var=var)
            argv[0] = str(bin_dir / argv[0]) if (bin_dir / argv[0]).exists() else argv[0]
            if argv[0] == "python":
                argv[0] = sys.executable
            penv = {"TRADESENSE_PROCESS": name}
            metrics_port = None
            if job == "web":
                penv["PROMETHEUS_MULTIPROC_DIR"] = str(prefix / "metrics" / name)
            if job in metrics_offsets:
                metrics_port = base + metrics_offsets[job]
                penv["METRICS_PORT"] = str(metrics_port)
            programs.append(Program(name=name, job=job, argv=argv, env=penv, port=port, metrics_port=metrics_port))

    nginx_bin = shutil.which("nginx") or "/usr/sbin/nginx"
    programs.append(
        Program(
            name="nginx",
            job="lb",
            argv=[nginx_bin, "-c", str(prefix / "nginx" / "nginx.conf"), "-p", str(prefix / "nginx"), "-g", "daemon off;"],
            port=http_port,
        )
    )
    prometheus_bin = shutil.which("prometheus") or "/usr/bin/prometheus"
    programs.append(
        Program(
            name="prometheus",
            job="prometheus",
            argv=[
                prometheus_bin,
                f"--config.file={prefix / 'prometheus' / 'prometheus.yml'}",
                f"--storage.tsdb.path={prefix / 'prometheus' / 'data'}",
                f"--web.listen-address=127.0.0.1:{prometheus_port}",
                "--storage.tsdb.retention.time=15d",
            ],
            port=prometheus_port,
        )
    )
    return Stack(prefix, http_port, prometheus_port, base, scrape, web_workers, env, programs)


def render_prometheus(stack: Stack) -> str:
    def job(name: str, targets: list[str], path: str = "/metrics") -> dict:
        return {"job_name": name, "metrics_path": path, "static_configs": [{"targets": targets}]}

    jobs = [
        job("tradesense-web", [f"127.0.0.1:{p.port}" for p in stack.of("web")]),
        job("tradesense-ws", [f"127.0.0.1:{p.port}" for p in stack.of("ws")]),
        job("tradesense-worker", [f"127.0.0.1:{p.metrics_port}" for p in stack.of("worker")]),
        job("tradesense-beat", [f"127.0.0.1:{p.metrics_port}" for p in stack.of("beat")]),
        job("tradesense-processor", [f"127.0.0.1:{p.port}" for p in stack.of("processor")]),
        # Through nginx: says the load balancer answers and reaches a replica.
        job("tradesense-lb", [f"127.0.0.1:{stack.http_port}"]),
        job("prometheus", [f"127.0.0.1:{stack.prometheus_port}"]),
    ]
    interval = f"{stack.scrape_seconds:g}s"
    config = {
        "global": {"scrape_interval": interval, "evaluation_interval": interval, "scrape_timeout": interval if stack.scrape_seconds < 10 else "10s"},
        "rule_files": [str(ALERTS_FILE)],
        "scrape_configs": jobs,
    }
    return "# make prod: rendered by ops/stack.py; edits are overwritten.\n" + yaml.safe_dump(config, sort_keys=False)


def render_supervisor(stack: Stack) -> str:
    logs = stack.prefix / "logs"
    lines = [
        "; make prod: rendered by ops/stack.py from ops/processes.yml; edits are overwritten.",
        "[supervisord]",
        f"logfile={logs / 'supervisord.log'}",
        f"pidfile={stack.prefix / 'supervisord.pid'}",
        f"childlogdir={logs}",
        "nodaemon=true",
        "",
        "[unix_http_server]",
        f"file={stack.prefix / 'supervisor.sock'}",
        "chmod=0700",
        "",
        "[rpcinterface:supervisor]",
        "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
        "",
        "[supervisorctl]",
        f"serverurl=unix://{stack.prefix / 'supervisor.sock'}",
        "",
    ]
    for p in stack.programs:
        env = {**stack.env, **p.env} if p.job not in {"lb", "prometheus"} else {"PATH": stack.env["PATH"]}
        env_line = ",".join(f'{k}="{v.replace(chr(34), "")}"' for k, v in sorted(env.items()))
        lines += [
            f"[program:{p.name}]",
            f"command={shlex.join(p.argv)}",
            f"directory={ROOT}",
            f"environment={env_line.replace('%', '%%')}",
            # Restart whatever dies, forever, as compose's `restart: unless-stopped`.
            "autorestart=true",
            "startsecs=1",
            "startretries=1000",
            "stopasgroup=true",
            "killasgroup=true",
            "stopwaitsecs=20",
            "redirect_stderr=true",
            f"stdout_logfile={logs / (p.name + '.log')}",
            "stdout_logfile_maxbytes=10MB",
            "stdout_logfile_backups=5",
            "",
        ]
    return "\n".join(lines)


def write_configs(stack: Stack) -> None:
    for sub in ("logs", "var", "nginx", "prometheus/data", "metrics"):
        (stack.prefix / sub).mkdir(parents=True, exist_ok=True)
    for p in stack.of("web"):
        (stack.prefix / "metrics" / p.name).mkdir(parents=True, exist_ok=True)
    (stack.prefix / "nginx" / "nginx.conf").write_text(
        render_nginx(
            listen=f"127.0.0.1:{stack.http_port}",
            web=[f"127.0.0.1:{p.port}" for p in stack.of("web")],
            ws=[f"127.0.0.1:{p.port}" for p in stack.of("ws")],
            prefix=str(stack.prefix / "nginx"),
        )
    )
    (stack.prefix / "prometheus" / "prometheus.yml").write_text(render_prometheus(stack))
    stack.supervisor_conf.write_text(render_supervisor(stack))


def _manage(stack: Stack, *args: str) -> None:
    subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=stack.env, check=True)


def ensure_database(database_url: str) -> None:
    """Create the PostgreSQL database named in the URL when it does not exist yet."""
    import psycopg

    parsed = urlparse(database_url)
    name = parsed.path.lstrip("/")
    admin_url = parsed._replace(path="/postgres").geturl()
    with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')


def prepare(stack: Stack) -> None:
    """What compose's one-shot `migrate` service does: schema, product catalogue, static files."""
    if urlparse(stack.env["DATABASE_URL"]).scheme.startswith("postgres"):
        ensure_database(stack.env["DATABASE_URL"])
    _manage(stack, "migrate", "--noinput", "-v", "0")
    _manage(stack, "seed_catalogue")
    _manage(stack, "collectstatic", "--noinput", "-v", "0")


def banner(stack: Stack) -> str:
    ctl = f"{sys.executable} -m ops.stack ctl"
    rows = [
        ("Site (nginx)", f"{stack.url}/"),
        ("Admin", f"{stack.url}/admin/"),
        ("API docs", f"{stack.url}/api/v1/docs"),
        ("Health", f"{stack.url}/health/"),
        ("Prometheus", f"{stack.prometheus_url}/  (alerts: {stack.prometheus_url}/alerts)"),
    ]
    out = ["", "  TradeSense production stack (DEBUG=0) is starting:"]
    out += [f"    {k:<13}{v}" for k, v in rows]
    out.append("  Processes (supervisord restarts any that dies):")
    for p in stack.programs:
        where = f"127.0.0.1:{p.port}" if p.port else (f"metrics on 127.0.0.1:{p.metrics_port}" if p.metrics_port else "")
        out.append(f"    {p.name:<13}{where}")
    out += [
        f"  Logs: {stack.prefix / 'logs'}/   Secrets: {stack.prefix / 'secrets.env'}",
        f"  Database: {stack.env['DATABASE_URL']}   Redis: {stack.env['REDIS_URL']}",
        "  No users exist yet. Create the first operator:",
        f"    make prod-manage ARGS=createsuperuser   (or: {ctl} status)",
        "  Ctrl-C stops every process.",
        "",
    ]
    return "\n".join(out)


def supervisorctl(stack: Stack, *args: str) -> int:
    return subprocess.call([str(Path(sys.executable).parent / "supervisorctl"), "-c", str(stack.supervisor_conf), *args])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ops.stack", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["up", "render", "status", "ctl", "manage", "compose-nginx"])
    parser.add_argument("args", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    if args.command == "compose-nginx":
        COMPOSE_NGINX_FILE.write_text(compose_nginx())
        return 0
    stack = build_stack()
    if args.command == "status":
        return supervisorctl(stack, "status")
    if args.command == "ctl":
        return supervisorctl(stack, *args.args)
    if args.command == "manage":
        return subprocess.call([sys.executable, "manage.py", *args.args], cwd=ROOT, env=stack.env)
    write_configs(stack)
    if args.command == "render":
        print(stack.prefix)
        return 0
    prepare(stack)
    print(banner(stack), flush=True)
    os.execv(
        str(Path(sys.executable).parent / "supervisord"),
        ["supervisord", "-c", str(stack.supervisor_conf)],
    )
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
