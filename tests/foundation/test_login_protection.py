"""Sign-in and sign-up limits (accounts.limits, django-axes; docs/security.md "Accounts and
tokens"): per account and per client address on every path that checks a password, from
the address our proxy saw only, held with Redis down, and over after the cool-off."""

from __future__ import annotations

import socket
import time
import uuid
from datetime import timedelta

import pytest
from axes.models import AccessAttempt
from django.contrib.auth import get_user_model
from django.test import Client
from rest_framework.test import APIClient

from accounts.limits import DurableScopedRateThrottle, SignupThrottle
from accounts.models import RateWindow

PASSWORD = "right-horse-battery-9"
PROXY = "127.0.0.1"  # settings.TRUSTED_PROXIES: our nginx


@pytest.fixture(autouse=True)
def _fast_hashes(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def victim(db):
    return get_user_model().objects.create_user("victim", "v@example.com", PASSWORD, is_staff=True)


def _net() -> str:
    """A /24 of its own per test, so the Redis `auth` counters of earlier runs never meet it."""
    n = uuid.uuid4().int
    return f"10.{n % 250 + 1}.{(n >> 8) % 250 + 1}"


def _api(username, password, *, remote=PROXY, forwarded=None):
    extra = {"REMOTE_ADDR": remote}
    if forwarded:
        extra["HTTP_X_FORWARDED_FOR"] = forwarded
    return APIClient().post("/api/v1/auth/token", {"username": username, "password": password}, format="json", **extra)


def _page(path):
    def post(username, password, *, remote=PROXY, forwarded=None):
        extra = {"REMOTE_ADDR": remote}
        if forwarded:
            extra["HTTP_X_FORWARDED_FOR"] = forwarded
        return Client().post(path, {"username": username, "password": password}, **extra)

    return post


PATHS = {"api": _api, "login": _page("/login/"), "admin": _page("/admin/login/")}


def _succeeded(name, response) -> bool:
    # API: 200 with a token; pages: the redirect that follows a sign-in.
    return response.status_code == 200 and "token" in response.json() if name == "api" else response.status_code == 302


def _assert_locked(name, response):
    assert response.status_code == 429, (name, response.status_code)
    retry_after = int(response["Retry-After"])
    assert 1 <= retry_after <= 900
    if name == "api":
        body = response.json()["error"]
        assert body["code"] == "throttled" and "Too many failed sign-in attempts" in body["message"]
    else:
        assert "Too many failed sign-in attempts" in response.content.decode()


@pytest.mark.parametrize("name", sorted(PATHS))
def test_one_account_guessed_from_twenty_addresses_is_locked_on_every_path(name, victim, settings):
    post, net, limit = PATHS[name], _net(), settings.AXES_FAILURE_LIMIT
    assert limit < 20
    statuses = []
    for i in range(20):
        response = post("victim", f"wrong-{i}", forwarded=f"{net}.{i + 1}")
        statuses.append(response.status_code)
    # Every address is new: only the per-account count can have stopped them.
    assert 429 not in statuses[: limit - 1], statuses
    assert statuses[limit - 1 :] == [429] * (21 - limit), statuses
    _assert_locked(name, response)
    # Locked means locked: the right password from yet another address is refused too.
    right = post("victim", PASSWORD, forwarded=f"{net}.200")
    _assert_locked(name, right)
    # Failures during the lockout were not counted (so they cannot prolong it).
    assert sum(AccessAttempt.objects.filter(username="victim").values_list("failures_since_start", flat=True)) == limit


@pytest.mark.parametrize("name", sorted(PATHS))
def test_a_forged_forwarded_for_from_an_untrusted_peer_opens_no_new_bucket(name, victim, settings):
    post, net, limit = PATHS[name], _net(), settings.AXES_FAILURE_LIMIT
    peer = f"{net}.9"  # not a trusted proxy: its X-Forwarded-For is its own claim
    statuses = [
        post(f"nobody{i}", "wrong", remote=peer, forwarded=f"198.51.100.{i + 1}").status_code for i in range(limit + 2)
    ]
    assert 429 not in statuses[: limit - 1] and statuses[limit - 1 :] == [429] * 3, statuses
    assert set(AccessAttempt.objects.values_list("ip_address", flat=True)) == {peer}
    _assert_locked(name, post("victim", PASSWORD, remote=peer, forwarded="198.51.100.250"))
    # The same guesses through our proxy are as many addresses: nobody is locked.
    through_proxy = [
        post(f"other{i}", "wrong", forwarded=f"{net}.{100 + i}").status_code for i in range(limit + 2)
    ]
    assert 429 not in through_proxy, through_proxy
    assert _succeeded(name, post("victim", PASSWORD, forwarded=f"{net}.250"))


def _dead_redis_caches() -> dict:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return {
        "default": {
            "BACKEND": "tradesense.common.cache.CountingRedisCache",
            "LOCATION": f"redis://127.0.0.1:{port}/0",
            "OPTIONS": {
                "CLIENT_CLASS": "django_redis.client.DefaultClient",
                "IGNORE_EXCEPTIONS": True,
                "SOCKET_CONNECT_TIMEOUT": 0.25,
                "SOCKET_TIMEOUT": 0.25,
            },
        }
    }


@pytest.mark.parametrize("name", sorted(PATHS))
def test_redis_down_does_not_lift_the_lockout(name, victim, settings):
    settings.CACHES = _dead_redis_caches()
    post, net, limit = PATHS[name], _net(), settings.AXES_FAILURE_LIMIT
    statuses = [post("victim", "wrong", forwarded=f"{net}.{i + 1}").status_code for i in range(limit + 2)]
    assert statuses[limit - 1 :] == [429] * 3, statuses
    _assert_locked(name, post("victim", PASSWORD, forwarded=f"{net}.200"))


def test_redis_down_the_auth_request_rate_is_counted_in_the_database(db, settings, monkeypatch):
    """The `auth` throttle's own limit (requests per address, whatever the outcome) falls
    back to database counters instead of letting everything through."""
    settings.CACHES = _dead_redis_caches()
    monkeypatch.setattr(DurableScopedRateThrottle, "THROTTLE_RATES", {"auth": "5/min"})
    net = _net()
    statuses = [_api(f"nobody{i}", "wrong", forwarded=f"{net}.7").status_code for i in range(7)]
    assert statuses == [400] * 5 + [429] * 2, statuses
    # The refused ones never reached a password check, and the count is in the database.
    assert AccessAttempt.objects.filter(ip_address=f"{net}.7").count() == 5
    assert RateWindow.objects.filter(scope="auth", key=f"throttle_auth_{net}.7").get().count == 5
    response = _api("nobody", "wrong", forwarded=f"{net}.7")
    assert response.status_code == 429 and 1 <= float(response["Retry-After"]) <= 120
    # Another address has its own count.
    assert _api("nobody", "wrong", forwarded=f"{net}.8").status_code == 400


@pytest.mark.parametrize("name", ["api", "login"])
def test_the_victim_signs_in_again_after_the_cool_off(name, victim, settings):
    settings.AXES_COOLOFF_TIME = timedelta(seconds=1)
    post, net, limit = PATHS[name], _net(), settings.AXES_FAILURE_LIMIT
    for i in range(limit):
        post("victim", "wrong", forwarded=f"{net}.{i + 1}")
    locked_at = time.monotonic()
    _assert_locked(name, post("victim", PASSWORD, forwarded=f"{net}.100"))
    # An attacker who keeps guessing during the lockout does not extend it.
    for i in range(5):
        _assert_locked(name, post("victim", "wrong", forwarded=f"{net}.{150 + i}"))
    time.sleep(max(0.0, 1.2 - (time.monotonic() - locked_at)))
    assert _succeeded(name, post("victim", PASSWORD, forwarded=f"{net}.101"))


# --- Sign-up: accounts created per address ----------------------------------------------------


def test_sign_ups_per_address_are_limited_across_the_api_and_the_page(db, monkeypatch):
    monkeypatch.setattr(SignupThrottle, "THROTTLE_RATES", {"signup": "4/hour"})
    net = _net()
    here = {"REMOTE_ADDR": PROXY, "HTTP_X_FORWARDED_FOR": f"{net}.5"}

    def api(i):
        body = {"username": f"new{i}", "email": f"new{i}@example.com", "password": PASSWORD}
        return APIClient().post("/api/v1/auth/register", body, format="json", **here)

    def page(i):
        form = {"username": f"page{i}", "email": f"page{i}@example.com", "password1": PASSWORD, "password2": PASSWORD}
        return Client().post("/signup/", form, **here)

    assert api(1).status_code == 201 and api(2).status_code == 201
    assert page(1).status_code == 302 and page(2).status_code == 302
    refused = api(3)
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "throttled"
    assert int(float(refused["Retry-After"])) > 0
    refused_page = page(3)
    assert refused_page.status_code == 429 and int(refused_page["Retry-After"]) > 0
    assert "Too many accounts were created from your address" in refused_page.content.decode()
    assert not get_user_model().objects.filter(username__in=["new3", "page3"]).exists()
    # Another address is not affected; the page's GET is never counted.
    assert Client().get("/signup/", **here).status_code == 200
    other = {"username": "new4", "email": "new4@example.com", "password": PASSWORD}
    assert APIClient().post("/api/v1/auth/register", other, format="json", REMOTE_ADDR=PROXY,
                            HTTP_X_FORWARDED_FOR=f"{net}.6").status_code == 201


def test_the_sign_up_limit_holds_with_redis_down(db, settings, monkeypatch):
    settings.CACHES = _dead_redis_caches()
    monkeypatch.setattr(SignupThrottle, "THROTTLE_RATES", {"signup": "2/hour"})
    here = {"REMOTE_ADDR": f"{_net()}.1"}  # straight from the client, no proxy
    statuses = [
        APIClient().post("/api/v1/auth/register", {"username": "x"}, format="json", **here).status_code for _ in range(3)
    ]
    assert statuses == [400, 400, 429]  # malformed attempts count too: they are attempts


def test_the_lockout_page_under_the_asgi_handler(victim, settings):
    """make run serves HTTP through uvicorn: axes' middleware then takes its async path,
    which calls the lockout callable with other arguments; the answer is the same."""
    from asgiref.sync import async_to_sync
    from django.test import AsyncClient

    net, limit = _net(), settings.AXES_FAILURE_LIMIT

    async def attempts():
        client = AsyncClient()
        out = []
        for i in range(limit + 1):
            out.append(await client.post("/login/", {"username": "victim", "password": "wrong"},
                                         REMOTE_ADDR=PROXY, HTTP_X_FORWARDED_FOR=f"{net}.{i + 1}"))
        return out

    responses = async_to_sync(attempts)()
    assert [r.status_code for r in responses] == [200] * (limit - 1) + [429] * 2
    _assert_locked("login", responses[-1])
