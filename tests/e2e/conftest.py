"""The real stack for the browser tests: uvicorn (HTTP + WebSocket) and the fake payment
processor as subprocesses on this suite's ports, the payment and risk sweeps run
in-process (what the Celery worker would run), and Debian's Chromium driven by
Playwright. Everything is killed on teardown; the sweeper thread stops itself."""

from __future__ import annotations

import logging
import os
import sys
import threading
from decimal import Decimal
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connections
from django.utils import timezone

from tests.live.fixtures import catalogue  # noqa: F401 - the instrument catalogue at fresh prices
from tests.support.processes import Proc, app_env, web_server

logger = logging.getLogger(__name__)

WEB_PORT = 18301
PROCESSOR_PORT = 18302
SCREENSHOTS = Path(__file__).resolve().parent / "screenshots"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def test_database_url() -> str:
    db = settings.DATABASES["default"]
    return f"postgres://{db['USER'] or 'postgres'}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


test_database_url.__test__ = False  # a helper, not a test


class Sweeper(threading.Thread):
    """What the Celery worker does on beat's ticks, in-process: charge due purchases
    and run the risk sweep, every half second, until stopped."""

    def __init__(self, *, processor_url: str, interval: float = 0.5):
        super().__init__(name="e2e-sweeper", daemon=True)
        self.processor_url = processor_url
        self.interval = interval
        self.halt = threading.Event()
        self.errors: list[str] = []

    def run(self) -> None:
        from payments.processor import HttpPaymentProcessor
        from payments.services import payments_sweep
        from risk.services import risk_sweep_run, risk_sweep_tick_for

        processor = HttpPaymentProcessor(
            base_url=self.processor_url, secret=settings.PAYMENT_PROCESSOR_SECRET, timeout=3.0
        )
        tick_seconds = Decimal(str(self.interval))
        try:
            while not self.halt.wait(self.interval):
                for name, job in (
                    ("payments", lambda: payments_sweep(processor=processor, time_budget=5.0)),
                    (
                        "risk",
                        lambda: risk_sweep_run(
                            tick=risk_sweep_tick_for(now=timezone.now(), interval_seconds=tick_seconds),
                            interval_seconds=tick_seconds,
                            deadline_seconds=5.0,
                            worker="e2e-sweeper",
                        ),
                    ),
                ):
                    try:
                        job()
                    except Exception as exc:  # noqa: BLE001 - keep sweeping; the test reports it
                        self.errors.append(f"{name}: {exc!r}")
                        logger.exception("e2e sweeper: %s sweep failed", name)
                        connections.close_all()
        finally:
            connections.close_all()

    def stop(self) -> None:
        self.halt.set()
        self.join(timeout=15)


class Stack:
    def __init__(self):
        self.base = f"http://127.0.0.1:{WEB_PORT}"
        processor_url = f"http://127.0.0.1:{PROCESSOR_PORT}"
        self.env = app_env(
            database_url=test_database_url(),
            redis_url=os.environ.get("REDIS_URL") or None,
            PAYMENT_PROCESSOR_URL=processor_url,
            # Prices move only when the test moves them (no market tick runs), so a
            # fill uses the price the test set, not a catch-up step of the simulation.
            MARKET_PRICE_MAX_AGE_SECONDS="3600",
            LOG_LEVEL="WARNING",
        )
        self.web = web_server(self.env, port=WEB_PORT)
        self.processor = Proc(
            "processor",
            [
                sys.executable, "-m", "payments.fake_processor", "--host", "127.0.0.1", "--port", str(PROCESSOR_PORT),
                "--state", ":memory:", "--secret", settings.PAYMENT_PROCESSOR_SECRET,
                "--webhook-url", f"{self.base}/api/v1/payments/webhook",
            ],
            self.env,
            PROCESSOR_PORT,
        )
        self.sweeper = Sweeper(processor_url=processor_url)

    def start(self) -> Stack:
        self.processor.start()
        self.web.start()
        self.sweeper.start()
        return self

    def stop(self) -> None:
        self.sweeper.stop()
        for proc in (self.web, self.processor):
            try:
                proc.kill()
            except Exception:  # noqa: BLE001 - teardown goes on
                logger.exception("could not stop %s", proc.name)


@pytest.fixture
def stack(transactional_db, plans, request):
    request.getfixturevalue("catalogue")
    stack = Stack()
    try:
        stack.start()
        yield stack
    except Exception:
        print("--- web log ---\n" + stack.web.logs())
        print("--- processor log ---\n" + stack.processor.logs())
        raise
    finally:
        # The web server's best-effort charge nudge stays queued in Redis for a worker
        # that is not running here; it expires unconsumed (the sweeper did the work).
        stack.stop()


@pytest.fixture
def browser(monkeypatch):
    from playwright.sync_api import Error, sync_playwright

    # Playwright's sync API runs an event loop in this thread; the test's own ORM calls
    # are plain blocking calls between browser steps, which is what this flag allows.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

    SCREENSHOTS.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        try:
            chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        except Error as exc:
            # CI must not pass silently without a browser (issue 6): fail, do not skip.
            pytest.fail(f"Chromium cannot run at {CHROMIUM}: {exc}. Run `make browser` (apt-get install chromium).")
        try:
            yield chromium
        finally:
            chromium.close()
            # ORM calls made while Playwright's loop ran used a connection of their own
            # context; return it to the pool so the test database can be dropped.
            connections.close_all()


def shot(page, name: str) -> None:
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)
