"""Hostile input is a 4xx with API.md's error body, never a 500, and writes nothing.

One named case per class of input that used to crash a view (docs/security.md "Input"):
non-ASCII digits and oversized numbers in query parameters, headers and path ids, NUL
characters anywhere, nesting and undecodable JSON, charsets that decode nothing. Every
case goes through the real URL conf and middleware, anonymous or authenticated, and the
row count of every table is compared before and after."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import pytest
from asgiref.sync import async_to_sync
from django.apps import apps
from django.contrib.auth import get_user_model
from django.test import AsyncClient
from django.urls import reverse
from rest_framework.test import APIClient

from challenges.catalogue import install_catalogue
from challenges.models import Instrument, PriceTick
from payments.signing import signature_header
from tradesense.common import parsing
from tradesense.common.converters import IdConverter
from tradesense.common.parsers import MAX_DEPTH, MalformedJson, json_loads_strict
from tradesense.common.throttling import throttle_reset

pytestmark = pytest.mark.django_db

BIGINT_MAX = 2**63 - 1
SECRET = "hostile-input-test-secret"


@pytest.fixture(autouse=True)
def _fast_hashing_and_secret(settings):
    # Password hashing is not under test; the webhook cases sign with a known secret.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.PAYMENT_PROCESSOR_SECRET = SECRET


@pytest.fixture(autouse=True)
def _auth_throttle_reset():
    # register and token share a per-address rate in Redis, which no rollback restores:
    # unspent before each case and after it, for the tests that follow.
    throttle_reset(scope="auth", ident="127.0.0.1")
    yield
    throttle_reset(scope="auth", ident="127.0.0.1")


@pytest.fixture
def world(trader, make_challenge, client_for):
    install_catalogue(Instrument=Instrument, PriceTick=PriceTick)
    challenge = make_challenge(trader)
    # A superuser: every admin page and PUT /market/prices renders instead of answering 403.
    operator = get_user_model().objects.create_superuser("operator", "operator@example.com", "x")
    admin = client_for(operator)
    admin.force_login(operator)
    return {
        "anon": APIClient(),
        "trader": client_for(trader),
        "staff": admin,
        "challenge": challenge.pk,
    }


# Counters of attempts, not data: a refused request may count against its sender's limits.
ATTEMPT_COUNTERS = {"accounts.RateWindow", "axes.AccessAttempt", "axes.AccessFailureLog", "axes.AccessLog"}


def row_counts() -> dict[str, int]:
    return {
        model._meta.label: model._default_manager.count()
        for model in apps.get_models()
        if model._meta.label not in ATTEMPT_COUNTERS
    }


def assert_error(response, status: int, *, field: str | None = None, code: str | None = None) -> dict:
    assert response.status_code == status, response.content[:500]
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == {"code", "message", "fields"}, error
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["fields"], dict)
    if field is not None:
        assert field in error["fields"], error
        assert all(isinstance(p, str) for p in error["fields"][field])
    if code is not None:
        assert error["code"] == code, error
    return error


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


ORDER = {"symbol": "EURUSD", "side": "buy", "qty": "0.10"}
REGISTER = {"username": "newcomer", "email": "newcomer@example.com", "password": "a-long-pass-phrase-9"}


def request(world, who: str, method: str, path: str, *, data=None, content_type=None, headers=None):
    client = world[who]
    path = path.format(c=world["challenge"])
    kwargs = {"headers": headers or {}}
    if data is not None:
        kwargs["data"] = data
        kwargs["content_type"] = content_type or "application/json"
    elif content_type is not None:
        kwargs["content_type"] = content_type
    return getattr(client, method)(path, **kwargs)


# (name, who, method, path, body, content type, headers, status, field named in `fields`, code)
API_CASES = [
    # --- Non-ASCII digits: isdigit() said yes, int() said no (500) or quietly converted.
    ("limit_superscript_two", "trader", "get", "/api/v1/challenges?limit=%C2%B2", None, None, None, 400, "limit", "invalid"),
    ("limit_arabic_indic", "trader", "get", "/api/v1/challenges?limit=%D9%A1%D9%A0", None, None, None, 400, "limit", "invalid"),
    ("before_fullwidth", "trader", "get", "/api/v1/challenges/{c}/orders?before=%EF%BC%91", None, None, None, 400, "before", "invalid"),
    ("history_limit_superscript", "trader", "get", "/api/v1/challenges/{c}/portfolio/history?limit=%C2%B3", None, None, None, 400, "limit", "invalid"),
    ("purchases_limit_arabic_indic", "trader", "get", "/api/v1/purchases?limit=%D9%A5", None, None, None, 400, "limit", "invalid"),
    ("purchases_before_superscript", "trader", "get", "/api/v1/purchases?before=%C2%B2", None, None, None, 400, "before", "invalid"),
    ("leaderboard_limit_superscript", "trader", "get", "/api/v1/leaderboard?limit=%C2%B2", None, None, None, 400, "limit", "invalid"),
    ("price_history_limit_superscript_anonymous", "anon", "get", "/api/v1/market/prices/EURUSD?limit=%C2%B2", None, None, None, 400, "limit", "invalid"),
    ("if_match_superscript", "trader", "post", "/api/v1/challenges/{c}/orders", ORDER, None, {"If-Match": '"\u00b2"'}, 400, "If-Match", "invalid"),
    ("if_match_arabic_indic", "trader", "delete", "/api/v1/challenges/{c}/positions/EURUSD", None, None, {"If-Match": '"\u0661"'}, 400, "If-Match", "invalid"),
    ("qty_arabic_indic", "trader", "post", "/api/v1/challenges/{c}/orders", {**ORDER, "qty": "\u0661"}, None, None, 400, "qty", "invalid"),
    # --- Oversized numbers: past bigint, past any sane length.
    ("before_past_bigint", "trader", "get", f"/api/v1/challenges?before={BIGINT_MAX + 1}", None, None, None, 400, "before", "invalid"),
    ("before_forty_digits", "trader", "get", "/api/v1/purchases?before=" + "9" * 40, None, None, None, 400, "before", "invalid"),
    ("limit_thirty_digits", "trader", "get", "/api/v1/challenges/{c}/orders?limit=" + "9" * 30, None, None, None, 400, "limit", "invalid"),
    ("if_match_eleven_digits", "trader", "post", "/api/v1/challenges/{c}/orders", ORDER, None, {"If-Match": '"99999999999"'}, 400, "If-Match", "invalid"),
    ("idempotency_key_too_long_anonymous", "anon", "post", "/api/v1/auth/register", REGISTER, None, {"Idempotency-Key": "k" * 256}, 400, "Idempotency-Key", "invalid"),
    ("idempotency_key_too_long", "trader", "post", "/api/v1/challenges/{c}/orders", ORDER, None, {"Idempotency-Key": "k" * 10_000}, 400, "Idempotency-Key", "invalid"),
    ("symbol_filter_too_long", "trader", "get", "/api/v1/challenges/{c}/orders?symbol=" + "A" * 5000, None, None, None, 400, "symbol", "invalid"),
    ("status_filter_unknown", "trader", "get", "/api/v1/challenges/{c}/orders?status=%D9%A1", None, None, None, 400, "status", "invalid"),
    # --- What Django refuses itself, before or around the view: the error body under /api/.
    ("too_many_query_fields", "trader", "get", "/api/v1/challenges?" + "a=1&" * 1001, None, None, None, 400, None, "bad_request"),
    ("body_past_upload_limit", "anon", "post", "/api/v1/auth/register", '{"username": "' + "a" * 3_000_000 + '"}', None, None, 400, "body", "body_too_large"),
    # --- Path ids past bigint match no route: the 404 of an unknown object, with the body.
    ("challenge_id_past_bigint", "trader", "get", f"/api/v1/challenges/{BIGINT_MAX + 1}", None, None, None, 404, None, "not_found"),
    ("challenge_id_thirty_digits_order", "trader", "post", "/api/v1/challenges/" + "9" * 30 + "/orders", ORDER, None, None, 404, None, "not_found"),
    ("challenge_id_bigint_max_positions", "trader", "get", f"/api/v1/challenges/{BIGINT_MAX}/positions", None, None, None, 404, None, "not_found"),
    ("challenge_id_arabic_indic", "trader", "get", "/api/v1/challenges/%D9%A1", None, None, None, 404, None, "not_found"),
    ("purchase_id_past_bigint", "trader", "get", "/api/v1/purchases/" + "9" * 25, None, None, None, 404, None, "not_found"),
    ("purchase_id_past_bigint_anonymous", "anon", "get", "/api/v1/purchases/" + "9" * 25, None, None, None, 404, None, "not_found"),
    # --- NUL characters, wherever they come from.
    ("nul_in_path_anonymous", "anon", "get", "/api/v1/market/prices/EUR%00USD", None, None, None, 400, "path", "nul_character"),
    ("nul_in_query", "trader", "get", "/api/v1/challenges/{c}/orders?symbol=EUR%00", None, None, None, 400, "query", "nul_character"),
    ("nul_in_token_header_anonymous", "anon", "get", "/api/v1/plans", None, None, {"Authorization": "Token abc\x00def"}, 400, "Authorization", "nul_character"),
    ("nul_in_idempotency_key", "trader", "post", "/api/v1/challenges/{c}/orders", ORDER, None, {"Idempotency-Key": "k\x00"}, 400, "Idempotency-Key", "nul_character"),
    ("nul_escape_in_json_register", "anon", "post", "/api/v1/auth/register", '{"username": "ab\\u0000c", "email": "a@example.com", "password": "a-long-pass-phrase-9"}', None, None, 400, "body", "nul_character"),
    ("nul_escape_in_json_token", "anon", "post", "/api/v1/auth/token", '{"username": "x\\u0000", "password": "y"}', None, None, 400, "body", "nul_character"),
    ("nul_byte_in_json", "trader", "post", "/api/v1/challenges/{c}/orders", b'{"symbol": "EUR\x00USD", "side": "buy", "qty": "1"}', None, None, 400, "body", "nul_character"),
    ("nul_escape_in_purchase", "trader", "post", "/api/v1/purchases", '{"plan": "starter\\u0000", "payment_method": "card", "payment_token": "tok_visa"}', None, {"Idempotency-Key": "p-1"}, 400, "body", "nul_character"),
    # --- JSON no parser behind us can hold.
    ("deep_json_token_anonymous", "anon", "post", "/api/v1/auth/token", nested(100_000), None, None, 400, "body", "malformed_json"),
    ("deep_json_register", "anon", "post", "/api/v1/auth/register", json.dumps({**REGISTER, "email": json.loads(nested(MAX_DEPTH + 5))}), None, None, 400, "email", "malformed_json"),
    ("deep_json_order", "trader", "post", "/api/v1/challenges/{c}/orders", '{"symbol": ' + nested(5_000) + "}", None, None, 400, "body", "malformed_json"),
    ("deep_json_purchase_with_key", "trader", "post", "/api/v1/purchases", nested(50), None, {"Idempotency-Key": "p-2"}, 400, "body", "malformed_json"),
    ("lone_surrogate_register", "anon", "post", "/api/v1/auth/register", '{"username": "ab\\ud800c", "email": "a@example.com", "password": "x"}', None, None, 400, "username", "malformed_json"),
    ("lone_surrogate_key", "trader", "post", "/api/v1/challenges/{c}/orders", '{"\\udfff": 1}', None, None, 400, "\\udfff", "malformed_json"),
    ("invalid_utf8_anonymous", "anon", "post", "/api/v1/auth/token", b'{"username": "\xff\xfe", "password": "x"}', None, None, 400, "body", "malformed_json"),
    ("nan_literal", "trader", "post", "/api/v1/challenges/{c}/orders", '{"symbol": "EURUSD", "side": "buy", "qty": NaN}', None, None, 400, "body", "malformed_json"),
    ("integer_past_digit_limit", "trader", "post", "/api/v1/challenges/{c}/orders", '{"symbol": "EURUSD", "side": "buy", "qty": ' + "9" * 5000 + "}", None, None, 400, "body", "malformed_json"),
    ("qty_forty_digits", "trader", "post", "/api/v1/challenges/{c}/orders", {**ORDER, "qty": "9" * 40}, None, None, 400, "qty", "invalid"),
    ("price_forty_digits", "staff", "put", "/api/v1/market/prices/EURUSD", {"price": "9" * 40}, None, None, 400, "price", "invalid"),
]


@pytest.mark.parametrize(
    ("who", "method", "path", "data", "content_type", "headers", "status", "field", "code"),
    [case[1:] for case in API_CASES],
    ids=[case[0] for case in API_CASES],
)
def test_hostile_api_input_is_refused_and_writes_nothing(world, who, method, path, data, content_type, headers, status, field, code):
    before = row_counts()
    response = request(world, who, method, path, data=data, content_type=content_type, headers=headers)
    assert_error(response, status, field=field, code=code)
    assert row_counts() == before


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json; charset=rot13",  # a codec, but no text encoding: Django raised LookupError
        'application/json; charset="zlib"',
        "application/json; charset=idna",
        "application/json; charset*=bogus''x",  # RFC 2231 with an unknown encoding: ValueError
        "application/json; charset*=rot13''x",
    ],
)
def test_a_content_type_django_cannot_build_a_request_from_is_read_as_utf8(world, content_type):
    # Django raised while building the request, before any middleware: a 500 on every
    # server. The parameters are dropped, so the body is read as UTF-8 like any other.
    body = '{"username": "nobody", "password": "wrong"}'
    response = world["anon"].post("/api/v1/auth/token?lang=fr", body, content_type=content_type)
    assert_error(response, 400, code="invalid_credentials")
    page = world["trader"].get("/api/v1/challenges?limit=1", content_type=content_type.replace("application/json", "text/plain"))
    assert page.status_code == 200 and len(page.json()["results"]) == 1
    form = world["anon"].post("/login/?next=/", "username=nobody&password=wrong", content_type=content_type.replace("application/json", "application/x-www-form-urlencoded"))
    assert form.status_code == 200 and "_auth_user_id" not in world["anon"].session


def test_the_asgi_path_refuses_and_rewrites_alike(world):
    # The ASGI handler (uvicorn in production) builds its request from the scope, and runs
    # the middleware's async branch: the same answers as under WSGI. Read-only requests,
    # since the view runs on another thread's connection, outside this test's transaction.
    client = AsyncClient()
    nul = async_to_sync(client.get)("/api/v1/market/prices/EUR%00USD")
    assert_error(nul, 400, field="path", code="nul_character")
    # ASGIRequest raised ValueError on this one while being built (WSGIRequest on rot13 too).
    plans = async_to_sync(client.get)("/api/v1/plans?limit=1", headers={"Content-Type": "text/plain; charset*=bogus''x"})
    assert plans.status_code == 200 and plans.json()["results"]


def test_an_escaped_backslash_before_u0000_is_text_not_nul(world):
    # `\\u0000` in JSON is a backslash followed by "u0000": storable, so it is only a wrong password.
    response = request(world, "anon", "post", "/api/v1/auth/token", data='{"username": "a\\\\u0000", "password": "b"}')
    assert_error(response, 400, code="invalid_credentials")


def test_the_deepest_accepted_nesting_reaches_the_serializer(world):
    # MAX_DEPTH levels parse; the serializer then refuses the list as a username (not a 500).
    body = json.dumps({"username": json.loads(nested(MAX_DEPTH - 1)), "password": "x"})
    assert_error(request(world, "anon", "post", "/api/v1/auth/token", data=body), 400, field="username", code="invalid")


# (name, who, method, path, form body, content type, status)
PAGE_CASES = [
    ("login_nul_in_username", "anon", "post", "/login/", "username=ad%00min&password=x", "application/x-www-form-urlencoded", 400),
    ("signup_nul_in_username", "anon", "post", "/signup/", "username=a%00b&email=a%40example.com&password1=pw-1-long-enough&password2=pw-1-long-enough", "application/x-www-form-urlencoded", 400),
    ("admin_login_nul_in_password", "anon", "post", "/admin/login/", "username=admin&password=p%00", "application/x-www-form-urlencoded", 400),
    ("admin_login_raw_nul", "anon", "post", "/admin/login/", b"username=admin\x00&password=p", "application/x-www-form-urlencoded", 400),
]


@pytest.mark.parametrize(("who", "method", "path", "data", "content_type", "status"), [c[1:] for c in PAGE_CASES], ids=[c[0] for c in PAGE_CASES])
def test_hostile_form_posts_to_pages_are_refused(world, who, method, path, data, content_type, status):
    before = row_counts()
    response = request(world, who, method, path, data=data, content_type=content_type)
    assert_error(response, status)
    assert row_counts() == before


def test_multipart_sign_up_with_a_nul_is_refused(world):
    before = row_counts()
    response = world["anon"].post(
        "/signup/",
        {"username": "nul\x00user", "email": "n@example.com", "password1": "pw-1-long-enough", "password2": "pw-1-long-enough"},
    )  # the test client's default: multipart/form-data
    assert_error(response, 400, field="body", code="nul_character")
    assert row_counts() == before


def test_a_nul_in_the_session_cookie_is_refused_before_the_session_is_read(world):
    # Set as the raw header: the test client's cookie jar would quote the NUL away.
    for path in ("/login/", "/admin/", "/api/v1/plans"):
        response = APIClient().get(path, HTTP_COOKIE="sessionid=abcdefgh\x00ijklmnop")
        assert_error(response, 400, field="Cookie", code="nul_character")


@pytest.mark.parametrize(
    "path",
    ["/admin/challenges/challenge/?q=%00", "/admin/challenges/challenge/?q=a%00b&o=1"],
)
def test_a_nul_in_the_admin_search_is_refused(world, path):
    assert_error(world["staff"].get(path), 400, field="query", code="nul_character")


@pytest.mark.parametrize(
    "path",
    [
        "/admin/challenges/challenge/" + "9" * 30 + "/change/",
        f"/admin/challenges/challenge/{BIGINT_MAX + 1}/change/",
        "/admin/challenges/challenge/%D9%A1/change/",
        "/admin/payments/purchase/?id__exact=" + "9" * 30,
        "/admin/challenges/challenge/?o=%C2%B2&p=%D9%A1",
    ],
)
def test_admin_with_hostile_ids_and_numbers_is_not_a_server_error(world, path):
    before = row_counts()
    response = world["staff"].get(path)
    assert response.status_code in (200, 302, 400, 404), response.status_code
    assert row_counts() == before


@pytest.mark.parametrize("path", ["/challenges/" + "9" * 30 + "/", f"/challenges/{BIGINT_MAX + 1}/"])
def test_a_page_for_an_id_past_bigint_is_404(world, trader, path):
    client = APIClient()
    client.force_login(trader)
    assert client.get(path).status_code == 404


# --- The payments webhook reads its raw bytes: the same refusals, before the service runs.


def post_signed(client, body: bytes, content_type: str = "application/json"):
    header = signature_header(secret=SECRET, body=body, timestamp=int(time.time()))
    return client.post("/api/v1/payments/webhook", body, content_type=content_type, HTTP_X_SIGNATURE=header)


@pytest.mark.parametrize(
    ("name", "body", "content_type", "code"),
    [
        ("deep", nested(50_000).encode(), "application/json", "malformed_json"),
        ("nested_past_depth", json.dumps({"id": "evt_1", "type": "charge.succeeded", "data": json.loads(nested(40))}).encode(), "application/json", "malformed_json"),
        ("nul_escape", b'{"id": "evt\\u0000", "type": "charge.succeeded", "data": {"object": {}}}', "application/json", "nul_character"),
        # Not declared as JSON, so the middleware's byte check does not apply: the view's does.
        ("nul_escape_as_text", b'{"id": "evt\\u0000", "type": "charge.succeeded", "data": {"object": {}}}', "text/plain", "malformed_json"),
        ("lone_surrogate", b'{"id": "evt_\\ud800", "type": "charge.succeeded", "data": {"object": {}}}', "application/json", "malformed_json"),
        ("invalid_utf8", b'{"id": "evt_\xff"}', "application/json", "malformed_json"),
    ],
)
def test_signed_hostile_webhook_bodies_are_400_and_record_nothing(world, name, body, content_type, code):
    before = row_counts()
    assert_error(post_signed(world["anon"], body, content_type), 400, code=code)
    assert row_counts() == before


# --- The parsing layer itself, at its boundaries.


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("1", 1), ("0042", 42), (str(BIGINT_MAX), BIGINT_MAX), ("0" * 19, 0)],
)
def test_parse_int_accepts_ascii_digits_within_bigint(raw, expected):
    assert parsing.parse_int(raw, name="n") == expected


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "\u00b2",  # superscript two: isdigit() is True, int() raises
        "\u0661",  # Arabic-Indic one: int() returns 1
        "\uff11",  # fullwidth one
        "\u0967",  # Devanagari one
        " 1",
        "1 ",
        "1\n",
        "+1",
        "-1",
        "1_000",
        "1.0",
        "0x10",
        str(BIGINT_MAX + 1),
        "9" * 20,
        "9" * 5000,
    ],
)
def test_parse_int_refuses_everything_else_naming_the_parameter(raw):
    with pytest.raises(parsing.InvalidParameter) as caught:
        parsing.parse_int(raw, name="before")
    assert caught.value.status_code == 400 and list(caught.value.fields) == ["before"]


def test_parse_limit_caps_and_refuses():
    assert parsing.parse_limit(None, default=50, cap=500) == 50
    assert parsing.parse_limit("100000", default=50, cap=500) == 500
    for raw in ("0", "\u00b2", "9" * 20):
        with pytest.raises(parsing.InvalidParameter):
            parsing.parse_limit(raw, default=50, cap=500)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [(None, None), ("*", None), ('"3"', 3), ('W/"12"', 12), ("7", 7), (' "5" ', 5)],
)
def test_parse_version_header_reads_etags(raw, expected):
    assert parsing.parse_version_header(raw) == expected


@pytest.mark.parametrize("raw", ['"\u00b2"', '"\u0661"', '"99999999999"', '""', '"3', "W/", '"-1"', '"1.0"', '"2147483648"'])
def test_parse_version_header_refuses_what_is_no_version(raw):
    with pytest.raises(parsing.InvalidParameter) as caught:
        parsing.parse_version_header(raw)
    assert list(caught.value.fields) == ["If-Match"]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2026-01-31", datetime(2026, 1, 31, tzinfo=UTC)),
        ("2026-01-31T12:30:00Z", datetime(2026, 1, 31, 12, 30, tzinfo=UTC)),
        ("2026-01-31T12:30:00+02:00", datetime(2026, 1, 31, 10, 30, tzinfo=UTC)),
        ("2026-01-31T12:30", datetime(2026, 1, 31, 12, 30, tzinfo=UTC)),
    ],
)
def test_parse_instant_reads_iso_dates_as_utc(raw, expected):
    assert parsing.parse_instant(raw, name="after") == expected


@pytest.mark.parametrize(
    "raw",
    [
        "\u0662\u0660\u0662\u0666-01-31",  # Arabic-Indic year
        "2026-02-30",
        "2026-01-31T25:00:00Z",
        "0000-01-01",
        "9999-12-31T23:59:59-05:00",  # past year 9999 once in UTC
        "0001-01-01T00:00:00+05:00",  # before year 1 once in UTC
        "2026-01-31T12:30:00Z" + "0" * 30,
        "yesterday",
        "",
    ],
)
def test_parse_instant_refuses_what_is_no_date(raw):
    with pytest.raises(parsing.InvalidParameter) as caught:
        parsing.parse_instant(raw, name="until")
    assert list(caught.value.fields) == ["until"]


def test_the_id_converter_stops_at_bigint():
    converter = IdConverter()
    assert converter.to_python(str(BIGINT_MAX)) == BIGINT_MAX
    with pytest.raises(ValueError):
        converter.to_python(str(BIGINT_MAX + 1))
    assert reverse("challenges:challenge", args=[BIGINT_MAX]) == f"/api/v1/challenges/{BIGINT_MAX}"


def test_json_depth_limit_is_exact():
    assert json_loads_strict(nested(MAX_DEPTH)) == json.loads(nested(MAX_DEPTH))
    with pytest.raises(MalformedJson):
        json_loads_strict(nested(MAX_DEPTH + 1))
    with pytest.raises(MalformedJson) as caught:
        json_loads_strict('{"a": {"b": ["ok", "x\\u0000"]}}')
    assert list(caught.value.fields) == ["a.b.1"]
