"""The Content-Security-Policy (django-csp, settings.CONTENT_SECURITY_POLICY): every page
carries it, and no page serves what it would block (an inline script, an on...= handler,
an inline style the policy does not list by hash). The last test loads the dashboard,
the Swagger page and the admin in Chromium and listens for violations."""

from __future__ import annotations

import base64
import hashlib
import re
from decimal import Decimal as D
from html.parser import HTMLParser

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from challenges.services import order_place
from tests.e2e.conftest import browser, stack  # noqa: F401 - fixtures of the Chromium test
from tests.live.fixtures import catalogue  # noqa: F401 - the instrument catalogue, EURUSD fresh

REQUIRED = {
    "default-src": {"'self'"},
    "script-src": {"'self'"},
    "object-src": {"'none'"},
    "frame-ancestors": {"'none'"},
    "base-uri": {"'self'"},
    "form-action": {"'self'"},
}


def policy(response) -> dict[str, list[str]]:
    header = response.get("Content-Security-Policy")
    assert header, f"no Content-Security-Policy on {response.request['PATH_INFO']}"
    directives = {}
    for part in header.split(";"):
        name, *values = part.split()
        directives[name] = values
    return directives


def sha256_source(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


class InlineCode(HTMLParser):
    """What a page holds that a CSP without 'unsafe-inline' would block."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.inline_scripts: list[str] = []
        self.handlers: list[str] = []
        self.style_attributes: list[str] = []
        self.style_blocks: list[str] = []
        self._in: str | None = None
        self._text: list[str] = []
        self._src = False
        self._data_block = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for name, value in attrs.items():
            if name.startswith("on"):
                self.handlers.append(f"<{tag} {name}={value!r}>")
            if name in {"href", "src", "action", "formaction"} and (value or "").strip().lower().startswith("javascript:"):
                self.handlers.append(f"<{tag} {name}={value!r}>")
        if "style" in attrs:
            self.style_attributes.append(f"<{tag} style={attrs['style']!r}>")
        if tag in {"script", "style"}:
            self._in, self._text = tag, []
            self._src = bool(attrs.get("src"))
            # A JSON data block (json_script) is never executed, so CSP leaves it alone.
            self._data_block = tag == "script" and (attrs.get("type") or "").lower() == "application/json"

    def handle_data(self, data):
        if self._in:
            self._text.append(data)

    def handle_endtag(self, tag):
        if tag != self._in:
            return
        text = "".join(self._text)
        if tag == "script" and not self._src and not self._data_block and text.strip():
            self.inline_scripts.append(text.strip()[:120])
        if tag == "style":
            self.style_blocks.append(text)
        self._in = None


def inline_code(response) -> InlineCode:
    parser = InlineCode()
    parser.feed(response.content.decode())
    return parser


@pytest.fixture
def pages(make_user, make_challenge, catalogue, plans):  # noqa: F811
    """(client, path) for every HTML page: the dashboard as a trader with a position, the
    login pages anonymously, the admin as a superuser, and the Swagger page."""
    trader = make_user("alice")
    challenge = make_challenge(trader, "starter")
    order_place(challenge_id=challenge.pk, trader=trader, symbol="EURUSD", side="buy", qty=D("0.10"))
    root = get_user_model().objects.create_superuser("root", "root@example.com", "root-pass-123-secure")
    anonymous, as_trader, as_root = Client(), Client(), Client()
    as_trader.force_login(trader)
    as_root.force_login(root)
    listed = [
        (anonymous, "/login/"),
        (anonymous, "/signup/"),
        (anonymous, "/admin/login/"),
        (as_trader, "/"),
        (as_trader, "/plans/"),
        (as_trader, f"/challenges/{challenge.pk}/"),
        (as_trader, "/leaderboard/"),
        (as_root, "/admin/"),
        (as_root, "/admin/challenges/plan/"),
        (as_root, f"/admin/challenges/plan/{plans['starter'].pk}/change/"),
        (as_root, "/admin/challenges/challenge/"),
        (as_root, f"/admin/challenges/challenge/{challenge.pk}/change/"),
        (as_root, "/admin/common/auditevent/"),
        (as_root, "/admin/payments/purchase/"),
        (as_root, "/admin/auth/user/add/"),  # the stock admin's richest form (password widgets)
        (as_root, "/api/v1/docs"),
    ]
    return listed


def test_every_page_carries_the_policy_and_serves_nothing_it_blocks(pages, settings):
    settings.API_DOCS_PUBLIC = False  # production: the Swagger page is the staff's
    problems = []
    for client, path in pages:
        response = client.get(path)
        assert response.status_code == 200, (path, response.status_code)
        assert response["Content-Type"].startswith("text/html"), path
        directives = policy(response)
        for name, values in REQUIRED.items():
            if set(directives.get(name, ())) != values:
                problems.append(f"{path}: {name} is {directives.get(name)}, want {sorted(values)}")
        if "'unsafe-inline'" in directives.get("style-src", ()) or "'unsafe-eval'" in directives.get("script-src", ()):
            problems.append(f"{path}: unsafe source in {directives}")
        found = inline_code(response)
        problems += [f"{path}: inline script {s!r}" for s in found.inline_scripts]
        problems += [f"{path}: inline handler {h}" for h in found.handlers]
        problems += [f"{path}: style attribute {s}" for s in found.style_attributes]
        allowed_styles = set(directives.get("style-src", ()))
        problems += [
            f"{path}: inline <style> not allowed by hash ({sha256_source(block)})"
            for block in found.style_blocks
            if sha256_source(block) not in allowed_styles
        ]
    assert not problems, "\n".join(problems)


def test_the_checker_sees_what_it_looks_for():
    """The parser above is what makes the page test able to fail: it must flag each kind."""

    class Page:
        content = (
            b'<script>alert(1)</script><script src="/x.js"></script><script type="application/json">{}</script>'
            b'<select onchange="go()"></select><a href="javascript:go()">x</a><p style="color:red"></p>'
            b"<style>p{}</style>"
        )

    found = inline_code(Page)
    assert found.inline_scripts == ["alert(1)"]
    assert len(found.handlers) == 2 and len(found.style_attributes) == 1 and found.style_blocks == ["p{}"]


def test_swagger_serves_its_init_script_as_a_file(client, settings):
    settings.API_DOCS_PUBLIC = True
    page = client.get("/api/v1/docs").content.decode()
    src = re.search(r'<script src="(/api/v1/docs\?[^"]*script=[^"]*)"', page)
    assert src, "the split view's init script is not referenced by src"
    script = client.get(src.group(1).replace("&amp;", "&"))
    assert script.status_code == 200 and script["Content-Type"].startswith("application/javascript")
    assert b"SwaggerUIBundle" in script.content


@pytest.mark.parametrize("secure, scheme", [(False, "ws"), (True, "wss")])
def test_connect_src_names_the_sites_websocket_origin(client, db, settings, secure, scheme):
    # The dashboard opens ws(s)://<location.host>/ws/v1/stream: the host as the browser sent it.
    settings.ALLOWED_HOSTS = ["trade.example.com"]
    response = client.get("/login/", secure=secure, HTTP_HOST="trade.example.com:8443")
    assert policy(response)["connect-src"] == ["'self'", f"{scheme}://trade.example.com:8443"]


def test_api_responses_carry_it_too(client, db):
    # A JSON body rendered as HTML by a confused browser still runs nothing.
    assert "script-src 'self'" in client.get("/api/v1/plans")["Content-Security-Policy"]


# --- in Chromium -----------------------------------------------------------------------------------------


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_pages_load_in_chromium_without_a_csp_violation(stack, browser, make_user, make_challenge, catalogue):  # noqa: F811
    """Real browser, real server (tests/e2e/conftest.py): the dashboard connects its
    WebSocket, Swagger UI renders the schema, the admin renders, and the browser reports
    no violation of the policy; a planted inline script is reported, so the listener works."""
    running, chromium = stack, browser
    trader = make_user("cspuser", password="csp-Secure-pass-42")
    challenge = make_challenge(trader, "starter")
    get_user_model().objects.create_superuser("cspadmin", "a@example.com", "csp-Secure-pass-42")

    context = chromium.new_context()
    # Collected in the page (the event names the directive) and from the console.
    context.add_init_script(
        "window.__csp = [];"
        "document.addEventListener('securitypolicyviolation', e => "
        "window.__csp.push(e.violatedDirective + ' ' + e.blockedURI));"
    )
    page = context.new_page()
    console: list[str] = []
    page.on("console", lambda msg: console.append(msg.text) if "Content Security Policy" in msg.text else None)

    def visit(path: str, ready: str) -> list[str]:
        response = page.goto(running.base + path)
        assert response.ok, (path, response.status)
        assert "script-src 'self'" in response.headers["content-security-policy"]
        page.wait_for_selector(ready, timeout=15_000)
        return page.evaluate("window.__csp")

    def log_in(username: str, login_path: str) -> None:
        page.goto(running.base + login_path)
        page.fill("input[name=username]", username)
        page.fill("input[name=password]", "csp-Secure-pass-42")
        page.click("main [type=submit], #content [type=submit]")
        page.wait_for_url(lambda url: "login" not in url, timeout=15_000)

    violations: dict[str, list[str]] = {}
    log_in("cspuser", "/login/")
    violations["/login/ -> /"] = visit("/", "#main")
    violations["/plans/"] = visit("/plans/", "article.plan")
    violations["challenge"] = visit(f"/challenges/{challenge.pk}/", "#status-badge")
    page.wait_for_selector("#conn[data-state=live]", timeout=15_000)  # the WebSocket is allowed
    violations["challenge live"] = page.evaluate("window.__csp")
    violations["/leaderboard/"] = visit("/leaderboard/", "#main")
    violations["/api/v1/docs"] = visit("/api/v1/docs", ".swagger-ui .opblock")  # rendered from the schema
    page.context.clear_cookies()
    log_in("cspadmin", "/admin/login/")
    violations["/admin/"] = visit("/admin/", "#content")
    violations["/admin/challenges/challenge/"] = visit("/admin/challenges/challenge/", "#changelist")

    bad = {path: found for path, found in violations.items() if found}
    assert not bad and not console, (bad, console)

    # The control: an inline script planted now is blocked and reported.
    page.evaluate("() => { const s = document.createElement('script'); s.textContent = 'window.__ran = 1'; document.body.append(s); }")
    page.wait_for_function("window.__csp.length > 0", timeout=5_000)
    assert page.evaluate("window.__ran === undefined")
    context.close()
