"""Writes of the risk engine: the periodic sweep, the daily reset, warnings, heartbeats,
rule presets. Tasks, the admin and commands call these; each owns its transactions.

The challenge itself is only ever changed through challenges.services (the row lock,
the version, the Breach row, the audit event and the live event live there); the one
exception is the sweep's bulk mark, see _bulk_mark.
"""

from __future__ import annotations

import logging
import time as monotonic_time
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from decimal import Decimal

from django.db import DatabaseError, IntegrityError, InterfaceError, OperationalError, connection, transaction
from django.db.models import F
from django.utils import timezone

from challenges.models import Challenge, Plan
from challenges.services import challenge_ensure_anchor, challenge_evaluate_locked
from risk import rules as risk_rules
from risk.models import RiskWarning, SweepTick, WorkerHeartbeat
from risk.presets import RULE_PRESETS
from risk.selectors import (
    ScreenRow,
    risk_challenges_missing_anchor,
    risk_reset_groups,
    risk_screen_batch,
    risk_warnings_recorded,
)
from tradesense.common.audit import audit_record
from tradesense.common.errors import InvalidInput
from tradesense.common.realtime import send_event_on_commit

logger = logging.getLogger(__name__)

SWEEP_BATCH_SIZE = 2000
SWEEP_DEADLINE_SECONDS = 20.0
LOCKED_PER_COMMIT = 20
RESET_BATCH_SIZE = 500
RESET_DEADLINE_SECONDS = 20.0
# A challenge whose last anchor is older than this gets anchors for this many days back
# only (older days are history nobody evaluates against; the newest is what matters).
RESET_MAX_CATCHUP_DAYS = 60
# Postgres advisory lock key of the sweep ("risk" in ASCII): one sweep at a time.
_SWEEP_LOCK_KEY = 0x7269736B

# Database failures abort a sweep (the next tick retries); anything else is one
# challenge's problem and is logged while the sweep goes on.
_FATAL = (OperationalError, InterfaceError)


# --- Heartbeat ----------------------------------------------------------------------------------------


def worker_heartbeat_record(*, worker: str, pid: int, started_at: datetime | None, now: datetime | None = None) -> None:
    """Upsert this worker's heartbeat row (one row per worker name: a restart reuses it)."""
    now = now or timezone.now()
    WorkerHeartbeat.objects.bulk_create(
        [WorkerHeartbeat(worker=worker[:200], pid=pid, started_at=started_at or now, beat_at=now)],
        update_conflicts=True,
        unique_fields=["worker"],
        update_fields=["pid", "started_at", "beat_at"],
    )


def risk_history_prune(*, now: datetime | None = None, keep: timedelta = timedelta(days=7)) -> tuple[int, int]:
    """Delete sweep ticks and heartbeats of workers gone for longer than `keep` (a tick
    is written every few seconds; container hostnames change on every restart)."""
    cutoff = (now or timezone.now()) - keep
    ticks, _ = SweepTick.objects.filter(started_at__lt=cutoff).delete()
    beats, _ = WorkerHeartbeat.objects.filter(beat_at__lt=cutoff).delete()
    return ticks, beats


# --- Presets --------------------------------------------------------------------------------------------


def plan_apply_rule_preset(*, plan: Plan, preset: str, actor=None, actor_label: str | None = None) -> Plan:
    """Set a plan's daily-reset convention from RULE_PRESETS, audited; bumps the plan's
    ruleset_version when anything changed (challenges already sold keep their snapshot)."""
    if preset not in RULE_PRESETS:
        raise InvalidInput(
            f"Unknown preset {preset!r}; choose one of {', '.join(sorted(RULE_PRESETS))}.",
            fields={"preset": ["Unknown preset."]},
        )
    values = RULE_PRESETS[preset]["rules"]
    with transaction.atomic():
        plan = Plan.objects.select_for_update().get(pk=plan.pk)
        before = {name: getattr(plan, name) for name in values}
        if before == values:
            return plan
        for name, value in values.items():
            setattr(plan, name, value)
        plan.ruleset_version += 1
        plan.save(update_fields=[*values, "ruleset_version", "updated_at"])
        audit_record(
            action="plan.rules_preset_applied",
            obj=plan,
            actor=actor,
            actor_label=actor_label,
            before={**before, "ruleset_version": plan.ruleset_version - 1},
            after={**values, "ruleset_version": plan.ruleset_version},
            reason=f"preset {preset}",
        )
    return plan


# --- Warnings -------------------------------------------------------------------------------------------


def risk_warnings_record(
    *, challenge: Challenge, verdict: risk_rules.Verdict, trading_day: date, detected_by: str
) -> list[RiskWarning]:
    """Record the verdict's warnings not yet sent for this limit, level and trading day,
    and send each new one as a `risk.warning` live event after commit.

    The caller holds the challenge row lock; the unique constraint is still what makes
    a second recording impossible (INSERT .. ON CONFLICT DO NOTHING RETURNING)."""
    floors = {
        risk_rules.RULE_MAX_DAILY_LOSS: verdict.daily_loss_floor,
        risk_rules.RULE_MAX_TOTAL_LOSS: verdict.max_loss_floor,
    }
    created: list[RiskWarning] = []
    table = RiskWarning._meta.db_table
    for warning in verdict.warnings:
        now = timezone.now()
        with connection.cursor() as cursor:
            cursor.execute(
                f"INSERT INTO {table} (challenge_id, rule, level, trading_day, used_pct, equity, floor, detected_by,"  # nosec B608
                " created_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (challenge_id, rule, level, trading_day) DO NOTHING RETURNING id",
                [
                    challenge.pk, warning.rule, warning.level, trading_day, min(warning.used_pct, Decimal("999.99")),
                    challenge.equity, floors[warning.rule], detected_by, now,
                ],
            )
            row = cursor.fetchone()
        if row is None:
            continue  # already sent today
        record = RiskWarning(
            pk=row[0], challenge=challenge, rule=warning.rule, level=warning.level, trading_day=trading_day,
            used_pct=warning.used_pct, equity=challenge.equity, floor=floors[warning.rule], detected_by=detected_by,
            created_at=now,
        )
        created.append(record)
    if not created:
        return created
    audit_record(
        action="risk.warning",
        obj=challenge,
        actor_label=f"system:risk-{detected_by}",
        before=None,
        after={"warnings": [{"rule": w.rule, "level": w.level, "used_pct": w.used_pct} for w in created],
               "equity": challenge.equity, "trading_day": trading_day},
        reason="loss limit use crossed a warning level",
    )
    # One frame per limit: the highest level newly crossed (a jump from 40 % to 85 % tells
    # the trader "80 %", not "50 %" and "80 %" at once).
    highest: dict[str, RiskWarning] = {}
    for record in created:
        if record.rule not in highest or record.level > highest[record.rule].level:
            highest[record.rule] = record
    for record in highest.values():
        send_event_on_commit(
            type="risk.warning",
            challenge=challenge.pk,
            version=challenge.version,
            data={
                "rule": record.rule,
                "level": record.level,
                "used_pct": str(record.used_pct),
                "equity": str(record.equity),
                "floor": str(record.floor),
                "trading_day": trading_day.isoformat(),
            },
        )
    return created


# --- The sweep --------------------------------------------------------------------------------------------


@dataclass
class SweepStats:
    evaluated: int = 0
    marked: int = 0
    locked: int = 0
    failed: int = 0
    passed: int = 0
    warnings: int = 0
    errors: int = 0
    skipped_locked: int = 0
    failed_ids: list[int] = field(default_factory=list)


class _DayCache:
    """Parsed rule sets and 'today' per reset convention, computed once per sweep."""

    def __init__(self, now: datetime):
        self.now = now
        self._rules: dict[str, risk_rules.RuleSet] = {}
        self._days: dict[tuple[str, time], date] = {}

    def rules(self, rules_json: str) -> risk_rules.RuleSet:
        parsed = self._rules.get(rules_json)
        if parsed is None:
            import json

            parsed = risk_rules.RuleSet.from_snapshot(json.loads(rules_json))
            self._rules[rules_json] = parsed
        return parsed

    def today(self, rules: risk_rules.RuleSet) -> date:
        key = (rules.daily_reset_tz, rules.daily_reset_time)
        day = self._days.get(key)
        if day is None:
            day = risk_rules.trading_day_for(self.now, tz=rules.daily_reset_tz, reset_time=rules.daily_reset_time)
            self._days[key] = day
        return day


@dataclass(frozen=True)
class _Screened:
    row: ScreenRow
    verdict: risk_rules.Verdict | None  # None: today's anchor is missing, the locked path writes it
    today: date


def risk_screen_evaluate(*, row: ScreenRow, rules: risk_rules.RuleSet, now: datetime) -> risk_rules.Verdict:
    """The pure rules on one screened row (the same inputs challenge_evaluate_locked uses,
    except the best-day share, which only matters once every position is closed)."""
    state = risk_rules.AccountState(
        now=now,
        starting_balance=row.starting_balance,
        balance=row.balance,
        equity=row.equity,
        day_anchor=row.day_anchor,
        intraday_high_equity=row.intraday_high_equity or row.starting_balance,
        eod_high=row.eod_high or row.starting_balance,
        trading_days=row.trading_days,
        has_open_positions=row.open_positions > 0,
        created_at=row.created_at,
        last_trade_at=row.last_trade_at,
    )
    return risk_rules.evaluate(rules, state)


def risk_sweep_run(
    *,
    tick: int,
    interval_seconds: Decimal,
    now: datetime | None = None,
    batch_size: int = SWEEP_BATCH_SIZE,
    deadline_seconds: float | None = SWEEP_DEADLINE_SECONDS,
    worker: str = "",
) -> SweepTick | None:
    """Mark every active challenge with open positions to market and evaluate it.

    Returns None (and does nothing) when this tick already ran or another sweep is
    running. Set-based: one screening query per batch (risk_screen_batch), the pure
    rules in Python, one bulk UPDATE for the marks; only a challenge that fails,
    passes, owes a warning or lacks today's anchor takes its row lock and goes through
    challenge_evaluate_locked. Stops at the deadline and records where, so the next
    tick continues from there instead of starting over."""
    started = monotonic_time.monotonic()
    now = now or timezone.now()
    with _single_sweeper() as acquired:
        if not acquired:
            logger.info("risk sweep tick %s skipped: another sweep is running", tick)
            return None
        try:
            with transaction.atomic():
                sweep = SweepTick.objects.create(
                    tick=tick, interval_seconds=interval_seconds, started_at=now, worker=worker[:200]
                )
        except IntegrityError:
            logger.info("risk sweep tick %s already ran", tick)
            return None
        previous = SweepTick.objects.filter(tick__lt=tick).order_by("-tick").first()
        start_after = previous.resume_after_id if previous is not None else 0
        deadline = None if deadline_seconds is None else started + deadline_seconds
        stats = SweepStats()
        cache = _DayCache(now)
        clock = _SweepClock(now=now, started=started)
        # From where the previous sweep stopped to the end, then wrap round to it.
        ranges = [(start_after, None)] + ([(0, start_after)] if start_after else [])
        resume_after = 0
        for low, high in ranges:
            cursor_id = low
            while True:
                rows = risk_screen_batch(after_id=cursor_id, limit=batch_size)
                if high is not None:
                    rows = [r for r in rows if r.id <= high]
                if not rows:
                    break
                _sweep_batch(rows=rows, cache=cache, now=now, stats=stats, clock=clock)
                cursor_id = rows[-1].id
                # Progress is committed per batch: a sweep killed here is resumed by the
                # next tick from this id, not started over.
                SweepTick.objects.filter(pk=sweep.pk).update(
                    resume_after_id=cursor_id, evaluated=F("evaluated") + len(rows)
                )
                if len(rows) < batch_size:
                    break
                # Checked after a batch, so every sweep makes progress however short its budget.
                if deadline is not None and monotonic_time.monotonic() > deadline:
                    sweep.deadline_hit = True
                    resume_after = cursor_id
                    break
            if sweep.deadline_hit:
                break
        sweep.resume_after_id = resume_after
        sweep.evaluated = stats.evaluated
        sweep.marked = stats.marked
        sweep.locked = stats.locked
        sweep.failed = stats.failed
        sweep.passed = stats.passed
        sweep.warnings = stats.warnings
        sweep.finished_at = timezone.now()
        sweep.duration_ms = int((monotonic_time.monotonic() - started) * 1000)
        sweep.save(
            update_fields=[
                "resume_after_id", "deadline_hit", "evaluated", "marked", "locked", "failed", "passed", "warnings",
                "finished_at", "duration_ms",
            ]
        )
        if stats.errors:
            logger.warning("risk sweep tick %s: %s challenges could not be evaluated", tick, stats.errors)
        return sweep


def _sweep_batch(*, rows: list[ScreenRow], cache: _DayCache, now: datetime, stats: SweepStats, clock: _SweepClock) -> None:
    screened: list[_Screened] = []
    for row in rows:
        try:
            rules = cache.rules(row.rules_json)
        except (risk_rules.RuleSetError, ValueError) as exc:
            stats.errors += 1
            logger.error("challenge %s has an unusable rule snapshot: %s", row.id, exc)
            continue
        today = cache.today(rules)
        if row.day_anchor is None or row.trading_day != today:
            screened.append(_Screened(row=row, verdict=None, today=today))
        else:
            verdict = risk_screen_evaluate(row=row, rules=rules, now=now)
            screened.append(_Screened(row=row, verdict=verdict, today=today))
    stats.evaluated += len(screened)

    # Only challenges the rules warn about can owe a warning: usually a few per batch.
    warned = [s for s in screened if s.verdict is not None and s.verdict.warnings]
    since = min((s.today for s in warned), default=None)
    recorded = risk_warnings_recorded(challenge_ids=[s.row.id for s in warned], since_day=since) if warned else set()
    to_lock: list[_Screened] = []
    to_mark: list[_Screened] = []
    for s in screened:
        if s.verdict is None or s.verdict.outcome != "active":
            to_lock.append(s)
        elif any((s.row.id, w.rule, w.level, s.today) not in recorded for w in s.verdict.warnings):
            to_lock.append(s)
        else:
            to_mark.append(s)
    stats.marked += _bulk_mark(to_mark, now=now)
    # A few challenges per commit (each in its own savepoint, so one failure rolls back
    # only itself): a breach or warning storm is bound by commits, not by rules. The
    # locks are taken in id order and held for one group only.
    for start in range(0, len(to_lock), LOCKED_PER_COMMIT):
        group = to_lock[start : start + LOCKED_PER_COMMIT]
        # Each group is evaluated at the prices as they are now, read just before it, and
        # *at* the instant they were read: a breach is recorded (Breach.at, .prices,
        # .observed) with the time and the prices that broke the floor, and the positions
        # are closed at those prices. The sweep's own `now` (when its tick began) can be
        # seconds older than a later group's prices, and the market keeps ticking.
        prices, observed_at = _prices_now(challenge_ids=[s.row.id for s in group], clock=clock)
        with transaction.atomic():
            for s in group:
                _sweep_locked(screened=s, prices=prices.get(s.row.id, {}), now=observed_at, clock=clock, stats=stats)


@dataclass(frozen=True)
class _SweepClock:
    """The sweep's `now` advanced by the time the sweep has been running: the caller's
    clock stays the reference (a sweep run "as at" an instant stays on that day), and a
    group evaluated seconds into a sweep is stamped seconds later."""

    now: datetime
    started: float  # time.monotonic() when the sweep began

    def at(self) -> datetime:
        return self.now + timedelta(seconds=monotonic_time.monotonic() - self.started)


def _prices_now(*, challenge_ids: list[int], clock: _SweepClock) -> tuple[dict[int, dict[str, Decimal]], datetime]:
    """The current price of every instrument these challenges hold, and the instant they
    were read, taken after the read: every price was committed by then (a tick writes
    its price and its PriceTick in one transaction)."""
    from risk.selectors import risk_prices_for_challenges

    prices = risk_prices_for_challenges(challenge_ids=challenge_ids)
    return prices, clock.at()


def _bulk_mark(items: list[_Screened], *, now: datetime) -> int:
    """Write equity, the intraday high, the total-loss floor and marked_at for challenges
    whose verdict changes nothing else, without the row lock: each row is written only
    if its version is still the one screened (a fill in between wins, and its own
    inline check already evaluated it), and only while it is active. No version bump:
    marking to market is not a state change a client must re-read for."""
    if not items:
        return 0
    table = Challenge._meta.db_table
    if connection.vendor == "postgresql":
        # One statement per batch: the values travel as arrays and are joined by id.
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(
                f"UPDATE {table} AS c SET equity = v.equity,"  # nosec B608
                " intraday_high_equity = GREATEST(COALESCE(c.intraday_high_equity, v.high), v.high),"
                " max_loss_floor = v.floor, marked_at = %s"
                " FROM unnest(%s::bigint[], %s::integer[], %s::numeric[], %s::numeric[], %s::numeric[])"
                " AS v(id, version, equity, high, floor)"
                " WHERE c.id = v.id AND c.version = v.version AND c.status = 'active'",
                [
                    now,
                    [s.row.id for s in items],
                    [s.row.version for s in items],
                    [s.row.equity for s in items],
                    [s.verdict.new_intraday_high_equity for s in items],
                    [s.verdict.max_loss_floor for s in items],
                ],
            )
        return len(items)
    params = [
        (
            s.row.equity,
            s.verdict.new_intraday_high_equity,
            s.verdict.new_intraday_high_equity,
            s.verdict.max_loss_floor,
            now,
            s.row.id,
            s.row.version,
        )
        for s in items
    ]
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.executemany(
            f"UPDATE {table} SET equity = %s,"  # nosec B608
            " intraday_high_equity = CASE WHEN intraday_high_equity IS NULL OR intraday_high_equity < %s"
            " THEN %s ELSE intraday_high_equity END,"
            " max_loss_floor = %s, marked_at = %s"
            " WHERE id = %s AND version = %s AND status = 'active'",
            params,
        )
    return len(items)


def _sweep_locked(
    *, screened: _Screened, prices: dict[str, Decimal], now: datetime, clock: _SweepClock, stats: SweepStats
) -> None:
    row = screened.row
    try:
        with transaction.atomic():
            # skip_locked: a fill holding this row is evaluating it inline right now; the
            # next tick sees the result instead of this sweep queueing behind it.
            challenge = (
                Challenge.objects.select_for_update(skip_locked=True, of=("self",)).filter(pk=row.id).first()
            )
            if challenge is None:
                stats.skipped_locked += 1
                return
            if challenge.status != Challenge.Status.ACTIVE:
                return
            if challenge.version != row.version:
                # Its positions changed since the screen (a fill, which evaluated it inline):
                # re-read the prices of what it holds now, under the lock, and evaluate at
                # that instant.
                fresh, now = _prices_now(challenge_ids=[challenge.pk], clock=clock)
                prices = fresh.get(challenge.pk, {})
            stats.locked += 1
            verdict = challenge_evaluate_locked(challenge=challenge, prices=prices, now=now, detected_by="sweep")
            if verdict.outcome == "failed":
                stats.failed += 1
                stats.failed_ids.append(challenge.pk)
            elif verdict.outcome == "passed":
                stats.passed += 1
            else:
                stats.warnings += len(
                    risk_warnings_record(
                        challenge=challenge,
                        verdict=verdict,
                        trading_day=challenge.trading_day or screened.today,
                        detected_by="sweep",
                    )
                )
    except _FATAL:
        raise
    except Exception as exc:  # noqa: BLE001 - one challenge must not stop the sweep
        stats.errors += 1
        logger.exception("risk sweep: challenge %s not evaluated: %s", row.id, exc)


class _single_sweeper:
    """A session-level Postgres advisory lock so two workers never sweep at once (the
    unique tick already prevents double work for one tick; this stops a slow sweep and
    the next tick from overlapping). A killed worker's connection dies and releases it."""

    def __enter__(self) -> bool:
        self.held = False
        if connection.vendor != "postgresql":
            return True
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_try_advisory_lock(%s)", [_SWEEP_LOCK_KEY])
            self.held = bool(cursor.fetchone()[0])
        return self.held

    def __exit__(self, *exc) -> None:
        if self.held:
            try:
                with connection.cursor() as cursor:
                    cursor.execute("SELECT pg_advisory_unlock(%s)", [_SWEEP_LOCK_KEY])
            except DatabaseError:
                # The connection is gone, and the lock with it.
                logger.warning("risk sweep advisory lock not released explicitly (connection lost)")


def risk_sweep_tick_for(*, now: datetime, interval_seconds: Decimal) -> int:
    """The tick id: `now` floored to the interval, in milliseconds since the epoch."""
    interval_ms = max(1, int(interval_seconds * 1000))
    now_ms = int(now.timestamp() * 1000)
    return now_ms // interval_ms * interval_ms


# --- The daily reset --------------------------------------------------------------------------------------


@dataclass
class ResetStats:
    challenges: int = 0
    anchors: int = 0
    skipped_locked: int = 0
    errors: int = 0
    deadline_hit: bool = False


def risk_daily_reset_run(
    *,
    now: datetime | None = None,
    batch_size: int = RESET_BATCH_SIZE,
    deadline_seconds: float | None = RESET_DEADLINE_SECONDS,
) -> ResetStats:
    """Write the DailyAnchor of every trading day that has begun for every active
    challenge, including days missed while nothing ran (catch-up), as at each day's
    reset instant (challenge_ensure_anchor computes it from the ledger and the price
    history). Idempotent: the anchor is unique per challenge and day, and a challenge
    whose trading_day is already today is not even selected."""
    started = monotonic_time.monotonic()
    now = now or timezone.now()
    stats = ResetStats()
    for tz, reset_raw in risk_reset_groups():
        try:
            reset_time = time.fromisoformat(reset_raw or "00:00:00")
            today = risk_rules.trading_day_for(now, tz=tz or "UTC", reset_time=reset_time)
        except (ValueError, risk_rules.RuleSetError) as exc:
            logger.error("daily reset: unusable reset convention %r %r: %s", tz, reset_raw, exc)
            stats.errors += 1
            continue
        after_id = 0
        while True:
            if deadline_seconds is not None and monotonic_time.monotonic() - started > deadline_seconds:
                stats.deadline_hit = True
                return stats
            ids = risk_challenges_missing_anchor(
                tz=tz, reset_time=reset_raw, day=today, after_id=after_id, limit=batch_size
            )
            if not ids:
                break
            for challenge_id in ids:
                _reset_one(challenge_id=challenge_id, today=today, now=now, stats=stats)
            after_id = ids[-1]
    return stats


def _reset_one(*, challenge_id: int, today: date, now: datetime, stats: ResetStats) -> None:
    try:
        with transaction.atomic():
            challenge = (
                Challenge.objects.select_for_update(skip_locked=True, of=("self",)).filter(pk=challenge_id).first()
            )
            if challenge is None:
                stats.skipped_locked += 1
                return
            if challenge.status != Challenge.Status.ACTIVE:
                return
            rules = risk_rules.RuleSet.from_snapshot(challenge.rules)
            for day in risk_days_to_anchor(challenge=challenge, rules=rules, today=today):
                challenge_ensure_anchor(challenge=challenge, day=day)
                stats.anchors += 1
            stats.challenges += 1
    except _FATAL:
        raise
    except Exception as exc:  # noqa: BLE001 - one challenge must not stop the reset
        stats.errors += 1
        logger.exception("daily reset: challenge %s not anchored: %s", challenge_id, exc)


def risk_days_to_anchor(*, challenge: Challenge, rules: risk_rules.RuleSet, today: date) -> list[date]:
    """The trading days from the one after the newest anchor (or the day the challenge
    began) up to today, oldest first, at most RESET_MAX_CATCHUP_DAYS of them."""
    if challenge.trading_day is not None:
        first = challenge.trading_day + timedelta(days=1)
    else:
        first = risk_rules.trading_day_for(
            challenge.created_at, tz=rules.daily_reset_tz, reset_time=rules.daily_reset_time
        )
    first = max(first, today - timedelta(days=RESET_MAX_CATCHUP_DAYS - 1))
    days = []
    day = first
    while day <= today:
        days.append(day)
        day += timedelta(days=1)
    return days
