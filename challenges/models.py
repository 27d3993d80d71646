from datetime import time
from decimal import Decimal

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from tradesense.common.money import MONEY, PERCENT, PRICE, QUANTITY


class Plan(models.Model):
    """A tier a trader can buy. Plans are data: operators edit them in the admin.

    Rule parameters are copied onto each challenge at activation (Challenge.rules), so a
    challenge keeps the rule set it was bought with; `ruleset_version` counts edits.
    """

    class DailyAnchor(models.TextChoices):
        BALANCE = "balance", "Balance at the daily reset"
        EQUITY = "equity", "Equity at the daily reset"
        HIGHER = "higher", "Higher of balance and equity at the daily reset"

    class MaxLossMode(models.TextChoices):
        STATIC = "static", "Static floor below the starting balance"
        TRAILING_EOD = "trailing_eod", "Trailing from the end-of-day high"
        TRAILING_INTRADAY = "trailing_intraday", "Trailing from the intraday equity high"

    slug = models.SlugField(unique=True)
    name = models.CharField(max_length=100)
    description = models.TextField(blank=True, default="")
    price = models.DecimalField(**MONEY)
    currency = models.CharField(max_length=3, default="MAD")
    starting_balance = models.DecimalField(**MONEY)
    account_currency = models.CharField(max_length=3, default="USD")
    is_active = models.BooleanField(default=True)
    sort_order = models.PositiveSmallIntegerField(default=0)

    # Rule parameters (percentages of the starting balance).
    max_daily_loss_pct = models.DecimalField(**PERCENT, default=Decimal("5"))
    max_total_loss_pct = models.DecimalField(**PERCENT, default=Decimal("10"))
    profit_target_pct = models.DecimalField(**PERCENT, default=Decimal("10"))
    min_trading_days = models.PositiveSmallIntegerField(default=3)
    leverage = models.DecimalField(max_digits=8, decimal_places=2, default=Decimal("30"))
    daily_reset_tz = models.CharField(max_length=64, default="UTC", help_text="IANA time zone")
    daily_reset_time = models.TimeField(default=time(0, 0))
    daily_anchor = models.CharField(max_length=10, choices=DailyAnchor.choices, default=DailyAnchor.BALANCE)
    max_loss_mode = models.CharField(max_length=20, choices=MaxLossMode.choices, default=MaxLossMode.STATIC)
    trailing_locks_at_start = models.BooleanField(default=False)
    best_day_max_share_pct = models.DecimalField(**PERCENT, null=True, blank=True)
    max_duration_days = models.PositiveIntegerField(null=True, blank=True)
    inactivity_days = models.PositiveIntegerField(null=True, blank=True)
    ruleset_version = models.PositiveIntegerField(default=1)

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    RULE_FIELDS = (
        "max_daily_loss_pct",
        "max_total_loss_pct",
        "profit_target_pct",
        "min_trading_days",
        "leverage",
        "daily_reset_tz",
        "daily_reset_time",
        "daily_anchor",
        "max_loss_mode",
        "trailing_locks_at_start",
        "best_day_max_share_pct",
        "max_duration_days",
        "inactivity_days",
    )

    class Meta:
        ordering = ["sort_order", "price"]

    def __str__(self):
        return self.name

    def rules_snapshot(self) -> dict:
        """The rule set as JSON-safe plain values (stored on each challenge)."""
        out = {"ruleset_version": self.ruleset_version}
        for name in self.RULE_FIELDS:
            value = getattr(self, name)
            out[name] = None if value is None else (value if isinstance(value, (bool, int)) else str(value))
        return out


class Challenge(models.Model):
    class Status(models.TextChoices):
        ACTIVE = "active"
        PASSED = "passed"
        FAILED = "failed"

    # The status pipeline, as data; challenges.services checks every transition here.
    ALLOWED_TRANSITIONS = {
        Status.ACTIVE: (Status.PASSED, Status.FAILED),
        Status.PASSED: (),
        Status.FAILED: (),
    }

    trader = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="challenges")
    plan = models.ForeignKey(Plan, on_delete=models.PROTECT, related_name="challenges")
    # Idempotent activation: the purchase that paid for it ("purchase:42"); the
    # challenge does not know more about how it was paid for.
    source_ref = models.CharField(max_length=64, unique=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.ACTIVE, db_index=True)
    currency = models.CharField(max_length=3, default="USD")
    starting_balance = models.DecimalField(**MONEY)
    balance = models.DecimalField(**MONEY)  # realized
    equity = models.DecimalField(**MONEY)  # marked to market at the last evaluation
    version = models.PositiveIntegerField(default=1)
    rules = models.JSONField()  # Plan.rules_snapshot() at activation
    ruleset_version = models.PositiveIntegerField()

    # Risk state (maintained by the inline check and the sweep, under the row lock).
    trading_day = models.DateField(null=True, blank=True)  # plan-time-zone day of day_anchor
    day_anchor = models.DecimalField(**MONEY, null=True, blank=True)
    # Balance and equity at that day's reset (copied from the DailyAnchor row so the
    # snapshot needs no extra query).
    day_start_balance = models.DecimalField(**MONEY, null=True, blank=True)
    day_start_equity = models.DecimalField(**MONEY, null=True, blank=True)
    intraday_high_equity = models.DecimalField(**MONEY, null=True, blank=True)
    eod_high = models.DecimalField(**MONEY, null=True, blank=True)
    max_loss_floor = models.DecimalField(**MONEY, null=True, blank=True)
    trading_days = models.PositiveIntegerField(default=0)
    last_trading_day = models.DateField(null=True, blank=True)
    last_trade_at = models.DateTimeField(null=True, blank=True)
    marked_at = models.DateTimeField(null=True, blank=True)

    failure_reason = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    ended_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["trader", "-id"])]

    def __str__(self):
        return f"Challenge #{self.pk} ({self.plan_id}, {self.status})"


class Instrument(models.Model):
    """A tradable symbol, quoted in USD. `price`/`price_at` is the current price, written
    in the same transaction as the PriceTick that set it, so every process reads the
    same price from the database."""

    symbol = models.CharField(max_length=16, unique=True)
    name = models.CharField(max_length=100)
    asset_class = models.CharField(max_length=20)
    quote_currency = models.CharField(max_length=3, default="USD")
    contract_size = models.DecimalField(**QUANTITY, default=Decimal("1"))
    qty_step = models.DecimalField(**QUANTITY, default=Decimal("0.01"))
    min_qty = models.DecimalField(**QUANTITY, default=Decimal("0.01"))
    max_qty = models.DecimalField(**QUANTITY, default=Decimal("1000000"))
    price_decimals = models.PositiveSmallIntegerField(default=2)
    initial_price = models.DecimalField(**PRICE)
    volatility = models.DecimalField(max_digits=10, decimal_places=8, help_text="std dev of one tick's return")
    seed = models.BigIntegerField(default=0)
    sim_step = models.BigIntegerField(default=0)  # ticks of the random walk taken so far
    price = models.DecimalField(**PRICE)
    price_at = models.DateTimeField()
    is_active = models.BooleanField(default=True)

    class Meta:
        ordering = ["symbol"]
        # Moving a price can pass or fail any trader: a role of its own, not every staff account.
        permissions = [("set_price", "Can set a market price")]

    def __str__(self):
        return self.symbol


class PriceTick(models.Model):
    class Source(models.TextChoices):
        SIMULATION = "sim"
        FEED = "feed"
        STAFF = "staff"

    instrument = models.ForeignKey(Instrument, on_delete=models.CASCADE, related_name="ticks")
    price = models.DecimalField(**PRICE)
    at = models.DateTimeField()
    source = models.CharField(max_length=5, choices=Source.choices)
    step = models.BigIntegerField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["instrument", "-at"]), models.Index(fields=["at"])]


class Order(models.Model):
    class Side(models.TextChoices):
        BUY = "buy"
        SELL = "sell"

    class Type(models.TextChoices):
        MARKET = "market"

    class Status(models.TextChoices):
        FILLED = "filled"

    challenge = models.ForeignKey(Challenge, on_delete=models.PROTECT, related_name="orders")
    client_order_id = models.CharField(max_length=64)
    instrument = models.ForeignKey(Instrument, on_delete=models.PROTECT, related_name="+")
    side = models.CharField(max_length=4, choices=Side.choices)
    qty = models.DecimalField(**QUANTITY)
    type = models.CharField(max_length=10, choices=Type.choices, default=Type.MARKET)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.FILLED)
    filled_qty = models.DecimalField(**QUANTITY)
    filled_avg_price = models.DecimalField(**PRICE)
    realized_pl = models.DecimalField(**MONEY, default=Decimal("0"))
    reason = models.CharField(max_length=30, blank=True, default="")  # "", "close", "breach"
    filled_at = models.DateTimeField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.UniqueConstraint(fields=["challenge", "client_order_id"], name="order_client_id_unique_per_challenge"),
            models.CheckConstraint(condition=Q(qty__gt=0), name="order_qty_positive"),
        ]
        # Replays "as at an instant" (daily anchors, portfolio history) walk a
        # challenge's fills in time order.
        indexes = [models.Index(fields=["challenge", "filled_at"], name="order_challenge_filled_at")]

    def __str__(self):
        return f"Order #{self.pk} {self.side} {self.qty} {self.instrument_id}"


class Position(models.Model):
    """Netted per symbol: qty > 0 is long, qty < 0 is short. Closed positions are deleted."""

    challenge = models.ForeignKey(Challenge, on_delete=models.CASCADE, related_name="positions")
    instrument = models.ForeignKey(Instrument, on_delete=models.PROTECT, related_name="+")
    qty = models.DecimalField(**QUANTITY)
    avg_entry_price = models.DecimalField(**PRICE)
    opened_at = models.DateTimeField()
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["challenge", "instrument"], name="position_one_per_symbol"),
            models.CheckConstraint(condition=~Q(qty=0), name="position_qty_nonzero"),
        ]


class LedgerEntry(models.Model):
    """Immutable: every balance change. balance == starting_balance + sum(amount)."""

    class Kind(models.TextChoices):
        REALIZED_PL = "realized_pl"
        ADJUSTMENT = "adjustment"

    challenge = models.ForeignKey(Challenge, on_delete=models.PROTECT, related_name="ledger")
    kind = models.CharField(max_length=20, choices=Kind.choices)
    amount = models.DecimalField(**MONEY)
    balance_after = models.DecimalField(**MONEY)
    order = models.ForeignKey(Order, null=True, blank=True, on_delete=models.PROTECT, related_name="ledger_entries")
    memo = models.CharField(max_length=200, blank=True, default="")
    # Set by the service to the fill's instant (not auto_now_add), so "the balance as at
    # a reset" sums exactly the rows booked before it.
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["challenge", "created_at"], name="ledger_challenge_created_at")]

    def save(self, *args, **kwargs):
        if self.pk is not None:
            raise ValueError("Ledger entries are immutable.")
        super().save(*args, **kwargs)


class DailyAnchor(models.Model):
    """What balance and equity were at one daily reset (plan time zone), one per day."""

    challenge = models.ForeignKey(Challenge, on_delete=models.CASCADE, related_name="anchors")
    day = models.DateField()
    reset_at = models.DateTimeField()
    balance = models.DecimalField(**MONEY)
    equity = models.DecimalField(**MONEY)
    anchor = models.DecimalField(**MONEY)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-day"]
        constraints = [models.UniqueConstraint(fields=["challenge", "day"], name="daily_anchor_one_per_day")]


class Breach(models.Model):
    """Why a challenge failed, with enough to replay the verdict deterministically."""

    challenge = models.OneToOneField(Challenge, on_delete=models.CASCADE, related_name="breach")
    rule = models.CharField(max_length=40)
    threshold = models.DecimalField(**MONEY)
    observed = models.DecimalField(**MONEY)
    prices = models.JSONField()  # {"EURUSD": "1.08500000", ...} at the breach
    at = models.DateTimeField()
    ruleset_version = models.PositiveIntegerField()
    rules = models.JSONField()
    inputs = models.JSONField(default=dict)  # the plain values the rule was evaluated on
    message = models.TextField()
    detected_by = models.CharField(max_length=20)  # "fill" or "sweep"
    created_at = models.DateTimeField(auto_now_add=True)
