"""Accounts, plans, challenge snapshots with ETags, portfolio history, the leaderboard,
and the OpenAPI schema."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal as D

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone
from rest_framework.test import APIClient

from challenges import selectors
from challenges.models import Challenge
from challenges.services import order_place
from tradesense.common.models import AuditEvent

from .conftest import set_price


@pytest.mark.django_db
def test_register_then_token_then_use_it(plans):
    anon = APIClient()
    response = anon.post(
        "/api/v1/auth/register",
        {"username": "newbie", "email": "n@example.com", "password": "a-long-pass-phrase-9"},
        format="json",
        headers={"Idempotency-Key": "reg-1"},
    )
    assert response.status_code == 201
    user = get_user_model().objects.get(username="newbie")
    assert response.json() == {"id": user.pk, "username": "newbie"}
    assert AuditEvent.objects.filter(action="user.registered", object_id=str(user.pk)).exists()
    replay = anon.post(
        "/api/v1/auth/register",
        {"username": "newbie", "email": "n@example.com", "password": "a-long-pass-phrase-9"},
        format="json",
        headers={"Idempotency-Key": "reg-1"},
    )
    assert replay.status_code == 201 and replay.json() == response.json()
    assert get_user_model().objects.filter(username="newbie").count() == 1

    token = anon.post("/api/v1/auth/token", {"username": "newbie", "password": "a-long-pass-phrase-9"}, format="json")
    assert token.status_code == 200
    authed = APIClient()
    authed.credentials(HTTP_AUTHORIZATION=f"Token {token.json()['token']}")
    assert authed.get("/api/v1/challenges").json() == {"results": [], "next": None}
    # Tokens are stored hashed, so each sign-in is a new token; the first one still works.
    again = anon.post("/api/v1/auth/token", {"username": "newbie", "password": "a-long-pass-phrase-9"}, format="json")
    assert again.status_code == 200 and again.json()["token"] != token.json()["token"]
    assert authed.get("/api/v1/challenges").status_code == 200


@pytest.mark.django_db
@pytest.mark.parametrize(
    "body,field",
    [
        ({"username": "ab", "email": "x@example.com", "password": "a-long-pass-phrase-9"}, "username"),
        ({"username": "has space", "email": "x@example.com", "password": "a-long-pass-phrase-9"}, "username"),
        ({"username": "okname", "email": "not-an-email", "password": "a-long-pass-phrase-9"}, "email"),
        ({"username": "okname", "email": "x@example.com", "password": "123"}, "password"),
        ({"username": "okname", "email": "x@example.com", "password": "password"}, "password"),
        ({"username": "okname", "email": "x@example.com"}, "password"),
        ({"username": "okname", "email": "x@example.com", "password": "a-long-pass-phrase-9", "is_staff": True}, "is_staff"),
    ],
)
def test_register_rejects_bad_input_naming_the_field(body, field):
    response = APIClient().post("/api/v1/auth/register", body, format="json")
    assert response.status_code == 400
    assert field in response.json()["error"]["fields"]
    assert not get_user_model().objects.filter(username=body["username"]).exists()


def test_register_refuses_a_taken_username(trader):
    response = APIClient().post(
        "/api/v1/auth/register", {"username": "ALICE", "email": "a@example.com", "password": "a-long-pass-phrase-9"},
        format="json",
    )
    assert response.status_code == 400
    assert response.json()["error"]["fields"] == {"username": ["Already taken."]}


def test_token_with_bad_credentials_is_400(trader):
    response = APIClient().post("/api/v1/auth/token", {"username": "alice", "password": "wrong"}, format="json")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_credentials"
    assert APIClient().post("/api/v1/auth/token", {"username": "alice"}, format="json").status_code == 400


def test_plans_are_public_with_their_rules(plans):
    results = APIClient().get("/api/v1/plans").json()["results"]
    assert [p["slug"] for p in results] == ["starter", "pro", "elite"]
    starter = results[0]
    assert starter["price"] == "200.00" and starter["currency"] == "MAD"
    assert starter["starting_balance"] == "5000.00"
    assert (starter["profit_target_pct"], starter["max_daily_loss_pct"], starter["max_total_loss_pct"]) == (
        "10.00", "5.00", "10.00",
    )
    assert starter["min_trading_days"] == 3 and starter["ruleset_version"] == 1


def test_challenge_snapshot_fields_and_etag(challenge, api, trader):
    response = api.get(f"/api/v1/challenges/{challenge.pk}")
    assert response.status_code == 200
    assert response["ETag"] == '"1"'
    body = response.json()
    expected = {
        "id": challenge.pk, "plan": "starter", "status": "active", "starting_balance": "5000.00",
        "balance": "5000.00", "equity": "5000.00", "day_start_equity": "5000.00", "daily_loss_floor": "4750.00",
        "max_loss_floor": "4500.00", "profit_target_balance": "5500.00", "trading_days": 0, "min_trading_days": 3,
        "failure_reason": None, "breach": None, "version": 1, "ended_at": None,
    }
    assert {k: body[k] for k in expected} == expected
    assert body["created_at"].endswith("Z")
    assert api.get(f"/api/v1/challenges/{challenge.pk}", headers={"If-None-Match": '"1"'}).status_code == 304
    order_place(challenge_id=challenge.pk, trader=trader, symbol="AAPL", side="buy", qty=D("5"))
    set_price("AAPL", D("98.00"))
    after = api.get(f"/api/v1/challenges/{challenge.pk}", headers={"If-None-Match": '"1"'})
    assert after.status_code == 200 and after["ETag"] == '"2"'
    assert (after.json()["balance"], after.json()["equity"]) == ("5000.00", "4990.00")  # live equity
    # balance, equity, status and version are read-only: there is no write path for them
    assert api.patch(f"/api/v1/challenges/{challenge.pk}", {"balance": "1"}, format="json").status_code == 405
    assert api.put(f"/api/v1/challenges/{challenge.pk}", {"status": "passed"}, format="json").status_code == 405
    challenge.refresh_from_db()
    assert challenge.balance == D("5000.00") and challenge.status == "active"


def test_challenge_list_is_the_traders_own_newest_first(make_challenge, trader, other_trader, api, market):
    mine = [make_challenge(trader), make_challenge(trader, "pro")]
    make_challenge(other_trader)
    body = api.get("/api/v1/challenges").json()
    assert [c["id"] for c in body["results"]] == [mine[1].pk, mine[0].pk]
    page = api.get("/api/v1/challenges?limit=1").json()
    assert [c["id"] for c in page["results"]] == [mine[1].pk]
    assert [c["id"] for c in api.get(page["next"]).json()["results"]] == [mine[0].pk]
    assert api.get("/api/v1/challenges?limit=-1").status_code == 400
    assert api.get("/api/v1/challenges?before=x").status_code == 400
    assert len(api.get("/api/v1/challenges?limit=100000").json()["results"]) == 2  # capped at 500


def test_portfolio_history_replays_equity(challenge, trader, api):
    start = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
    Challenge.objects.filter(pk=challenge.pk).update(created_at=start)
    challenge.refresh_from_db()
    set_price("AAPL", D("100.00"), at=start + timedelta(minutes=4, seconds=59))
    order_place(challenge_id=challenge.pk, trader=trader, symbol="AAPL", side="buy", qty=D("10"),
                now=start + timedelta(minutes=5))
    set_price("AAPL", D("103.00"), at=start + timedelta(minutes=12))
    set_price("AAPL", D("99.00"), at=start + timedelta(minutes=22))
    set_price("AAPL", D("101.50"), at=start + timedelta(minutes=29))
    body = selectors.portfolio_history(challenge=challenge, timeframe="5Min", now=start + timedelta(minutes=30))
    assert body["timeframe"] == "5Min" and body["base_value"] == "5000.00"
    assert body["timestamp"] == [f"2026-11-20T10:{m:02d}:00Z" for m in range(0, 31, 5)]
    assert body["equity"] == ["5000.00", "5000.00", "5000.00", "5030.00", "5030.00", "4990.00", "5015.00"]
    assert body["profit_loss"] == ["0.00", "0.00", "0.00", "30.00", "30.00", "-10.00", "15.00"]
    short = selectors.portfolio_history(challenge=challenge, timeframe="5Min", limit=3, now=start + timedelta(minutes=30))
    assert short["equity"] == ["5030.00", "4990.00", "5015.00"]

    over_api = api.get(f"/api/v1/challenges/{challenge.pk}/portfolio/history?limit=3").json()
    assert len(over_api["equity"]) == 3 and over_api["equity"][-1] == "5015.00"
    assert over_api["timeframe"] == "1D"  # nine days in 3 points: the coarsest timeframe
    assert api.get(f"/api/v1/challenges/{challenge.pk}/portfolio/history?timeframe=2Min").status_code == 400


def test_leaderboard_ranks_this_months_open_and_passed_challenges(make_challenge, trader, other_trader, api, market):
    a = make_challenge(trader)
    b = make_challenge(other_trader, "pro")
    failed = make_challenge(other_trader)
    Challenge.objects.filter(pk=a.pk).update(equity=D("5250.00"))  # +5 %
    Challenge.objects.filter(pk=b.pk).update(equity=D("16500.00"), status="passed", ended_at=timezone.now())  # +10 %
    Challenge.objects.filter(pk=failed.pk).update(equity=D("9000.00"), status="failed")
    results = api.get("/api/v1/leaderboard").json()["results"]
    assert [(r["rank"], r["trader"], r["challenge"], r["plan"], r["profit_pct"]) for r in results] == [
        (1, "bob", b.pk, "pro", "10.00"),
        (2, "alice", a.pk, "starter", "5.00"),
    ]


def test_openapi_schema_and_docs(api, db):
    schema = api.get("/api/v1/schema", headers={"Accept": "application/vnd.oai.openapi+json"})
    assert schema.status_code == 200
    text = schema.content.decode()
    for path in ["/api/v1/challenges/{challenge_id}/orders", "/api/v1/market/prices/{symbol}", "/api/v1/auth/token"]:
        assert path in text
    assert api.get("/api/v1/docs").status_code == 200


@pytest.mark.django_db
def test_token_requests_are_limited_per_address_wrong_passwords_included(plans, monkeypatch):
    from tradesense.common.throttling import RedisScopedRateThrottle, throttle_reset

    monkeypatch.setattr(RedisScopedRateThrottle, "THROTTLE_RATES", {"auth": "3/min", "orders": "6000/min"})
    get_user_model().objects.create_user("guessed", password="a-long-pass-phrase-9")
    throttle_reset(scope="auth", ident="127.0.0.1")
    try:
        codes = [
            APIClient().post("/api/v1/auth/token", {"username": "guessed", "password": guess}, format="json")
            for guess in ("wrong-1", "wrong-2", "wrong-3", "a-long-pass-phrase-9")
        ]
    finally:
        throttle_reset(scope="auth", ident="127.0.0.1")
    assert [r.status_code for r in codes] == [400, 400, 400, 429]
    assert codes[-1].json()["error"]["code"] == "throttled" and int(codes[-1]["Retry-After"]) >= 1
