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

    def __init__(self, name: str, argv: list[str], env: dict[str, str], port: int | None = None, host: str = "127.0.0.1"):
        self.name, self.argv, self.env, self.port, self.host = name, argv, env, port, host
        self.log_path = Path(tempfile.mkstemp(prefix=f"ts-{name}-", suffix=".log")[1])
        self.popen: subprocess.Popen | None = None

    def start(self, wait: float = 30.0) -> Proc:
        log = open(self.log_path, "ab")
        self.popen = subprocess.Popen(
            self.argv, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        if self.port:
            wait_for(
                lambda: port_open(self.port, self.host) or self.popen.poll() is not None,
                wait, what=f"{self.name} on {self.host}:{self.port}",
            )
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
            wait_for(lambda: not port_open(self.port, self.host), 10, what=f"{self.name} to release {self.port}")

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


def in_netns(netns: str | None, argv: list[str]) -> list[str]:
    """argv run inside a network namespace (`ip netns exec` execs it: same pid)."""
    return ["ip", "netns", "exec", netns, *argv] if netns else argv


def gunicorn_server(
    env: dict[str, str], *, host: str = "127.0.0.1", port: int | None = None, workers: int = 2,
    netns: str | None = None, name: str = "gunicorn",
) -> Proc:
    """The production HTTP server, with production's command (ops/processes.yml),
    optionally inside a network namespace."""
    from ops.stack import load_processes, render_command

    port = port or free_port()
    argv = render_command(load_processes()["web"], host=host, port=port, var=tempfile.gettempdir())
    argv = [str(VENV_BIN / argv[0]), *argv[1:], "--workers", str(workers)]
    return Proc(name, in_netns(netns, argv), env, port, host=host)


def celery(kind: str, env: dict[str, str], *extra: str, netns: str | None = None) -> Proc:
    argv = [str(VENV_BIN / "celery"), "-A", "tradesense", kind, "--loglevel=INFO", *extra]
    return Proc(f"celery-{kind}", in_netns(netns, argv), env)


@contextlib.contextmanager
def private_redis(port: int | None = None, listen_addresses: tuple[str, ...] = ("127.0.0.1",)):
    """A throw-away redis-server; yields (url, proc). Never touches the shared one.
    `listen_addresses` beyond loopback are the test's own (e.g. a veth's host end);
    protected mode is off then, or Redis would refuse those clients."""
    port = port or free_port()
    workdir = tempfile.mkdtemp(prefix="ts-redis-")
    extra = ["--protected-mode", "no"] if set(listen_addresses) - {"127.0.0.1"} else []
    proc = Proc(
        "redis",
        [shutil.which("redis-server") or "redis-server", "--port", str(port), "--bind", *listen_addresses,
         "--save", "", "--appendonly", "no", "--dir", workdir, *extra],
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
    """A PostgreSQL cluster of its own (initdb in a temp dir), to restart in a test.
    `listen_addresses` beyond loopback must exist (a veth's host end); `trust_networks`
    are CIDRs whose clients are let in without a password (pg_hba.conf)."""

    def __init__(
        self, port: int | None = None, listen_addresses: tuple[str, ...] = ("127.0.0.1",),
        trust_networks: tuple[str, ...] = (),
    ):
        self.port = port or free_port()
        self.listen_addresses, self.trust_networks = listen_addresses, trust_networks
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
        if self.trust_networks:
            with open(self.data / "pg_hba.conf", "a") as hba:
                hba.writelines(f"host all all {network} trust\n" for network in self.trust_networks)
        self.start()
        self._run(_pg_bin("createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "tradesense")
        return self

    def start(self) -> None:
        self._run(
            _pg_bin("pg_ctl"), "-D", str(self.data), "-l", str(self.dir / "log"), "-w", "-t", "30",
            "-o", f"-p {self.port} -c listen_addresses={','.join(self.listen_addresses)} -k {self.dir} -c fsync=off",
            "start",
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
