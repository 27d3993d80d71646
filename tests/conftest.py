"""Fixtures shared by every app's tests. App-specific ones live in tests/<app>/conftest.py."""

from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from accounts.services import token_issue
from challenges.management.commands.seed_demo import seed_plans
from challenges.models import Plan


@pytest.fixture
def plans(db) -> dict[str, Plan]:
    return {plan.slug: plan for plan in seed_plans()}


@pytest.fixture
def make_user(db):
    counter = {"n": 0}

    def _make(username: str | None = None, *, is_staff: bool = False, password: str = "pass-123-secure"):
        counter["n"] += 1
        username = username or f"trader{counter['n']}"
        user = get_user_model().objects.create_user(username, f"{username}@example.com", password, is_staff=is_staff)
        return user

    return _make


@pytest.fixture
def trader(make_user):
    return make_user("alice")


@pytest.fixture
def other_trader(make_user):
    return make_user("bob")


@pytest.fixture
def staff(make_user):
    return make_user("operator", is_staff=True)


def _client_for(user) -> APIClient:
    client = APIClient()
    if user is not None:
        client.credentials(HTTP_AUTHORIZATION=f"Token {token_issue(user=user)}")
    return client


@pytest.fixture
def client_for(db):
    return _client_for


@pytest.fixture
def api(trader) -> APIClient:
    return _client_for(trader)


@pytest.fixture
def make_challenge(plans):
    """Open a challenge the way a confirmed purchase does (challenge_activate)."""
    from challenges.services import challenge_activate

    counter = {"n": 0}

    def _make(trader, plan: str | Plan = "starter", **overrides):
        counter["n"] += 1
        plan_obj = plans[plan] if isinstance(plan, str) else plan
        challenge = challenge_activate(trader=trader, plan=plan_obj, source_ref=f"test:{counter['n']}:{id(counter)}")
        if overrides:
            for name, value in overrides.items():
                setattr(challenge, name, value)
            challenge.save()
        return challenge

    return _make


ZERO = Decimal("0")


@pytest.fixture
def live_events(monkeypatch) -> list[dict]:
    """Frames the code hands to the channel layer after commit, captured instead of
    sent: [{group, type, challenge, version, data}], in the order they would go out."""
    from tradesense.common import realtime

    sent: list[dict] = []

    def _record(*, group, frames):
        sent.extend({"group": group, **frame} for frame in frames)
        return True

    monkeypatch.setattr(realtime, "send_frames_now", _record)
    return sent


@pytest.fixture(autouse=True)
def _live_events_not_paused():
    """A test that breaks the channel layer pauses live sends for a few seconds
    (tradesense.common.realtime); the next test starts with sends enabled."""
    from tradesense.common import realtime

    realtime._paused_until = 0.0
    yield
    realtime._paused_until = 0.0
