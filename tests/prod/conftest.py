"""The production topology of `make prod`, started once for this folder's tests.

It is the same entry point an operator runs (`python -m ops.stack up`), on ports of the
test's own (18500-18599), its own PostgreSQL database and a private Redis, with
Prometheus scraping every second so alerts can be watched within a test.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
import psycopg
import pytest

from ops import stack as ops_stack
from tests.support.processes import ROOT, port_open, private_redis, wait_for

pytestmark = pytest.mark.slow
logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request drowns the figures

HTTP_PORT = 18580
PROMETHEUS_PORT = 18590
PORT_BASE = 18500
DATABASE_URL = "postgres://postgres@127.0.0.1:5432/ts_prodtest"
HEALTH_PATHS = {"web": "/health/ready", "ws": "/health/ready", "lb": "/health/live", "processor": "/health", "prometheus": "/-/ready"}


def _recreate_database(url: str) -> None:
    name = url.rsplit("/", 1)[1]
    with psycopg.connect(url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


class ProdStack:
    def __init__(self, stack: ops_stack.Stack, supervisord: subprocess.Popen, log: Path):
        self.stack, self.supervisord, self.log = stack, supervisord, log

    @property
    def url(self) -> str:
        return self.stack.url

    @property
    def env(self) -> dict[str, str]:
        return self.stack.env

    def ctl(self, *args: str) -> str:
        result = subprocess.run(
            [str(Path(sys.executable).parent / "supervisorctl"), "-c", str(self.stack.supervisor_conf), *args],
            capture_output=True, text=True, timeout=60,
        )
        return result.stdout

    def pid(self, name: str) -> int:
        return int(self.ctl("pid", name).strip())

    def kill_9(self, name: str) -> int:
        """SIGKILL the whole process group, as a container dies: master and workers at once."""
        pid = self.pid(name)
        os.killpg(pid, signal.SIGKILL)
        return pid

    def wait_running(self, name: str, *, old_pid: int | None = None, timeout: float = 60) -> int:
        program = self.stack.program(name)

        def up() -> bool:
            status = self.ctl("status", name)
            if "RUNNING" not in status:
                return False
            if old_pid is not None and self.pid(name) == old_pid:
                return False
            if program.port:
                with contextlib.suppress(httpx.HTTPError):
                    path = HEALTH_PATHS[program.job]
                    return httpx.get(f"http://127.0.0.1:{program.port}{path}", timeout=2).status_code == 200
                return False
            return True

        wait_for(up, timeout, interval=0.3, what=f"{name} to run")
        return self.pid(name)

    def prometheus(self, path: str, **params) -> dict:
        response = httpx.get(f"{self.stack.prometheus_url}/api/v1/{path}", params=params, timeout=5)
        response.raise_for_status()
        return response.json()["data"]

    def query(self, expr: str) -> list[dict]:
        return self.prometheus("query", query=expr)["result"]

    def targets(self) -> list[dict]:
        return self.prometheus("targets")["activeTargets"]

    def firing(self, alertname: str) -> bool:
        return any(
            a["labels"]["alertname"] == alertname and a["state"] == "firing" for a in self.prometheus("alerts")["alerts"]
        )

    def access_log(self) -> list[str]:
        path = self.stack.prefix / "nginx" / "access.log"
        return path.read_text(errors="replace").splitlines() if path.exists() else []

    def served_by(self, lines: list[str]) -> set[str]:
        return {m.group(1) for line in lines if (m := re.search(r"upstream=(\S+)", line))}

    def logs(self, name: str) -> str:
        path = self.stack.prefix / "logs" / f"{name}.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""


@pytest.fixture(scope="package")
def prod():
    if not (shutil.which("nginx") or Path("/usr/sbin/nginx").exists()) or not shutil.which("prometheus"):
        pytest.skip("make prod needs nginx and prometheus (make tools installs them)")
    for port in (HTTP_PORT, PROMETHEUS_PORT, PORT_BASE + 1, PORT_BASE + 2):
        assert not port_open(port), f"port {port} is taken: is another `make prod` test stack running?"
    prefix = Path(tempfile.mkdtemp(prefix="ts-prod-"))
    with private_redis() as (redis_url, _redis):
        _recreate_database(DATABASE_URL)
        environ = {
            **{k: v for k, v in os.environ.items() if not k.startswith("PYTEST")},
            "PROD_PREFIX": str(prefix),
            "PROD_HTTP_PORT": str(HTTP_PORT),
            "PROD_PROMETHEUS_PORT": str(PROMETHEUS_PORT),
            "PROD_PORT_BASE": str(PORT_BASE),
            "PROD_SCRAPE_SECONDS": "1",
            "WEB_CONCURRENCY": "2",
            "DATABASE_URL": DATABASE_URL,
            "REDIS_URL": redis_url,
            # Prices stay fresh for the whole test even if the worker is stopped.
            "MARKET_PRICE_MAX_AGE_SECONDS": "100000",
            "LOG_LEVEL": "WARNING",
            # The load generators are one trader: the per-user order limit is not under test.
            "ORDER_THROTTLE_RATE": "1000000/min",
        }
        for key in ("SECRET_KEY", "PAYMENT_PROCESSOR_SECRET", "DEBUG", "CACHE_REDIS_URL"):
            environ.pop(key, None)
        log = prefix / "make-prod.log"
        supervisord = subprocess.Popen(
            [sys.executable, "-m", "ops.stack", "up"], cwd=ROOT, env=environ,
            stdout=open(log, "ab"), stderr=subprocess.STDOUT, start_new_session=True,
        )
        stack = ops_stack.build_stack(environ)
        prod_stack = ProdStack(stack, supervisord, log)
        try:
            wait_for(lambda: port_open(HTTP_PORT) or supervisord.poll() is not None, 120, what="make prod to listen")
            assert supervisord.poll() is None, log.read_text()
            for program in stack.programs:
                prod_stack.wait_running(program.name, timeout=90)
            yield prod_stack
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(supervisord.pid, signal.SIGTERM)
            try:
                supervisord.wait(40)
            except subprocess.TimeoutExpired:
                # supervisord itself hung: take every child down with it.
                subprocess.run(["pkill", "-9", "-f", str(prefix)], check=False)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(supervisord.pid, signal.SIGKILL)
            for port in (HTTP_PORT, PROMETHEUS_PORT):
                with contextlib.suppress(TimeoutError):
                    wait_for(lambda p=port: not port_open(p), 20, what=f"port {port} to close")
            shutil.rmtree(prefix, ignore_errors=True)

