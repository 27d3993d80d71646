"""Seed failure 5, network partition, with real hosts: a web replica and the Celery
worker each run in a network namespace of their own and are cut from PostgreSQL and
Redis mid-load by a silent partition (every frame dropped, nothing refused), then healed.

    host   PostgreSQL on 127.0.0.1, 10.231.1.1 and 10.231.3.1; Redis on 127.0.0.1,
           10.231.1.1 and 10.231.4.1; replica B (gunicorn) on 127.0.0.1; nginx on
           127.0.0.1 in front of A and B (ops/stack.py's config); Celery beat
    tsA    replica A (gunicorn): reaches the data over the "data" veth (10.231.1.0/24),
           is reached by nginx over the "front" veth (10.231.2.0/24), so a data cut
           leaves A answering nginx
    tsW    the Celery worker: reaches PostgreSQL over one veth (10.231.3.0/24) and Redis
           over another (10.231.4.0/24), so either can be cut alone

What must hold (the seed: no silent overwrite; the design: one primary, versioned
writes, idempotency keys; DESIGN.md): the cut replica says it is not ready instead of
hanging, nginx routes around it, a write in flight on the cut side commits wholly or
not at all, every order a client meant to place exists exactly once after its retries,
a stale writer gets 409 and a Conflict row, and both A and the worker come back by
themselves after the heal. Each test prints what it measured (`pytest -s`).

A silent partition is the hard case: a refused connection fails at once, a dropped
packet is waited for. Whatever the application does not bound (TCP timeouts on its
database connections, how long a transaction its client abandoned may hold its locks,
how long a request waits for a pooled connection) shows up here as a hang.
"""

from __future__ import annotations

import contextlib
import json
import random
import re
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import httpx
import psycopg
import pytest

from ops.stack import render_nginx
from tests.support.netns import Namespace, namespace, unavailable_reason
from tests.support.processes import PrivatePostgres, Proc, app_env, celery, gunicorn_server, private_redis, wait_for
from tests.support.stack import seed_trader, sql

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

NS_A, NS_W = "tsA", "tsW"
A_DATA, A_FRONT, W_PG, W_REDIS = "10.231.1.0/24", "10.231.2.0/24", "10.231.3.0/24", "10.231.4.0/24"
PG_PORT, REDIS_PORT, A_PORT, B_PORT, LB_PORT = 18300, 18301, 18310, 18311, 18320

CUT_SECONDS = 20.0
READY_FAILS_WITHIN = 10.0  # A's /health/ready answers "not ready" this soon after the cut
ROUTED_AROUND_WITHIN = 10.0  # orders through nginx flow again this soon after the cut (seconds, whole)
# The order in flight on A at the cut is placed by its client's retry this soon, during the
# cut: its stranded transaction must give its locks back without waiting for the heal.
IN_FLIGHT_PLACED_WITHIN = 15.0
ORDER_WAIT_NORMAL = 5.0  # once routed around, no order waits longer for its answer (retries included)
GET_GRACE = 5.0  # GETs through nginx started this long after the cut never answer 5xx
RECOVERS_WITHIN = 10.0  # after the heal, A is ready and takes orders again within this
NGINX_FAIL_TIMEOUT = 10.0  # render_nginx's fail_timeout: how long nginx skips a failed replica
WORKER_RECOVERS_WITHIN = 30.0  # heartbeat and sweeps resume this soon after the heal


# --- The lab: namespaces, data services, two replicas, nginx ------------------------------------


@dataclass
class Lab:
    a_ns: Namespace
    w_ns: Namespace
    pg_url: str
    env_host: dict[str, str]
    env_w: dict[str, str]
    var_dir: str
    seeded: dict
    a: Proc
    b: Proc
    lb: Proc
    upstream_log: Path

    @property
    def a_url(self) -> str:
        return f"http://{self.a_ns.links['front'].ns_addr}:{A_PORT}"

    @property
    def b_url(self) -> str:
        return f"http://127.0.0.1:{B_PORT}"

    @property
    def lb_url(self) -> str:
        return f"http://127.0.0.1:{LB_PORT}"

    def auth(self, staff: bool = False) -> dict[str, str]:
        token = self.seeded["staff_token" if staff else "token"]
        return {"Authorization": f"Token {token}", "Accept": "application/json"}


def _app_env(pg_host: str, redis_host: str, var_dir: str, allowed_host: str, **extra: str) -> dict[str, str]:
    # Production mode (DEBUG off), as compose runs it; only the secrets are the test's.
    return app_env(
        database_url=f"postgres://postgres@{pg_host}:{PG_PORT}/tradesense",
        redis_url=f"redis://{redis_host}:{REDIS_PORT}/0",
        DEBUG="0",
        SECRET_KEY="partition-test-secret-key-" + "s" * 40,
        PAYMENT_PROCESSOR_SECRET="partition-test-processor-secret-" + "p" * 20,
        ALLOWED_HOSTS=f"127.0.0.1,localhost,{allowed_host}",
        SECURE_SSL_REDIRECT="0",
        SESSION_COOKIE_SECURE="0",
        CSRF_COOKIE_SECURE="0",
        # No ticker in the web test: prices come from the test's staff price mover.
        MARKET_PRICE_MAX_AGE_SECONDS="100000",
        # One trader's load generator must not meet the per-user order limit (6,000 a
        # minute): on a fast run it places over 100 orders a second. Partitions are tested here.
        ORDER_THROTTLE_RATE="1000000/min",
        TRADESENSE_VAR_DIR=var_dir,
        LOG_LEVEL="WARNING",
        **extra,
    )


def _nginx(lab_dir: Path, web: list[str]) -> tuple[Proc, Path]:
    """nginx with the production config (ops/stack.py render_nginx); one log line is
    added so the test can see which replica served each request and when."""
    prefix = lab_dir / "nginx"
    prefix.mkdir(mode=0o755)
    conf = render_nginx(listen=f"127.0.0.1:{LB_PORT}", web=web, ws=web[-1:], prefix=str(prefix))
    upstream_log = prefix / "upstreams.log"
    assert conf.count("http {\n") == 1, "render_nginx's http block changed; update the test's log hook"
    conf = conf.replace(
        "http {\n",
        "http {\n"
        "  log_format upstreams '$msec $status $request_method $request_uri \"$upstream_addr\" \"$upstream_status\"';\n"
        f"  access_log {upstream_log} upstreams;\n",
    )
    (prefix / "nginx.conf").write_text(conf)
    argv = ["/usr/sbin/nginx", "-p", str(prefix), "-c", str(prefix / "nginx.conf"), "-e", str(prefix / "error.log"),
            "-g", "daemon off;"]
    return Proc("nginx", argv, {"PATH": "/usr/sbin:/usr/bin:/bin"}, LB_PORT), upstream_log


@pytest.fixture(scope="module")
def lab(request):
    reason = unavailable_reason()
    if reason:
        pytest.skip(f"real partitions need network namespaces: {reason}")
    existing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
    leftover = {NS_A, NS_W} & set(existing)
    if leftover:
        pytest.fail(f"namespaces {sorted(leftover)} already exist (a killed run?): `ip netns del` them first")
    lab_dir = Path(tempfile.mkdtemp(prefix="ts-partition-"))
    procs: list[Proc] = []
    with contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, lab_dir, ignore_errors=True)
        # Torn down in reverse: processes, then Redis and PostgreSQL, then the namespaces.
        a_ns = stack.enter_context(namespace(NS_A, {"data": A_DATA, "front": A_FRONT}))
        w_ns = stack.enter_context(namespace(NS_W, {"pg": W_PG, "redis": W_REDIS}))
        a_data = a_ns.links["data"].host_addr
        w_pg, w_redis = w_ns.links["pg"].host_addr, w_ns.links["redis"].host_addr
        pg = PrivatePostgres(PG_PORT, listen_addresses=("127.0.0.1", a_data, w_pg), trust_networks=(A_DATA, W_PG))
        stack.callback(pg.destroy)
        pg.init()
        stack.enter_context(private_redis(REDIS_PORT, listen_addresses=("127.0.0.1", a_data, w_redis)))

        a_front = a_ns.links["front"].ns_addr
        env_host = _app_env("127.0.0.1", "127.0.0.1", str(lab_dir / "host"), a_front)
        env_a = _app_env(a_data, a_data, str(lab_dir / "a"), a_front)
        env_w = _app_env(w_pg, w_redis, str(lab_dir / "w"), a_front)
        seeded = seed_trader(env_host, n_challenges=7)
        # The staff user moves prices in these tests: an operator allowed to (whatever role
        # setting a price needs, a superuser has it).
        with psycopg.connect(pg.url, autocommit=True) as conn:
            conn.execute("UPDATE auth_user SET is_superuser = true WHERE username = 'loadstaff'")

        def started(proc: Proc) -> Proc:
            procs.append(proc)
            stack.callback(proc.kill)
            return proc.start()

        a = started(gunicorn_server(env_a, host=a_front, port=A_PORT, netns=NS_A, name="web-a"))
        b = started(gunicorn_server(env_host, host="127.0.0.1", port=B_PORT, name="web-b"))
        lb, upstream_log = _nginx(lab_dir, [f"{a_front}:{A_PORT}", f"127.0.0.1:{B_PORT}"])
        started(lb)
        lab = Lab(a_ns, w_ns, pg.url, env_host, env_w, str(lab_dir), seeded, a, b, lb, upstream_log)
        for url in (lab.a_url, lab.b_url, lab.lb_url):
            wait_for(lambda url=url: _ready(url) == 200, 30, what=f"{url}/health/ready")
        failed_before = request.session.testsfailed
        yield lab
        if request.session.testsfailed > failed_before:
            for proc in procs:
                print(f"--- {proc.name} log (tail) ---\n{proc.logs()[-2500:]}")


def _ready(base: str, timeout: float = 5.0) -> int | None:
    with contextlib.suppress(httpx.HTTPError):
        return httpx.get(f"{base}/health/ready", headers={"Accept": "application/json"}, timeout=timeout).status_code
    return None


# --- Clients ------------------------------------------------------------------------------------------


@dataclass
class Attempt:
    start: float
    end: float
    method: str
    outcome: int | str  # the status code, or the transport error's name
    what: str = ""  # the order's client_order_id


@dataclass
class Intended:
    challenge_id: int
    client_order_id: str
    key: str
    side: str
    first_try: float
    acked_at: float | None = None
    answer: dict | None = None


@dataclass
class Traffic:
    """Order placers (one per challenge, through nginx, retrying the same Idempotency-Key
    on a transport error or a 5xx until answered), a reader polling GETs through nginx,
    and a staff price mover on B so that closing fills realize profit and loss."""

    lab: Lab
    challenges: list[int]
    give_up_after: float  # seconds: bounded even if the stack never recovers
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    orders: list[Intended] = field(default_factory=list)
    attempts: list[Attempt] = field(default_factory=list)
    gets: list[Attempt] = field(default_factory=list)
    refused: list[tuple[str, int, str]] = field(default_factory=list)
    price_failures: list[str] = field(default_factory=list)
    threads: list[threading.Thread] = field(default_factory=list)

    def __enter__(self) -> Traffic:
        for i, cid in enumerate(self.challenges):
            self.threads.append(threading.Thread(target=self._placer, args=(i, cid), daemon=True))
        self.threads.append(threading.Thread(target=self._reader, daemon=True))
        self.threads.append(threading.Thread(target=self._price_mover, daemon=True))
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(90)

    def _placer(self, index: int, challenge_id: int) -> None:
        url = f"/api/v1/challenges/{challenge_id}/orders"
        give_up = time.monotonic() + self.give_up_after
        with httpx.Client(base_url=self.lab.lb_url, headers=self.lab.auth(), timeout=40) as client:
            n = 0
            while not self.stop.is_set():
                n += 1
                side = "buy" if n % 2 else "sell"  # flat or long 0.1: far inside the margin
                order = Intended(challenge_id, f"p{index}-{n}", f"key-{index}-{n}", side, time.monotonic())
                with self.lock:
                    self.orders.append(order)
                body = {"symbol": "EURUSD", "side": side, "qty": "0.1", "client_order_id": order.client_order_id}
                while time.monotonic() < give_up:
                    start = time.monotonic()
                    try:
                        response = client.post(url, json=body, headers={"Idempotency-Key": order.key})
                        outcome = response.status_code
                    except httpx.TransportError as exc:
                        response, outcome = None, type(exc).__name__
                    with self.lock:
                        self.attempts.append(Attempt(start, time.monotonic(), "POST", outcome, order.client_order_id))
                    if response is not None and response.status_code in (200, 201):
                        order.acked_at, order.answer = time.monotonic(), response.json()
                        break
                    if response is not None and response.status_code < 500:
                        with self.lock:
                            self.refused.append((order.client_order_id, response.status_code, response.text[:300]))
                        break
                    time.sleep(0.2)  # a transport error or 5xx: the same key again

    def _reader(self) -> None:
        url = f"/api/v1/challenges/{self.challenges[0]}"
        with httpx.Client(base_url=self.lab.lb_url, headers=self.lab.auth(), timeout=40) as client:
            while not self.stop.is_set():
                start = time.monotonic()
                try:
                    outcome = client.get(url).status_code
                except httpx.TransportError as exc:
                    outcome = type(exc).__name__
                with self.lock:
                    self.gets.append(Attempt(start, time.monotonic(), "GET", outcome))
                time.sleep(0.1)

    def _price_mover(self) -> None:
        rng = random.Random(5)
        price = Decimal("1.08500")
        with httpx.Client(base_url=self.lab.b_url, headers=self.lab.auth(staff=True), timeout=10) as client:
            while not self.stop.is_set():
                price += Decimal(rng.randint(-5, 5)) / Decimal("100000")
                try:
                    response = client.put("/api/v1/market/prices/EURUSD", json={"price": str(price)})
                    failure = None if response.status_code == 200 else f"{response.status_code} {response.text[:200]}"
                except httpx.TransportError as exc:
                    failure = type(exc).__name__
                if failure:
                    with self.lock:
                        self.price_failures.append(failure)
                time.sleep(0.3)


class ReadyProbe:
    """Asks A directly, over and over, whether it is ready (what a load balancer's
    health check would do); each answer with when it was asked and answered."""

    def __init__(self, base: str, timeout: float = 15.0):
        self.base, self.timeout = base, timeout
        self.answers: list[tuple[float, float, int | str, str]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> ReadyProbe:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(self.timeout + 5)

    def _run(self) -> None:
        while not self.stop.is_set():
            start = time.monotonic()
            try:
                response = httpx.get(f"{self.base}/health/ready", headers={"Accept": "application/json"},
                                     timeout=self.timeout)
                outcome, body = response.status_code, response.text[:200]
            except httpx.TimeoutException:
                outcome, body = "timeout", ""
            except httpx.TransportError as exc:
                outcome, body = type(exc).__name__, ""
            self.answers.append((start, time.monotonic(), outcome, body))
            time.sleep(0.25)


def _upstream_log(path: Path) -> list[tuple[float, int, str, str, list[str], list[str]]]:
    """(wall time, status to the client, method, uri, upstreams tried, their statuses)."""
    rows = []
    for line in path.read_text().splitlines():
        m = re.match(r'(\S+) (\d+) (\S+) (\S+) "([^"]*)" "([^"]*)"', line)
        if m:
            # Several upstreams when nginx retried: "a, b" (", " between tries).
            tried, statuses = re.split(r"\s*[,:]\s+", m[5]), re.split(r"\s*[,:]\s+", m[6])
            rows.append((float(m[1]), int(m[2]), m[3], m[4], tried, statuses))
    return rows



# --- Replica A cut from PostgreSQL and Redis under load ---------------------------------------------------


def test_replica_cut_from_its_data_is_routed_around_and_loses_or_repeats_nothing(lab):
    load_ids = lab.seeded["challenges"][:4]
    conflict_id, inflight_id = lab.seeded["challenges"][4], lab.seeded["challenges"][5]
    data = lab.a_ns.links["data"]
    a_addr = f"{lab.a_ns.links['front'].ns_addr}:{A_PORT}"
    orders_path = "/api/v1/challenges/{}/orders"

    # Two writers read one challenge at version 1, one through each replica.
    etag_x = httpx.get(f"{lab.a_url}/api/v1/challenges/{conflict_id}", headers=lab.auth()).headers["ETag"]
    etag_y = httpx.get(f"{lab.b_url}/api/v1/challenges/{conflict_id}", headers=lab.auth()).headers["ETag"]
    assert etag_x == etag_y == '"1"'
    order_x = {"symbol": "EURUSD", "side": "buy", "qty": "0.5", "client_order_id": "writer-x"}
    headers_x = {**lab.auth(), "If-Match": etag_x, "Idempotency-Key": "writer-x"}
    writer_x: dict = {}

    def write_x():  # on the cut side: its replica cannot reach the database
        try:
            response = httpx.post(f"{lab.a_url}{orders_path.format(conflict_id)}", json=order_x, headers=headers_x,
                                  timeout=40)
            writer_x["first"] = (response.status_code, response.text[:300])
        except httpx.TransportError as exc:
            writer_x["first"] = (type(exc).__name__, "")

    # A write in flight on A when the cut comes: A's transaction waits for a row lock the
    # test holds, the cut falls, the lock is released, and A's transaction runs on in
    # PostgreSQL with nobody to answer. Its client retries the same key through nginx.
    order_w = {"symbol": "EURUSD", "side": "buy", "qty": "0.2", "client_order_id": "in-flight"}
    headers_w = {**lab.auth(), "Idempotency-Key": "in-flight"}
    inflight: dict = {"attempts": []}

    def write_in_flight(deadline: float):
        base = lab.a_url
        while time.monotonic() < deadline:
            try:
                response = httpx.post(f"{base}{orders_path.format(inflight_id)}", json=order_w, headers=headers_w,
                                      timeout=40)
                outcome = response.status_code
            except httpx.TransportError as exc:
                response, outcome = None, type(exc).__name__
            inflight["attempts"].append((base, outcome))
            if response is not None and response.status_code < 500:
                inflight["answer"], inflight["acked_at"] = (response.status_code, response.json()), time.monotonic()
                return
            base = lab.lb_url  # the retry goes wherever nginx sends it
            time.sleep(0.2)

    with Traffic(lab, load_ids, give_up_after=4 + CUT_SECONDS + 50) as traffic, ReadyProbe(lab.a_url) as probe:
        time.sleep(3)  # steady load through both replicas first
        with psycopg.connect(lab.pg_url) as blocker:
            blocker.execute("SELECT id FROM challenges_challenge WHERE id = %s FOR UPDATE", [inflight_id])
            w_thread = threading.Thread(target=write_in_flight, args=(time.monotonic() + CUT_SECONDS + 45,),
                                        daemon=True)
            w_thread.start()
            wait_for(lambda: _backends_of(lab.pg_url, data.ns_addr, "wait_event_type = 'Lock'"), 15, interval=0.05,
                     what="A's order transaction to wait for the row lock")
            cut = time.monotonic()
            data.cut()
            try:
                blocker.rollback()  # A's transaction takes the lock and runs on, its replica unreachable
                x_thread = threading.Thread(target=write_x, daemon=True)
                x_thread.start()
                time.sleep(0.5)
                answer_y = httpx.post(
                    f"{lab.b_url}{orders_path.format(conflict_id)}",
                    json={"symbol": "EURUSD", "side": "sell", "qty": "0.3", "client_order_id": "writer-y"},
                    headers={**lab.auth(), "If-Match": etag_y, "Idempotency-Key": "writer-y"},
                    timeout=40,
                )
                time.sleep(max(0.0, cut + CUT_SECONDS - time.monotonic()))
                # What A left open in PostgreSQL: the server cannot tell that its client is gone.
                stranded = _backends_of(lab.pg_url, data.ns_addr, "state LIKE 'idle in transaction%%'")
            finally:
                data.heal()
        heal, heal_wall = time.monotonic(), time.time()
        wait_for(lambda: any(a[0] >= heal and a[2] == 200 for a in probe.answers), 40, interval=0.1,
                 what="A ready again after the heal")
        time.sleep(NGINX_FAIL_TIMEOUT + 3)  # long enough for nginx to give A live traffic again
    x_thread.join(45)
    w_thread.join(60)

    # The cut-off writer retries once its replica is back, unless it already had its answer.
    final_x = writer_x["first"]
    if final_x[0] != 409:
        retry = httpx.post(f"{lab.a_url}{orders_path.format(conflict_id)}", json=order_x, headers=headers_x,
                           timeout=40)
        final_x = (retry.status_code, retry.text[:300])

    # --- What was measured ---
    during = [a for a in probe.answers if cut <= a[0] and a[1] <= heal]
    # The first "not ready" answered after the cut (its probe may have been sent just before).
    first_not_ready = next((a for a in probe.answers if cut <= a[1] <= heal and isinstance(a[2], int)
                            and a[2] != 200), None)
    ready_failed_after = first_not_ready[1] - cut if first_not_ready else None
    probe_timeouts = [a for a in probe.answers if cut <= a[1] and a[0] < heal and a[2] == "timeout"]
    back = next((a for a in probe.answers if a[0] >= heal and a[2] == 200), None)
    ready_again_after = back[1] - heal if back else None
    orders = traffic.orders
    acked = [o for o in orders if o.answer is not None]
    # Orders acknowledged per second: before the cut, then each second of the cut. Routed
    # around = from that second to the heal, at least a quarter of the rate before (a
    # stuck replica cuts it to a few per second: every client ends up waiting on A).
    before = sum(1 for o in acked if cut - 3 <= o.acked_at < cut) / 3
    per_second = [sum(1 for o in acked if cut + i <= o.acked_at < cut + i + 1) for i in range(int(heal - cut))]
    flowing = [n >= before / 4 for n in per_second]
    routed_around_after = next((i for i in range(len(flowing)) if all(flowing[i:])), None)
    # ... and from then on no order waits long for its acknowledgement (retries included).
    stalled = [o for o in acked if o.acked_at - o.first_try > ORDER_WAIT_NORMAL and routed_around_after is not None
               and cut + routed_around_after <= o.first_try < heal]
    late_get_errors = [g for g in traffic.gets if not (cut <= g.start < cut + GET_GRACE)
                       and (not isinstance(g.outcome, int) or g.outcome >= 500)]
    log = _upstream_log(lab.upstream_log)
    via_a_after_heal = [r for r in log if r[0] >= heal_wall and r[3].startswith("/api/") and r[4][-1] == a_addr
                        and r[5][-1].startswith("2")]
    nginx_back_to_a_after = via_a_after_heal[0][0] - heal_wall if via_a_after_heal else None
    outcomes: dict[str, int] = {}
    for a in traffic.attempts + traffic.gets:
        outcomes[f"{a.method} {a.outcome}"] = outcomes.get(f"{a.method} {a.outcome}", 0) + 1

    def secs(value):
        return "never" if value is None else f"{value:.2f}s"

    print(
        f"\nreplica A cut from PostgreSQL and Redis for {heal - cut:.1f}s under order load through nginx:\n"
        f"  A /health/ready failed {secs(ready_failed_after)} after the cut ({len(probe_timeouts)} probes hung"
        f" instead); ready again {secs(ready_again_after)} after the heal\n"
        f"  orders acknowledged {len(acked)}/{len(orders)} intended; {before:.0f}/s before the cut, then each"
        f" second of the cut {per_second}: routed around after {secs(routed_around_after)}; orders after that"
        f" waiting > {ORDER_WAIT_NORMAL:g}s: {[(o.client_order_id, round(o.acked_at - o.first_try, 1)) for o in stalled]}\n"
        f"  nginx served through A again {secs(nginx_back_to_a_after)} after the heal; GETs with 5xx outside the"
        f" first {GET_GRACE:g}s: {len(late_get_errors)}\n"
        f"  attempts by outcome: {dict(sorted(outcomes.items()))}\n"
        f"  price mover failures: {len(traffic.price_failures)} {traffic.price_failures[:1]}\n"
        f"  the write in flight at the cut: {len(stranded)} transaction(s) of A still open in PostgreSQL at the heal;"
        f" its client's attempts {inflight['attempts']}, answered"
        f" {secs(inflight['acked_at'] - cut if 'acked_at' in inflight else None)} after the cut\n"
        f"  stale writers: X through A {writer_x['first'][0]} during the cut, then {final_x[0]};"
        f" Y through B {answer_y.status_code}"
    )

    # --- Nothing lost, nothing twice, nothing half-written ---
    assert not traffic.refused, traffic.refused[:5]
    assert len(orders) > 40, "too little load to prove anything"
    assert len(acked) == len(orders), [o.client_order_id for o in orders if o.answer is None]
    assert inflight.get("answer", (None,))[0] in (200, 201), inflight
    expected = {(o.challenge_id, o.client_order_id): o for o in orders}
    expected[(inflight_id, "in-flight")] = Intended(inflight_id, "in-flight", "in-flight", "buy", 0.0,
                                                    inflight.get("acked_at"), inflight["answer"][1])
    ids = [*load_ids, inflight_id]
    rows = sql(lab.pg_url, "SELECT id, challenge_id, client_order_id, side, qty, filled_avg_price, realized_pl "
               "FROM challenges_order WHERE challenge_id = ANY(%s)", ids)
    stored = {(r[1], r[2]): r for r in rows}
    assert len(stored) == len(rows) and set(stored) == set(expected), "an order is missing, extra or stored twice"
    for (cid, coid), o in expected.items():  # the stored row is the one acknowledged, unchanged
        row = stored[(cid, coid)]
        assert (row[0], row[3], row[5], row[6]) == (
            o.answer["id"], o.side, Decimal(o.answer["filled_avg_price"]), Decimal(o.answer["realized_pl"])
        ), (o, row)
    audited = dict(sql(lab.pg_url, "SELECT object_id, count(*) FROM common_auditevent WHERE action = 'order.filled' "
                       "AND object_id = ANY(%s) GROUP BY object_id", [str(r[0]) for r in rows]))
    assert audited == {str(r[0]): 1 for r in rows}, "a fill without its audit event, or an event twice"
    ledger = {r[0]: (r[1], r[2]) for r in sql(
        lab.pg_url, "SELECT order_id, count(*), sum(amount) FROM challenges_ledgerentry "
        "WHERE challenge_id = ANY(%s) GROUP BY order_id", ids)}
    assert ledger == {r[0]: (1, r[6]) for r in rows if r[6] != 0}, "a fill without its ledger entry, or one twice"
    assert len(ledger) > 10, "no realized profit or loss: the ledger check proved nothing"
    for cid, starting, balance, ledger_sum, position in sql(
        lab.pg_url,
        "SELECT c.id, c.starting_balance, c.balance, "
        "(SELECT COALESCE(SUM(amount), 0) FROM challenges_ledgerentry l WHERE l.challenge_id = c.id), "
        "(SELECT COALESCE(SUM(p.qty), 0) FROM challenges_position p WHERE p.challenge_id = c.id) "
        "FROM challenges_challenge c WHERE c.id = ANY(%s)", ids,
    ):
        assert balance == starting + ledger_sum, cid
        net = sum(Decimal(r[4]) * (1 if r[3] == "buy" else -1) for r in rows if r[1] == cid)
        assert position == net, (cid, position, net)
    keys = dict(sql(lab.pg_url, "SELECT key, status_code FROM common_idempotencyrecord"))
    assert all(keys.get(o.key) == 201 for o in [*orders, expected[(inflight_id, "in-flight")]]), "a key's record is missing"
    assert not _backends_of(lab.pg_url, data.ns_addr, "state LIKE 'idle in transaction%%'"), "A left a transaction open"

    # --- No silent overwrite: the stale writer lost, visibly ---
    assert answer_y.status_code == 201 and answer_y.headers["ETag"] == '"2"', answer_y.text
    assert not (isinstance(writer_x["first"][0], int) and writer_x["first"][0] < 300), writer_x
    assert final_x[0] == 409 and json.loads(final_x[1])["error"]["code"] == "stale_version", final_x
    assert sql(lab.pg_url, "SELECT o.client_order_id, c.version FROM challenges_order o JOIN challenges_challenge c "
               "ON c.id = o.challenge_id WHERE c.id = %s", conflict_id) == [("writer-y", 2)]
    conflicts = sql(lab.pg_url, "SELECT id, expected_version, actual_version, status, attempted_change "
                    "FROM common_conflict WHERE object_type = 'challenges.challenge' AND object_id = %s",
                    str(conflict_id))
    assert [(c[1], c[2], c[3], c[4]["client_order_id"]) for c in conflicts] == [(1, 2, "open", "writer-x")]
    assert sql(lab.pg_url, "SELECT count(*) FROM common_auditevent WHERE action = 'conflict.recorded' "
               "AND object_id = %s", str(conflicts[0][0]))[0][0] == 1

    # --- Availability: A says it is not ready, nginx routes around it, A comes back ---
    assert not probe_timeouts, f"A's readiness hung instead of failing: {probe_timeouts[:3]}"
    assert ready_failed_after is not None and ready_failed_after <= READY_FAILS_WITHIN, during[:6]
    assert all(a[2] != 200 for a in during), "A said ready while cut from its database: was it cut?"
    assert all("Database" in a[3] for a in during if isinstance(a[2], int)), during[:3]
    assert inflight["acked_at"] - cut <= IN_FLIGHT_PLACED_WITHIN, inflight["attempts"]
    assert routed_around_after is not None and routed_around_after <= ROUTED_AROUND_WITHIN, (before, per_second)
    assert not stalled, [(o.client_order_id, [(round(a.start - cut, 2), round(a.end - cut, 2), a.outcome)
                                              for a in traffic.attempts if a.what == o.client_order_id]) for o in stalled]
    assert not late_get_errors, late_get_errors[:5]
    assert ready_again_after is not None and ready_again_after <= RECOVERS_WITHIN
    # nginx skips a failed replica for fail_timeout, then gives it live traffic again.
    assert nginx_back_to_a_after is not None and nginx_back_to_a_after <= NGINX_FAIL_TIMEOUT + 2.0
    assert lab.a.popen.poll() is None and lab.b.popen.poll() is None


def _backends_of(pg_url: str, client_addr: str, condition: str) -> list[tuple]:
    """PostgreSQL backends serving a client address, in a given state."""
    return sql(pg_url, f"SELECT pid, state, wait_event_type FROM pg_stat_activity WHERE client_addr = %s "
               f"AND ({condition})", client_addr)


# --- The worker cut from Redis, then from Redis and PostgreSQL, mid-run ---------------------------------

SWEEP_RESULT = re.compile(r"risk\.tasks\.risk_sweep\[[^\]]+\] succeeded in [\d.]+s: (?:\{'tick': (\d+)|(None))")
WORKER_CUT_SECONDS = 12.0


def test_worker_cut_from_its_data_resumes_by_itself_and_runs_no_sweep_twice(lab):
    breach_id = lab.seeded["challenges"][6]
    pg_link, redis_link = lab.w_ns.links["pg"], lab.w_ns.links["redis"]
    var = Path(lab.var_dir) / "worker-test"
    var.mkdir()
    sweep = {"RISK_SWEEP_SECONDS": "1", "MARKET_TICK_SECONDS": "1"}
    env_w = {**lab.env_w, **sweep, "LOG_LEVEL": "INFO", "WORKER_HEARTBEAT_FILE": str(var / "heartbeat")}
    env_beat = {**lab.env_host, **sweep}
    staff = httpx.Client(base_url=lab.b_url, headers=lab.auth(staff=True), timeout=15)
    trader = httpx.Client(base_url=lab.b_url, headers=lab.auth(), timeout=15)
    # Long 100 AAPL; a fall of 40 loses 4000, past the Elite plan's daily limit (2500).
    price = Decimal(staff.get("/api/v1/market/prices/AAPL").json()["price"])
    opened = trader.post(f"/api/v1/challenges/{breach_id}/orders",
                         json={"symbol": "AAPL", "side": "buy", "qty": "100", "client_order_id": "to-breach"})
    assert opened.status_code == 201, opened.text

    def status() -> str:
        return sql(lab.pg_url, "SELECT status FROM challenges_challenge WHERE id = %s", breach_id)[0][0]

    procs: list[Proc] = []
    figures: dict[str, float | int] = {}
    try:
        procs.append(celery("beat", env_beat, "-s", str(var / "beat-schedule")).start())
        worker = celery("worker", env_w, "--concurrency=2", "--pool=prefork", "-n", "partition@%h",
                        "--without-gossip", "--without-mingle", "--without-heartbeat", netns=NS_W).start()
        procs.append(worker)

        def heartbeat() -> float:
            rows = sql(lab.pg_url, "SELECT beat_at FROM risk_workerheartbeat WHERE pid = %s", worker.popen.pid)
            return rows[0][0].timestamp() if rows else 0.0

        def recovered(after: float, name: str) -> None:
            """Wait for a heartbeat and a finished sweep newer than `after`; record how long each took."""
            wait_for(lambda: heartbeat() > after, WORKER_RECOVERS_WITHIN + 20, interval=0.1,
                     what=f"a fresh heartbeat {name}")
            figures[f"heartbeat fresh {name}"] = heartbeat() - after
            wait_for(lambda: _finished_sweeps_since(lab.pg_url, after), WORKER_RECOVERS_WITHIN + 20, interval=0.1,
                     what=f"a sweep {name}")
            figures[f"a sweep finished {name}"] = _finished_sweeps_since(lab.pg_url, after)[0][2].timestamp() - after

        started = time.time()
        wait_for(lambda: heartbeat() > 0, 60, interval=0.2, what="the worker's first heartbeat")
        wait_for(lambda: len(_finished_sweeps_since(lab.pg_url, started)) >= 3, 30, interval=0.2,
                 what="three sweeps before the first cut")

        # 1. Redis alone: the broker is gone, the database is not.
        cut = time.time()
        redis_link.cut()
        try:
            time.sleep(WORKER_CUT_SECONDS)
            figures["sweeps during the Redis cut"] = len(_finished_sweeps_since(lab.pg_url, cut + 1))
        finally:
            redis_link.heal()
        heal = time.time()
        recovered(heal, "after the Redis cut")

        # 2. Redis and PostgreSQL: the worker's host is off the network. The market moves
        # meanwhile: the challenge is in breach, and only the worker can see it.
        time.sleep(2)
        cut = time.time()
        redis_link.cut()
        pg_link.cut()
        try:
            moved = staff.put("/api/v1/market/prices/AAPL", json={"price": str(price - 40)})
            assert moved.status_code == 200, moved.text
            time.sleep(WORKER_CUT_SECONDS)
            beat_during, sweeps_during, status_during = heartbeat(), _finished_sweeps_since(lab.pg_url, cut), status()
            # What the worker left open in PostgreSQL: the server cannot tell it is gone.
            figures["worker transactions open in PostgreSQL at the heal"] = len(
                _backends_of(lab.pg_url, pg_link.ns_addr, "state LIKE 'idle in transaction%%' OR wait_event_type = 'Lock'"))
        finally:
            pg_link.heal()
            redis_link.heal()
        heal = time.time()
        recovered(heal, "after the full cut")
        wait_for(lambda: status() == "failed", WORKER_RECOVERS_WITHIN, interval=0.1, what="the breach to be acted on")
        figures["breach acted on after the full cut"] = sql(
            lab.pg_url, "SELECT extract(epoch FROM created_at) - %s FROM common_auditevent "
            "WHERE action = 'challenge.failed' AND object_id = %s", heal, str(breach_id))[0][0]
        time.sleep(4)  # whatever beat queued during the cuts is delivered by now
        worker_survived = worker.popen.poll() is None
    finally:
        for proc in procs:
            proc.kill()
        staff.close()
        trader.close()

    results = SWEEP_RESULT.findall(worker.log_path.read_text(errors="replace"))
    ran = [int(tick) for tick, _ in results if tick]
    refused = sum(1 for _, none in results if none)
    ticks = sql(lab.pg_url, "SELECT tick, finished_at FROM risk_sweeptick")
    print(
        f"\nworker on its own host, cut for {WORKER_CUT_SECONDS:g}s from Redis, then from Redis and PostgreSQL:\n  "
        + "\n  ".join(f"{k} {v:.2f}s" if isinstance(v, float) else f"{k}: {v}" for k, v in figures.items())
        + f"\n  sweep deliveries that ran: {len(ran)}; refused (tick already run or running): {refused};"
        f" sweep rows: {len(ticks)}"
    )

    # The full cut was real: no heartbeat, no sweep and no evaluation reached the database.
    # (A heartbeat written as the cut fell may still land: it beats every 5 s.)
    assert 0 < beat_during <= cut + 1, (beat_during, cut)
    assert not sweeps_during, sweeps_during
    assert status_during == "active"
    # Back by itself, within a bounded time, after each cut.
    slow = {k: v for k, v in figures.items() if "after" in k and v > WORKER_RECOVERS_WITHIN}
    assert not slow, slow
    assert worker_survived, "the worker died instead of riding out the partition"
    # No sweep tick ran twice: the deliveries beat queued during the cuts were refused,
    # each tick a delivery ran is one finished row, and no tick has two rows.
    assert refused > 0, "no duplicate delivery was offered: the test proved nothing about ticks"
    assert len(ran) == len(set(ran)), sorted(ran)
    assert len(ticks) == len({t for t, _ in ticks})
    assert set(ran) <= {t for t, finished in ticks if finished is not None}
    # The breach was acted on exactly once: one breach, one closing fill, one ledger entry.
    assert sql(lab.pg_url, "SELECT count(*) FROM challenges_breach WHERE challenge_id = %s", breach_id)[0][0] == 1
    closes = sql(lab.pg_url, "SELECT realized_pl FROM challenges_order WHERE challenge_id = %s AND reason = 'breach'",
                 breach_id)
    assert len(closes) == 1 and closes[0][0] < Decimal("-2500"), closes
    assert sql(lab.pg_url, "SELECT count(*) FROM challenges_position WHERE challenge_id = %s", breach_id)[0][0] == 0
    starting, balance, ledger = sql(
        lab.pg_url,
        "SELECT c.starting_balance, c.balance, (SELECT array_agg(amount) FROM challenges_ledgerentry l "
        "WHERE l.challenge_id = c.id) FROM challenges_challenge c WHERE c.id = %s", breach_id,
    )[0]
    assert ledger == [closes[0][0]] and balance == starting + closes[0][0], (starting, balance, ledger)
    assert sql(lab.pg_url, "SELECT count(*) FROM common_auditevent WHERE action = 'challenge.failed' "
               "AND object_id = %s", str(breach_id))[0][0] == 1


def _finished_sweeps_since(pg_url: str, epoch: float) -> list[tuple]:
    """Finished sweeps started after an instant, oldest first: (tick, started_at, finished_at)."""
    return sql(pg_url, "SELECT tick, started_at, finished_at FROM risk_sweeptick "
               "WHERE started_at > to_timestamp(%s) AND finished_at IS NOT NULL ORDER BY started_at", epoch)
