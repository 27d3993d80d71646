"""A fake payment processor: its own small HTTP server process (the standard library, and
prometheus-client for /metrics).

    python -m payments.fake_processor --host 127.0.0.1 --port 8100 \
        [--state var/fake-processor.sqlite3] [--webhook-url URL] [--secret S]

It behaves like a real processor where it matters for exactly-once: charges are kept
by idempotency key in a small SQLite file (a retry returns the first result and never
charges twice, across restarts too), webhooks are signed (payments/signing.py) and
retried, and test tokens work as at well-known processors (`tok_visa` is charged,
`tok_decline` is declined). Fault modes are switched separately, at run time, through
the admin endpoints, so tests can break it in the ways real processors break.

Every /v1 and /admin call needs `Authorization: Bearer <secret>`.

  POST /v1/charges                    Idempotency-Key; {amount, currency, payment_method, token, description}
                                      201 charge | 402 declined charge | 409 key reused with another body
  GET  /v1/charges?idempotency_key=K  200 the charge under K | 404
  POST /v1/charges/<id>/refunds       Idempotency-Key; {amount?}: 201 refund
  GET  /health                        200 while the process runs (fault modes included)
  GET  /metrics                       Prometheus text, no secret: process start time (restarts), charges
                                      by outcome, injected faults, replays, webhooks (counted in the state
                                      file, so across restarts; /admin/reset sets them back to zero)
  GET  /admin/stats                   charges made, declines, requests, replays, drops... (the charge counter)
  GET  /admin/charges/count           {"count": charges made}
  GET|POST /admin/faults              {down, slow_seconds, error_500, decline, drop_after_charge,
                                       hold_webhooks, duplicate_webhooks}; POST changes only the keys given
  GET|POST /admin/config              {webhook_url}
  POST /admin/webhooks/release        {order: "forward"|"reverse", times: n, include_delivered: bool}:
                                      deliver the undelivered (held) events now, synchronously
  GET  /admin/events                  every event, as signed and sent
  POST /admin/reset                   forget every charge, event and counter; clear the faults

Fault modes:
  down               every /v1 request is cut off before it is read: nothing is charged
  slow_seconds       every /v1 request waits this long first, then is served (a client
                     that timed out meanwhile never hears that its charge went through)
  error_500          probability (0..1, true = 1) of answering 500 before doing anything
  decline            every new charge is declined (card_declined), whatever the token
  drop_after_charge  probability (0..1, true = 1) that a charge request is carried out,
                     stored, and then the connection dropped before any answer
  hold_webhooks      keep events instead of sending them, until /admin/webhooks/release
  duplicate_webhooks send every event twice
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import os
import random
import re
import secrets
import signal
import socket
import sqlite3
import sys
import threading
import time
import urllib.error
import urllib.request
from decimal import Decimal, InvalidOperation
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from queue import Empty, Queue
from urllib.parse import parse_qs, urlsplit

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily

from payments.signing import signature_header

logger = logging.getLogger("fake_processor")

SUCCEEDING_TOKENS = {"tok_visa", "tok_mastercard", "tok_amex", "tok_paypal", "tok_crypto"}
DECLINING_TOKENS = {
    "tok_decline": ("card_declined", "Your card was declined."),
    "tok_chargeDeclined": ("card_declined", "Your card was declined."),
    "tok_insufficient_funds": ("insufficient_funds", "Your card has insufficient funds."),
    "tok_expired": ("expired_card", "Your card has expired."),
}
DEFAULT_FAULTS = {
    "down": False,
    "slow_seconds": 0.0,
    "error_500": 0.0,
    "decline": False,
    "drop_after_charge": 0.0,
    "hold_webhooks": False,
    "duplicate_webhooks": False,
}
PROBABILITY_FAULTS = {"error_500", "drop_after_charge"}
AMOUNT = re.compile(r"^\d{1,15}(\.\d{1,2})?$")
MAX_BODY = 1_000_000


class Store:
    """Charges, refunds, events and counters in one SQLite file, behind one lock."""

    SCHEMA = """
    CREATE TABLE IF NOT EXISTS charges (
        idempotency_key TEXT PRIMARY KEY, id TEXT UNIQUE NOT NULL, fingerprint TEXT NOT NULL,
        status TEXT NOT NULL, amount TEXT NOT NULL, currency TEXT NOT NULL, payment_method TEXT NOT NULL,
        token TEXT NOT NULL, description TEXT NOT NULL, decline_code TEXT NOT NULL, message TEXT NOT NULL,
        refunded TEXT NOT NULL DEFAULT '0.00', created REAL NOT NULL);
    CREATE TABLE IF NOT EXISTS refunds (
        idempotency_key TEXT PRIMARY KEY, id TEXT UNIQUE NOT NULL, charge_id TEXT NOT NULL,
        amount TEXT NOT NULL, created REAL NOT NULL);
    CREATE TABLE IF NOT EXISTS events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL, type TEXT NOT NULL, body TEXT NOT NULL,
        created REAL NOT NULL, delivered INTEGER NOT NULL DEFAULT 0, deliveries INTEGER NOT NULL DEFAULT 0,
        last_status TEXT NOT NULL DEFAULT '');
    CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
    """

    def __init__(self, path: str):
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self.db.row_factory = sqlite3.Row
        self.db.executescript(self.SCHEMA)
        self.lock = threading.RLock()

    @contextlib.contextmanager
    def transaction(self):
        with self.lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                yield self.db
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")

    def count(self, name: str, by: int = 1) -> None:
        with self.lock:
            self.db.execute(
                "INSERT INTO counters(name, value) VALUES (?, ?) "
                "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
                (name, by),
            )

    def counters(self) -> dict[str, int]:
        with self.lock:
            return {row["name"]: row["value"] for row in self.db.execute("SELECT name, value FROM counters")}

    def reset(self) -> None:
        with self.lock:
            self.db.executescript("DELETE FROM charges; DELETE FROM refunds; DELETE FROM events; DELETE FROM counters;")


def charge_view(row: sqlite3.Row) -> dict:
    return {
        "id": row["id"],
        "object": "charge",
        "idempotency_key": row["idempotency_key"],
        "status": row["status"],
        "amount": row["amount"],
        "currency": row["currency"],
        "payment_method": row["payment_method"],
        "decline_code": row["decline_code"] or None,
        "message": row["message"] or None,
        "refunded": row["refunded"],
        "created": int(row["created"]),
    }


class FakeProcessor:
    def __init__(self, *, store: Store, secret: str, webhook_url: str | None):
        self.store = store
        self.secret = secret
        self.webhook_url = webhook_url
        self.faults = dict(DEFAULT_FAULTS)
        self.faults_lock = threading.Lock()
        self.outbox: Queue[str] = Queue()
        self.stopping = threading.Event()
        self.sender = threading.Thread(target=self._send_loop, name="webhooks", daemon=True)

    # --- faults --------------------------------------------------------------------------
    def fault(self, name: str):
        with self.faults_lock:
            return self.faults[name]

    def chance(self, name: str) -> bool:
        probability = float(self.fault(name))
        return probability > 0 and random.random() < probability

    def set_faults(self, changes: dict) -> dict:
        unknown = sorted(set(changes) - set(DEFAULT_FAULTS))
        if unknown:
            raise ValueError(f"unknown fault modes: {', '.join(unknown)}")
        clean = {}
        for name, value in changes.items():
            if name in PROBABILITY_FAULTS or name == "slow_seconds":
                number = float(value)  # True -> 1.0
                if number < 0 or (name in PROBABILITY_FAULTS and number > 1):
                    raise ValueError(f"{name} out of range")
                clean[name] = number
            else:
                clean[name] = bool(value)
        with self.faults_lock:
            self.faults.update(clean)
            return dict(self.faults)

    # --- charges ---------------------------------------------------------------------------
    def create_charge(self, key: str, body: dict) -> tuple[int, dict, bool]:
        """Returns (status code, charge, replayed). Checking and inserting under one lock
        is what makes concurrent retries of one key charge at most once."""
        amount, currency = body.get("amount"), body.get("currency")
        method, token = body.get("payment_method"), body.get("token")
        problems = []
        if not isinstance(amount, str) or not AMOUNT.match(amount) or Decimal(amount) <= 0:
            problems.append("amount must be a positive decimal string with at most 2 places")
        if not isinstance(currency, str) or not re.fullmatch(r"[A-Z]{3}", currency):
            problems.append("currency must be a 3-letter code")
        if method not in ("card", "paypal", "crypto"):
            problems.append("payment_method must be card, paypal or crypto")
        if not isinstance(token, str) or not token:
            problems.append("token is required")
        if problems:
            return 400, {"error": {"code": "invalid_request", "message": "; ".join(problems)}}, False
        description = str(body.get("description") or "")[:500]
        fingerprint = hashlib.sha256(
            json.dumps([amount, currency, method, token], separators=(",", ":")).encode()
        ).hexdigest()
        with self.store.lock:
            row = self.store.db.execute("SELECT * FROM charges WHERE idempotency_key = ?", (key,)).fetchone()
            if row is not None:
                if row["fingerprint"] != fingerprint:
                    return 409, {"error": {"code": "idempotency_key_reused",
                                           "message": "This key was used with a different request."}}, False
                self.store.count("replays")
                return (201 if row["status"] == "succeeded" else 402), charge_view(row), True
            if self.fault("decline"):
                status, (code, message) = "declined", ("card_declined", "Your card was declined.")
            elif token in SUCCEEDING_TOKENS:
                status, (code, message) = "succeeded", ("", "")
            elif token in DECLINING_TOKENS:
                status, (code, message) = "declined", DECLINING_TOKENS[token]
            else:
                status, (code, message) = "declined", ("invalid_token", "The payment token is not valid.")
            charge_id = "ch_" + secrets.token_hex(12)
            with self.store.transaction() as db:
                db.execute(
                    "INSERT INTO charges (idempotency_key, id, fingerprint, status, amount, currency, payment_method,"
                    " token, description, decline_code, message, created) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                    (key, charge_id, fingerprint, status, amount, currency, method, token, description, code,
                     message, time.time()),
                )
                row = db.execute("SELECT * FROM charges WHERE idempotency_key = ?", (key,)).fetchone()
                event_id = self._record_event("charge.succeeded" if status == "succeeded" else "charge.failed",
                                              charge_view(row))
            self.store.count("charges_made" if status == "succeeded" else "declines_made")
        self.outbox.put(event_id)
        return (201 if status == "succeeded" else 402), charge_view(row), False

    def lookup(self, key: str) -> dict | None:
        with self.store.lock:
            row = self.store.db.execute("SELECT * FROM charges WHERE idempotency_key = ?", (key,)).fetchone()
        return charge_view(row) if row else None

    def refund(self, charge_id: str, key: str, body: dict) -> tuple[int, dict]:
        with self.store.lock:
            existing = self.store.db.execute("SELECT * FROM refunds WHERE idempotency_key = ?", (key,)).fetchone()
            if existing:
                return 201, {"id": existing["id"], "object": "refund", "charge": existing["charge_id"],
                             "amount": existing["amount"], "status": "succeeded"}
            row = self.store.db.execute("SELECT * FROM charges WHERE id = ?", (charge_id,)).fetchone()
            if row is None or row["status"] != "succeeded":
                return 404, {"error": {"code": "not_found", "message": "No succeeded charge with this id."}}
            remaining = Decimal(row["amount"]) - Decimal(row["refunded"])
            try:
                amount = Decimal(str(body.get("amount", remaining)))
            except InvalidOperation:
                return 400, {"error": {"code": "invalid_request", "message": "amount must be a decimal"}}
            if amount <= 0 or amount > remaining:
                return 400, {"error": {"code": "invalid_request", "message": f"amount must be in (0, {remaining}]"}}
            refund_id = "re_" + secrets.token_hex(12)
            with self.store.transaction() as db:
                db.execute(
                    "INSERT INTO refunds (idempotency_key, id, charge_id, amount, created) VALUES (?,?,?,?,?)",
                    (key, refund_id, charge_id, str(amount), time.time()),
                )
                db.execute("UPDATE charges SET refunded = ? WHERE id = ?",
                           (str(Decimal(row["refunded"]) + amount), charge_id))
                row = db.execute("SELECT * FROM charges WHERE id = ?", (charge_id,)).fetchone()
                event_id = self._record_event("charge.refunded", charge_view(row))
            self.store.count("refunds")
        self.outbox.put(event_id)
        return 201, {"id": refund_id, "object": "refund", "charge": charge_id, "amount": str(amount),
                     "status": "succeeded"}

    # --- webhooks ----------------------------------------------------------------------------
    def _record_event(self, type_: str, charge: dict) -> str:
        event_id = "evt_" + secrets.token_hex(12)
        body = json.dumps({"id": event_id, "type": type_, "created": int(time.time()), "data": {"object": charge}},
                          separators=(",", ":"))
        self.store.db.execute("INSERT INTO events (id, type, body, created) VALUES (?,?,?,?)",
                              (event_id, type_, body, time.time()))
        return event_id

    def _post(self, body: str) -> int:
        """One signed delivery with a few bounded retries; returns the last HTTP status (0: none)."""
        status = 0
        for pause in (0.2, 0.5, 1.0, None):
            raw = body.encode()
            request = urllib.request.Request(
                self.webhook_url, data=raw, method="POST",
                headers={"Content-Type": "application/json",
                         "X-Signature": signature_header(secret=self.secret, body=raw, timestamp=int(time.time()))},
            )
            try:
                with urllib.request.urlopen(request, timeout=5) as response:  # nosec B310
                    status = response.status
            except urllib.error.HTTPError as exc:
                status = exc.code
            except (urllib.error.URLError, OSError) as exc:
                logger.info("webhook delivery failed: %s", exc)
                status = 0
            if 200 <= status < 300 or 400 <= status < 500:
                return status  # delivered, or refused for good: retrying will not change it
            if pause is None or self.stopping.is_set():
                return status
            time.sleep(pause)
        return status

    def deliver(self, event_id: str, copies: int) -> list[int]:
        with self.store.lock:
            row = self.store.db.execute("SELECT body FROM events WHERE id = ?", (event_id,)).fetchone()
        if row is None or not self.webhook_url:
            return []
        statuses = [self._post(row["body"]) for _ in range(copies)]
        delivered = any(200 <= s < 300 for s in statuses)
        with self.store.lock:
            self.store.db.execute(
                "UPDATE events SET delivered = MAX(delivered, ?), deliveries = deliveries + ?, last_status = ? "
                "WHERE id = ?",
                (1 if delivered else 0, len(statuses), ",".join(map(str, statuses)), event_id),
            )
        self.store.count("webhooks_delivered" if delivered else "webhooks_failed", len(statuses) if delivered else 1)
        return statuses

    def _send_loop(self) -> None:
        while not self.stopping.is_set():
            try:
                event_id = self.outbox.get(timeout=0.5)
            except Empty:
                continue
            if self.fault("hold_webhooks") or not self.webhook_url:
                continue  # stays undelivered until /admin/webhooks/release
            try:
                self.deliver(event_id, 2 if self.fault("duplicate_webhooks") else 1)
            except Exception:  # noqa: BLE001 - one bad delivery must not stop the sender
                logger.exception("webhook %s", event_id)

    def release(self, *, order: str, times: int, include_delivered: bool) -> dict:
        where = "" if include_delivered else "WHERE delivered = 0"
        with self.store.lock:
            ids = [r["id"] for r in self.store.db.execute(f"SELECT id FROM events {where} ORDER BY seq")]  # nosec B608
        if order == "reverse":
            ids.reverse()
        statuses = []
        for _ in range(times):
            for event_id in ids:
                statuses.extend(self.deliver(event_id, 1))
        return {"events": len(ids), "deliveries": len(statuses), "statuses": statuses}

    def events(self) -> list[dict]:
        with self.store.lock:
            rows = self.store.db.execute("SELECT * FROM events ORDER BY seq").fetchall()
        return [{"id": r["id"], "type": r["type"], "body": json.loads(r["body"]), "delivered": bool(r["delivered"]),
                 "deliveries": r["deliveries"], "last_status": r["last_status"]} for r in rows]

    def stats(self) -> dict:
        with self.store.lock:
            db = self.store.db
            made = db.execute("SELECT count(*), coalesce(group_concat(amount, ' '), '') FROM charges "
                              "WHERE status = 'succeeded'").fetchone()
            declines = db.execute("SELECT count(*) FROM charges WHERE status = 'declined'").fetchone()[0]
            undelivered = db.execute("SELECT count(*) FROM events WHERE delivered = 0").fetchone()[0]
        total = sum((Decimal(a) for a in made[1].split()), Decimal("0"))
        return {"charges": made[0], "charged_total": str(total), "declines": declines,
                "events_undelivered": undelivered, "counters": self.store.counters(), "faults": dict(self.faults)}


class ProcessorMetrics:
    """/metrics, read from the store's counters at scrape time."""

    # (metric, help, label, {label value: store counter})
    FAMILIES = (
        ("fake_processor_charges", "Charges made, by outcome.", "outcome",
         {"succeeded": "charges_made", "declined": "declines_made"}),
        ("fake_processor_faults", "Requests broken by an injected fault, by fault.", "fault",
         {"down": "refused_down", "error_500": "errors_500", "drop_after_charge": "dropped"}),
        ("fake_processor_webhooks", "Webhook events delivered or given up on.", "outcome",
         {"delivered": "webhooks_delivered", "failed": "webhooks_failed"}),
    )

    def __init__(self, store: Store):
        self.store = store

    def collect(self):
        counters = self.store.counters()
        for name, help_text, label, sources in self.FAMILIES:
            family = CounterMetricFamily(name, help_text, labels=[label])
            for value, counter in sources.items():
                family.add_metric([value], counters.get(counter, 0))
            yield family
        for name, help_text, counter in (
            ("fake_processor_requests", "Requests to the /v1 API.", "requests"),
            ("fake_processor_replays", "Charge requests answered from an earlier one with the same key.", "replays"),
            ("fake_processor_refunds", "Refunds made.", "refunds"),
        ):
            yield CounterMetricFamily(name, help_text, value=counters.get(counter, 0))


def metrics_registry(store: Store) -> CollectorRegistry:
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)  # process_start_time_seconds: restarts
    registry.register(ProcessorMetrics(store))
    return registry


class Handler(BaseHTTPRequestHandler):
    server_version = "FakeProcessor/1.0"
    protocol_version = "HTTP/1.1"
    timeout = 30  # an idle keep-alive connection does not hold a thread forever
    processor: FakeProcessor  # set on the subclass made by serve()
    metrics: CollectorRegistry  # likewise

    def log_message(self, format, *args):  # noqa: A002 - the base class's signature
        logger.debug("%s %s", self.address_string(), format % args)

    # --- plumbing ----------------------------------------------------------------------------
    def send_json(self, status: int, payload, headers: dict | None = None) -> None:
        raw = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        with contextlib.suppress(OSError):  # the client may have timed out and gone
            self.wfile.write(raw)

    def send_metrics(self) -> None:
        raw = generate_latest(self.metrics)
        self.send_response(200)
        self.send_header("Content-Type", CONTENT_TYPE_LATEST)
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        with contextlib.suppress(OSError):
            self.wfile.write(raw)

    def drop(self) -> None:
        """Cut the connection without a byte of answer, as a crashing server would."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def read_json(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            raise ValueError("body too large")
        raw = self.rfile.read(length) if length else b""
        if not raw:
            return {}
        data = json.loads(raw)
        if not isinstance(data, dict):
            raise ValueError("expected a JSON object")
        return data

    def authorized(self) -> bool:
        expected = f"Bearer {self.processor.secret}"
        return secrets.compare_digest(self.headers.get("Authorization", ""), expected)

    def do_GET(self):
        self.route("GET")

    def do_POST(self):
        self.route("POST")

    # --- routes --------------------------------------------------------------------------------
    def route(self, method: str) -> None:
        url = urlsplit(self.path)
        path = url.path.rstrip("/") or "/"
        proc = self.processor
        try:
            if path == "/health":
                return self.send_json(200, {"status": "ok", "faults": dict(proc.faults)})
            if path == "/metrics" and method == "GET":
                return self.send_metrics()
            if path.startswith("/admin/"):
                if not self.authorized():
                    return self.send_json(401, {"error": {"code": "unauthorized", "message": "Bad secret."}})
                return self.admin(method, path)
            if path.startswith("/v1/"):
                proc.store.count("requests")
                if proc.fault("down"):
                    proc.store.count("refused_down")
                    return self.drop()
                if not self.authorized():
                    return self.send_json(401, {"error": {"code": "unauthorized", "message": "Bad secret."}})
                if proc.chance("error_500"):
                    proc.store.count("errors_500")
                    return self.send_json(500, {"error": {"code": "internal_error", "message": "Injected 500."}})
                slow = float(proc.fault("slow_seconds"))
                if slow:
                    time.sleep(slow)
                return self.api(method, path, url)
            return self.send_json(404, {"error": {"code": "not_found", "message": "No such endpoint."}})
        except (ValueError, json.JSONDecodeError) as exc:
            return self.send_json(400, {"error": {"code": "invalid_request", "message": str(exc)}})

    def api(self, method: str, path: str, url) -> None:
        proc = self.processor
        if path == "/v1/charges" and method == "POST":
            key = self.headers.get("Idempotency-Key", "")
            body = self.read_json()
            if not 1 <= len(key) <= 255:
                return self.send_json(400, {"error": {"code": "invalid_request",
                                                      "message": "Idempotency-Key is required."}})
            proc.store.count("charge_requests")
            status, payload, replayed = proc.create_charge(key, body)
            if status in (201, 402) and proc.chance("drop_after_charge"):
                proc.store.count("dropped")
                return self.drop()  # the charge is made; the client will never know
            return self.send_json(status, payload, {"Idempotent-Replayed": "true"} if replayed else None)
        if path == "/v1/charges" and method == "GET":
            key = (parse_qs(url.query).get("idempotency_key") or [""])[0]
            charge = proc.lookup(key)
            if charge is None:
                return self.send_json(404, {"error": {"code": "not_found", "message": "No charge under this key."}})
            return self.send_json(200, charge)
        match = re.fullmatch(r"/v1/charges/(ch_[0-9a-f]+)/refunds", path)
        if match and method == "POST":
            key = self.headers.get("Idempotency-Key", "")
            if not 1 <= len(key) <= 255:
                return self.send_json(400, {"error": {"code": "invalid_request",
                                                      "message": "Idempotency-Key is required."}})
            status, payload = proc.refund(match.group(1), key, self.read_json())
            return self.send_json(status, payload)
        return self.send_json(404, {"error": {"code": "not_found", "message": "No such endpoint."}})

    def admin(self, method: str, path: str) -> None:
        proc = self.processor
        if path == "/admin/stats":
            return self.send_json(200, proc.stats())
        if path == "/admin/charges/count":
            return self.send_json(200, {"count": proc.stats()["charges"]})
        if path == "/admin/faults":
            if method == "POST":
                return self.send_json(200, proc.set_faults(self.read_json()))
            return self.send_json(200, dict(proc.faults))
        if path == "/admin/config":
            if method == "POST":
                body = self.read_json()
                if "webhook_url" in body:
                    proc.webhook_url = body["webhook_url"] or None
            return self.send_json(200, {"webhook_url": proc.webhook_url})
        if path == "/admin/webhooks/release" and method == "POST":
            body = self.read_json()
            order = body.get("order", "forward")
            if order not in ("forward", "reverse"):
                raise ValueError("order must be forward or reverse")
            times = int(body.get("times", 1))
            if not 1 <= times <= 10:
                raise ValueError("times must be 1 to 10")
            return self.send_json(200, proc.release(order=order, times=times,
                                                    include_delivered=bool(body.get("include_delivered"))))
        if path == "/admin/events":
            return self.send_json(200, {"results": proc.events()})
        if path == "/admin/reset" and method == "POST":
            proc.store.reset()
            proc.set_faults(DEFAULT_FAULTS)
            return self.send_json(200, {"reset": True})
        return self.send_json(404, {"error": {"code": "not_found", "message": "No such endpoint."}})


def serve(*, host: str, port: int, state: str, secret: str, webhook_url: str | None) -> None:
    processor = FakeProcessor(store=Store(state), secret=secret, webhook_url=webhook_url)
    handler = type("BoundHandler", (Handler,), {"processor": processor, "metrics": metrics_registry(processor.store)})
    ThreadingHTTPServer.allow_reuse_address = True
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    processor.sender.start()

    def _stop(signum, frame):
        processor.stopping.set()
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    logger.info("fake processor on http://%s:%s (state %s, webhooks to %s)", host, port, state, webhook_url or "nowhere")
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="TradeSense's fake payment processor.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8100)
    parser.add_argument(
        "--state",
        default=os.environ.get("FAKE_PROCESSOR_STATE")
        or str(Path(os.environ.get("TRADESENSE_VAR_DIR", "var")) / "fake-processor.sqlite3"),
        help="SQLite file that keeps charges across restarts (':memory:' for none)",
    )
    parser.add_argument("--secret", default=os.environ.get("PAYMENT_PROCESSOR_SECRET") or "dev-processor-secret")
    parser.add_argument(
        "--webhook-url",
        default=os.environ.get("FAKE_PROCESSOR_WEBHOOK_URL", "http://127.0.0.1:8000/api/v1/payments/webhook"),
        help="where signed webhooks are sent (empty: nowhere)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=os.environ.get("LOG_LEVEL", "INFO"), format="%(asctime)s %(levelname)s %(name)s %(message)s",
                        stream=sys.stderr)
    serve(host=args.host, port=args.port, state=args.state, secret=args.secret, webhook_url=args.webhook_url or None)


if __name__ == "__main__":
    main()
