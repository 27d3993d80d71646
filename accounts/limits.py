"""Limits on sign-in and sign-up that hold when Redis is down (docs/security.md
"Accounts and tokens").

- Failed sign-ins: django-axes (settings AXES_*) counts them in the database per account
  and per client address, on every path that calls `authenticate()` (the API's
  /auth/token, /login/, /admin/login/), and locks out for AXES_COOLOFF_TIME. Failures
  during a lockout are not counted, so a lockout ends a cool-off after the failure that
  caused it. Here: the client address axes uses, and the 429 it answers.
- Request rate on /auth/token and /auth/register: the `auth` scope on Redis counters,
  falling back to database counters while Redis is unreachable
  (DurableScopedRateThrottle).
- Account creations per client address: the `signup` scope, always in the database
  (rare, and it must be exact): SignupThrottle for the API, `signup_limited` for the page.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from datetime import UTC, datetime, timedelta

from axes.helpers import get_client_username, get_cool_off
from axes.models import AccessAttempt
from django.db import transaction
from django.db.models import F, Max, Q
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import ngettext
from rest_framework.throttling import SimpleRateThrottle

from accounts.models import RateWindow
from tradesense.common.clientip import client_address
from tradesense.common.errors import error_body
from tradesense.common.throttling import RedisScopedRateThrottle, sliding_window_wait

logger = logging.getLogger(__name__)


# --- Sliding-window counters in the database ----------------------------------------------------


def db_window_hit(*, scope: str, key: str, rate: int, duration: int, now: float | None = None) -> tuple[bool, int, int, float]:
    """Count one request against `rate` per `duration` seconds for (scope, key), with the
    same sliding-window estimate as the Redis throttle, in one transaction (the current
    window's row is locked, so concurrent requests are each counted once). A refused
    request is not counted. Returns (allowed, current, previous, seconds into the window)."""
    now = time.time() if now is None else now
    slot, into = divmod(now, duration)
    slot = int(slot)
    weight = 1 - into / duration
    key = key[:200]
    with transaction.atomic():
        RateWindow.objects.filter(expires_at__lte=timezone.now()).delete()  # windows no estimate reads
        RateWindow.objects.bulk_create(
            [RateWindow(scope=scope, key=key, slot=slot, count=0,
                        expires_at=datetime.fromtimestamp((slot + 2) * duration, tz=UTC))],
            ignore_conflicts=True,
        )
        counts = dict(
            RateWindow.objects.select_for_update()
            .filter(scope=scope, key=key, slot__in=[slot, slot - 1])
            .values_list("slot", "count")
        )
        current, previous = counts.get(slot, 0), counts.get(slot - 1, 0)
        if current + previous * weight >= rate:
            return False, current, previous, into
        RateWindow.objects.filter(scope=scope, key=key, slot=slot).update(count=F("count") + 1)
    return True, current + 1, previous, into


class DurableScopedRateThrottle(RedisScopedRateThrottle):
    """The view's `throttle_scope` on Redis counters, and on database counters while Redis
    is unreachable: a Redis outage must not lift the limit on guessing."""

    def redis_unavailable(self, exc: Exception) -> bool:
        logger.warning("throttle %s counted in the database (cache unavailable): %r", self.key, exc)
        allowed, self.current, self.previous, self.into = db_window_hit(
            scope=self.scope, key=self.key, rate=self.num_requests, duration=self.duration, now=self.now
        )
        return allowed


class SignupThrottle(SimpleRateThrottle):
    """Account creations per client address (REST_FRAMEWORK DEFAULT_THROTTLE_RATES["signup"]),
    counted in the database whatever the cache."""

    scope = "signup"

    def get_cache_key(self, request, view):
        return f"signup:{client_address(request.META)}"

    def allow_request(self, request, view):
        if self.rate is None:
            return True
        allowed, self.current, self.previous, self.into = db_window_hit(
            scope=self.scope, key=self.get_cache_key(request, view), rate=self.num_requests, duration=self.duration
        )
        return allowed

    def wait(self):
        return sliding_window_wait(
            rate=self.num_requests, duration=self.duration, current=self.current, previous=self.previous, into=self.into
        )


def _retry_after(seconds: float) -> int:
    return max(1, math.ceil(seconds))


def _too_many(request: HttpRequest, *, message: str, wait: int, title: str) -> HttpResponse:
    """429 with Retry-After: the API's error body under /api/, a page elsewhere."""
    if request.path.startswith("/api/"):
        response = JsonResponse(error_body("throttled", message), status=429)
    else:
        response = render(request, "registration/too_many.html", {"title": title, "message": message}, status=429)
    response["Retry-After"] = str(wait)
    return response


def signup_limited(view):
    """The sign-up page under the same per-address creation limit as POST /auth/register."""

    @functools.wraps(view)
    def wrapper(request: HttpRequest, *args, **kwargs):
        if request.method == "POST" and not request.user.is_authenticated:
            throttle = SignupThrottle()
            if not throttle.allow_request(request, None):
                wait = _retry_after(throttle.wait())
                message = _("Too many accounts were created from your address. Try again in %(minutes)s.") % {
                    "minutes": _minutes(wait)
                }
                return _too_many(request, message=message, wait=wait, title=_("Sign-up paused"))
        return view(request, *args, **kwargs)

    return wrapper


# --- django-axes: failed sign-ins ---------------------------------------------------------------


def axes_client_address(request: HttpRequest) -> str | None:
    """AXES_CLIENT_IP_CALLABLE: the address our proxy saw, never the client's own claim."""
    return client_address(request.META) or None


def _minutes(seconds: int) -> str:
    minutes = max(1, math.ceil(seconds / 60))
    return ngettext("%(n)d minute", "%(n)d minutes", minutes) % {"n": minutes}


def lockout_wait_seconds(request: HttpRequest) -> int:
    """Seconds until the sign-in that was just refused may be tried again: the cool-off
    after the newest failure counted for its account or address (an upper bound when
    several failures hold the lock)."""
    cool_off = get_cool_off(request) or timedelta(0)
    now = timezone.now()
    username = get_client_username(request, getattr(request, "axes_credentials", None))
    address = getattr(request, "axes_ip_address", None)
    match = Q(pk__in=[])
    if username:
        match |= Q(username=username)
    if address:
        match |= Q(ip_address=address)
    latest = AccessAttempt.objects.filter(match, attempt_time__gte=now - cool_off).aggregate(at=Max("attempt_time"))["at"]
    until = (latest or now) + cool_off
    return _retry_after((until - now).total_seconds())


def lockout_message(wait: int) -> str:
    return _(
        "Too many failed sign-in attempts for this account or from your address. Try again in %(minutes)s."
    ) % {"minutes": _minutes(wait)}


def is_locked_out(request: HttpRequest) -> bool:
    """Whether axes refused (or just locked) the sign-in of this request."""
    return bool(getattr(request, "axes_locked_out", False))


def lockout_response(request: HttpRequest, original_response=None, credentials=None) -> HttpResponse:
    """AXES_LOCKOUT_CALLABLE: what a locked-out sign-in answers on any path."""
    if isinstance(original_response, HttpResponse) and original_response.status_code == 429:
        return original_response  # the API already answered with its error body
    wait = lockout_wait_seconds(request)
    return _too_many(request, message=lockout_message(wait), wait=wait, title=_("Sign-in paused"))
