"""Who may reach what: every URL pattern x every kind of caller, with the status each gets.

The rows are keyed by URL pattern name and the patterns come from the URL conf itself
(django.urls.get_resolver), so an endpoint added without a row here fails
test_every_url_pattern_has_a_row: nothing ships without its access decided.

Callers: anonymous; the owner (a trader with a challenge, an order, a position and a
purchase); another trader; staff (is_staff with every view permission of our apps: an
operator who may read) without the write roles; staff with them (challenges.set_price
and the change permissions the admin actions need).

Grouped: the admin namespace. Django generates its URLs per registered model (changelist,
add, change, delete, history, autocomplete, ...) and AdminSite.admin_view guards every one
the same way (staff session, then the model permission); the rows below cover the index,
the login page, a changelist and an action, and tests/foundation/test_staff_roles.py checks
every changelist and every action of our apps. Static files are served by WhiteNoise's
middleware, not the URL conf, so they have no pattern to list.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal as D

import pytest
from django.contrib.auth.models import Permission
from django.test import Client, override_settings
from django.urls import URLPattern, URLResolver, get_resolver, reverse

from challenges.services import order_place
from payments import services as payment_services
from tests.live.fixtures import catalogue  # noqa: F401 - the instrument catalogue, EURUSD fresh

ROLES = ("anonymous", "other", "staff", "staff_perm", "owner")  # the owner last: its writes change state
GROUPED_NAMESPACES = {"admin"}
OUR_APPS = {"challenges", "payments", "risk", "common"}
WRITE_ROLES = (
    "challenges.set_price",
    "challenges.change_challenge",
    "challenges.change_plan",
    "common.change_conflict",
    "payments.change_purchase",
    "payments.change_processorcircuit",
)

OUTSIDE = {"REMOTE_ADDR": "203.0.113.7"}  # a client on the internet, straight to a replica
THROUGH_NGINX_FROM_OUTSIDE = {"REMOTE_ADDR": "127.0.0.1", "HTTP_X_FORWARDED_FOR": "203.0.113.7"}
OPEN = "not 404"  # the health check's own status (degraded or not) is not about access


def who(anonymous, owner, other, staff, staff_perm) -> dict:
    return {"anonymous": anonymous, "owner": owner, "other": other, "staff": staff, "staff_perm": staff_perm}


def everyone(expected) -> dict:
    return who(expected, expected, expected, expected, expected)


TO_LOGIN = (302, "/login/")
TO_ADMIN_LOGIN = (302, "/admin/login/")
TO_PLANS = (302, "/plans/")
OWN = who(401, 200, 404, 404, 404)  # a trader's own object: 404 to anyone else, never 403
SIGNED_IN = who(401, 200, 200, 200, 200)
PAGE = who(TO_LOGIN, 200, 200, 200, 200)
OWN_PAGE = who(TO_LOGIN, 200, 404, 404, 404)
STAFF_DOCS = who(401, 403, 403, 200, 200)


@dataclass
class Call:
    method: str
    expected: dict
    kwargs: Callable[[World], dict] = lambda world: {}
    body: dict | None = None
    meta: dict = field(default_factory=dict)
    settings: dict = field(default_factory=dict)
    note: str = ""


MATRIX: dict[str, list[Call]] = {
    # --- accounts: open, and an empty body is refused on its shape -------------------------------
    "challenges:register": [Call("post", everyone(400))],
    "challenges:token": [Call("post", everyone(400))],
    "challenges:password": [Call("post", who(401, 400, 400, 400, 400))],
    "challenges:tokens": [Call("get", SIGNED_IN)],
    "challenges:token-revoke": [Call("delete", who(401, 204, 404, 404, 404), lambda w: {"token_id": w.token})],
    "challenges:ws-ticket": [Call("post", who(401, 201, 201, 201, 201))],
    # --- catalogue and market: public reads; moving a price is the set_price role ------------------------
    "challenges:plans": [Call("get", everyone(200))],
    "challenges:market-prices": [Call("get", everyone(200))],
    "challenges:market-price": [
        Call("get", everyone(200), lambda w: {"symbol": "EURUSD"}),
        Call("put", who(401, 403, 403, 403, 200), lambda w: {"symbol": "EURUSD"}, {"price": "1.20000"}),
        # Only a caller allowed to write learns the method does not exist.
        Call("post", who(401, 403, 403, 403, 405), lambda w: {"symbol": "EURUSD"}, {"price": "1.20000"}),
    ],
    "challenges:leaderboard": [Call("get", SIGNED_IN)],
    # --- a trader's challenges: their own only; staff are not traders here ---------------------------------
    "challenges:challenges": [Call("get", SIGNED_IN)],
    "challenges:challenge": [Call("get", OWN, lambda w: {"challenge_id": w.challenge})],
    "challenges:orders": [
        Call("get", OWN, lambda w: {"challenge_id": w.challenge}),
        Call("post", who(401, 201, 404, 404, 404), lambda w: {"challenge_id": w.challenge},
             {"symbol": "EURUSD", "side": "buy", "qty": "0.01"}),
    ],
    "challenges:order-by-client-id": [
        Call("get", OWN, lambda w: {"challenge_id": w.challenge, "client_order_id": w.client_order_id}),
    ],
    "challenges:positions": [Call("get", OWN, lambda w: {"challenge_id": w.challenge})],
    "challenges:position": [Call("delete", OWN, lambda w: {"challenge_id": w.challenge, "symbol": "EURUSD"})],
    "challenges:portfolio-history": [Call("get", OWN, lambda w: {"challenge_id": w.challenge})],
    # --- purchases ---------------------------------------------------------------------------------------------
    "payments:purchases": [Call("get", SIGNED_IN), Call("post", who(401, 400, 400, 400, 400))],
    "payments:purchase-detail": [Call("get", OWN, lambda w: {"purchase_id": w.purchase})],
    # Signed by the processor, not by a user: an unsigned body is refused whoever sends it.
    "payments:webhook": [Call("post", everyone(400))],
    # --- API schema and docs: staff only in production, open in development ------------------------------------
    "schema": [
        Call("get", STAFF_DOCS, settings={"API_DOCS_PUBLIC": False}, note="production"),
        Call("get", everyone(200), settings={"API_DOCS_PUBLIC": True}, note="development"),
    ],
    "docs": [
        Call("get", STAFF_DOCS, settings={"API_DOCS_PUBLIC": False}, note="production"),
        Call("get", everyone(200), settings={"API_DOCS_PUBLIC": True}, note="development"),
    ],
    # --- health and metrics: by address or token, never by user; 404 advertises nothing -----------------------
    "health-live": [Call("get", everyone(200), meta=OUTSIDE)],
    "health-ready": [Call("get", everyone(200), meta=OUTSIDE)],
    "health": [
        Call("get", everyone(404), meta=OUTSIDE, note="staff login is no credential here"),
        Call("get", everyone(404), meta=THROUGH_NGINX_FROM_OUTSIDE),
        Call("get", everyone(OPEN), meta={"REMOTE_ADDR": "127.0.0.1"}),
    ],
    "metrics": [
        Call("get", everyone(404), meta=OUTSIDE),
        Call("get", everyone(404), meta=THROUGH_NGINX_FROM_OUTSIDE),
        Call("get", everyone(200), meta={"REMOTE_ADDR": "127.0.0.1"}),
    ],
    # --- the dashboard's pages ---------------------------------------------------------------------------------
    # Home is the trader's challenges, or the plans for whoever has none.
    "pages:home": [Call("get", who(TO_LOGIN, 200, TO_PLANS, TO_PLANS, TO_PLANS))],
    "pages:plans": [Call("get", PAGE)],
    "pages:leaderboard": [Call("get", PAGE)],
    "pages:challenge": [Call("get", OWN_PAGE, lambda w: {"challenge_id": w.challenge})],
    "pages:login": [
        Call("get", who(200, 302, 302, 302, 302)),
        Call("post", who(200, 302, 302, 302, 302), body={}),  # the form again, with its errors
    ],
    "pages:signup": [Call("get", who(200, 302, 302, 302, 302)), Call("post", who(200, 302, 302, 302, 302), body={})],
    "pages:logout": [Call("post", everyone(302), body={})],
    "pages:javascript-catalog": [Call("get", everyone(200))],
    "pages:set_language": [Call("post", everyone(302), body={"language": "fr"})],
    # --- the admin (grouped: see the module docstring) ------------------------------------------------------------
    "admin:index": [Call("get", who(TO_ADMIN_LOGIN, TO_ADMIN_LOGIN, TO_ADMIN_LOGIN, 200, 200))],
    "admin:login": [Call("get", who(200, 200, 200, 302, 302))],
    "admin:challenges_challenge_changelist": [
        Call("get", who(TO_ADMIN_LOGIN, TO_ADMIN_LOGIN, TO_ADMIN_LOGIN, 200, 200)),
        # An action: the viewer gets the list back (nothing ran); the role holder is
        # redirected after it ran.
        Call("post", who(TO_ADMIN_LOGIN, TO_ADMIN_LOGIN, TO_ADMIN_LOGIN, 200, 302),
             body={"action": "evaluate_now", "_selected_action": "CHALLENGE"}),
    ],
}


@dataclass
class World:
    users: dict
    challenge: int
    purchase: int
    client_order_id: str
    token: int


def url_pattern_names() -> set[str]:
    """Every pattern of the URL conf as `namespace:name` (unnamed ones by their route)."""
    names: set[str] = set()

    def walk(patterns, namespace: str, route: str):
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                inner = f"{namespace}{pattern.namespace}:" if pattern.namespace else namespace
                walk(pattern.url_patterns, inner, route + str(pattern.pattern))
            elif isinstance(pattern, URLPattern):
                names.add(f"{namespace}{pattern.name}" if pattern.name else f"{namespace}<unnamed {route}{pattern.pattern}>")

    walk(get_resolver().url_patterns, "", "")
    return names


def grouped(name: str) -> bool:
    return name.split(":", 1)[0] in GROUPED_NAMESPACES and ":" in name


def test_every_url_pattern_has_a_row():
    names = url_pattern_names()
    missing = sorted(n for n in names if n not in MATRIX and not grouped(n))
    assert not missing, f"endpoints without a row in MATRIX (decide who may call them): {missing}"
    stale = sorted(set(MATRIX) - names)
    assert not stale, f"rows for endpoints that no longer exist: {stale}"
    assert len(names) > len(MATRIX)  # the walk found the admin's patterns too, not just ours


def test_the_walk_sees_nested_namespaces():
    # The test above is only as good as the walk: a name from each include must be there.
    names = url_pattern_names()
    for name in ("challenges:orders", "payments:webhook", "pages:home", "admin:index", "metrics"):
        assert name in names


@pytest.fixture
def world(make_user, make_challenge, plans, catalogue) -> World:  # noqa: F811
    owner = make_user("owner")
    challenge = make_challenge(owner, "starter")
    order = order_place(challenge_id=challenge.pk, trader=owner, symbol="EURUSD", side="buy", qty=D("0.10"),
                        client_order_id="matrix-1")
    purchase = payment_services.purchase_create(trader=owner, plan=plans["starter"], payment_method="card",
                                                payment_token="tok_visa")
    staff = make_user("operator", is_staff=True)
    staff_perm = make_user("boss", is_staff=True)
    readable = Permission.objects.filter(content_type__app_label__in=OUR_APPS, codename__startswith="view_")
    staff.user_permissions.add(*readable)
    staff_perm.user_permissions.add(*readable)
    for perm in WRITE_ROLES:
        app_label, codename = perm.split(".")
        staff_perm.user_permissions.add(Permission.objects.get(content_type__app_label=app_label, codename=codename))
    users = {"anonymous": None, "owner": owner, "other": make_user("other"), "staff": staff, "staff_perm": staff_perm}
    from accounts.services import token_create

    return World(
        users=users, challenge=challenge.pk, purchase=purchase.pk, client_order_id=order.order.client_order_id,
        token=token_create(user=owner).token.pk,
    )


def matches(expected, response) -> bool:
    if expected == OPEN:
        return response.status_code != 404
    if isinstance(expected, tuple):
        status, location = expected
        return response.status_code == status and response.get("Location", "").startswith(location)
    return response.status_code == expected


@pytest.mark.parametrize("name", sorted(MATRIX))
def test_access(name, world, settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    wrong = []
    for call in MATRIX[name]:
        path = reverse(name, kwargs=call.kwargs(world))
        body = call.body
        if body and body.get("_selected_action") == "CHALLENGE":
            body = {**body, "_selected_action": [world.challenge]}
        for role in ROLES:
            client = Client(**call.meta)
            if world.users[role] is not None:
                client.force_login(world.users[role])
            with override_settings(**call.settings):
                if call.method in {"get", "delete"}:
                    response = getattr(client, call.method)(path)
                elif body is not None and name.startswith(("pages:", "admin:")):
                    response = getattr(client, call.method)(path, body)  # a form post
                else:
                    response = getattr(client, call.method)(path, body or {}, content_type="application/json")
            expected = call.expected[role]
            if not matches(expected, response):
                wrong.append(
                    f"{call.method.upper()} {path} {call.note} as {role}: expected {expected}, got "
                    f"{response.status_code} {response.get('Location', '')}".strip()
                )
    assert not wrong, "\n".join(wrong)


# --- /metrics and /health/: which machines, by the address our proxy saw ------------------------------------


@pytest.mark.parametrize(
    "meta, allowed",
    [
        # make prod: Prometheus on 127.0.0.1 scrapes each replica directly...
        ({"REMOTE_ADDR": "127.0.0.1"}, True),
        # ...and one job through nginx (127.0.0.1, a trusted proxy), which names 127.0.0.1 as the client.
        ({"REMOTE_ADDR": "127.0.0.1", "HTTP_X_FORWARDED_FOR": "127.0.0.1"}, True),
        # compose: Prometheus on the private network, straight to a replica.
        ({"REMOTE_ADDR": "172.18.0.9"}, True),
        ({"REMOTE_ADDR": "10.1.2.3"}, True),
        ({"REMOTE_ADDR": "::1"}, True),
        ({"REMOTE_ADDR": "::ffff:192.168.1.20"}, True),
        # The internet through our nginx: judged by the real client.
        (THROUGH_NGINX_FROM_OUTSIDE, False),
        # The internet straight to a replica, forging the header: the header is not believed.
        ({"REMOTE_ADDR": "203.0.113.7", "HTTP_X_FORWARDED_FOR": "127.0.0.1"}, False),
        (OUTSIDE, False),
        # Relayed by a proxy we do not trust (a private address that is not TRUSTED_PROXIES):
        # the real client is unknown, so the relay's private address earns nothing.
        ({"REMOTE_ADDR": "172.18.0.3", "HTTP_X_FORWARDED_FOR": "203.0.113.7"}, False),
        ({"REMOTE_ADDR": "172.18.0.3", "HTTP_FORWARDED": "for=203.0.113.7"}, False),
        ({"REMOTE_ADDR": ""}, False),  # a unix socket: nothing to judge by
    ],
)
@pytest.mark.parametrize("path", ["/metrics", "/health/"])
def test_operations_endpoints_answer_allowed_addresses_only(client, db, meta, allowed, path):
    response = client.get(path, **meta)
    if allowed:
        assert response.status_code != 404
    else:
        assert response.status_code == 404
        assert b"tradesense_" not in response.content and b"Database" not in response.content


def test_not_found_looks_like_an_unknown_url(client, db):
    hidden = client.get("/metrics", **OUTSIDE)
    unknown = client.get("/no-such-endpoint", **OUTSIDE)
    assert hidden.status_code == unknown.status_code == 404
    assert hidden["Content-Type"] == unknown["Content-Type"]


@pytest.mark.parametrize(
    "header, token, allowed",
    [
        ("Bearer s3cret-token-for-prometheus-elsewhere", "s3cret-token-for-prometheus-elsewhere", True),
        ("bearer s3cret-token-for-prometheus-elsewhere", "s3cret-token-for-prometheus-elsewhere", True),
        ("Bearer wrong-token", "s3cret-token-for-prometheus-elsewhere", False),
        ("Token s3cret-token-for-prometheus-elsewhere", "s3cret-token-for-prometheus-elsewhere", False),
        ("Bearer ", "", False),  # no token configured: an empty one matches nothing
        ("Bearer", "", False),
    ],
)
def test_a_prometheus_elsewhere_uses_the_bearer_token(client, db, settings, header, token, allowed):
    settings.METRICS_TOKEN = token
    response = client.get("/metrics", HTTP_AUTHORIZATION=header, **OUTSIDE)
    assert (response.status_code == 200) is allowed


def test_the_allowed_networks_are_a_setting(client, db, settings):
    settings.METRICS_ALLOWED_NETWORKS = ["203.0.113.0/24"]
    assert client.get("/metrics", **OUTSIDE).status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="127.0.0.1").status_code == 404


@pytest.mark.django_db
def test_operators_health_checks_give_their_database_connections_back(client, settings):
    """Each allowed /health/ call runs its checks in threads; those threads' connections
    must go back to the pool, or a few scrapes leave the replica with none (readiness fails)."""
    if not settings.USING_POSTGRES:
        pytest.skip("the connection pool is PostgreSQL's")
    pool_size = settings.DATABASES["default"]["OPTIONS"]["pool"]["max_size"]
    for _ in range(pool_size + 2):
        client.get("/health/", REMOTE_ADDR="127.0.0.1")
    assert client.get("/health/ready", HTTP_ACCEPT="application/json").status_code == 200
