"""Real processes for tests that break the running system: servers, private Redis and
PostgreSQL instances on 127.0.0.1. Every process is bounded and killed on teardown."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.2):
        return True
    return False


def wait_for(predicate, timeout: float = 20.0, interval: float = 0.1, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


def app_env(*, database_url: str, redis_url: str | None = None, **extra: str) -> dict[str, str]:
    """Environment for a TradeSense process pointed at the given database and Redis."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    env.update(DEBUG="1", DATABASE_URL=database_url, PYTHONUNBUFFERED="1")
    env.pop("REDIS_URL", None)
    if redis_url:
        env["REDIS_URL"] = redis_url
    env.update(extra)
    return env


class Proc:
    """A child process in its own process group, logging to a file."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], port: int | None = None):
        self.name, self.argv, self.env, self.port = name, argv, env, port
        self.log_path = Path(tempfile.mkstemp(prefix=f"ts-{name}-", suffix=".log")[1])
        self.popen: subprocess.Popen | None = None

    def start(self, wait: float = 30.0) -> Proc:
        log = open(self.log_path, "ab")
        self.popen = subprocess.Popen(
            self.argv, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        if self.port:
            wait_for(lambda: port_open(self.port) or self.popen.poll() is not None, wait, what=f"{self.name} on {self.port}")
            if self.popen.poll() is not None:
                raise RuntimeError(f"{self.name} exited at start:\n{self.logs()}")
        return self

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.popen and self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(10)
        if self.port:
            wait_for(lambda: not port_open(self.port), 10, what=f"{self.name} to release {self.port}")

    def stop(self) -> None:
        if self.popen and self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(8)
            except subprocess.TimeoutExpired:
                self.kill()

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:]


def web_server(env: dict[str, str], port: int | None = None) -> Proc:
    port = port or free_port()
    argv = [
        str(VENV_BIN / "uvicorn"), "tradesense.asgi:application", "--host", "127.0.0.1",
        "--port", str(port), "--lifespan", "off", "--no-access-log",
    ]
    return Proc("web", argv, env, port)


def celery(kind: str, env: dict[str, str], *extra: str) -> Proc:
    argv = [str(VENV_BIN / "celery"), "-A", "tradesense", kind, "--loglevel=INFO", *extra]
    return Proc(f"celery-{kind}", argv, env)


@contextlib.contextmanager
def private_redis(port: int | None = None):
    """A throw-away redis-server; yields (url, proc). Never touches the shared one."""
    port = port or free_port()
    workdir = tempfile.mkdtemp(prefix="ts-redis-")
    proc = Proc(
        "redis",
        [shutil.which("redis-server") or "redis-server", "--port", str(port), "--bind", "127.0.0.1",
         "--save", "", "--appendonly", "no", "--dir", workdir],
        dict(os.environ),
        port,
    )
    proc.start()
    try:
        yield f"redis://127.0.0.1:{port}/0", proc
    finally:
        proc.kill()
        shutil.rmtree(workdir, ignore_errors=True)


def _pg_bin(name: str) -> str:
    candidates = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    if not candidates:
        raise RuntimeError(f"PostgreSQL's {name} is not installed (apt-get install postgresql)")
    return str(candidates[-1])


class PrivatePostgres:
    """A PostgreSQL cluster of its own (initdb in a temp dir), to restart in a test."""

    def __init__(self, port: int | None = None):
        self.port = port or free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="ts-pg-"))
        self.data = self.dir / "data"
        self.url = f"postgres://postgres@127.0.0.1:{self.port}/tradesense"

    def _run(self, *argv: str, check: bool = True, timeout: float = 60):
        cmd = list(argv)
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return subprocess.run(cmd, capture_output=True, text=True, check=check, timeout=timeout)

    def init(self) -> PrivatePostgres:
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        self._run(_pg_bin("initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        self.start()
        self._run(_pg_bin("createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "tradesense")
        return self

    def start(self) -> None:
        self._run(
            _pg_bin("pg_ctl"), "-D", str(self.data), "-l", str(self.dir / "log"), "-w", "-t", "30",
            "-o", f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.dir} -c fsync=off", "start",
        )

    def stop(self, mode: str = "immediate") -> None:
        self._run(_pg_bin("pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "-t", "30", "stop", check=False)

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def manage(env: dict[str, str], *args: str, timeout: float = 180) -> str:
    result = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )
    if result.returncode != 0:
        raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result.stdout
