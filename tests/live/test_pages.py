"""The dashboard's server-rendered pages (API.md "Pages"): who sees what, sign-up through
the account service, and the data each page hands to its script."""

from __future__ import annotations

import json
import re
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from tradesense.common.models import AuditEvent

pytestmark = pytest.mark.django_db

PAGES = ["/", "/plans/", "/leaderboard/"]


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def page_data(response) -> dict:
    match = re.search(r'<script id="page-data" type="application/json">(.*?)</script>', response.content.decode(), re.S)
    assert match, "the page carries no page-data"
    return json.loads(match.group(1))


@pytest.mark.parametrize("path", PAGES + ["/challenges/1/"])
def test_anonymous_visitors_are_sent_to_login(path):
    response = Client().get(path)
    assert response.status_code == 302
    assert response["Location"] == f"/login/?next={path}"


def test_login_page_has_the_contract_field_names_and_logs_in():
    page = Client().get("/login/")
    assert page.status_code == 200
    html = page.content.decode()
    assert 'name="username"' in html and 'name="password"' in html and 'name="csrfmiddlewaretoken"' in html
    get_user_model().objects.create_user("carol", "c@example.com", "pass-123-secure")
    client = Client()
    response = client.post("/login/", {"username": "carol", "password": "pass-123-secure"})
    assert response.status_code == 302 and response["Location"] == "/"
    assert client.session["_auth_user_id"]


def test_wrong_password_is_refused_in_words():
    get_user_model().objects.create_user("carol", "c@example.com", "pass-123-secure")
    response = Client().post("/login/", {"username": "carol", "password": "nope"})
    assert response.status_code == 200
    assert "Please enter a correct username and password" in response.content.decode()


def test_signup_creates_the_account_through_the_service_and_logs_in():
    client = Client()
    response = client.post(
        "/signup/",
        {"username": "dave", "email": "Dave@Example.com", "password1": "Str0ng-pass-99", "password2": "Str0ng-pass-99"},
    )
    assert response.status_code == 302 and response["Location"] == "/plans/"
    user = get_user_model().objects.get(username="dave")
    assert user.email == "dave@example.com" and user.check_password("Str0ng-pass-99")
    assert AuditEvent.objects.filter(action="user.registered", object_id=str(user.pk)).count() == 1
    assert client.get("/plans/").status_code == 200  # logged in


@pytest.mark.parametrize(
    "form, field",
    [
        ({"username": "erin", "email": "e@example.com", "password1": "Str0ng-pass-99", "password2": "other-pass-99"}, "password2"),
        ({"username": "erin", "email": "e@example.com", "password1": "123", "password2": "123"}, "password2"),
        ({"username": "erin", "email": "not-an-email", "password1": "Str0ng-pass-99", "password2": "Str0ng-pass-99"}, "email"),
        ({"username": "alice", "email": "e@example.com", "password1": "Str0ng-pass-99", "password2": "Str0ng-pass-99"}, "username"),
    ],
)
def test_signup_refusals_name_the_field_and_create_nothing(trader, form, field):
    users = get_user_model().objects.count()
    response = Client().post("/signup/", form)
    assert response.status_code == 200
    assert response.context["form"].errors[field]
    assert get_user_model().objects.count() == users


def test_home_shows_the_plans_when_there_is_no_challenge_yet(trader):
    response = logged_in(trader).get("/")
    assert response.status_code == 302 and response["Location"] == "/plans/"


def test_home_lists_own_challenges_only(trader, other_trader, make_challenge):
    mine = make_challenge(trader)
    theirs = make_challenge(other_trader)
    html = logged_in(trader).get("/").content.decode()
    assert f'data-challenge="{mine.pk}"' in html
    assert f'data-challenge="{theirs.pk}"' not in html
    assert "5,000.00" in html


def test_plans_page_shows_the_three_tiers_with_their_rules(trader, plans):
    html = logged_in(trader).get("/plans/").content.decode()
    for slug, price, balance in (("starter", "200.00", "5,000.00"), ("pro", "500.00", "15,000.00"), ("elite", "1,000.00", "50,000.00")):
        assert f'data-plan="{slug}"' in html
        assert price in html and f"{balance} USD account" in html
    assert html.count("Max daily loss") == 3 and "5 %" in html and "10 %" in html


def test_challenge_page_hands_the_snapshot_rules_and_resets_to_its_script(trader, make_challenge, catalogue):
    challenge = make_challenge(trader)
    response = logged_in(trader).get(f"/challenges/{challenge.pk}/")
    assert response.status_code == 200
    data = page_data(response)
    assert data["challenge"] == challenge.pk
    assert data["initial"]["id"] == challenge.pk and data["initial"]["version"] == challenge.version
    assert data["initial"]["daily_loss_floor"] == "4750.00" and data["initial"]["max_loss_floor"] == "4500.00"
    assert data["initial"]["profit_target_balance"] == "5500.00"
    assert Decimal(data["rules"]["max_daily_loss_pct"]) == Decimal("5") and data["rules"]["min_trading_days"] == 3
    assert len(data["resets"]) == 3 and all(r.endswith("+00:00") for r in data["resets"])  # midnight UTC
    assert all(r[11:19] == "00:00:00" for r in data["resets"])
    assert data["price_decimals"]["EURUSD"] == 5 and data["price_decimals"]["XAUUSD"] == 2


def test_someone_elses_challenge_page_is_404(trader, other_trader, make_challenge):
    theirs = make_challenge(other_trader)
    assert logged_in(trader).get(f"/challenges/{theirs.pk}/").status_code == 404
    assert logged_in(trader).get("/challenges/999999/").status_code == 404


def test_a_failed_challenge_page_says_why(trader, make_challenge):
    from django.utils import timezone

    from challenges.models import Breach

    challenge = make_challenge(trader, status="failed", failure_reason="Equity 4700.00 fell below today's loss floor 4750.00.")
    Breach.objects.create(
        challenge=challenge, rule="max_daily_loss", threshold="4750.00", observed="4700.00", prices={"EURUSD": "1.09700"},
        at=timezone.now(), ruleset_version=1, rules=challenge.rules, message="Equity 4700.00 fell below today's loss floor 4750.00.",
        detected_by="sweep",
    )
    html = logged_in(trader).get(f"/challenges/{challenge.pk}/").content.decode()
    assert "This challenge failed" in html
    assert "fell below today&#x27;s loss floor 4750.00" in html
    assert re.search(r'id="breach-card"\s+aria-live', html), "the breach card is hidden on a failed challenge"


def test_leaderboard_ranks_this_months_challenges_and_marks_mine(trader, other_trader, make_challenge):
    make_challenge(trader, equity=Decimal("5250.00"))
    make_challenge(other_trader, equity=Decimal("5500.00"))
    response = logged_in(trader).get("/leaderboard/")
    rows = response.context["rows"]
    assert [(r["rank"], r["trader"], r["profit_pct"], r["is_me"]) for r in rows] == [
        (1, "bob", "10.00", False),
        (2, "alice", "5.00", True),
    ]
    assert "Starter" in response.content.decode()


def test_javascript_catalog_and_static_files_are_served(trader):
    client = logged_in(trader)
    catalog = client.get("/jsi18n/")
    assert catalog.status_code == 200 and b"gettext" in catalog.content
    html = client.get("/plans/").content.decode()
    for asset in re.findall(r'(?:src|href)="(/static/[^"]+)"', html):
        response = client.get(asset)
        assert response.status_code == 200, asset


def test_arabic_turns_the_page_right_to_left(trader):
    client = logged_in(trader)
    client.post("/i18n/setlang/", {"language": "ar", "next": "/plans/"})
    html = client.get("/plans/").content.decode()
    assert '<html lang="ar" dir="rtl">' in html


def test_logout_is_a_post_and_ends_the_session(trader):
    client = logged_in(trader)
    response = client.post("/logout/")
    assert response.status_code == 302 and response["Location"] == "/login/"
    assert client.get("/plans/").status_code == 302


def test_french_is_served_to_a_french_browser_pages_and_scripts_alike():
    client = Client(headers={"accept-language": "fr"})
    html = client.get("/login/").content.decode()
    assert '<html lang="fr" dir="ltr">' in html
    assert "Se connecter" in html and 'name="username"' in html
    catalog = client.get("/jsi18n/").content.decode()
    assert "Reconnexion\\u2026" in catalog or "Reconnexion…" in catalog
