from django.conf import settings
from django.db import models


class AuditEvent(models.Model):
    """Append-only record of every state change: who, what, before, after, why.

    Written by services in the same transaction as the change it describes.
    """

    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # "trader:7", "staff:1", "system:risk-sweep", "processor:webhook"...
    actor_label = models.CharField(max_length=100)
    action = models.CharField(max_length=100, db_index=True)
    object_type = models.CharField(max_length=50)
    object_id = models.CharField(max_length=64)
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(null=True, blank=True)
    reason = models.TextField(blank=True, default="")

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["object_type", "object_id"])]

    def __str__(self):
        return f"{self.action} {self.object_type}:{self.object_id} by {self.actor_label}"

    def save(self, *args, **kwargs):
        if self.pk is not None:
            raise ValueError("Audit events are append-only.")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise ValueError("Audit events are append-only.")


class IdempotencyRecord(models.Model):
    """The first response to a creating POST, replayed for the same Idempotency-Key."""

    scope = models.CharField(max_length=64)  # "user:7" or "anon"
    key = models.CharField(max_length=255)
    fingerprint = models.CharField(max_length=64)  # sha256 of method, path and body
    status_code = models.PositiveSmallIntegerField(null=True)
    response_body = models.JSONField(null=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["scope", "key"], name="idempotency_scope_key_unique")]


class Conflict(models.Model):
    """A write based on a stale version that could not be applied: an operator decides."""

    class Status(models.TextChoices):
        OPEN = "open"
        RESOLVED = "resolved"

    created_at = models.DateTimeField(auto_now_add=True)
    object_type = models.CharField(max_length=50)
    object_id = models.CharField(max_length=64)
    expected_version = models.PositiveIntegerField()
    actual_version = models.PositiveIntegerField()
    attempted_by = models.CharField(max_length=100)
    attempted_change = models.JSONField()
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.OPEN)
    resolution = models.TextField(blank=True, default="")
    resolved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]


class PeriodicLease(models.Model):
    """One periodic job's schedule in the database (tradesense.common.periodic).

    Time is cut into slots of `interval` aligned to the epoch; claiming a slot is one
    conditional UPDATE on this row, so a job runs at most once per slot across every
    process, whether beat's task or a worker's watchdog asks first."""

    name = models.CharField(max_length=100, primary_key=True)  # the CELERY_BEAT_SCHEDULE entry
    interval = models.DurationField()
    # The start of the first slot not yet claimed: a claim needs next_due_at <= now.
    next_due_at = models.DateTimeField()
    last_run_at = models.DateTimeField(null=True, blank=True)
    last_runner = models.CharField(max_length=200, blank=True, default="")  # "task:<worker>", "watchdog:<host>:<pid>"
    # When beat's task for this job last arrived, whether it won the slot or not: a
    # watchdog takes a slot only once beat's next task is overdue.
    beat_seen_at = models.DateTimeField(null=True, blank=True)

    def __str__(self):
        return f"{self.name} due {self.next_due_at:%H:%M:%S.%f}"
