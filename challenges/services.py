"""Every write to challenges goes through here (HackSoft style: services own transactions).

Writes to one challenge are serialized by `select_for_update` on its row and versioned:
the row is written with `UPDATE ... WHERE pk = ? AND version = ?`, bumping `version`
whenever something a client sees changes. A request carrying a stale version
(`If-Match`) is refused with ChallengeStaleVersion; the boundary that catches it records
a Conflict row once the failed transaction has rolled back (conflict_record).
See docs/trading.md for the model.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal

from django.db import IntegrityError, transaction
from django.db.models import Sum
from django.forms.models import model_to_dict
from django.utils import timezone

from challenges import netting
from challenges.errors import (
    ChallengeNotActive,
    ChallengeNotFound,
    ChallengeStaleVersion,
    ClientOrderIdReused,
    InsufficientMargin,
    InvalidQuantity,
    NoPosition,
    TransitionNotAllowed,
    UnknownSymbol,
)
from challenges.market import market_fresh_price
from challenges.models import (
    Breach,
    Challenge,
    DailyAnchor,
    Instrument,
    LedgerEntry,
    Order,
    Plan,
    Position,
    PriceTick,
)
from risk import rules as risk_rules
from tradesense.common import rawsql
from tradesense.common.audit import _jsonable, actor_label_for, audit_record
from tradesense.common.errors import InvalidInput, StateConflict
from tradesense.common.models import AuditEvent, Conflict
from tradesense.common.realtime import send_event_on_commit, send_events_on_commit

ZERO = Decimal("0")

# The client-visible columns a fill or an evaluation may change (written in one UPDATE).
_CHALLENGE_STATE_FIELDS = (
    "status",
    "balance",
    "equity",
    "trading_day",
    "day_anchor",
    "day_start_balance",
    "day_start_equity",
    "intraday_high_equity",
    "eod_high",
    "max_loss_floor",
    "trading_days",
    "last_trading_day",
    "last_trade_at",
    "marked_at",
    "failure_reason",
    "ended_at",
)


# --- Activation (used by payments) ------------------------------------------------------------


def challenge_activate(*, trader, plan: Plan, source_ref: str, actor_label: str = "system:payments") -> Challenge:
    """Open a challenge for a paid purchase. Idempotent on `source_ref`: a second call
    for the same purchase returns the first challenge and creates nothing.

    The caller (the purchase flow) may hold its own transaction; this joins it.
    """
    existing = Challenge.objects.filter(source_ref=source_ref).first()
    if existing is not None:
        return existing
    rules = plan.rules_snapshot()
    try:
        with transaction.atomic():
            challenge = Challenge.objects.create(
                trader=trader,
                plan=plan,
                source_ref=source_ref,
                status=Challenge.Status.ACTIVE,
                currency=plan.account_currency,
                starting_balance=plan.starting_balance,
                balance=plan.starting_balance,
                equity=plan.starting_balance,
                rules=rules,
                ruleset_version=plan.ruleset_version,
                intraday_high_equity=plan.starting_balance,
                eod_high=plan.starting_balance,
                marked_at=timezone.now(),
            )
            audit_record(
                action="challenge.activated",
                obj=challenge,
                actor_label=actor_label,
                before=None,
                after={
                    "status": challenge.status,
                    "plan": plan.slug,
                    "starting_balance": challenge.starting_balance,
                    "ruleset_version": challenge.ruleset_version,
                    "source_ref": source_ref,
                },
                reason="purchase confirmed by the processor",
            )
    except IntegrityError:
        # A concurrent activation for the same purchase won the unique index.
        return Challenge.objects.get(source_ref=source_ref)
    send_event_on_commit(
        type="challenge.status",
        challenge=challenge.pk,
        version=challenge.version,
        data={"status": challenge.status},
    )
    return challenge


# --- Accounts ---------------------------------------------------------------------------------------


def user_register(*, username: str, email: str, password: str):
    """Create a trader account (POST /auth/register) with its audit event."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.password_validation import validate_password
    from django.core.exceptions import ValidationError

    User = get_user_model()
    candidate = User(username=username, email=email)
    try:
        validate_password(password, user=candidate)
    except ValidationError as exc:
        raise InvalidInput("The password is too weak.", fields={"password": list(exc.messages)}) from None
    try:
        with transaction.atomic():
            if User.objects.filter(username__iexact=username).exists():
                raise IntegrityError("username taken")
            user = User.objects.create_user(username=username, email=email, password=password)
            audit_record(action="user.registered", obj=user, actor_label=f"trader:{user.pk}", after={"username": username})
    except IntegrityError:
        raise InvalidInput("This username is taken.", fields={"username": ["Already taken."]}) from None
    return user


# --- Locking, versions, transitions -------------------------------------------------------------


def challenge_lock(*, challenge_id: int, trader=None) -> Challenge:
    """Lock one challenge row for the rest of the caller's transaction (404 when it is not
    the trader's: someone else's challenge does not exist for them)."""
    # Raw SQL (tradesense.common.rawsql): this runs on every order.
    sql = f'SELECT {rawsql.select_list(Challenge, "c")} FROM "{Challenge._meta.db_table}" c WHERE c."id" = %s'  # nosec B608
    params = [int(challenge_id)]
    if trader is not None:
        sql += ' AND c."trader_id" = %s'
        params.append(trader.pk)
    with rawsql.cursor() as cursor:
        cursor.execute(sql + rawsql.for_update(), params)
        row = cursor.fetchone()
    if row is None:
        raise ChallengeNotFound()
    return rawsql.load(Challenge, row)


def challenge_check_version(*, challenge: Challenge, expected_version: int | None, attempted_change: dict) -> None:
    if expected_version is not None and expected_version != challenge.version:
        raise ChallengeStaleVersion(
            challenge_id=challenge.pk,
            expected=expected_version,
            actual=challenge.version,
            attempted_change=attempted_change,
        )


def challenge_check_transition(*, challenge: Challenge, to: str) -> None:
    """The one place a status change is checked against Challenge.ALLOWED_TRANSITIONS."""
    allowed = Challenge.ALLOWED_TRANSITIONS.get(Challenge.Status(challenge.status), ())
    if to not in allowed:
        raise TransitionNotAllowed(f"A challenge cannot go from {challenge.status} to {to}.")


def _challenge_write(*, challenge: Challenge, fields: tuple[str, ...], bump: bool, now: datetime) -> None:
    """Persist `fields` with a conditional UPDATE on the version the caller read.

    The caller holds the row lock, so zero rows means someone wrote without it: that is
    refused, never silently overwritten."""
    values = {name: getattr(challenge, name) for name in fields}
    values["updated_at"] = now
    assignments = ", ".join(f'"{Challenge._meta.get_field(name).column}" = %s' for name in values)
    if bump:
        assignments += ', "version" = "version" + 1'
    with rawsql.cursor() as cursor:
        cursor.execute(
            f'UPDATE "{Challenge._meta.db_table}" SET {assignments} WHERE "id" = %s AND "version" = %s',  # nosec B608
            [rawsql.db_value(Challenge, name, value) for name, value in values.items()] + [challenge.pk, challenge.version],
        )
        rows = cursor.rowcount
    if rows != 1:
        actual = Challenge.objects.filter(pk=challenge.pk).values_list("version", flat=True).first()
        raise ChallengeStaleVersion(
            challenge_id=challenge.pk,
            expected=challenge.version,
            actual=actual or 0,
            attempted_change={"fields": {k: str(v) for k, v in values.items() if k != "version"}},
        )
    challenge.updated_at = now
    if bump:
        challenge.version += 1


def _ruleset(challenge: Challenge) -> risk_rules.RuleSet:
    return risk_rules.RuleSet.from_snapshot(challenge.rules)


def _trading_day(rules: risk_rules.RuleSet, now: datetime) -> date:
    return risk_rules.trading_day_for(now, tz=rules.daily_reset_tz, reset_time=rules.daily_reset_time)


# --- Daily anchors and state as at an instant --------------------------------------------------------


def challenge_state_at(*, challenge: Challenge, at: datetime) -> tuple[Decimal, Decimal]:
    """(balance, equity) as they were at instant `at`.

    balance = starting balance + the ledger rows booked before `at`; equity = that balance
    + the unrealized P&L of the positions held at `at` (replayed from the fills before it)
    at the last recorded price at or before `at`."""
    booked = LedgerEntry.objects.filter(challenge=challenge, created_at__lt=at).aggregate(total=Sum("amount"))["total"]
    balance = challenge.starting_balance + (booked or ZERO)
    held = _positions_at(challenge=challenge, at=at)
    equity = balance
    for instrument, qty, avg in held.values():
        price = _price_at(instrument=instrument, at=at, challenge=challenge)
        equity += netting.unrealized_pl(
            qty=qty, avg_entry_price=avg, price=price, contract_size=instrument.contract_size
        )
    return balance, equity


def _positions_at(*, challenge: Challenge, at: datetime) -> dict[int, tuple[Instrument, Decimal, Decimal]]:
    if challenge.last_trade_at is None or challenge.last_trade_at < at:
        # Nothing was filled since `at`: the open positions are the ones held then.
        return {
            p.instrument_id: (p.instrument, p.qty, p.avg_entry_price)
            for p in Position.objects.filter(challenge=challenge).select_related("instrument")
        }
    held: dict[int, tuple[Instrument, Decimal, Decimal]] = {}
    fills = Order.objects.filter(challenge=challenge, filled_at__lt=at).select_related("instrument")
    for order in fills.order_by("filled_at", "id"):
        netting.book_apply_fill(held, order=order)
    return held


def _price_at(*, instrument: Instrument, at: datetime, challenge: Challenge) -> Decimal:
    price = (
        PriceTick.objects.filter(instrument=instrument, at__lte=at).order_by("-at", "-id").values_list("price", flat=True).first()
    )
    if price is not None:
        return price
    # No tick recorded that early (history pruned): the last fill of it before `at`.
    fill = (
        Order.objects.filter(challenge=challenge, instrument=instrument, filled_at__lt=at)
        .order_by("-filled_at", "-id")
        .values_list("filled_avg_price", flat=True)
        .first()
    )
    return fill if fill is not None else instrument.initial_price


def challenge_ensure_anchor(*, challenge: Challenge, day: date) -> DailyAnchor:
    """The DailyAnchor of trading day `day`, written once (unique per challenge and day)
    and computed as at that day's reset instant, whenever it is first asked for.

    The caller holds the challenge row lock. When `day` is the newest trading day the
    challenge has seen, its day_anchor / trading_day / day_start_* columns follow it (no
    version bump: the status did not change)."""
    rules = _ruleset(challenge)
    anchor = DailyAnchor.objects.filter(challenge=challenge, day=day).first()
    if anchor is None:
        reset_at = risk_rules.reset_instant(day, tz=rules.daily_reset_tz, reset_time=rules.daily_reset_time)
        if challenge.created_at and challenge.created_at >= reset_at:
            balance = equity = challenge.starting_balance  # bought during the day: it starts fresh
        else:
            balance, equity = challenge_state_at(challenge=challenge, at=reset_at)
        value = risk_rules.anchor_value(rules, balance=balance, equity=equity)
        try:
            with transaction.atomic():
                anchor = DailyAnchor.objects.create(
                    challenge=challenge, day=day, reset_at=reset_at, balance=balance, equity=equity, anchor=value
                )
        except IntegrityError:
            anchor = DailyAnchor.objects.get(challenge=challenge, day=day)
        else:
            # A day closed at the previous day's reset value: the end-of-day trailing high.
            challenge.eod_high = risk_rules.next_eod_high(
                rules, eod_high=challenge.eod_high, balance=balance, equity=equity
            )
            Challenge.objects.filter(pk=challenge.pk).update(eod_high=challenge.eod_high)
    if challenge.trading_day is None or day >= challenge.trading_day:
        changed = (challenge.trading_day, challenge.day_anchor) != (day, anchor.anchor)
        challenge.trading_day = day
        challenge.day_anchor = anchor.anchor
        challenge.day_start_balance = anchor.balance
        challenge.day_start_equity = anchor.equity
        if changed:
            Challenge.objects.filter(pk=challenge.pk).update(
                trading_day=day,
                day_anchor=anchor.anchor,
                day_start_balance=anchor.balance,
                day_start_equity=anchor.equity,
            )
    return anchor


def _ensure_today(*, challenge: Challenge, rules: risk_rules.RuleSet, now: datetime) -> date:
    today = _trading_day(rules, now)
    if challenge.trading_day != today or challenge.day_anchor is None:
        challenge_ensure_anchor(challenge=challenge, day=today)
    return today


# --- Fills ----------------------------------------------------------------------------------------


@dataclass
class _Fill:
    order: Order
    position: Position | None  # None when the fill closed the position
    symbol: str
    realized_pl: Decimal


def _net_against(*, position, instrument: Instrument, side: str, qty: Decimal, price: Decimal) -> netting.NetResult:
    """The netting of a fill against the held position (None: flat)."""
    return netting.net_fill(
        qty=position.qty if position else ZERO,
        avg_entry_price=position.avg_entry_price if position else ZERO,
        side=side,
        fill_qty=qty,
        price=price,
        contract_size=instrument.contract_size,
    )


def _apply_fill(
    *,
    challenge: Challenge,
    instrument: Instrument,
    position: Position | None,
    side: str,
    qty: Decimal,
    price: Decimal,
    now: datetime,
    client_order_id: str,
    reason: str,
    actor=None,
    actor_label: str | None = None,
    result: netting.NetResult | None = None,
) -> _Fill:
    """Book one fill under the caller's row lock: order, position, ledger, balance, audit."""
    if result is None:
        result = _net_against(position=position, instrument=instrument, side=side, qty=qty, price=price)
    before = {
        "position_qty": position.qty if position else ZERO,
        "avg_entry_price": position.avg_entry_price if position else ZERO,
        "balance": challenge.balance,
    }
    stamp = timezone.now()  # what auto_now / auto_now_add would write
    order = Order(
        challenge=challenge,
        client_order_id=client_order_id,
        instrument=instrument,
        side=side,
        qty=qty,
        type=Order.Type.MARKET,
        status=Order.Status.FILLED,
        filled_qty=qty,
        filled_avg_price=price,
        realized_pl=result.realized_pl,
        reason=reason,
        filled_at=now,
        created_at=stamp,
    )
    position_table = Position._meta.db_table
    # Raw SQL (tradesense.common.rawsql), one cursor for the fill's writes: this runs on
    # every order.
    with rawsql.cursor() as cursor:
        rawsql.insert_row(order, cur=cursor)
        if result.qty == 0:
            cursor.execute(f'DELETE FROM "{position_table}" WHERE "id" = %s', [position.pk])  # nosec B608
            position = None
        elif position is None:
            position = Position(
                challenge=challenge,
                instrument=instrument,
                qty=result.qty,
                avg_entry_price=result.avg_entry_price,
                opened_at=now,
                updated_at=stamp,
            )
            rawsql.insert_row(position, cur=cursor)
        else:
            if (position.qty > 0) != (result.qty > 0):
                position.opened_at = now  # a flip opens a new position
            position.qty = result.qty
            position.avg_entry_price = result.avg_entry_price
            position.updated_at = stamp
            names = ("qty", "avg_entry_price", "opened_at", "updated_at")
            cursor.execute(
                f'UPDATE "{position_table}" SET "qty" = %s, "avg_entry_price" = %s, "opened_at" = %s, "updated_at" = %s '  # nosec B608
                'WHERE "id" = %s',
                [rawsql.db_value(Position, name, getattr(position, name)) for name in names] + [position.pk],
            )
        if result.realized_pl != 0:
            challenge.balance += result.realized_pl
            rawsql.insert_row(
                LedgerEntry(
                    challenge=challenge,
                    kind=LedgerEntry.Kind.REALIZED_PL,
                    amount=result.realized_pl,
                    balance_after=challenge.balance,
                    order=order,
                    memo=f"{side} {qty} {instrument.symbol} @ {price}",
                    created_at=now,
                ),
                cur=cursor,
            )
        challenge.last_trade_at = now
        # audit_record's row, written like the others (same columns and JSON as audit_record).
        rawsql.insert_row(
            AuditEvent(
                created_at=stamp,
                actor=actor if getattr(actor, "is_authenticated", False) else None,
                actor_label=actor_label or actor_label_for(actor),
                action="order.filled",
                object_type=Order._meta.label_lower,
                object_id=str(order.pk),
                before=_jsonable(before),
                after=_jsonable(
                    {
                        "challenge": challenge.pk,
                        "symbol": instrument.symbol,
                        "side": side,
                        "qty": qty,
                        "price": price,
                        "position_qty": result.qty,
                        "avg_entry_price": result.avg_entry_price,
                        "realized_pl": result.realized_pl,
                        "balance": challenge.balance,
                    }
                ),
                reason=reason or "market order",
            ),
            cur=cursor,
        )
    return _Fill(order=order, position=position, symbol=instrument.symbol, realized_pl=result.realized_pl)


def _check_qty(*, instrument: Instrument, qty: Decimal) -> None:
    if qty < instrument.min_qty or qty > instrument.max_qty:
        raise InvalidQuantity(
            f"qty must be between {instrument.min_qty.normalize():f} and {instrument.max_qty.normalize():f} "
            f"for {instrument.symbol}.",
            fields={"qty": [f"Out of range for {instrument.symbol}."]},
        )
    if qty % instrument.qty_step != 0:
        raise InvalidQuantity(
            f"qty must be a multiple of {instrument.qty_step.normalize():f} for {instrument.symbol}.",
            fields={"qty": [f"Not a multiple of {instrument.qty_step.normalize():f}."]},
        )


def _margin_check(
    *,
    challenge: Challenge,
    rules: risk_rules.RuleSet,
    positions: dict[str, Position],
    prices: dict[str, Decimal],
    symbol: str,
    instrument: Instrument,
    result: netting.NetResult,
) -> None:
    """Refuse an order whose resulting gross exposure exceeds equity x leverage. An order
    that does not increase exposure (a reduction or close) is always allowed."""
    before = after = ZERO
    equity_after = challenge.balance + result.realized_pl
    for other_symbol, position in positions.items():
        contract = position.instrument.contract_size
        exposure = netting.exposure(qty=position.qty, price=prices[other_symbol], contract_size=contract)
        before += exposure
        if other_symbol != symbol:
            after += exposure
            equity_after += netting.unrealized_pl(
                qty=position.qty, avg_entry_price=position.avg_entry_price, price=prices[other_symbol], contract_size=contract
            )
    after += netting.exposure(qty=result.qty, price=prices[symbol], contract_size=instrument.contract_size)
    equity_after += netting.unrealized_pl(
        qty=result.qty, avg_entry_price=result.avg_entry_price, price=prices[symbol], contract_size=instrument.contract_size
    )
    limit = equity_after * rules.leverage
    if after > before and after > limit:
        raise InsufficientMargin(
            f"The order would take gross exposure to {after.quantize(Decimal('0.01'))}, above equity "
            f"{equity_after} x leverage {rules.leverage.normalize():f} = {limit.quantize(Decimal('0.01'))}.",
            fields={"qty": ["Exceeds the margin available."]},
        )


@dataclass
class OrderResult:
    order: Order
    created: bool  # False: a retry of an existing client_order_id (nothing was filled)
    challenge: Challenge


def order_place(
    *,
    challenge_id: int,
    trader,
    symbol: str,
    side: str,
    qty: Decimal,
    client_order_id: str | None = None,
    expected_version: int | None = None,
    now: datetime | None = None,
    savepoint: bool = True,
) -> OrderResult:
    """Fill a market order at the current price: lock the challenge, ensure today's
    anchor, check it is active, fill with netting and the margin check, then run the
    inline risk check (challenge_evaluate_locked, detected_by="fill") in the same
    transaction. A client_order_id already used on the challenge returns its first order
    and fills nothing.

    Inside a caller's transaction the order runs in a savepoint, so a refused order
    leaves the caller's transaction usable. `savepoint=False` is for a caller whose
    transaction fails as a whole when the order does (the API's Idempotency-Key
    record): it saves the savepoint's two round trips on the hot path."""
    try:
        with transaction.atomic(savepoint=savepoint):
            return _order_place_locked(
                challenge_id=challenge_id,
                trader=trader,
                symbol=symbol,
                side=side,
                qty=qty,
                client_order_id=client_order_id,
                expected_version=expected_version,
                now=now,
            )
    except IntegrityError:
        # Only reachable when the same client_order_id raced past the row lock (it cannot
        # under select_for_update, but the unique constraint is the last word).
        if not savepoint and transaction.get_connection().in_atomic_block:
            # The caller's transaction is spoilt: it rolls back, and the client retries
            # (the retry finds the first order by its client_order_id).
            raise StateConflict("The order raced a duplicate; retry it.", code="order_retry") from None
        if client_order_id:
            existing = Order.objects.filter(challenge_id=challenge_id, client_order_id=client_order_id).first()
            if existing is not None:
                return OrderResult(order=existing, created=False, challenge=existing.challenge)
        raise


def _existing_order(*, challenge: Challenge, client_order_id: str, symbol: str, side: str, qty: Decimal) -> Order:
    order = Order.objects.filter(challenge=challenge, client_order_id=client_order_id).select_related("instrument").get()
    if (order.instrument.symbol, order.side, order.qty) != (symbol, side, qty):
        raise ClientOrderIdReused(fields={"client_order_id": ["Already used for a different order."]})
    return order


def _order_reads(
    *, challenge: Challenge, symbol: str, client_order_id: str | None
) -> tuple[bool, dict[str, Position], Instrument | None]:
    """Everything an order reads after the row lock, in one statement: whether its
    client_order_id is already used on the challenge, the challenge's positions with
    their instruments (prices included), and the ordered symbol's instrument (held, or
    active). Run after the lock, so it sees what the previous holder committed.

    One row per position, plus the ordered symbol's instrument when it is not held; a
    single row of NULLs when there are neither (the first column still answers)."""
    width = rawsql.width(Instrument)
    sql = (
        f'SELECT d."dup", {rawsql.select_list(Instrument, "i")}, {rawsql.select_list(Position, "p")} '  # nosec B608
        f'FROM (SELECT EXISTS (SELECT 1 FROM "{Order._meta.db_table}" o '
        'WHERE o."challenge_id" = %s AND o."client_order_id" = %s) AS "dup") d '
        f'LEFT JOIN ("{Instrument._meta.db_table}" i LEFT JOIN "{Position._meta.db_table}" p '
        'ON p."instrument_id" = i."id" AND p."challenge_id" = %s) '
        'ON (p."id" IS NOT NULL OR (i."symbol" = %s AND i."is_active"))'
    )
    with rawsql.cursor() as cursor:
        cursor.execute(sql, [challenge.pk, client_order_id or "", challenge.pk, symbol])
        rows = cursor.fetchall()
    duplicate = bool(rows[0][0])
    positions: dict[str, Position] = {}
    instrument = None
    for row in rows:
        if row[1] is None:
            continue  # the lone row of NULLs
        held_instrument = rawsql.load(Instrument, row[1 : 1 + width])
        if row[1 + width] is not None:
            position = rawsql.load(Position, row[1 + width :])
            position.instrument = held_instrument
            positions[held_instrument.symbol] = position
        if held_instrument.symbol == symbol:
            instrument = held_instrument
    return duplicate, positions, instrument


def _order_place_locked(
    *, challenge_id, trader, symbol, side, qty, client_order_id, expected_version, now
) -> OrderResult:
    challenge = challenge_lock(challenge_id=challenge_id, trader=trader)
    duplicate, positions, instrument = _order_reads(challenge=challenge, symbol=symbol, client_order_id=client_order_id)
    if duplicate:
        existing = _existing_order(challenge=challenge, client_order_id=client_order_id, symbol=symbol, side=side, qty=qty)
        return OrderResult(order=existing, created=False, challenge=challenge)
    challenge_check_version(
        challenge=challenge,
        expected_version=expected_version,
        attempted_change={
            "action": "order.place",
            "symbol": symbol,
            "side": side,
            "qty": str(qty),
            "client_order_id": client_order_id or "",
        },
    )
    if challenge.status != Challenge.Status.ACTIVE:
        raise ChallengeNotActive(f"Challenge {challenge.pk} is {challenge.status}: it accepts no more orders.")
    if instrument is None:
        raise UnknownSymbol(f"Unknown symbol {symbol!r}.", fields={"symbol": ["Unknown symbol."]})
    _check_qty(instrument=instrument, qty=qty)
    now = now or timezone.now()
    fill = _fill_and_evaluate(
        challenge=challenge,
        instrument=instrument,
        side=side,
        qty=qty,
        client_order_id=client_order_id or uuid.uuid4().hex,
        reason="",
        now=now,
        actor=trader,
        positions=positions,
    )
    return OrderResult(order=fill.order, created=True, challenge=challenge)


def _positions_by_symbol(challenge: Challenge) -> dict[str, Position]:
    return _order_reads(challenge=challenge, symbol="", client_order_id=None)[1]


def _fill_and_evaluate(
    *,
    challenge: Challenge,
    instrument: Instrument,
    side: str,
    qty: Decimal,
    client_order_id: str,
    reason: str,
    now: datetime,
    actor,
    positions: dict[str, Position],
    margin_check: bool = True,
) -> _Fill:
    rules = _ruleset(challenge)
    today = _ensure_today(challenge=challenge, rules=rules, now=now)
    position = positions.get(instrument.symbol)
    prices = {sym: market_fresh_price(instrument=p.instrument, now=now) for sym, p in positions.items()}
    prices[instrument.symbol] = market_fresh_price(instrument=instrument, now=now)
    price = prices[instrument.symbol]
    result = _net_against(position=position, instrument=instrument, side=side, qty=qty, price=price)
    if margin_check:
        _margin_check(
            challenge=challenge,
            rules=rules,
            positions=positions,
            prices=prices,
            symbol=instrument.symbol,
            instrument=instrument,
            result=result,
        )
    status_before = challenge.status
    fill = _apply_fill(
        challenge=challenge,
        instrument=instrument,
        position=position,
        side=side,
        qty=qty,
        price=price,
        now=now,
        client_order_id=client_order_id,
        reason=reason,
        actor=actor,
        result=result,
    )
    if fill.position is None:
        positions.pop(instrument.symbol, None)
    else:
        positions[instrument.symbol] = fill.position
    # A day counts towards min_trading_days when an order fills in it (plan time zone).
    if challenge.last_trading_day != today:
        challenge.trading_days += 1
        challenge.last_trading_day = today
    _verdict, closing = _evaluate_and_apply(
        challenge=challenge, rules=rules, positions=list(positions.values()), prices=prices, now=now, detected_by="fill"
    )
    _challenge_write(challenge=challenge, fields=_CHALLENGE_STATE_FIELDS, bump=True, now=now)
    _emit_events(challenge=challenge, fills=[fill, *closing], status_before=status_before, equity_changed=True)
    return fill


def position_close(
    *, challenge_id: int, trader, symbol: str, expected_version: int | None = None, now: datetime | None = None
) -> OrderResult:
    """Close the whole position in `symbol` with a market order (DELETE positions/{symbol})."""
    with transaction.atomic():
        challenge = challenge_lock(challenge_id=challenge_id, trader=trader)
        positions = _positions_by_symbol(challenge)
        position = positions.get(symbol)
        if position is None:
            raise NoPosition(f"No open position in {symbol!r}.")
        challenge_check_version(
            challenge=challenge,
            expected_version=expected_version,
            attempted_change={"action": "position.close", "symbol": symbol, "qty": str(position.qty)},
        )
        if challenge.status != Challenge.Status.ACTIVE:
            raise ChallengeNotActive(f"Challenge {challenge.pk} is {challenge.status}: it accepts no more orders.")
        fill = _fill_and_evaluate(
            challenge=challenge,
            instrument=position.instrument,
            side="sell" if position.qty > 0 else "buy",
            qty=abs(position.qty),
            client_order_id=uuid.uuid4().hex,
            reason="close",
            now=now or timezone.now(),
            actor=trader,
            positions=positions,
            margin_check=False,
        )
        return OrderResult(order=fill.order, created=True, challenge=challenge)


# --- The inline risk check ------------------------------------------------------------------------


def challenge_evaluate_locked(
    *, challenge: Challenge, prices: dict[str, Decimal], now: datetime, detected_by: str
) -> risk_rules.Verdict:
    """Mark the challenge to market at `prices` and apply the risk rules' verdict.

    The caller holds select_for_update on the challenge row inside a transaction (the
    risk sweep, the daily reset). On a breach every position is closed at the breach
    prices and the challenge fails; on a pass it passes. The risk columns are written
    every time; the version is bumped only when the status changes. Returns the verdict
    (its warnings are the caller's to record)."""
    rules = _ruleset(challenge)
    _ensure_today(challenge=challenge, rules=rules, now=now)
    positions = list(Position.objects.filter(challenge=challenge).select_related("instrument"))
    full_prices = {p.instrument.symbol: prices.get(p.instrument.symbol, p.instrument.price) for p in positions}
    status_before = challenge.status
    equity_before = challenge.equity
    verdict, closing = _evaluate_and_apply(
        challenge=challenge, rules=rules, positions=positions, prices=full_prices, now=now, detected_by=detected_by
    )
    changed = challenge.status != status_before
    _challenge_write(challenge=challenge, fields=_CHALLENGE_STATE_FIELDS, bump=changed, now=now)
    _emit_events(
        challenge=challenge,
        fills=closing,
        status_before=status_before,
        equity_changed=challenge.equity != equity_before,
    )
    return verdict


def _best_day_profit(*, challenge: Challenge, rules: risk_rules.RuleSet) -> Decimal | None:
    """The best trading day's realized profit, from the anchors' balances (only when the
    plan has the consistency gate; it costs a query)."""
    if rules.best_day_max_share_pct is None:
        return None
    balances = list(DailyAnchor.objects.filter(challenge=challenge).order_by("day").values_list("balance", flat=True))
    balances.append(challenge.balance)
    if len(balances) < 2:
        return challenge.balance - challenge.starting_balance
    return max(later - earlier for earlier, later in zip(balances, balances[1:], strict=False))


def _evaluate_and_apply(
    *,
    challenge: Challenge,
    rules: risk_rules.RuleSet,
    positions: list[Position],
    prices: dict[str, Decimal],
    now: datetime,
    detected_by: str,
) -> tuple[risk_rules.Verdict, list[_Fill]]:
    """Evaluate in memory and apply the outcome (closing fills on a breach, returned).
    The caller writes the challenge row afterwards."""
    equity = challenge.balance
    for position in positions:
        equity += netting.unrealized_pl(
            qty=position.qty,
            avg_entry_price=position.avg_entry_price,
            price=prices[position.instrument.symbol],
            contract_size=position.instrument.contract_size,
        )
    state = risk_rules.AccountState(
        now=now,
        starting_balance=challenge.starting_balance,
        balance=challenge.balance,
        equity=equity,
        day_anchor=challenge.day_anchor if challenge.day_anchor is not None else challenge.starting_balance,
        intraday_high_equity=challenge.intraday_high_equity or challenge.starting_balance,
        eod_high=challenge.eod_high or challenge.starting_balance,
        trading_days=challenge.trading_days,
        has_open_positions=bool(positions),
        created_at=challenge.created_at,
        last_trade_at=challenge.last_trade_at,
        best_day_profit=_best_day_profit(challenge=challenge, rules=rules),
        total_profit=challenge.balance - challenge.starting_balance,
    )
    verdict = risk_rules.evaluate(rules, state)
    challenge.equity = equity
    challenge.intraday_high_equity = verdict.new_intraday_high_equity or max(
        challenge.intraday_high_equity or equity, equity
    )
    challenge.max_loss_floor = verdict.max_loss_floor
    challenge.marked_at = now
    closing: list[_Fill] = []
    if verdict.outcome == "failed" and challenge.status == Challenge.Status.ACTIVE:
        closing = _challenge_fail(
            challenge=challenge, positions=positions, prices=prices, now=now, verdict=verdict, state=state,
            detected_by=detected_by,
        )
    elif verdict.outcome == "passed" and challenge.status == Challenge.Status.ACTIVE:
        challenge_check_transition(challenge=challenge, to=Challenge.Status.PASSED)
        challenge.status = Challenge.Status.PASSED
        challenge.ended_at = now
        audit_record(
            action="challenge.passed",
            obj=challenge,
            actor_label=f"system:{detected_by}",
            before={"status": Challenge.Status.ACTIVE},
            after={"status": challenge.status, "balance": challenge.balance, "trading_days": challenge.trading_days},
            reason=f"profit target {verdict.profit_target_balance} reached with {challenge.trading_days} trading days",
        )
    return verdict, closing


def _challenge_fail(*, challenge, positions, prices, now, verdict, state, detected_by) -> list[_Fill]:
    challenge_check_transition(challenge=challenge, to=Challenge.Status.FAILED)
    breach = verdict.breach
    label = f"system:risk-{detected_by}"
    # Close every position at the prices the breach was observed at.
    closing = []
    for position in positions:
        closing.append(_apply_fill(
            challenge=challenge,
            instrument=position.instrument,
            position=position,
            side="sell" if position.qty > 0 else "buy",
            qty=abs(position.qty),
            price=prices[position.instrument.symbol],
            now=now,
            client_order_id=f"breach-{uuid.uuid4().hex}",
            reason="breach",
            actor_label=label,
        ))
    positions.clear()
    challenge.equity = challenge.balance
    challenge.status = Challenge.Status.FAILED
    challenge.ended_at = now
    challenge.failure_reason = breach.message
    Breach.objects.create(
        challenge=challenge,
        rule=breach.rule,
        threshold=breach.threshold,
        observed=breach.observed,
        prices={symbol: str(price) for symbol, price in sorted(prices.items())},
        at=now,
        ruleset_version=challenge.ruleset_version,
        rules=challenge.rules,
        inputs=state.to_inputs(),
        message=breach.message,
        detected_by=detected_by,
    )
    audit_record(
        action="challenge.failed",
        obj=challenge,
        actor_label=label,
        before={"status": Challenge.Status.ACTIVE},
        after={"status": challenge.status, "balance": challenge.balance, "rule": breach.rule},
        reason=breach.message,
    )
    return closing


# --- Conflicts (stale writes an operator decides) -----------------------------------------------------


def conflict_record(*, error: ChallengeStaleVersion, attempted_by: str) -> Conflict:
    """Record a write that met a newer version and was not applied.

    Called by the boundary (API view, admin) after the refused request's transaction has
    rolled back, so the record survives the refusal; it is its own transaction."""
    with transaction.atomic():
        # A client retrying the same refused request (same key, same stale version) is
        # one conflict for the operator, not one per retry.
        same = Conflict.objects.filter(
            status=Conflict.Status.OPEN,
            object_type="challenges.challenge",
            object_id=str(error.challenge_id),
            expected_version=error.expected,
            attempted_by=attempted_by,
            attempted_change=error.attempted_change,
        ).first()
        if same is not None:
            return same
        conflict = Conflict.objects.create(
            object_type="challenges.challenge",
            object_id=str(error.challenge_id),
            expected_version=error.expected,
            actual_version=error.actual,
            attempted_by=attempted_by,
            attempted_change=error.attempted_change,
        )
        audit_record(
            action="conflict.recorded",
            obj=conflict,
            actor_label=attempted_by,
            after={
                "challenge": error.challenge_id,
                "expected_version": error.expected,
                "actual_version": error.actual,
                "attempted_change": error.attempted_change,
            },
            reason="a write based on a stale version was refused",
        )
    return conflict


class ConflictDecision:
    DISCARD = "discard"
    REAPPLY = "reapply"


def conflict_resolve(*, conflict_id: int, decision: str, actor, note: str = "") -> Conflict:
    """An operator's decision on an open conflict: discard the attempted change, or
    re-apply it on the challenge as it is now (orders and closes only; it goes through
    the same service, so every check and the audit trail apply)."""
    with transaction.atomic():
        conflict = Conflict.objects.select_for_update().get(pk=conflict_id)
        if conflict.status != Conflict.Status.OPEN:
            raise StateConflict(f"Conflict {conflict.pk} is already resolved.", code="conflict_resolved")
        change = conflict.attempted_change or {}
        if decision == ConflictDecision.REAPPLY:
            action = change.get("action")
            if conflict.object_type != "challenges.challenge" or action not in {"order.place", "position.close"}:
                raise InvalidInput("Only order and close conflicts can be re-applied; discard this one.")
            challenge = Challenge.objects.get(pk=int(conflict.object_id))
            if action == "order.place":
                result = order_place(
                    challenge_id=challenge.pk,
                    trader=challenge.trader,
                    symbol=change["symbol"],
                    side=change["side"],
                    qty=Decimal(change["qty"]),
                    client_order_id=change.get("client_order_id") or None,
                )
            else:
                result = position_close(challenge_id=challenge.pk, trader=challenge.trader, symbol=change["symbol"])
            outcome = f"re-applied as order {result.order.pk} at version {result.challenge.version}"
        elif decision == ConflictDecision.DISCARD:
            outcome = "discarded"
        else:
            raise InvalidInput(f"Unknown decision {decision!r}.")
        conflict.status = Conflict.Status.RESOLVED
        conflict.resolution = f"{outcome}. {note}".strip()
        conflict.resolved_at = timezone.now()
        conflict.save(update_fields=["status", "resolution", "resolved_at"])
        audit_record(
            action="conflict.resolved",
            obj=conflict,
            actor=actor,
            before={"status": Conflict.Status.OPEN},
            after={"status": conflict.status, "resolution": conflict.resolution},
            reason=note or outcome,
        )
    return conflict


# --- Plans (operators edit them in the admin) ------------------------------------------------------


def plan_save(*, plan: Plan, actor, changed_fields: list[str] | None = None) -> Plan:
    """Create or update a plan with its audit event. Changing a rule field bumps
    ruleset_version, so challenges sold earlier keep the rule set they were bought with
    (they hold a snapshot) and new ones get the new version."""
    with transaction.atomic():
        if plan.pk is None:
            plan.save()
            audit_record(action="plan.created", obj=plan, actor=actor, after=_plan_dict(plan), reason="created")
            return plan
        current = Plan.objects.select_for_update().get(pk=plan.pk)
        before = _plan_dict(current)
        after = _plan_dict(plan)
        changed = sorted(k for k in after if after[k] != before[k] and k != "ruleset_version")
        if not changed:
            return current
        rules_changed = [name for name in changed if name in Plan.RULE_FIELDS]
        plan.ruleset_version = current.ruleset_version + (1 if rules_changed else 0)
        plan.save()
        audit_record(
            action="plan.updated",
            obj=plan,
            actor=actor,
            before={k: before[k] for k in changed + ["ruleset_version"]},
            after={k: after[k] for k in changed} | {"ruleset_version": plan.ruleset_version},
            reason="rule set changed" if rules_changed else "plan details changed",
        )
    return plan


def _plan_dict(plan: Plan) -> dict:
    data = model_to_dict(plan, exclude=["id"])
    return {k: (str(v) if v is not None and not isinstance(v, (bool, int, str)) else v) for k, v in data.items()}


# --- Live events (after commit; a hint carrying the committed version) --------------------------


def _emit_events(
    *, challenge: Challenge, fills: list[_Fill], status_before: str, equity_changed: bool
) -> None:
    """Queue one live message for the change, with the version the transaction will
    commit (so call after the challenge row was written): order.filled and
    position.updated per fill, then equity.updated and challenge.status when they
    changed. One message, not one per frame: each is a Redis round trip."""
    from challenges.selectors import order_to_dict, position_to_dict

    events: list[tuple[str, dict]] = []
    for fill in fills:
        events.append(("order.filled", order_to_dict(fill.order)))
        events.append(("position.updated", position_to_dict(fill.position, symbol=fill.symbol)))
    if equity_changed:
        events.append(
            (
                "equity.updated",
                {
                    "balance": str(challenge.balance),
                    "equity": str(challenge.equity),
                    "marked_at": challenge.marked_at.isoformat() if challenge.marked_at else None,
                },
            )
        )
    if challenge.status != status_before:
        events.append(("challenge.status", {"status": challenge.status, "failure_reason": challenge.failure_reason}))
    send_events_on_commit(events=events, challenge=challenge.pk, version=challenge.version)
