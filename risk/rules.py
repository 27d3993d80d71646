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
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, time
from decimal import Decimal


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
        raise NotImplementedError("implemented by the risk engine issue")


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


def trading_day_for(now: datetime, *, tz: str, reset_time: time) -> date:
    raise NotImplementedError


def reset_instant(day: date, *, tz: str, reset_time: time) -> datetime:
    raise NotImplementedError


def anchor_value(rules: RuleSet, *, balance: Decimal, equity: Decimal) -> Decimal:
    raise NotImplementedError


def evaluate(rules: RuleSet, state: AccountState) -> Verdict:
    raise NotImplementedError
