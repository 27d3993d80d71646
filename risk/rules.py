"""The risk rules: pure functions over plain values (no ORM, no clock, no settings).

The caller passes `now` and every input; the same inputs always give the same verdict,
so a stored breach can be replayed. This module is the interface that
challenges.services calls inline on every fill and risk.tasks calls in the sweep.

INTERFACE (fixed so the trading and risk work can proceed in parallel):

    RuleSet.from_snapshot(challenge.rules) -> RuleSet
    trading_day_for(now: datetime, *, tz: str, reset_time: time) -> date
        the plan-time-zone trading day that `now` (aware, UTC) falls in; a day starts at
        the reset time (17:00 New York: 16:59 belongs to the previous day).
    reset_instant(day: date, *, tz: str, reset_time: time) -> datetime
        the aware UTC instant at which trading day `day` began (correct across DST).
    anchor_value(rules: RuleSet, *, balance: Decimal, equity: Decimal) -> Decimal
        the day's anchor given balance and equity at the reset (plan setting).
    evaluate(rules: RuleSet, state: AccountState) -> Verdict
        breach checks first (daily loss, then total loss, then optional duration and
        inactivity), then the pass check; never both.

ADDED by the risk engine (nothing above renamed or removed):
    RuleSetError (a ValueError naming the bad rule), RuleSet.to_snapshot(),
    RuleSet.daily_loss_limit/max_loss_limit/profit_target_balance(starting_balance),
    AccountState.to_inputs()/from_inputs() (Breach.inputs, replay), eod_value and
    next_eod_high (the end-of-day trailing high), max_loss_floor_for,
    best_day_share_ok, Verdict.daily_loss_limit/max_loss_limit/pass_blockers/breached,
    WARNING_LEVELS and the RULE_* names. docs/risk-engine.md explains each rule.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_FLOOR, ROUND_HALF_EVEN, Decimal, InvalidOperation
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

CENT = Decimal("0.01")
HUNDRED = Decimal("100")
ZERO = Decimal("0")
# Warnings are sent when this share (%) of a loss limit has been used, once per level per day.
WARNING_LEVELS = (50, 80, 90)

DAILY_ANCHORS = ("balance", "equity", "higher")
MAX_LOSS_MODES = ("static", "trailing_eod", "trailing_intraday")

# Rule names as stored on Breach.rule and RiskWarning.rule.
RULE_MAX_DAILY_LOSS = "max_daily_loss"
RULE_MAX_TOTAL_LOSS = "max_total_loss"
RULE_MAX_DURATION = "max_duration"
RULE_INACTIVITY = "inactivity"


class RuleSetError(ValueError):
    """A rule snapshot that cannot be evaluated (unknown time zone, mode, bad number)."""


def _money(value: Decimal) -> Decimal:
    return value.quantize(CENT, rounding=ROUND_HALF_EVEN)


def _dec(snapshot: dict, name: str, *, optional: bool = False) -> Decimal | None:
    raw = snapshot.get(name)
    if raw is None or raw == "":
        if optional:
            return None
        raise RuleSetError(f"rule snapshot is missing {name!r}")
    if isinstance(raw, float):
        # A float in a money rule means the snapshot was built wrongly; refuse it rather
        # than carry binary rounding into a pass/fail decision.
        raise RuleSetError(f"rule {name!r} must be a decimal string, got a float")
    try:
        value = Decimal(str(raw))
    except InvalidOperation:
        raise RuleSetError(f"rule {name!r} is not a decimal: {raw!r}") from None
    if not value.is_finite() or value < 0:
        raise RuleSetError(f"rule {name!r} must be a non-negative decimal, got {raw!r}")
    return value


def _int(snapshot: dict, name: str, *, optional: bool = False, default: int | None = None) -> int | None:
    raw = snapshot.get(name)
    if raw is None or raw == "":
        if optional:
            return default
        raise RuleSetError(f"rule snapshot is missing {name!r}")
    if isinstance(raw, bool):
        raise RuleSetError(f"rule {name!r} must be an integer, got {raw!r}")
    try:
        value = int(raw)
    except (TypeError, ValueError):
        raise RuleSetError(f"rule {name!r} is not an integer: {raw!r}") from None
    if value < 0:
        raise RuleSetError(f"rule {name!r} must not be negative, got {raw!r}")
    return value


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise RuleSetError(f"unknown IANA time zone {name!r}") from None


@dataclass(frozen=True)
class RuleSet:
    ruleset_version: int
    max_daily_loss_pct: Decimal
    max_total_loss_pct: Decimal
    profit_target_pct: Decimal
    min_trading_days: int
    leverage: Decimal
    daily_reset_tz: str
    daily_reset_time: time
    daily_anchor: str  # "balance" | "equity" | "higher"
    max_loss_mode: str  # "static" | "trailing_eod" | "trailing_intraday"
    trailing_locks_at_start: bool
    best_day_max_share_pct: Decimal | None = None
    max_duration_days: int | None = None
    inactivity_days: int | None = None

    @classmethod
    def from_snapshot(cls, snapshot: dict) -> RuleSet:
        """Parse challenge.rules (Plan.rules_snapshot(): decimals and times as strings).

        Raises RuleSetError naming the bad rule; the optional rules may be absent."""
        if not isinstance(snapshot, dict):
            raise RuleSetError("rule snapshot must be a JSON object")
        tz = snapshot.get("daily_reset_tz") or "UTC"
        _zone(tz)
        raw_time = snapshot.get("daily_reset_time") or "00:00:00"
        try:
            reset = raw_time if isinstance(raw_time, time) else time.fromisoformat(str(raw_time))
        except ValueError:
            raise RuleSetError(f"daily_reset_time is not a time: {raw_time!r}") from None
        if reset.tzinfo is not None:
            raise RuleSetError("daily_reset_time must be a local wall-clock time without a UTC offset")
        anchor = snapshot.get("daily_anchor") or "balance"
        if anchor not in DAILY_ANCHORS:
            raise RuleSetError(f"daily_anchor must be one of {', '.join(DAILY_ANCHORS)}, got {anchor!r}")
        mode = snapshot.get("max_loss_mode") or "static"
        if mode not in MAX_LOSS_MODES:
            raise RuleSetError(f"max_loss_mode must be one of {', '.join(MAX_LOSS_MODES)}, got {mode!r}")
        locks = snapshot.get("trailing_locks_at_start", False)
        if not isinstance(locks, bool):
            raise RuleSetError(f"trailing_locks_at_start must be true or false, got {locks!r}")
        return cls(
            ruleset_version=_int(snapshot, "ruleset_version", optional=True, default=1),
            max_daily_loss_pct=_dec(snapshot, "max_daily_loss_pct"),
            max_total_loss_pct=_dec(snapshot, "max_total_loss_pct"),
            profit_target_pct=_dec(snapshot, "profit_target_pct"),
            min_trading_days=_int(snapshot, "min_trading_days", optional=True, default=0),
            leverage=_dec(snapshot, "leverage", optional=True) or Decimal("1"),
            daily_reset_tz=tz,
            daily_reset_time=reset,
            daily_anchor=anchor,
            max_loss_mode=mode,
            trailing_locks_at_start=locks,
            best_day_max_share_pct=_dec(snapshot, "best_day_max_share_pct", optional=True),
            max_duration_days=_int(snapshot, "max_duration_days", optional=True),
            inactivity_days=_int(snapshot, "inactivity_days", optional=True),
        )

    def to_snapshot(self) -> dict:
        """The inverse of from_snapshot (JSON-safe), e.g. for a breach record."""
        out = {}
        for name, value in asdict(self).items():
            if value is None or isinstance(value, (bool, int, str)):
                out[name] = value
            else:
                out[name] = value.isoformat() if isinstance(value, time) else str(value)
        return out

    def daily_loss_limit(self, starting_balance: Decimal) -> Decimal:
        """The money a trader may lose in one trading day (a share of the starting balance)."""
        return _money(starting_balance * self.max_daily_loss_pct / HUNDRED)

    def max_loss_limit(self, starting_balance: Decimal) -> Decimal:
        """The money a trader may lose in total, below the starting balance or the trailing high."""
        return _money(starting_balance * self.max_total_loss_pct / HUNDRED)

    def profit_target_balance(self, starting_balance: Decimal) -> Decimal:
        return starting_balance + _money(starting_balance * self.profit_target_pct / HUNDRED)


@dataclass(frozen=True)
class AccountState:
    """Everything one evaluation needs, as plain values."""

    now: datetime
    starting_balance: Decimal
    balance: Decimal
    equity: Decimal
    day_anchor: Decimal  # today's anchor (already written before evaluation)
    intraday_high_equity: Decimal  # highest equity seen since activation
    eod_high: Decimal  # highest end-of-day balance/equity (for trailing_eod)
    trading_days: int
    has_open_positions: bool
    created_at: datetime | None = None
    last_trade_at: datetime | None = None
    best_day_profit: Decimal | None = None
    total_profit: Decimal | None = None

    def to_inputs(self) -> dict:
        """JSON-safe plain values (Breach.inputs), so a verdict can be replayed."""
        out = {}
        for name, value in asdict(self).items():
            if value is None or isinstance(value, bool):
                out[name] = value
            elif isinstance(value, datetime):
                out[name] = value.isoformat()
            else:
                out[name] = str(value)
        return out

    @classmethod
    def from_inputs(cls, inputs: dict) -> AccountState:
        """The inverse of to_inputs: replay a stored verdict with evaluate()."""
        kwargs = {}
        for name, raw in inputs.items():
            if raw is None or isinstance(raw, bool):
                kwargs[name] = raw
            elif name in {"now", "created_at", "last_trade_at"}:
                kwargs[name] = datetime.fromisoformat(raw)
            elif name == "trading_days":
                kwargs[name] = int(raw)
            else:
                kwargs[name] = Decimal(raw)
        return cls(**kwargs)


@dataclass(frozen=True)
class Breach:
    rule: str  # "max_daily_loss" | "max_total_loss" | "max_duration" | "inactivity"
    threshold: Decimal  # the floor (or limit) that was crossed
    observed: Decimal  # the equity (or value) observed
    message: str  # a sentence a trader can read


@dataclass(frozen=True)
class Warning:
    rule: str  # "max_daily_loss" | "max_total_loss"
    level: int  # 50, 80 or 90 (% of the limit used)
    used_pct: Decimal


@dataclass(frozen=True)
class Verdict:
    outcome: str  # "active" | "failed" | "passed"
    breach: Breach | None
    warnings: list[Warning] = field(default_factory=list)
    daily_loss_floor: Decimal = Decimal("0")
    max_loss_floor: Decimal = Decimal("0")
    profit_target_balance: Decimal = Decimal("0")
    daily_loss_used_pct: Decimal = Decimal("0")
    total_loss_used_pct: Decimal = Decimal("0")
    new_intraday_high_equity: Decimal = Decimal("0")
    # Added by the risk engine (defaults keep older call sites working):
    daily_loss_limit: Decimal = Decimal("0")
    max_loss_limit: Decimal = Decimal("0")
    # Why an otherwise profitable account has not passed yet: "profit_target",
    # "min_trading_days", "open_positions", "best_day_share". Empty when passed.
    pass_blockers: tuple[str, ...] = ()

    @property
    def breached(self) -> bool:
        return self.breach is not None


def trading_day_for(now: datetime, *, tz: str, reset_time: time) -> date:
    """The trading day `now` falls in: day D runs from reset_instant(D) up to (not
    including) reset_instant(D + 1), so 16:59 New York belongs to the previous day
    under a 17:00 reset. Defined through reset_instant so the two always agree, also
    on the days the clocks change."""
    if now.tzinfo is None:
        raise ValueError("now must be an aware datetime")
    day = now.astimezone(_zone(tz)).date()
    # At most one step either way; the loops make it correct for any reset time,
    # including one that falls into a daylight-saving gap.
    while now < reset_instant(day, tz=tz, reset_time=reset_time):
        day -= timedelta(days=1)
    while now >= reset_instant(day + timedelta(days=1), tz=tz, reset_time=reset_time):
        day += timedelta(days=1)
    return day


def reset_instant(day: date, *, tz: str, reset_time: time) -> datetime:
    """The UTC instant trading day `day` began: `reset_time` on the wall clock of `tz`.

    Across daylight saving the UTC instant moves (17:00 New York is 22:00 UTC in winter,
    21:00 UTC in summer). A wall time that does not exist that day (inside the spring
    gap) resolves to the same offset as before the gap, i.e. that much later in the
    new time (02:30 -> 03:30 EDT); a wall time that occurs twice (autumn) is the first.
    """
    local = datetime.combine(day, reset_time.replace(tzinfo=None), tzinfo=_zone(tz))
    return local.astimezone(UTC)


def anchor_value(rules: RuleSet, *, balance: Decimal, equity: Decimal) -> Decimal:
    """The day's anchor: the balance, the equity, or the higher of the two at the reset."""
    if rules.daily_anchor == "balance":
        return balance
    if rules.daily_anchor == "equity":
        return equity
    return max(balance, equity)


def eod_value(rules: RuleSet, *, balance: Decimal, equity: Decimal) -> Decimal:
    """The value a trading day closes at, for the end-of-day trailing high. It uses the
    same measure as the daily anchor (one plan setting says "what a day ends at")."""
    return anchor_value(rules, balance=balance, equity=equity)


def next_eod_high(rules: RuleSet, *, eod_high: Decimal | None, balance: Decimal, equity: Decimal) -> Decimal:
    """The end-of-day high after a reset that saw `balance` and `equity`; the writer of
    the daily anchor stores this on the challenge (eod_high)."""
    value = eod_value(rules, balance=balance, equity=equity)
    return value if eod_high is None else max(eod_high, value)


def max_loss_floor_for(rules: RuleSet, *, starting_balance: Decimal, high: Decimal) -> Decimal:
    """The total-loss floor given the high it trails from (ignored when static).

    A trailing floor follows the high up, never down; with trailing_locks_at_start it
    stops once it reaches the starting balance (the trader has banked the drawdown)."""
    limit = rules.max_loss_limit(starting_balance)
    if rules.max_loss_mode == "static":
        return starting_balance - limit
    floor = max(high, starting_balance) - limit
    if rules.trailing_locks_at_start:
        floor = min(floor, starting_balance)
    return floor


def _used_pct(loss: Decimal, limit: Decimal) -> Decimal:
    """Share of a loss limit used, in % (0.01 steps, rounded down, never negative)."""
    if loss <= 0:
        return ZERO.quantize(CENT)
    if limit <= 0:
        return HUNDRED.quantize(CENT)
    return (loss * HUNDRED / limit).quantize(CENT, rounding=ROUND_FLOOR)


def _warnings(rule: str, loss: Decimal, limit: Decimal, used: Decimal) -> list[Warning]:
    out = []
    for level in WARNING_LEVELS:
        # Exact comparison on the unrounded values: loss / limit >= level / 100.
        if loss > 0 and (limit <= 0 or loss * HUNDRED >= limit * level):
            out.append(Warning(rule=rule, level=level, used_pct=used))
    return out


def _days_between(start: datetime, end: datetime) -> Decimal:
    seconds = Decimal((end - start).days * 86400 + (end - start).seconds)
    return (seconds / Decimal(86400)).quantize(CENT, rounding=ROUND_FLOOR)


def evaluate(rules: RuleSet, state: AccountState) -> Verdict:
    """Breach checks first (daily loss, total loss, duration, inactivity), then the pass
    check; never both. Equity exactly at a floor is not a breach; one cent below is."""
    start = state.starting_balance
    equity = state.equity
    daily_limit = rules.daily_loss_limit(start)
    total_limit = rules.max_loss_limit(start)
    target = rules.profit_target_balance(start)

    daily_floor = state.day_anchor - daily_limit
    # The intraday high includes the equity being evaluated: a new high raises a
    # trailing floor before the check, exactly as if the sweep had seen it a tick earlier.
    new_high = max(state.intraday_high_equity, equity)
    if rules.max_loss_mode == "trailing_intraday":
        trail_from = new_high
    elif rules.max_loss_mode == "trailing_eod":
        trail_from = state.eod_high
    else:
        trail_from = start
    total_floor = max_loss_floor_for(rules, starting_balance=start, high=trail_from)

    daily_loss = state.day_anchor - equity
    daily_used = _used_pct(daily_loss, daily_limit)
    # Loss measured against the floor's own reference point (the floor plus the limit),
    # so "90 % used" means the equity is 10 % of the limit above the floor.
    total_loss = total_floor + total_limit - equity
    total_used = _used_pct(total_loss, total_limit)
    warnings = _warnings(RULE_MAX_DAILY_LOSS, daily_loss, daily_limit, daily_used) + _warnings(
        RULE_MAX_TOTAL_LOSS, total_loss, total_limit, total_used
    )

    common = dict(
        warnings=warnings,
        daily_loss_floor=daily_floor,
        max_loss_floor=total_floor,
        profit_target_balance=target,
        daily_loss_used_pct=daily_used,
        total_loss_used_pct=total_used,
        new_intraday_high_equity=new_high,
        daily_loss_limit=daily_limit,
        max_loss_limit=total_limit,
    )

    breach = None
    if equity < daily_floor:
        breach = Breach(
            rule=RULE_MAX_DAILY_LOSS,
            threshold=daily_floor,
            observed=equity,
            message=(
                f"Equity {equity} fell below today's loss floor {daily_floor}: the day started at "
                f"{state.day_anchor} and the daily limit is {rules.max_daily_loss_pct.normalize():f}% of the "
                f"starting balance {start} ({daily_limit})."
            ),
        )
    elif equity < total_floor:
        if rules.max_loss_mode == "static":
            why = f"the starting balance {start} minus {rules.max_total_loss_pct.normalize():f}% ({total_limit})"
        else:
            kind = "end-of-day" if rules.max_loss_mode == "trailing_eod" else "intraday equity"
            why = f"the highest {kind} value {max(trail_from, start)} minus {total_limit}"
            if rules.trailing_locks_at_start and total_floor == start:
                why += ", locked at the starting balance"
        breach = Breach(
            rule=RULE_MAX_TOTAL_LOSS,
            threshold=total_floor,
            observed=equity,
            message=f"Equity {equity} fell below the maximum loss floor {total_floor} ({why}).",
        )
    elif (
        rules.max_duration_days is not None
        and state.created_at is not None
        and state.now >= state.created_at + timedelta(days=rules.max_duration_days)
    ):
        elapsed = _days_between(state.created_at, state.now)
        breach = Breach(
            rule=RULE_MAX_DURATION,
            threshold=Decimal(rules.max_duration_days),
            observed=elapsed,
            message=(
                f"The challenge reached its maximum duration of {rules.max_duration_days} days "
                "without meeting the profit target."
            ),
        )
    elif rules.inactivity_days is not None and (state.last_trade_at or state.created_at) is not None:
        since = state.last_trade_at or state.created_at
        if state.now >= since + timedelta(days=rules.inactivity_days):
            breach = Breach(
                rule=RULE_INACTIVITY,
                threshold=Decimal(rules.inactivity_days),
                observed=_days_between(since, state.now),
                message=f"No trade for {rules.inactivity_days} days: the challenge expired for inactivity.",
            )
    if breach is not None:
        return Verdict(outcome="failed", breach=breach, **common)

    blockers = []
    if state.balance < target:
        blockers.append("profit_target")
    if state.trading_days < rules.min_trading_days:
        blockers.append("min_trading_days")
    if state.has_open_positions:
        blockers.append("open_positions")
    if not best_day_share_ok(rules, best_day_profit=state.best_day_profit, total_profit=state.total_profit):
        blockers.append("best_day_share")
    outcome = "active" if blockers else "passed"
    return Verdict(outcome=outcome, breach=None, pass_blockers=tuple(blockers), **common)


def best_day_share_ok(rules: RuleSet, *, best_day_profit: Decimal | None, total_profit: Decimal | None) -> bool:
    """The consistency gate: no single day may make more than the set share of the total
    profit. A gate on passing, never a failure; unknown inputs do not block."""
    share = rules.best_day_max_share_pct
    if share is None or best_day_profit is None or total_profit is None or total_profit <= 0:
        return True
    return best_day_profit * HUNDRED <= total_profit * share
