"""Risk engine rows: what the monitor has done, kept so that nothing is done twice.

Each table's unique constraint is the idempotency guarantee (not the task queue):
a second run of a sweep tick, a second warning for the same limit and day, or a
second heartbeat row for the same worker fails the insert instead of repeating it.
"""

from django.db import models

from tradesense.common.money import MONEY, PERCENT


class SweepTick(models.Model):
    """One run of the periodic risk sweep. `tick` is the scheduled time floored to the
    sweep interval (epoch seconds), unique: a duplicate delivery of the same tick, a
    second beat, or a second worker inserting it gets an IntegrityError and does nothing."""

    tick = models.BigIntegerField(unique=True)
    interval_seconds = models.DecimalField(max_digits=8, decimal_places=3)
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    worker = models.CharField(max_length=200, blank=True, default="")
    # Where the next sweep starts when this one stopped at its deadline (0: start over),
    # so a large book is covered in slices instead of starving the highest ids.
    resume_after_id = models.BigIntegerField(default=0)
    deadline_hit = models.BooleanField(default=False)
    evaluated = models.PositiveIntegerField(default=0)
    marked = models.PositiveIntegerField(default=0)
    locked = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)
    passed = models.PositiveIntegerField(default=0)
    warnings = models.PositiveIntegerField(default=0)
    duration_ms = models.PositiveIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["-tick"]
        get_latest_by = "tick"

    def __str__(self):
        return f"sweep tick {self.tick}"


class RiskWarning(models.Model):
    """A warning that a loss limit is 50/80/90 % used: once per limit, level and trading day."""

    class Level(models.IntegerChoices):
        HALF = 50, "50 % of the limit used"
        EIGHTY = 80, "80 % of the limit used"
        NINETY = 90, "90 % of the limit used"

    challenge = models.ForeignKey("challenges.Challenge", on_delete=models.CASCADE, related_name="risk_warnings")
    rule = models.CharField(max_length=40)  # "max_daily_loss" | "max_total_loss"
    level = models.PositiveSmallIntegerField(choices=Level.choices)
    trading_day = models.DateField()
    used_pct = models.DecimalField(**PERCENT)
    equity = models.DecimalField(**MONEY)
    floor = models.DecimalField(**MONEY)
    detected_by = models.CharField(max_length=20, default="sweep")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["challenge", "rule", "level", "trading_day"], name="risk_warning_once_per_limit_level_day"
            )
        ]

    def __str__(self):
        return f"{self.rule} {self.level}% on {self.trading_day} (challenge {self.challenge_id})"


class WorkerHeartbeat(models.Model):
    """The last sign of life of each Celery worker (alerting reads the age of the newest)."""

    worker = models.CharField(max_length=200, unique=True)  # Celery node name, e.g. celery@host
    pid = models.PositiveIntegerField()
    started_at = models.DateTimeField()
    beat_at = models.DateTimeField(db_index=True)

    class Meta:
        ordering = ["-beat_at"]

    def __str__(self):
        return f"{self.worker} at {self.beat_at:%Y-%m-%d %H:%M:%S}"
