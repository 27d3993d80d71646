"""Risk monitoring without the broker: the Celery broker (Redis) is killed under a running
stack, and rules are still evaluated on equity.

Real processes on a private PostgreSQL and a private Redis: Celery beat and two workers
(a prefork one, whose watchdogs live in its child, and a thread-pool one, whose watchdogs
live in its main process). A challenge holds a position; Redis is killed, so beat's
tasks stop arriving; then a staff price move pushes the challenge's equity through its
daily floor. Asserted, from the rows:
- the market kept ticking with the broker down, and no instrument was ever ticked twice
  in one interval, whether beat's task or either worker's watchdog ran it;
- the risk sweep kept running from the database (by a watchdog), and the challenge was
  failed within two sweep intervals of the price move;
- the breach is recorded at the price that broke the floor, with the equity at that
  price, at an instant after the price was set; the position was closed at that price.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from tests.support.processes import PrivatePostgres, app_env, celery, manage, private_redis, wait_for
from tests.support.stack import seed_trader, sql

pytestmark = pytest.mark.slow

PG_PORT = 18201
REDIS_PORT = 18279
SWEEP = timedelta(seconds=1)  # RISK_SWEEP_SECONDS
TICK = timedelta(milliseconds=500)  # MARKET_TICK_SECONDS
SYMBOL = "BRKDOWN"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# Elite: 50,000 starting balance, daily loss limit 5 % = 2,500, so the floor is 47,500.
# 10 units bought at 1,000.00; at 749.50 they lose 2,505.00: equity 47,495.00, 5.00 below.
OPEN_POSITION = r"""
from decimal import Decimal
from django.contrib.auth import get_user_model
from challenges.services import order_place
from tests.risk.factories import flat_instrument
flat_instrument("SYMBOL", price=Decimal("1000.00"))  # volatility 0: only staff move it
trader = get_user_model().objects.get(username="loadtrader")
result = order_place(challenge_id=CHALLENGE, trader=trader, symbol="SYMBOL", side="buy", qty=Decimal("10"),
                     client_order_id="broker-down-open")
print("OPENED", result.order.filled_avg_price)
"""

MOVE_PRICE = r"""
from decimal import Decimal
from django.contrib.auth import get_user_model
from challenges.market import market_price_set
tick = market_price_set(symbol="SYMBOL", price=Decimal("749.50"),
                        actor=get_user_model().objects.get(username="loadstaff"))
print("PRICE", tick.pk)
"""


def slot_of(at: datetime, interval: timedelta) -> int:
    return (at - EPOCH) // interval


def leases(url: str) -> dict[str, tuple[str, datetime | None]]:
    rows = sql(url, "SELECT name, last_runner, last_run_at FROM common_periodiclease")
    return {name: (runner, run_at) for name, runner, run_at in rows}


def driven_by(url: str, prefix: str, *, since: datetime | None = None, jobs=("market-tick", "risk-sweep")) -> bool:
    current = leases(url)
    return all(
        name in current and current[name][0].startswith(prefix) and (since is None or current[name][1] > since)
        for name in jobs
    )


def test_the_market_ticks_and_the_rules_bite_with_the_broker_down():
    tmp = Path(tempfile.mkdtemp(prefix="ts-broker-down-"))
    pg = PrivatePostgres(port=PG_PORT)
    url = pg.url
    try:
        pg.init()
        run = run_the_outage(url, tmp)
        check_the_rows(url, run)
    finally:
        pg.destroy()
        shutil.rmtree(tmp, ignore_errors=True)


def run_the_outage(url: str, tmp: Path) -> dict:
    """Start beat and two workers, kill the broker, move the price; returns what the
    checks need. Every process is killed on the way out, whatever happened."""
    procs = []
    try:
        with private_redis(REDIS_PORT) as (redis_url, redis):
            env = app_env(
                database_url=url, redis_url=redis_url,
                RISK_SWEEP_SECONDS=str(SWEEP.total_seconds()), MARKET_TICK_SECONDS=str(TICK.total_seconds()),
                TRADESENSE_VAR_DIR=str(tmp / "var"), WORKER_HEARTBEAT_FILE=str(tmp / "heartbeat"),
            )
            seeded = seed_trader(env, n_challenges=1)
            challenge = seeded["challenges"][0]
            script = OPEN_POSITION.replace("SYMBOL", SYMBOL).replace("CHALLENGE", str(challenge))
            opened = manage(env, "shell", "-c", script)
            assert "OPENED 1000.00" in opened, opened
            ((instrument,),) = sql(url, "SELECT id FROM challenges_instrument WHERE symbol = %s", SYMBOL)

            started_at = datetime.now(UTC)
            common = ("--without-gossip", "--without-mingle", "--without-heartbeat")
            procs.append(celery("beat", env, f"--schedule={tmp / 'beat-schedule'}").start())
            procs.append(celery("worker", env, "--pool=prefork", "--concurrency=1", "-n", "risk-a@%h", *common).start())
            procs.append(celery("worker", env, "--pool=threads", "--concurrency=2", "-n", "risk-b@%h", *common).start())

            # Broker up: beat's tasks drive the market tick and the sweep (a watchdog that
            # ran the first slots before beat's first task arrived hands them back).
            wait_for(lambda: driven_by(url, "task:"), 45, interval=0.2, what="beat's tasks to drive the jobs")
            assert challenge_status(url, challenge) == "active"

            # The broker dies: nothing reaches the workers through it any more.
            redis.kill()
            broker_down_at = datetime.now(UTC)
            wait_for(lambda: driven_by(url, "watchdog:", since=broker_down_at), 10, interval=0.05,
                     what="the watchdogs to take over")

            # A price move alone takes the challenge's equity through its daily floor.
            manage(env, "shell", "-c", MOVE_PRICE.replace("SYMBOL", SYMBOL))
            wait_for(lambda: challenge_status(url, challenge) == "failed", 15, interval=0.05,
                     what="the challenge to fail")
            time.sleep(3)  # keep watching the market with the broker still down
            ended_at = datetime.now(UTC)
            dead = [f"{p.name} #{i} (exit {p.popen.returncode})" for i, p in enumerate(procs) if p.popen.poll() is not None]
            assert not dead, f"died during the outage: {dead}"
            worker_logs = "".join(p.log_path.read_text(errors="replace") for p in procs[1:])
    except BaseException:
        for proc in procs:
            print(f"--- {proc.name} log ---\n{proc.logs()}")
        raise
    finally:
        for proc in procs:
            proc.kill()
    return {
        "challenge": challenge, "instrument": instrument, "started_at": started_at,
        "broker_down_at": broker_down_at, "ended_at": ended_at, "worker_logs": worker_logs,
    }


def challenge_status(url: str, challenge: int) -> str:
    return sql(url, "SELECT status FROM challenges_challenge WHERE id = %s", challenge)[0][0]


def check_the_rows(url: str, run: dict) -> None:
    challenge, instrument, broker_down_at = run["challenge"], run["instrument"], run["broker_down_at"]
    outage_seconds = (run["ended_at"] - broker_down_at).total_seconds()

    # --- The breach: at the price that broke the floor, within two sweep intervals. ------
    ((price_at, price),) = sql(
        url, "SELECT at, price FROM challenges_pricetick WHERE instrument_id = %s AND source = 'staff'", instrument
    )
    assert price == Decimal("749.50") and price_at > broker_down_at
    ((status, balance, equity, ended),) = sql(
        url, "SELECT status, balance, equity, ended_at FROM challenges_challenge WHERE id = %s", challenge
    )
    ((rule, threshold, observed, prices, breach_at, detected_by, inputs),) = sql(
        url,
        "SELECT rule, threshold, observed, prices, at, detected_by, inputs FROM challenges_breach WHERE challenge_id = %s",
        challenge,
    )
    assert (status, rule, detected_by) == ("failed", "max_daily_loss", "sweep")
    assert (threshold, observed) == (Decimal("47500.00"), Decimal("47495.00"))
    assert {symbol: Decimal(p) for symbol, p in prices.items()} == {SYMBOL: Decimal("749.50")}
    assert Decimal(inputs["equity"]) == Decimal("47495.00")
    assert datetime.fromisoformat(inputs["now"]) == breach_at == ended
    # Observed after the price was set, and no later than two sweep intervals after it.
    assert price_at <= breach_at <= price_at + 2 * SWEEP, (price_at, breach_at)
    # The position was closed at the breach price, at the breach instant: the loss is realized exactly.
    assert (balance, equity) == (Decimal("47495.00"), Decimal("47495.00"))
    assert sql(
        url, "SELECT filled_avg_price, filled_at FROM challenges_order WHERE challenge_id = %s AND reason = 'breach'",
        challenge,
    ) == [(Decimal("749.50"), breach_at)]
    assert not sql(url, "SELECT 1 FROM challenges_position WHERE challenge_id = %s", challenge)
    assert sql(
        url, "SELECT count(*) FROM common_auditevent WHERE action = 'challenge.failed' AND object_id = %s", str(challenge)
    ) == [(1,)]
    # The sweep that failed it ran from the database, in a worker's watchdog.
    ((sweep_runner, sweep_started),) = sql(url, "SELECT worker, started_at FROM risk_sweeptick WHERE failed > 0")
    assert sweep_runner.startswith("watchdog:") and sweep_started > broker_down_at

    # --- The sweep kept its cadence with the broker down. ----------------------------------
    outage_sweeps = sql(url, "SELECT tick, worker FROM risk_sweeptick WHERE started_at > %s ORDER BY tick", broker_down_at)
    # (The first may be beat's last task, already under way when the broker died.)
    assert all(runner.startswith("watchdog:") for _, runner in outage_sweeps[1:])
    assert len(outage_sweeps) >= outage_seconds / SWEEP.total_seconds() - 3, (len(outage_sweeps), outage_seconds)

    # --- The market kept ticking, and never twice in one interval. -------------------------
    per_instrument: dict[int, list[datetime]] = {}
    for instrument_id, at in sql(
        url, "SELECT instrument_id, at FROM challenges_pricetick WHERE source = 'sim' AND at >= %s ORDER BY at",
        run["started_at"],
    ):
        per_instrument.setdefault(instrument_id, []).append(at)
    assert instrument in per_instrument and len(per_instrument) >= 9  # the catalogue's 8 and ours
    for instrument_id, stamps in per_instrument.items():
        slots = [slot_of(at, TICK) for at in stamps]
        assert len(slots) == len(set(slots)), f"instrument {instrument_id} was ticked twice in one interval"
    ours = per_instrument[instrument]
    during = [at for at in ours if at > broker_down_at]
    intervals = outage_seconds / TICK.total_seconds()
    # The takeover costs 1.5 intervals; a slot missed under load is skipped, never doubled.
    assert len(during) >= 0.7 * intervals - 2, (len(during), intervals)
    gaps = [(b - a).total_seconds() for a, b in zip(ours, ours[1:], strict=False)]
    assert max(gaps) <= 4 * TICK.total_seconds(), max(gaps)
    assert "running it from the database" in run["worker_logs"]
    print(
        f"\nbroker down: breach observed {(breach_at - price_at).total_seconds():.2f} s after the price move; "
        f"{len(during)} ticks of {SYMBOL} in {outage_seconds:.1f} s ({intervals:.0f} intervals), largest gap "
        f"{max(gaps):.2f} s; {len(outage_sweeps)} sweeps, by {sorted({r for _, r in outage_sweeps})}"
    )
