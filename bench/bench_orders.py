"""Benchmark (not a test): market orders over HTTP against the real web server.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/ts_bench_orders .venv/bin/python bench/bench_orders.py
    (options: --servers gunicorn-sync:4,uvicorn:2 --conns 8,32 --duration 15 --challenges 1000)

In a database of its own (ts_bench_orders: the name in DATABASE_URL is replaced unless
it already starts with ts_bench, so `make bench` cannot touch development or test data;
it is dropped and recreated on every run), it seeds 1,000 traders with one active
challenge each, starts the web server on 127.0.0.1:18050 (production settings: DEBUG
off) and a market ticker, then drives POST /challenges/{id}/orders (EURUSD 0.01 lot,
buy and sell alternating per challenge, each with an Idempotency-Key and a
client_order_id, as a careful bot sends them) from an asyncio load generator with N
keep-alive connections for a bounded time, after a short warm-up. It prints orders/s and
p50/p95/p99 latency per server and connection count, then measures the database's own
ceiling for the equivalent transaction with pgbench (lock the challenge row, insert the
order, upsert the position, update balance and version, insert ledger and audit rows)
at the same connection counts, and prints our orders/s as a fraction of it.

The load generator shares the machine's cores with the server and PostgreSQL; the
figures are for comparing setups on one machine, not absolute capacity.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import urlparse, urlunparse

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
BENCH_DB = "ts_bench_orders"
PORT = 18050  # the trading engineer's range: 18000-18099

SEED = r"""
import json
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import make_password
from accounts.services import token_issue
from challenges.management.commands.seed_demo import seed_plans
from challenges.models import Plan
from challenges.services import challenge_activate
seed_plans()
User = get_user_model()
unusable = make_password(None)
users = User.objects.bulk_create([User(username=f"bench{i:05d}", password=unusable) for i in range(N)])
users = list(User.objects.filter(username__startswith="bench").order_by("id"))
tokens = [token_issue(user=u) for u in users]
plan = Plan.objects.get(slug="elite")
out = []
for user, token in zip(users, tokens):
    challenge = challenge_activate(trader=user, plan=plan, source_ref=f"bench:{user.pk}")
    out.append([challenge.pk, token])
print("SEED" + json.dumps(out))
"""

TICKER = r"""
import time
from challenges.market import market_tick
end = time.monotonic() + SECONDS
while time.monotonic() < end:
    market_tick()
    time.sleep(1.0)
"""

PGBENCH_SCRIPT = r"""
\set cid random(:minid, :maxid)
BEGIN;
SELECT id, version, balance, status, rules FROM challenges_challenge WHERE id = :cid FOR UPDATE;
SELECT id, qty, avg_entry_price FROM challenges_position WHERE challenge_id = :cid;
INSERT INTO challenges_order (challenge_id, client_order_id, instrument_id, side, qty, type, status, filled_qty,
    filled_avg_price, realized_pl, reason, filled_at, created_at)
  VALUES (:cid, md5(random()::text || clock_timestamp()::text), :iid, 'buy', 0.01, 'market', 'filled', 0.01,
    1.085, 0, '', now(), now());
INSERT INTO challenges_position (challenge_id, instrument_id, qty, avg_entry_price, opened_at, updated_at)
  VALUES (:cid, :iid, 0.01, 1.085, now(), now())
  ON CONFLICT (challenge_id, instrument_id) DO UPDATE SET qty = challenges_position.qty + 0.01, updated_at = now();
UPDATE challenges_challenge SET balance = balance + 0.01, equity = balance + 0.01, version = version + 1,
    last_trade_at = now(), updated_at = now() WHERE id = :cid;
INSERT INTO challenges_ledgerentry (challenge_id, kind, amount, balance_after, memo, created_at)
  VALUES (:cid, 'realized_pl', 0.01, 0, 'pgbench', now());
INSERT INTO common_auditevent (created_at, actor_label, action, object_type, object_id, before, after, reason)
  VALUES (now(), 'bench', 'order.filled', 'challenges.order', '0', '{}', '{"qty": "0.01"}', 'pgbench');
COMMIT;
"""


# --- Database and processes -----------------------------------------------------------------


def bench_database_url() -> str:
    url = os.environ.get("DATABASE_URL") or f"postgres://postgres@127.0.0.1:5432/{BENCH_DB}"
    parsed = urlparse(url)
    if parsed.scheme not in {"postgres", "postgresql"}:
        sys.exit("bench_orders needs PostgreSQL (DATABASE_URL=postgres://...).")
    if not parsed.path.strip("/").startswith("ts_bench"):
        parsed = parsed._replace(path=f"/{BENCH_DB}")
    return urlunparse(parsed)


def recreate_database(url: str) -> None:
    import psycopg

    parsed = urlparse(url)
    name = parsed.path.strip("/")
    with psycopg.connect(urlunparse(parsed._replace(path="/postgres")), autocommit=True) as conn:
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", [name])
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')


def server_env(url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    env.update(
        DATABASE_URL=url,
        DEBUG="0",  # production settings: no query log, no debug pages
        SECRET_KEY=secrets.token_urlsafe(48),
        PAYMENT_PROCESSOR_SECRET=secrets.token_urlsafe(48),
        ALLOWED_HOSTS="127.0.0.1,localhost",
        SECURE_SSL_REDIRECT="0",
        LOG_LEVEL="WARNING",
        PYTHONUNBUFFERED="1",
    )
    env.setdefault("REDIS_URL", "redis://127.0.0.1:6379/1")
    env.update(extra)
    return env


def manage(env: dict[str, str], *args: str, timeout: float = 600) -> str:
    result = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )
    if result.returncode != 0:
        sys.exit(f"manage.py {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result.stdout


def port_open(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
        return True
    return False


class Process:
    """A child in its own process group; stop() kills the whole group."""

    def __init__(self, argv: list[str], env: dict[str, str], name: str):
        self.log = tempfile.NamedTemporaryFile(prefix=f"bench-{name}-", suffix=".log", delete=False)
        self.popen = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                      start_new_session=True)
        self.name = name

    def stop(self) -> None:
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(10)

    def tail(self) -> str:
        return Path(self.log.name).read_text(errors="replace")[-3000:]


def server_argv(kind: str, workers: int) -> list[str]:
    if kind == "uvicorn":
        return [str(VENV_BIN / "uvicorn"), "tradesense.asgi:application", "--host", "127.0.0.1", "--port", str(PORT),
                "--workers", str(workers), "--lifespan", "off", "--no-access-log", "--log-level", "warning"]
    if kind == "floor":  # bench/floor_settings.py under the production setup, gunicorn sync
        return server_argv("gunicorn-sync", workers)
    if kind.startswith("gunicorn"):
        # gunicorn-gthread keeps connections alive with 4 threads per worker;
        # gunicorn-gthreadN with N threads (gthread1: one request at a time per worker,
        # as sync, but without a new connection per request).
        worker_class, _, threads = kind.removeprefix("gunicorn-").partition("gthread")
        worker_class = "gthread" if kind.startswith("gunicorn-gthread") else worker_class
        argv = [str(VENV_BIN / "gunicorn"), "tradesense.wsgi:application", "--bind", f"127.0.0.1:{PORT}",
                "--workers", str(workers), "--worker-class", worker_class, "--log-level", "warning",
                "--backlog", "256"]
        if worker_class == "gthread":
            argv += ["--threads", threads or "4", "--keep-alive", "5"]
        return argv
    raise SystemExit(f"unknown server {kind!r} (uvicorn, gunicorn-sync, gunicorn-gthread, gunicorn-gthreadN, floor)")


# --- CPU accounting (where an order's CPU goes: web, PostgreSQL, load generator) -----------------

_TICKS = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime + stime


def group_cpu(pgid: int) -> float:
    total = 0.0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if os.getpgid(int(entry.name)) == pgid:
                    total += _cpu_seconds(int(entry.name))
    return total


def backend_pids(url: str) -> set[int]:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchall()
    return {r[0] for r in rows}


# --- Load generator -------------------------------------------------------------------------------


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:] if ":" in line)}
    if "content-length" in headers:
        await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding") == "chunked":
        while True:
            size = int((await reader.readline()).strip(), 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    return status, headers.get("connection", "").lower() == "close"


async def connection_loop(accounts, sides, stop_at: float, measure_from: float, latencies, codes) -> None:
    reader = writer = None
    while time.perf_counter() < stop_at:
        if writer is None:
            reader, writer = await asyncio.open_connection("127.0.0.1", PORT)
        challenge_id, token = random.choice(accounts)
        side = "sell" if sides.get(challenge_id) == "buy" else "buy"
        sides[challenge_id] = side
        body = json.dumps(
            {"symbol": "EURUSD", "side": side, "qty": "0.01", "type": "market", "client_order_id": uuid.uuid4().hex}
        ).encode()
        request = (
            f"POST /api/v1/challenges/{challenge_id}/orders HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Token {token}\r\nContent-Type: application/json\r\n"
            f"Idempotency-Key: {uuid.uuid4().hex}\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        started = time.perf_counter()
        try:
            writer.write(request)
            await writer.drain()
            status, close = await read_response(reader)
        except (OSError, asyncio.IncompleteReadError):
            status, close = 0, True
        finished = time.perf_counter()
        if started >= measure_from:
            latencies.append(finished - started)
            codes[status] = codes.get(status, 0) + 1
        if close:
            writer.close()
            writer = None
    if writer is not None:
        writer.close()


async def drive(accounts, conns: int, warmup: float, duration: float) -> dict:
    latencies: list[float] = []
    codes: dict[int, int] = {}
    sides: dict[int, str] = {}
    start = time.perf_counter()
    measure_from, stop_at = start + warmup, start + warmup + duration
    await asyncio.gather(
        *(connection_loop(accounts, sides, stop_at, measure_from, latencies, codes) for _ in range(conns))
    )
    ok = codes.get(201, 0)
    qs = statistics.quantiles(latencies, n=100) if len(latencies) > 100 else [float("nan")] * 99
    return {
        "conns": conns,
        "orders_per_s": ok / duration,
        "p50_ms": qs[49] * 1000,
        "p95_ms": qs[94] * 1000,
        "p99_ms": qs[98] * 1000,
        "requests": len(latencies),
        "codes": {str(k): v for k, v in sorted(codes.items())},
    }


# --- pgbench ----------------------------------------------------------------------------------------


def pgbench(url: str, conns: int, duration: int) -> dict:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        low, high = conn.execute("SELECT min(id), max(id) FROM challenges_challenge").fetchone()
        iid = conn.execute("SELECT id FROM challenges_instrument WHERE symbol = 'EURUSD'").fetchone()[0]
    parsed = urlparse(url)
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as script:
        script.write(PGBENCH_SCRIPT)
    argv = [
        "pgbench", "-n", "-M", "prepared", "-f", script.name, "-c", str(conns), "-j", "2", "-T", str(duration),
        "-D", f"minid={low}", "-D", f"maxid={high}", "-D", f"iid={iid}",
        "-h", parsed.hostname or "127.0.0.1", "-p", str(parsed.port or 5432), "-U", parsed.username or "postgres",
        parsed.path.strip("/"),
    ]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60)
    os.unlink(script.name)
    match = re.search(r"tps = ([\d.]+) \(without initial connection time\)", out.stdout)
    latency = re.search(r"latency average = ([\d.]+) ms", out.stdout)
    if not match:
        sys.exit(f"pgbench failed:\n{out.stdout}\n{out.stderr}")
    return {"conns": conns, "tps": float(match.group(1)), "latency_ms": float(latency.group(1)) if latency else None}


# --- Main ---------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--servers", default="gunicorn-sync:4,floor:4",
                        help="kind:workers, comma-separated; floor is Django serving pgbench's transaction alone "
                             "(bench/floor_settings.py), the most any Django order path could do here")
    parser.add_argument("--conns", default="8,32")
    parser.add_argument("--duration", type=float, default=15.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--challenges", type=int, default=1000)
    parser.add_argument("--skip-pgbench", action="store_true")
    parser.add_argument("--variant", default="", help="settings variants of bench/orders_settings.py, e.g. prepared")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    conn_levels = [int(c) for c in args.conns.split(",")]
    servers = [(s.split(":")[0], int(s.split(":")[1]) if ":" in s else 2) for s in args.servers.split(",")]
    url = bench_database_url()
    if port_open(PORT):
        sys.exit(f"port {PORT} is busy: is another bench running?")

    print(f"database {urlparse(url).path.strip('/')}: recreating, migrating, seeding {args.challenges} challenges ...")
    recreate_database(url)
    env = server_env(url)
    if args.variant:
        env.update(DJANGO_SETTINGS_MODULE="bench.orders_settings", BENCH_VARIANT=args.variant)
    manage(env, "migrate", "--noinput", "-v", "0")
    seeded = json.loads(
        next(line for line in manage(env, "shell", "-c", SEED.replace("N)", f"{args.challenges})")).splitlines()
             if line.startswith("SEED"))[4:]
    )
    accounts = [(int(cid), key) for cid, key in seeded]
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")

    cores = os.cpu_count()
    results = {"cores": cores, "runs": [], "pgbench": []}
    total_seconds = (args.warmup + args.duration) * len(conn_levels) * len(servers) + 30
    ticker = Process([sys.executable, "manage.py", "shell", "-c", TICKER.replace("SECONDS", str(total_seconds))],
                     env, "ticker")
    try:
        for kind, workers in servers:
            server_env_ = {**env, "DJANGO_SETTINGS_MODULE": "bench.floor_settings"} if kind == "floor" else env
            server = Process(server_argv(kind, workers), server_env_, kind)
            try:
                deadline = time.monotonic() + 30
                while not port_open(PORT):
                    if server.popen.poll() is not None or time.monotonic() > deadline:
                        sys.exit(f"{kind} did not start:\n{server.tail()}")
                    time.sleep(0.1)
                for conns in conn_levels:
                    load = os.getloadavg()[0]
                    pids_before = backend_pids(url)
                    cpu_before = (group_cpu(server.popen.pid), {p: _cpu_seconds(p) for p in pids_before},
                                  time.process_time())
                    run = asyncio.run(drive(accounts, conns, args.warmup, args.duration))
                    pids = pids_before | backend_pids(url)
                    orders = max(sum(run["codes"].values()), 1)
                    warm_share = args.duration / (args.warmup + args.duration)  # CPU counters include the warm-up
                    run["cpu_ms_per_request"] = {
                        "web": (group_cpu(server.popen.pid) - cpu_before[0]) * warm_share / orders * 1000,
                        "postgres": sum(_cpu_seconds(p) - cpu_before[1].get(p, 0.0) for p in pids)
                        * warm_share / orders * 1000,
                        "load_generator": (time.process_time() - cpu_before[2]) * warm_share / orders * 1000,
                    }
                    run.update(server=kind, workers=workers, variant=args.variant, loadavg_before=round(load, 2))
                    results["runs"].append(run)
                    print(
                        f"{kind + (('+' + args.variant) if args.variant else ''):>16}:{workers:<2} conns {conns:>3}: {run['orders_per_s']:8.1f} orders/s   "
                        f"p50 {run['p50_ms']:6.1f} ms  p95 {run['p95_ms']:6.1f} ms  p99 {run['p99_ms']:6.1f} ms   "
                        f"codes {run['codes']}  (load avg before: {load:.2f})\n{'':>23}CPU ms per request: "
                        + ", ".join(f"{k} {v:.1f}" for k, v in run["cpu_ms_per_request"].items()),
                        flush=True,
                    )
            finally:
                server.stop()
    finally:
        ticker.stop()

    if not args.skip_pgbench:
        # The servers' runs updated each challenge row thousands of times; pgbench gets
        # the tables as freshly vacuumed as the servers did.
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE")
        for conns in conn_levels:
            ceiling = pgbench(url, conns, int(args.duration))
            results["pgbench"].append(ceiling)
            print(f"{'pgbench':>16}    conns {conns:>3}: {ceiling['tps']:8.1f} tx/s      "
                  f"latency avg {ceiling['latency_ms']:.2f} ms  (the equivalent order transaction in SQL alone)")
        print()
        for run in results["runs"]:
            ceiling = next(p for p in results["pgbench"] if p["conns"] == run["conns"])
            run["fraction_of_ceiling"] = run["orders_per_s"] / ceiling["tps"]
            print(f"{run['server']}:{run['workers']} conns {run['conns']}: {run['fraction_of_ceiling']:.0%} of the "
                  f"database's ceiling ({run['orders_per_s']:.0f} / {ceiling['tps']:.0f})")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
