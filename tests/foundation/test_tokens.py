"""API tokens (accounts, accounts.authentication; docs/security.md "Accounts and
tokens"): hashed at rest, expiring, listed and revoked by their owner, revoked when the
password changes or the account is deactivated; and no password material in
Idempotency-Key fingerprints."""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

from accounts.authentication import FastTokenAuthentication
from accounts.models import ApiToken
from accounts.services import token_issue
from tradesense.common.models import AuditEvent, IdempotencyRecord

PASSWORD = "pass-123-secure"  # tests/conftest.py make_user's


@pytest.fixture(autouse=True)
def _fast_hashes(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def _with(token: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    return client


def _works(token: str) -> bool:
    return _with(token).get("/api/v1/challenges").status_code == 200


def test_sign_in_answers_a_token_that_is_stored_only_as_a_digest(trader, settings):
    response = APIClient().post("/api/v1/auth/token", {"username": "alice", "password": PASSWORD}, format="json",
                                REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR="198.51.100.4")
    assert response.status_code == 200
    body = response.json()
    secret = body["token"]
    assert len(secret) >= 40 and _works(secret)
    token = ApiToken.objects.get(pk=body["id"])
    assert token.digest == hashlib.sha256(secret.encode()).hexdigest()
    assert token.created_from == "198.51.100.4"
    expires = timezone.datetime.fromisoformat(body["expires"].replace("Z", "+00:00"))
    assert abs(expires - (timezone.now() + settings.API_TOKEN_TTL)) < timedelta(minutes=1)
    # Nowhere in the database: not in the token table, not in the audit trail.
    with connection.cursor() as cursor:
        cursor.execute('SELECT * FROM "accounts_apitoken"')
        assert secret not in repr(cursor.fetchall())
    assert secret not in repr(list(AuditEvent.objects.values()))
    assert AuditEvent.objects.filter(action="token.issued", object_id=str(token.pk), actor=trader).exists()


def test_the_token_look_up_is_one_statement(trader):
    secret = token_issue(user=trader)
    with CaptureQueriesContext(connection) as queries:
        user, token = FastTokenAuthentication().authenticate_credentials(secret)
    assert len(queries.captured_queries) == 1
    assert user == trader and token.user_id == trader.pk


def test_an_expired_token_is_refused_and_no_longer_listed(trader):
    old, fresh = token_issue(user=trader), token_issue(user=trader)
    ApiToken.objects.filter(digest=hashlib.sha256(old.encode()).hexdigest()).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )
    response = _with(old).get("/api/v1/challenges")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "authentication_failed"
    assert "expired" in response.json()["error"]["message"]
    listed = _with(fresh).get("/api/v1/auth/tokens").json()["results"]
    assert len(listed) == 1 and listed[0]["current"] is True


def test_the_owner_lists_and_revokes_their_tokens_and_nobody_else_s(trader, other_trader):
    mine = [token_issue(user=trader) for _ in range(3)]
    theirs = token_issue(user=other_trader)
    response = _with(mine[0]).get("/api/v1/auth/tokens")
    assert response.status_code == 200
    body = response.json()
    assert body["next"] is None and len(body["results"]) == 3
    assert [row["current"] for row in body["results"]] == [False, False, True]  # newest first
    assert set(body["results"][0]) == {"id", "created_at", "expires_at", "created_from", "current"}
    assert not any(secret in response.content.decode() for secret in mine)
    assert len(_with(mine[0]).get("/api/v1/auth/tokens?limit=2").json()["results"]) == 2

    their_id = ApiToken.objects.get(user=other_trader).pk
    refused = _with(mine[0]).delete(f"/api/v1/auth/tokens/{their_id}")
    assert refused.status_code == 404 and refused.json()["error"]["code"] == "token_not_found"
    assert _works(theirs)

    target = body["results"][1]["id"]
    assert _with(mine[0]).delete(f"/api/v1/auth/tokens/{target}").status_code == 204
    assert not _works(mine[1]) and _works(mine[0]) and _works(mine[2])
    assert AuditEvent.objects.filter(action="token.revoked", object_id=str(target), actor=trader).exists()
    assert _with(mine[0]).delete(f"/api/v1/auth/tokens/{target}").status_code == 404  # gone
    # A session (the dashboard) may manage them too; anonymous may not.
    assert APIClient().get("/api/v1/auth/tokens").status_code == 401
    browser = APIClient()
    browser.force_authenticate(user=trader)
    assert len(browser.get("/api/v1/auth/tokens").json()["results"]) == 2


def test_a_password_change_revokes_every_token(trader):
    tokens = [token_issue(user=trader) for _ in range(2)]
    trader.set_password("a-new-pass-phrase-42")
    trader.save()
    assert not any(_works(t) for t in tokens)
    assert not ApiToken.objects.filter(user=trader).exists()
    event = AuditEvent.objects.get(action="token.revoked", object_id=str(trader.pk))
    assert event.reason == "password changed" and len(event.before["tokens"]) == 2


def test_a_password_change_through_the_admin_revokes_every_token(trader, make_user):
    admin_user = make_user("root", is_staff=True)
    admin_user.is_superuser = True
    admin_user.save()
    token = token_issue(user=trader)
    browser = Client()
    browser.force_login(admin_user)
    response = browser.post(
        f"/admin/auth/user/{trader.pk}/password/",
        {"password1": "a-new-pass-phrase-42", "password2": "a-new-pass-phrase-42", "usable_password": "true"},
    )
    assert response.status_code == 302, response.content[:500]
    assert not _works(token)


def test_deactivation_revokes_every_token_for_good(trader):
    token = token_issue(user=trader)
    trader.is_active = False
    trader.save()
    assert not _works(token)
    trader.is_active = True
    trader.save()
    assert not _works(token)  # reactivating does not bring a revoked token back
    assert AuditEvent.objects.filter(action="token.revoked", reason="account deactivated").exists()


def test_saves_that_touch_no_credential_revoke_nothing(trader):
    token = token_issue(user=trader)
    trader.email = "new@example.com"
    trader.save()
    trader.last_login = timezone.now()
    trader.save(update_fields=["last_login"])
    assert _works(token)


def test_at_most_api_tokens_per_user_live_tokens(trader, settings):
    settings.API_TOKENS_PER_USER = 3
    tokens = [token_issue(user=trader) for _ in range(4)]
    assert [_works(t) for t in tokens] == [False, True, True, True]
    assert ApiToken.objects.filter(user=trader).count() == 3


def test_the_admin_lists_tokens_without_their_secrets(trader, make_user):
    admin_user = make_user("root", is_staff=True)
    admin_user.is_superuser = True
    admin_user.save()
    secret = token_issue(user=trader)
    digest = ApiToken.objects.get(user=trader).digest
    browser = Client()
    browser.force_login(admin_user)
    page = browser.get("/admin/accounts/apitoken/")
    assert page.status_code == 200 and "alice" in page.content.decode()
    detail = browser.get(f"/admin/accounts/apitoken/{ApiToken.objects.get(user=trader).pk}/change/")
    for html in (page.content.decode(), detail.content.decode()):
        assert secret not in html and digest not in html
    assert browser.get("/admin/authtoken/").status_code == 404  # DRF's plaintext tokens are gone


# --- Idempotency-Key fingerprints ---------------------------------------------------------------


def test_a_registration_fingerprint_holds_no_password_material(db):
    body = {"username": "newbie", "email": "n@example.com", "password": "a-long-pass-phrase-9"}
    client = APIClient()
    first = client.post("/api/v1/auth/register", body, format="json", headers={"Idempotency-Key": "reg-fp"})
    assert first.status_code == 201
    stored = IdempotencyRecord.objects.get(key="reg-fp").fingerprint
    raw = f"POST /api/v1/auth/register\n{json.dumps(body, sort_keys=True)}"
    without = f"POST /api/v1/auth/register\n{json.dumps({k: v for k, v in body.items() if k != 'password'}, sort_keys=True)}"
    # Neither the old unsalted hash of the body nor a plain hash of anything in it.
    for text in (raw, without, body["password"]):
        assert stored != hashlib.sha256(text.encode()).hexdigest()
    # The password is left out: a replay differing in it alone gets the first answer...
    replay = client.post("/api/v1/auth/register", {**body, "password": "another-pass-phrase-7"}, format="json",
                         headers={"Idempotency-Key": "reg-fp"})
    assert replay.status_code == 201 and replay.json() == first.json()
    assert get_user_model().objects.get(username="newbie").check_password("a-long-pass-phrase-9")
    # ...while any other field still makes it a different request.
    other = client.post("/api/v1/auth/register", {**body, "email": "x@example.com"}, format="json",
                        headers={"Idempotency-Key": "reg-fp"})
    assert other.status_code == 422 and other.json()["error"]["code"] == "idempotency_key_reused"


def test_a_record_from_the_previous_release_still_replays(trader, make_challenge):
    """Records written before keyed fingerprints hold sha256 of the body: a retry across
    the upgrade replays instead of answering 422."""
    challenge = make_challenge(trader)
    client = _with(token_issue(user=trader))
    body = {"symbol": "EURUSD", "side": "buy", "qty": "0.01", "type": "market"}
    first = client.post(f"/api/v1/challenges/{challenge.pk}/orders", body, format="json",
                        headers={"Idempotency-Key": "order-fp"})
    assert first.status_code == 201
    legacy = hashlib.sha256(
        f"POST /api/v1/challenges/{challenge.pk}/orders\n{json.dumps(body, sort_keys=True)}".encode()
    ).hexdigest()
    IdempotencyRecord.objects.filter(key="order-fp").update(fingerprint=legacy)
    replay = client.post(f"/api/v1/challenges/{challenge.pk}/orders", body, format="json",
                         headers={"Idempotency-Key": "order-fp"})
    assert replay.status_code == 201 and replay.json() == first.json() and replay["Idempotent-Replayed"] == "true"
