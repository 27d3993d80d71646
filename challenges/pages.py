"""The trader dashboard's pages (API.md "Pages").

Thin views: they read through selectors and render the shell of a page; every figure
that changes is then read by the page's JavaScript from the REST API (session cookie +
CSRF) and kept live over /ws/v1/stream. Writes go through the REST API too, so the
dashboard and the bots share one code path (and its idempotency and audit).
"""

from __future__ import annotations

from datetime import timedelta

from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_http_methods

from challenges.errors import ChallengeNotFound
from challenges.forms import SignupForm
from challenges.models import Instrument
from challenges.selectors import (
    challenge_get_for_trader,
    challenge_list_for_trader,
    challenge_snapshot,
    leaderboard,
    plan_list,
)
from challenges.services import user_register
from risk import rules as risk_rules
from tradesense.common.errors import InvalidInput

# How many upcoming daily resets the page gets: the countdown rolls over to the next
# one by itself, and a page left open for days is resynced at each reset anyway.
RESETS_AHEAD = 3


@login_required
def home_page(request: HttpRequest) -> HttpResponse:
    challenges = list(challenge_list_for_trader(trader=request.user).select_related("plan")[:60])
    if not challenges:
        # API.md: the home shows the plans when the trader has no challenge yet.
        return redirect("pages:plans")
    return render(request, "challenges/home.html", {"challenges": challenges, "nav": "home"})


@login_required
def plans_page(request: HttpRequest) -> HttpResponse:
    return render(request, "challenges/plans.html", {"plans": list(plan_list()), "nav": "plans"})


@login_required
def challenge_page(request: HttpRequest, challenge_id: int) -> HttpResponse:
    try:
        # Someone else's challenge is a 404, exactly like a missing one.
        challenge = challenge_get_for_trader(trader=request.user, challenge_id=challenge_id)
    except ChallengeNotFound:
        raise Http404 from None
    snapshot = challenge_snapshot(challenge=challenge)
    rules = challenge.rules or {}
    page_data = {
        "challenge": challenge.pk,
        "currency": challenge.currency,
        # The same snapshot GET /challenges/{id} answers, so the page is complete at
        # first paint; the script re-reads it as soon as the live stream connects.
        "initial": snapshot,
        "rules": {
            name: rules.get(name)
            for name in ("max_daily_loss_pct", "max_total_loss_pct", "profit_target_pct", "min_trading_days", "max_loss_mode")
        },
        "resets": [at.isoformat() for at in _next_resets(rules)],
        # Prices are shown with each instrument's own precision (EURUSD 1.08500).
        "price_decimals": dict(Instrument.objects.filter(is_active=True).values_list("symbol", "price_decimals")),
        "reset_label": f"{str(rules.get('daily_reset_time', '00:00'))[:5]} {rules.get('daily_reset_tz', 'UTC')}",
    }
    return render(
        request,
        "challenges/challenge.html",
        {"challenge": challenge, "breach": snapshot["breach"], "page_data": page_data, "nav": "home"},
    )


@login_required
def leaderboard_page(request: HttpRequest) -> HttpResponse:
    now = timezone.now()
    names = {plan.slug: plan.name for plan in plan_list()}
    me = request.user.get_username()
    rows = [
        {**row, "plan_name": names.get(row["plan"], row["plan"]), "is_me": row["trader"] == me}
        for row in leaderboard(now=now)
    ]
    return render(request, "challenges/leaderboard.html", {"rows": rows, "month": now, "nav": "leaderboard"})


@require_http_methods(["GET", "POST"])
def signup_page(request: HttpRequest) -> HttpResponse:
    if request.user.is_authenticated:
        return redirect("pages:home")
    form = SignupForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            # The same service as POST /auth/register, so a sign-up is audited the same way.
            user = user_register(
                username=form.cleaned_data["username"],
                email=form.cleaned_data["email"],
                password=form.cleaned_data["password1"],
            )
        except InvalidInput as exc:
            for field, problems in exc.fields.items():
                form.add_error(field if field in form.fields else ("password1" if field == "password" else None), problems)
        else:
            login(request, user, backend="django.contrib.auth.backends.ModelBackend")
            return redirect("pages:plans")
    return render(request, "challenges/signup.html", {"form": form, "nav": "signup"})


def _next_resets(rules: dict) -> list:
    """The next daily reset instants (UTC) in the challenge's own rule set."""
    try:
        ruleset = risk_rules.RuleSet.from_snapshot(rules)
    except (risk_rules.RuleSetError, TypeError, ValueError):
        return []
    now = timezone.now()
    today = risk_rules.trading_day_for(now, tz=ruleset.daily_reset_tz, reset_time=ruleset.daily_reset_time)
    return [
        risk_rules.reset_instant(today + timedelta(days=k), tz=ruleset.daily_reset_tz, reset_time=ruleset.daily_reset_time)
        for k in range(1, RESETS_AHEAD + 1)
    ]
