"""Every route of the URL conf, fuzzed with hostile input: never a 5xx.

The routes come from walking django.urls.get_resolver(), so a new endpoint is fuzzed
the day it is added. Each route is requested as an anonymous visitor, as a trader (API
token and session) and as an operator (a superuser, token and session), with GET, POST
and the methods its view implements, with generated path parameters, query parameters,
headers and bodies: non-ASCII digits, numbers past bigint, NUL characters, unpaired
surrogates, deep JSON, very long strings, wrong types, undecodable bytes and charsets.

Asserted for every request: the status is below 500 (an unhandled exception fails the
example with its traceback); under /api/ a 4xx carries API.md's error body.

Each example runs in a savepoint that is rolled back, so every example starts from the
same rows and a failure replays. Bounded: up to 15 examples per route and identity, 3 for the admin's, fewer for a
slow route (about 35 s on two cores); TRADESENSE_FUZZ_SCALE=10 runs ten times as many.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass
from decimal import Decimal
from http.cookies import SimpleCookie
from urllib.parse import quote, urlencode

import pytest
from django.contrib.auth import get_user_model
from django.db import transaction
from django.test import override_settings
from django.test.client import BOUNDARY, MULTIPART_CONTENT, encode_multipart
from django.urls import URLPattern, URLResolver, get_resolver
from django.urls.resolvers import RegexPattern, RoutePattern
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from rest_framework.test import APIClient

from challenges.catalogue import install_catalogue
from challenges.models import Instrument, PriceTick
from tradesense.common.throttling import throttle_reset
from tradesense.routing import websocket_urlpatterns

pytestmark = pytest.mark.django_db

SCALE = float(os.environ.get("TRADESENSE_FUZZ_SCALE", "1"))
BIGINT_MAX = 2**63 - 1

# Not fuzzed here, and why. Neither is an HTTP route of get_resolver(), which
# test_nothing_listed_as_unfuzzable_is_an_http_route checks.
NOT_FUZZED = {
    "ws/v1/stream": "WebSocket (Channels' URLRouter, tradesense.routing): not an HTTP route; its "
    "handshake input is the consumer's and ws_auth's, tested with WebsocketCommunicator",
    "static/": "files served by WhiteNoise before URL resolution; no view parses their input",
}


# --- The routes ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Route:
    patterns: tuple  # RoutePattern / RegexPattern from the root to the view
    callback: object

    @property
    def name(self) -> str:
        return "".join(str(p) for p in self.patterns) or "<root>"

    @property
    def ours(self) -> bool:
        """Our own views get more examples than Django's admin pages."""
        return not self.name.startswith("admin/")

    def methods(self) -> list[str]:
        view = getattr(self.callback, "cls", None) or getattr(self.callback, "view_class", None)
        if view is None:  # a function view: its allowed methods are not declared
            return ["GET", "POST", "PUT", "PATCH", "DELETE"]
        implemented = {m.upper() for m in view.http_method_names if m != "options" and hasattr(view, m)}
        return sorted(implemented | {"GET", "POST"})


def _walk(resolver: URLResolver, chain: tuple = ()):
    for entry in resolver.url_patterns:
        if isinstance(entry, URLResolver):
            yield from _walk(entry, chain + (entry.pattern,))
        elif isinstance(entry, URLPattern):
            yield Route(patterns=chain + (entry.pattern,), callback=entry.callback)


ROUTES = list(_walk(get_resolver()))


def test_every_route_is_fuzzed():
    # The resolver yields something to fuzz, including the REST API and the pages.
    names = {route.name for route in ROUTES}
    assert {"api/v1/challenges/<id:challenge_id>/orders", "api/v1/payments/webhook", "login/", "admin/"} <= names
    assert all(isinstance(p, RoutePattern | RegexPattern) for route in ROUTES for p in route.patterns)


def test_nothing_listed_as_unfuzzable_is_an_http_route():
    names = {route.name for route in ROUTES}
    assert not any(name.startswith(tuple(NOT_FUZZED)) for name in names)
    assert {str(p.pattern) for p in websocket_urlpatterns} <= set(NOT_FUZZED)


# --- Hostile values -----------------------------------------------------------------------------

HOSTILE_STRINGS = [
    "", "0", "-1", "+1", "1.0", "1e309", "NaN", "Infinity", "0x10", "1_000", " 1", "1\t",
    "\u00b2", "\u0661\u0662", "\uff11\uff12", "\u0967", "\U0001d7d9", "\u2167",  # ², ١٢, １２, १, 𝟙, Ⅷ
    str(BIGINT_MAX), str(BIGINT_MAX + 1), "9" * 19, "9" * 30, "9" * 400, "9" * 5000,
    "\x00", "a\x00b", "%00", "\ud800", "a\udfffb", "\ufeff", "\u202e", "\u2028", "\x7f", "\x1b[31m",
    "'", '"', "\\", "\\u0000", "../../etc/passwd", "<script>alert(1)</script>", "${jndi:x}", "%s%n",
    "*", '"1"', 'W/"1"', '"99999999999"', "null", "true", "[]", "{}", "[[[[[[", "{{{{",
    "2026-02-30", "9999-12-31T23:59:59-05:00", "0001-01-01T00:00:00+05:00", "\u0662\u0660\u0662\u0666-01-01",
    "A" * 300, "A" * 20_000, "\u00df" * 200, "\U0001f600" * 50,
    "EURUSD", "eurusd", "BTCUSD", "starter", "card", "buy", "market", "filled", "1Min", "admin", "demo",
]
hostile_text = st.one_of(
    st.sampled_from(HOSTILE_STRINGS),
    st.text(max_size=24),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.from_regex(r"\A[0-9]{17,25}\Z"),
    st.text(st.characters(categories=["Nd", "No", "Nl"]), min_size=1, max_size=6),  # every script's digits
)

# Header values reach Django as latin-1 text (WSGI, ASGI); CR and LF never get past a server.
header_text = st.one_of(
    hostile_text.map(lambda s: s.encode("utf-8", "surrogatepass").decode("latin-1")),
    st.text(st.characters(max_codepoint=255), max_size=40),
).map(lambda s: s.replace("\r", "").replace("\n", ""))

QUERY_NAMES = [
    "limit", "before", "after", "until", "status", "symbol", "timeframe", "page", "format", "next",
    "q", "o", "p", "e", "all", "_changelist_filters", "_to_field", "_popup", "id__exact", "id__gt",
    "pk__in", "created_at__gte", "trader__id__exact", "status__exact", "language", "lang", "script",
    "token", "ticket", "app_label", "model_name", "field_name", "term",
]
HEADER_NAMES = [
    "If-Match", "If-None-Match", "Idempotency-Key", "Authorization", "Accept", "Accept-Language",
    "X-Signature", "X-Forwarded-For", "X-Forwarded-Proto", "Origin", "Referer", "Range", "Cookie",
    "X-Requested-With", "X-CSRFToken", "User-Agent",
]  # not Content-Length: the server checks it against the body before Django runs
BODY_FIELDS = [
    "username", "password", "email", "password1", "password2", "plan", "payment_method", "payment_token",
    "symbol", "side", "qty", "type", "client_order_id", "price", "amount", "next", "language", "id",
    "data", "object", "status", "currency", "idempotency_key", "csrfmiddlewaretoken", "action",
    "_selected_action", "select_across", "index", "post", "old_password", "new_password1", "new_password2",
]
CONTENT_TYPES = [
    "application/json", "application/json; charset=utf-8", "application/json; charset=latin-1",
    "application/json; charset=utf-16", "application/json; charset=rot13", "application/json; charset*=bogus''x",
    "application/merge-patch+json", "text/plain", "application/octet-stream", "text/html; charset=zlib",
    "application/x-www-form-urlencoded; charset=base64", "multipart/form-data", "multipart/form-data; boundary=",
    "application/xml", ";", "application/json;;;charset=", "",
]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=True, allow_infinity=True),
    hostile_text,
)
json_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(BODY_FIELDS), st.text(max_size=8)), children, max_size=5),
    ),
    max_leaves=12,
)
# Objects shaped like real requests (known fields, hostile values): past the parser and
# into the serializers and services.
json_objects = st.dictionaries(st.sampled_from(BODY_FIELDS), json_values, min_size=1, max_size=6)


def _dumps(value, ensure_ascii: bool) -> bytes:
    return json.dumps(value, ensure_ascii=ensure_ascii).encode("utf-8", "surrogatepass")


@st.composite
def bodies(draw):
    """(bytes or dict for multipart, content type) or (None, None)."""
    kind = draw(st.sampled_from(["none", "json", "json", "deep", "raw", "form", "multipart", "long"]))
    if kind == "none":
        return None, None
    if kind == "json":
        value = draw(st.one_of(json_objects, json_values))
        return _dumps(value, draw(st.booleans())), draw(st.sampled_from(CONTENT_TYPES[:4] + ["application/json"] * 4))
    if kind == "deep":
        depth = draw(st.sampled_from([32, 33, 1_000, 100_000]))
        opener, closer = draw(st.sampled_from([("[", "]"), ('{"a":', "}")]))
        inner = "1" if opener != "[" else ""
        return (opener * depth + inner + closer * depth).encode(), "application/json"
    if kind == "raw":
        raw = draw(
            st.one_of(
                st.binary(max_size=64),
                st.sampled_from([b"\xff\xfe\xfd", b'{"a": "\\u0000"}', b'{"a": "\\ud800"}', b"{\x00}", b'"\\x00"', b"[1,]", b"\xef\xbb\xbf{}"]),
            )
        )
        return raw, draw(st.sampled_from(CONTENT_TYPES))
    if kind == "form":
        fields = draw(st.dictionaries(st.sampled_from(BODY_FIELDS), hostile_text, max_size=5))
        return urlencode(fields, errors="surrogatepass").encode(), "application/x-www-form-urlencoded"
    if kind == "multipart":
        fields = draw(st.dictionaries(st.sampled_from(BODY_FIELDS), hostile_text, max_size=4))
        # The test client encodes the parts as UTF-8, which has no unpaired surrogates.
        return {k: v.encode("utf-8", "surrogatepass").decode("utf-8", "replace") for k, v in fields.items()}, None
    field = draw(st.sampled_from(BODY_FIELDS))
    return _dumps({field: draw(st.sampled_from(["9" * 100_000, "A" * 500_000]))}, True), "application/json"


def _path_value(*, converter_name: str, converter, parameter: str, world: dict) -> st.SearchStrategy:
    if converter_name in ("id", "int"):
        real = world["ids"]
    else:
        real = world["strings"].get(parameter, []) + world["strings"]["any"]
    matching = st.from_regex(f"\\A(?:{converter.regex})\\Z")
    return st.one_of(st.sampled_from(real), matching, hostile_text)


@st.composite
def urls(draw, route: Route, world: dict):
    parts = []
    for pattern in route.patterns:
        if isinstance(pattern, RegexPattern):
            regex = pattern.regex.pattern.lstrip("^").rstrip("$")
            value = draw(st.one_of(st.from_regex(f"\\A(?:{regex})\\Z"), hostile_text))
            parts.append(quote(value, safe="/", errors="surrogatepass"))
            continue
        route_text = str(pattern)
        position = 0
        for match in re.finditer(r"<(?:(?P<converter>[^>:]+):)?(?P<parameter>[^>]+)>", route_text):
            parts.append(route_text[position : match.start()])
            name = match.group("converter") or "str"
            converter = pattern.converters[match.group("parameter")]
            value = draw(_path_value(converter_name=name, converter=converter, parameter=match.group("parameter"), world=world))
            parts.append(quote(value, safe="/" if name == "path" else "", errors="surrogatepass"))
            position = match.end()
        parts.append(route_text[position:])
    path = "/" + "".join(parts)
    query = draw(
        st.one_of(
            st.just(""),
            st.dictionaries(st.one_of(st.sampled_from(QUERY_NAMES), st.text(max_size=6)), hostile_text, max_size=4).map(
                lambda q: urlencode(q, errors="surrogatepass")
            ),
            st.sampled_from(["limit=%C2%B2", "before=%00", "%ff%fe=%ff", "a=1&" * 300 + "b", "=&&=", "limit"]),
        )
    )
    return path + ("?" + query if query else "")


# --- The world the examples run in ----------------------------------------------------------------


@pytest.fixture(autouse=True)
def _fast_hashing(settings):
    # Password hashing is not under test, and sign-in pages hash even unknown usernames.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def _auth_rate_unspent():
    # /auth/token and /auth/register share a per-address rate kept in Redis, which no
    # rollback restores: each route starts with it unspent (so its examples reach the
    # parser instead of a 429), and the tests after this one find it unspent too.
    throttle_reset(scope="auth", ident="127.0.0.1")
    yield
    throttle_reset(scope="auth", ident="127.0.0.1")


@pytest.fixture(scope="module")
def world(django_db_setup, django_db_blocker):
    """Users, a challenge with an order, a purchase, and one client per identity, built
    once for the module inside a transaction rolled back at its end (Django's
    setUpTestData pattern): each test's own transaction and each example's savepoint
    nest inside it. One client per identity also loads the middleware once, not per test."""
    with django_db_blocker.unblock(), override_settings(PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"]):
        with transaction.atomic():
            yield _build_world()
            transaction.set_rollback(True)


def _build_world() -> dict:
    from challenges.management.commands.seed_demo import seed_plans
    from challenges.services import challenge_activate, order_place
    from payments.services import purchase_create

    install_catalogue(Instrument=Instrument, PriceTick=PriceTick)
    plan = seed_plans()[0]
    users = get_user_model().objects
    trader = users.create_user("fuzz-trader", "fuzz-trader@example.com", "fuzz-trader-pass-1")
    operator = users.create_superuser("fuzz-operator", "fuzz-operator@example.com", "fuzz-operator-pass-1")
    challenge = challenge_activate(trader=trader, plan=plan, source_ref="fuzz:1")
    order = order_place(challenge_id=challenge.pk, trader=trader, symbol="EURUSD", side="buy", qty=Decimal("0.10"), client_order_id="known-1").order
    purchase = purchase_create(trader=trader, plan=plan, payment_method="card", payment_token="tok_visa")

    clients = {"anonymous": APIClient(), "trader": APIClient(), "operator": APIClient()}
    for name, password in (("trader", "fuzz-trader-pass-1"), ("operator", "fuzz-operator-pass-1")):
        client, user = clients[name], trader if name == "trader" else operator
        # A token the way a bot gets one (API.md), whatever the token scheme behind it is.
        answer = client.post("/api/v1/auth/token", {"username": user.username, "password": password}, format="json")
        assert answer.status_code == 200, answer.content
        client.credentials(HTTP_AUTHORIZATION=f"Token {answer.json()['token']}")
        client.force_login(user)  # and a session, for the pages and the admin
    # Each identity is what it claims, or the run would fuzz nothing but 401s.
    assert [c["id"] for c in clients["trader"].get("/api/v1/challenges").json()["results"]] == [challenge.pk]
    assert clients["operator"].get("/admin/").status_code == 200
    assert clients["anonymous"].get("/api/v1/challenges").status_code == 401

    ids = [str(pk) for pk in (challenge.pk, purchase.pk, order.pk, trader.pk, operator.pk)]
    return {
        "ids": ids,
        "strings": {
            "any": ids + ["EURUSD", "known-1", str(purchase.processor_key)],
            "symbol": ["EURUSD", "BTCUSD"],
            "client_order_id": ["known-1"],
        },
        "clients": {name: (client, {key: m.value for key, m in client.cookies.items()}) for name, client in clients.items()},
    }


def _as_identity(client: APIClient, cookies: dict[str, str]) -> APIClient:
    """The client with its identity's cookies only (an example may have logged out)."""
    client.cookies = SimpleCookie()
    for key, value in cookies.items():
        client.cookies[key] = value
    return client


def _send(client: APIClient, method: str, url: str, body, content_type, headers: dict):
    if isinstance(body, dict):  # multipart fields
        body, content_type = encode_multipart(BOUNDARY, body), MULTIPART_CONTENT
    if body is None:
        return client.generic(method, url, headers=headers)
    return client.generic(method, url, data=body, content_type=content_type or "application/json", headers=headers)


DOCUMENTS = ("/api/v1/schema", "/api/v1/docs")


# Routes whose answer is a verdict on the dependencies: a degraded one is 503 by design
# (tradesense.health.HealthView), whatever the input; never 500. An exception still fails.
DEPENDENCY_VERDICTS = {"health/": "every dependency, worker heartbeat included", "health/ready": "the database"}


def _assert_answer(route: Route, response, method: str, url: str):
    allowed = {503} if route.name in DEPENDENCY_VERDICTS else set()
    assert response.status_code < 500 or response.status_code in allowed, (
        response.status_code, method, url, response.content[:400]
    )
    # The schema and its Swagger page render errors in their own media types (YAML, HTML).
    if url.startswith("/api/") and not url.startswith(DOCUMENTS) and 400 <= response.status_code < 500 and method != "HEAD":
        body = response.json()
        assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "fields"}, body


def _fuzz(route: Route, world: dict, client: APIClient, cookies: dict[str, str], examples: int) -> None:
    @hypothesis_settings(
        max_examples=examples,
        deadline=None,
        database=None,  # no example directory in the checkout; a failure prints its example
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    )
    @given(
        method=st.sampled_from(route.methods()),
        url=urls(route, world),
        body=bodies(),
        headers=st.dictionaries(st.sampled_from(HEADER_NAMES), header_text, max_size=3),
    )
    def example(method, url, body, headers):
        with transaction.atomic():
            response = _send(_as_identity(client, cookies), method, url, *body, headers)
            _assert_answer(route, response, method, url)
            transaction.set_rollback(True)  # the next example starts from the same rows

    example()


def _plain_url(route: Route, world: dict) -> str:
    """The route with real values in its parameters (for the warm-up request)."""
    parts = []
    for pattern in route.patterns:
        if isinstance(pattern, RegexPattern):
            parts.append("challenges/")  # matches the admin's app index and catch-all
            continue
        parts.append(re.sub(r"<(?:[^>:]+:)?([^>]+)>", lambda m: (world["strings"].get(m.group(1)) or world["ids"])[0], str(pattern)))
    return "/" + "".join(parts)


def _examples(route: Route, world: dict, client: APIClient, cookies: dict[str, str]) -> int:
    """How many examples fit the route's time budget, from one plain request's duration:
    a slow route (the OpenAPI schema takes half a second) gets fewer, not the whole run."""
    if not route.ours:
        # Django's admin: over a hundred routes of a handful of views.
        return max(1, round(3 * SCALE))
    base, budget = 15, 0.8
    url = _plain_url(route, world)
    started = time.perf_counter()
    with transaction.atomic():
        _assert_answer(route, _as_identity(client, cookies).get(url), "GET", url)
        transaction.set_rollback(True)
    took = time.perf_counter() - started
    return max(1, round(min(base, budget / max(took, 0.001)) * SCALE))


@pytest.mark.parametrize("route", ROUTES, ids=[route.name for route in ROUTES])
def test_no_route_answers_hostile_input_with_a_server_error(route, world, db):
    for client, cookies in world["clients"].values():
        _fuzz(route, world, client, cookies, _examples(route, world, client, cookies))


@pytest.mark.parametrize("path", ["/health/live", "/health/ready"])
def test_health_pages_ignore_a_malformed_accept_header(db, path):
    assert APIClient().get(path, headers={"Accept": "0"}).status_code < 500


def test_the_fuzzer_reaches_past_the_parser(world, db):
    """A sanity check on the harness: a well-formed order sent the way the examples are
    is filled, so the refusals in the fuzz run are the input's, not the harness's."""
    client, _cookies = world["clients"]["trader"]
    body = _dumps({"symbol": "EURUSD", "side": "buy", "qty": "0.10"}, True)
    with transaction.atomic():
        response = _send(client, "POST", f"/api/v1/challenges/{world['ids'][0]}/orders", body, "application/json", {})
        assert response.status_code == 201, response.content
        transaction.set_rollback(True)
