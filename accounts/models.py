"""Credentials other than the password: API tokens, WebSocket tickets, and the database
counters behind the sign-in and sign-up limits (docs/security.md "Accounts and tokens").

Only a SHA-256 digest of a token or ticket is stored: both are 256 random bits, so a
fast unsalted hash is the right one (nothing to brute-force), and the database, its
backups and the admin never hold a secret that works.
"""

import hashlib

from django.conf import settings
from django.db import models


def secret_digest(secret: str) -> str:
    """What is stored for a token or ticket, and what a presented one is looked up by."""
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


class ApiToken(models.Model):
    """`Authorization: Token <secret>` for REST clients, until `expires_at`."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    digest = models.CharField(max_length=64, unique=True)  # sha256(secret), hex
    created_at = models.DateTimeField()
    expires_at = models.DateTimeField()
    # The client address that asked for it, so an owner can tell their bot's token from
    # one they did not create.
    created_from = models.GenericIPAddressField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        verbose_name = "API token"

    def __str__(self):
        return f"token {self.pk} of user {self.user_id}, expires {self.expires_at:%Y-%m-%d %H:%M}"


class WsTicket(models.Model):
    """A single-use, short-lived pass for one WebSocket connection (`?ticket=`): what a
    URL may carry instead of a long-lived token (URLs end up in access logs)."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    digest = models.CharField(max_length=64, unique=True)
    expires_at = models.DateTimeField(db_index=True)

    def __str__(self):
        return f"ticket {self.pk} of user {self.user_id}"


class RateWindow(models.Model):
    """One fixed window of a sliding-window rate limit kept in the database: the sign-up
    limit per address, and the `auth` throttle's counters while Redis is unreachable."""

    scope = models.CharField(max_length=40)
    key = models.CharField(max_length=200)
    slot = models.BigIntegerField()  # floor(unix time / period)
    count = models.PositiveIntegerField(default=0)
    expires_at = models.DateTimeField(db_index=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["scope", "key", "slot"], name="accounts_ratewindow_unique")]

    def __str__(self):
        return f"{self.scope} {self.key} #{self.slot}: {self.count}"
