"""Payments test fixtures: the running fake processor, a live webhook receiver, and
helpers that drive the sweep from several threads like several workers would.

Imported by tests/payments/conftest.py and by the payments failure tests in
tests/failures/ (pytest finds fixtures in a module's namespace; each is defined as
`fixture_<name>` with name="<name>" so importing it does not shadow test arguments).
Ports: 18101-18103 fake processors, 18110 webhook receiver (the payments range).
"""

from __future__ import annotations

import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest
from django.db import connection
from django.test.testcases import LiveServerThread

from payments import services
from tests.support.processes import Proc, wait_for

SECRET = "test-processor-secret"
PROCESSOR_PORT = 18101
WEBHOOK_PORT = 18110


class ProcessorAdmin:
    """The fake processor's admin API, as the tests use it."""

    def __init__(self, base_url: str, secret: str = SECRET):
        self.base_url = base_url
        self.http = httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {secret}"}, timeout=30)

    def reset(self) -> None:
        self.http.post("/admin/reset").raise_for_status()
        self.config(webhook_url="")

    def faults(self, **changes) -> dict:
        response = self.http.post("/admin/faults", json=changes)
        response.raise_for_status()
        return response.json()

    def config(self, **changes) -> dict:
        response = self.http.post("/admin/config", json=changes)
        response.raise_for_status()
        return response.json()

    def stats(self) -> dict:
        return self.http.get("/admin/stats").raise_for_status().json()

    def charge_count(self) -> int:
        return self.http.get("/admin/charges/count").raise_for_status().json()["count"]

    def lookup(self, key) -> httpx.Response:
        return self.http.get("/v1/charges", params={"idempotency_key": str(key)})

    def events(self) -> list[dict]:
        return self.http.get("/admin/events").raise_for_status().json()["results"]

    def release(self, *, order: str = "forward", times: int = 1, include_delivered: bool = False) -> dict:
        body = {"order": order, "times": times, "include_delivered": include_delivered}
        return self.http.post("/admin/webhooks/release", json=body).raise_for_status().json()


def start_fake_processor(port: int, *, state: str, webhook_url: str = "") -> Proc:
    argv = [sys.executable, "-m", "payments.fake_processor", "--host", "127.0.0.1", "--port", str(port),
            "--state", state, "--secret", SECRET, "--webhook-url", webhook_url]
    proc = Proc(f"fake-processor-{port}", argv, {"PATH": "/usr/bin:/bin", "LOG_LEVEL": "INFO"}, port)
    proc.start()
    wait_for(lambda: httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200, 10,
             what="the fake processor's health")
    return proc


@pytest.fixture(scope="session", name="fake_processor_proc")
def fixture_fake_processor_proc():
    state = str(Path(tempfile.mkdtemp(prefix="ts-fp-")) / "processor.sqlite3")
    proc = start_fake_processor(PROCESSOR_PORT, state=state)
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture(name="processor")
def fixture_processor(fake_processor_proc, settings) -> ProcessorAdmin:
    """The running fake processor, reset, with this process's settings pointed at it and
    a retry policy compressed from minutes to fractions of a second."""
    admin = ProcessorAdmin(f"http://127.0.0.1:{PROCESSOR_PORT}")
    admin.reset()
    settings.PAYMENT_PROCESSOR_URL = admin.base_url
    settings.PAYMENT_PROCESSOR_SECRET = SECRET
    settings.PAYMENT_PROCESSOR_TIMEOUT_SECONDS = 1.0
    settings.PAYMENT_RETRY_BASE_SECONDS = 0.05
    settings.PAYMENT_RETRY_CAP_SECONDS = 0.4
    settings.PAYMENT_RETRY_HORIZON_SECONDS = 600
    settings.PAYMENT_CIRCUIT_FAILURE_THRESHOLD = 5
    settings.PAYMENT_CIRCUIT_COOLDOWN_SECONDS = 0.3
    try:
        yield admin
    finally:
        admin.reset()
        admin.http.close()


@pytest.fixture(autouse=True, name="captured_enqueues")
def fixture_captured_enqueues(monkeypatch) -> list:
    """Record the on-commit Celery nudges instead of sending them to a broker no test
    worker listens on (the sweep must carry every purchase without them anyway)."""
    from payments import tasks

    sent: list = []
    monkeypatch.setattr(tasks.purchase_charge, "apply_async", lambda args=None, kwargs=None, **options: sent.append(args))
    return sent


class WebhookReceiverThread(LiveServerThread):
    def _create_server(self, connections_override=None):
        # Reuse the address: the previous run's connections may still sit in TIME_WAIT.
        from django.core.servers.basehttp import ThreadedWSGIServer
        from django.test.testcases import QuietWSGIRequestHandler

        return ThreadedWSGIServer((self.host, self.port), QuietWSGIRequestHandler, allow_reuse_address=True,
                                  connections_override=connections_override)


@pytest.fixture(name="webhook_receiver")
def fixture_webhook_receiver(transactional_db, processor):
    """This Django, served over real HTTP on 127.0.0.1:18110, as the processor's webhook
    target: deliveries are signed and sent by the fake processor itself."""
    server = WebhookReceiverThread("127.0.0.1", lambda app: app, port=WEBHOOK_PORT)
    server.daemon = True
    server.start()
    server.is_ready.wait(10)
    if server.error:
        raise server.error
    processor.config(webhook_url=f"http://127.0.0.1:{WEBHOOK_PORT}/api/v1/payments/webhook")
    try:
        yield f"http://127.0.0.1:{WEBHOOK_PORT}"
    finally:
        processor.config(webhook_url="")
        server.terminate()


def buy(api, *, plan: str = "starter", token: str = "tok_visa", method: str = "card", key: str | None = None):
    headers = {"HTTP_IDEMPOTENCY_KEY": key or uuid.uuid4().hex}
    return api.post("/api/v1/purchases", {"plan": plan, "payment_method": method, "payment_token": token},
                    format="json", **headers)


class Sweepers:
    """payments_sweep running in `threads` threads, as that many workers would, until
    stopped. Errors raised in a thread are re-raised by stop()."""

    def __init__(self, threads: int = 4):
        self.stopping = threading.Event()
        self.errors: list[BaseException] = []
        self.pool = [threading.Thread(target=self._work, daemon=True) for _ in range(threads)]

    def _work(self):
        try:
            while not self.stopping.is_set():
                report = services.payments_sweep(time_budget=2.0)
                if report.calls == 0:
                    time.sleep(0.02)
        except BaseException as exc:  # noqa: BLE001 - surfaced by stop()
            self.errors.append(exc)
        finally:
            connection.close()

    def __enter__(self) -> Sweepers:
        for thread in self.pool:
            thread.start()
        return self

    def __exit__(self, *exc_info):
        self.stop()

    def stop(self) -> None:
        self.stopping.set()
        for thread in self.pool:
            thread.join(30)
        if self.errors:
            raise self.errors[0]


def run_sweepers(*, until, threads: int = 4, timeout: float = 60.0) -> float:
    """Sweep from `threads` threads until `until()` is true; returns the seconds it took."""
    started = time.monotonic()
    with Sweepers(threads) as sweepers:
        while not until():
            if sweepers.errors:
                break
            if time.monotonic() - started > timeout:
                raise AssertionError(f"sweepers did not finish within {timeout}s")
            time.sleep(0.05)
    return time.monotonic() - started


def sweep_for(seconds: float, *, threads: int = 4) -> None:
    """Sweep for a fixed stretch of time (e.g. while the processor is down)."""
    deadline = time.monotonic() + seconds
    run_sweepers(until=lambda: time.monotonic() > deadline, threads=threads, timeout=seconds + 30)
