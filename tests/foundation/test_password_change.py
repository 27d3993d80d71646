"""A trader changes their own password (POST /api/v1/auth/password; ASVS 6.2.2, 6.2.3):
the current one is required, the new one passes the validators, and every API token of the
account stops working, the one that asked included; a browser's session stays signed in."""

import pytest
from rest_framework.test import APIClient

from accounts.models import ApiToken
from accounts.services import token_issue
from tradesense.common.models import AuditEvent

NEW = "a-new-and-long-passphrase-77"


def password_is(user, password: str) -> bool:
    user.refresh_from_db()
    return user.check_password(password)


def token_client(token: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    return client


def change(client: APIClient, current: str, new: str):
    return client.post("/api/v1/auth/password", {"current_password": current, "new_password": new}, format="json")


@pytest.mark.django_db
def test_a_changed_password_revokes_every_token_and_is_audited(trader):
    asking, other = token_issue(user=trader), token_issue(user=trader)
    assert change(token_client(asking), "pass-123-secure", NEW).status_code == 204

    assert not password_is(trader, "pass-123-secure") and password_is(trader, NEW)
    assert not ApiToken.objects.filter(user=trader).exists()
    for token in (asking, other):
        assert token_client(token).get("/api/v1/challenges").status_code == 401
    actions = list(AuditEvent.objects.filter(object_id=str(trader.pk)).values_list("action", flat=True))
    assert "account.password_changed" in actions and "token.revoked" in actions


@pytest.mark.django_db
def test_a_wrong_current_password_changes_nothing(trader):
    token = token_issue(user=trader)
    response = change(token_client(token), "not-my-password", NEW)
    assert response.status_code == 400
    assert response.json()["error"]["fields"] == {"current_password": ["The current password is wrong."]}
    assert password_is(trader, "pass-123-secure")
    assert token_client(token).get("/api/v1/challenges").status_code == 200
    assert not AuditEvent.objects.filter(action="account.password_changed").exists()


@pytest.mark.django_db
@pytest.mark.parametrize("weak", ["short", "alice@example.com", "password123"])
def test_a_weak_new_password_is_refused_naming_the_field(trader, weak):
    response = change(token_client(token_issue(user=trader)), "pass-123-secure", weak)
    assert response.status_code == 400
    assert list(response.json()["error"]["fields"]) == ["new_password"]
    assert password_is(trader, "pass-123-secure")


@pytest.mark.django_db
def test_a_browser_stays_signed_in_and_strangers_are_refused(trader):
    browser = APIClient()
    browser.force_login(trader)
    assert change(browser, "pass-123-secure", NEW).status_code == 204
    assert browser.get("/api/v1/challenges").status_code == 200
    assert change(APIClient(), "pass-123-secure", NEW).status_code == 401
