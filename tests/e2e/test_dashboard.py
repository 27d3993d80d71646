"""The trader's whole journey in real headless Chromium against the real ASGI server:
sign up, buy Starter, watch the purchase open the challenge, trade, watch equity and
the meters move when staff move the price, survive a kill -9 of the web server (the
page reconnects and resyncs by itself), and see the breach turn the page to failed with
the reason. Screenshots of every page land in tests/e2e/screenshots/."""

from __future__ import annotations

import re
from decimal import Decimal

import httpx
import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from playwright.sync_api import expect

from accounts.services import token_issue
from challenges.market import market_price_set
from challenges.models import Breach, Challenge, Order, Position
from tests.e2e.conftest import shot

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

PASSWORD = "e2e-Secure-pass-42"
LIVE_TIMEOUT = 15_000  # ms; the sweeps run every half second, the server pushes at once


def set_price(stack, staff_token: str, symbol: str, price: str) -> None:
    response = httpx.put(
        f"{stack.base}/api/v1/market/prices/{symbol}",
        json={"price": price},
        headers={"Authorization": f"Token {staff_token}"},
        timeout=10,
    )
    assert response.status_code == 200, response.text


def frames(page) -> int:
    return int(page.evaluate("document.body.dataset.frames || '0'"))


def test_trader_journey_live(stack, browser, staff):
    # Moving a price is a role of its own (challenges.set_price), not every staff account's.
    staff.user_permissions.add(Permission.objects.get(content_type__app_label="challenges", codename="set_price"))
    staff_token = token_issue(user=staff)
    set_price(stack, staff_token, "EURUSD", "1.10000")
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    js_errors: list[str] = []
    page.on("pageerror", lambda exc: js_errors.append(str(exc)))

    # --- anonymous visitors are sent to the login page ------------------------------------------
    page.goto(stack.base + "/")
    expect(page).to_have_url(re.compile(r"/login/\?next=/$"))
    shot(page, "01-login")

    # --- sign up ------------------------------------------------------------------------------------------------
    page.click("text=Create an account")
    expect(page).to_have_url(re.compile(r"/signup/$"))
    page.fill("#id_username", "e2etrader")
    page.fill("#id_email", "e2e@example.com")
    page.fill("#id_password1", PASSWORD)
    page.fill("#id_password2", PASSWORD + "x")
    page.click("button[type=submit]")
    expect(page.locator(".field.has-error")).to_have_count(1)  # the mismatch, in words
    shot(page, "02-signup-error")
    page.fill("#id_password1", PASSWORD)
    page.fill("#id_password2", PASSWORD)
    page.click("button[type=submit]")
    expect(page).to_have_url(re.compile(r"/plans/$"))
    trader = get_user_model().objects.get(username="e2etrader")
    expect(page.locator("#conn")).to_have_attribute("data-state", "live", timeout=LIVE_TIMEOUT)
    expect(page.locator("article.plan")).to_have_count(3)
    shot(page, "03-plans")

    # --- a declined payment says so, and opens nothing ----------------------------------------------------
    page.click("button.buy[data-plan=starter]")
    expect(page.locator("#buy-dialog")).to_be_visible()
    page.select_option("#payment_token", "tok_decline")
    page.click("#buy-submit")
    expect(page.locator("#purchase-progress")).to_be_visible()
    expect(page.locator("#purchase-note")).to_contain_text("The payment did not go through", timeout=LIVE_TIMEOUT)
    expect(page.locator("#purchase-steps li[data-step=charging]")).to_have_attribute("data-state", "failed")
    shot(page, "04-purchase-declined")
    assert not Challenge.objects.filter(trader=trader).exists()

    # --- buy Starter and watch the purchase until the challenge opens -----------------------------------
    page.click("button.buy[data-plan=starter]")
    expect(page.locator("#buy-dialog")).to_be_visible()
    page.check("input[name=payment_method][value=card]", force=True)
    page.select_option("#payment_token", "tok_visa")
    shot(page, "05-buy-dialog")
    page.click("#buy-submit")
    expect(page.locator("#purchase-progress")).to_be_visible()
    shot(page, "06-purchase-progress")
    page.wait_for_url(re.compile(r"/challenges/\d+/$"), timeout=30_000)
    challenge = Challenge.objects.get(trader=trader)
    assert page.url.endswith(f"/challenges/{challenge.pk}/")
    expect(page.locator("#status-badge")).to_have_text("Active")
    expect(page.locator("#stat-equity")).to_have_text("5,000.00")
    expect(page.locator("#conn")).to_have_attribute("data-state", "live", timeout=LIVE_TIMEOUT)
    page.evaluate("window.__journeyMarker = 'same page'")  # gone if the page ever reloads
    shot(page, "07-challenge-open")

    # --- the order ticket says what is wrong, field by field -------------------------------------------------
    page.select_option("#t-symbol", "EURUSD")
    page.fill("#t-qty", "abc")
    page.click("#t-submit")
    expect(page.locator("#ticket-error")).to_be_visible()
    expect(page.locator("[data-error-for=qty]")).not_to_be_empty()
    page.fill("#t-qty", "50")  # 5,000,000 EUR on a 5,000 USD account at 1:30
    page.click("#t-submit")
    expect(page.locator("#ticket-error")).to_contain_text("above equity 5000.00 x leverage 30")
    shot(page, "08-ticket-error")
    assert not Order.objects.filter(challenge=challenge).exists()

    # --- a valid order: the position appears without a reload, over the live stream ------------------------
    before = frames(page)
    page.fill("#t-qty", "1")
    page.click("#t-submit")
    expect(page.locator("#ticket-ok")).to_contain_text("Bought 1 EURUSD at 1.10")
    row = page.locator("#positions tr[data-symbol=EURUSD]")
    expect(row).to_be_visible()
    expect(row).to_contain_text("Long")
    expect(page.locator("#orders tbody tr")).to_have_count(1)
    expect(page.locator("#m-days .meter-value")).to_have_text("1 of 3")
    page.wait_for_function(f"Number(document.body.dataset.frames || 0) > {before}", timeout=LIVE_TIMEOUT)
    position = Position.objects.get(challenge=challenge)
    assert position.qty == Decimal("1") and position.avg_entry_price == Decimal("1.10000")
    shot(page, "09-position-open")

    # --- a second position, closed with its button --------------------------------------------------------
    set_price(stack, staff_token, "GBPUSD", "1.25000")
    page.select_option("#t-symbol", "GBPUSD")
    page.fill("#t-qty", "0.10")
    page.click("#t-submit")
    gbp = page.locator("#positions tr[data-symbol=GBPUSD]")
    expect(gbp).to_be_visible()
    gbp.locator("button.close").click()
    expect(gbp).to_have_count(0)
    expect(page.locator("#orders tbody tr").first).to_contain_text("closed by you")
    expect(page.locator("#orders tbody tr")).to_have_count(3)
    assert not Position.objects.filter(challenge=challenge, instrument__symbol="GBPUSD").exists()
    expect(page.locator("#stat-balance")).to_have_text("5,000.00")  # opened and closed at 1.25000

    # --- staff move the price: equity, P&L and the meters follow live ---------------------------------
    set_price(stack, staff_token, "EURUSD", "1.09800")  # -0.002 x 100,000 = -200.00
    expect(page.locator("#stat-equity")).to_have_text("4,800.00", timeout=LIVE_TIMEOUT)
    expect(row.locator("[data-role=pl]")).to_have_text("-200.00", timeout=LIVE_TIMEOUT)
    expect(page.locator("#m-daily .meter-value")).to_have_text("80.0 %", timeout=LIVE_TIMEOUT)
    expect(page.locator("#m-total .meter-value")).to_have_text("40.0 %")
    expect(page.locator("#m-daily")).to_have_attribute("data-level", "danger")
    # The 50 % and 80 % daily-loss warnings reached the trader as they happened.
    expect(page.locator(".toast-warn").first).to_be_visible(timeout=LIVE_TIMEOUT)
    shot(page, "10-price-moved")

    # --- kill -9 the web server with the page open; the page says so, then reconnects and resyncs ---------
    stack.web.kill()
    expect(page.locator("#conn")).to_have_attribute("data-state", "reconnecting", timeout=LIVE_TIMEOUT)
    expect(page.locator("#offline-banner")).to_be_visible(timeout=LIVE_TIMEOUT)
    shot(page, "11-server-down")
    # While it is down the price moves again: the frame for it can reach nobody.
    market_price_set(symbol="EURUSD", price=Decimal("1.09900"), actor=staff)  # equity 4,900.00
    stack.web.start()
    expect(page.locator("#conn")).to_have_attribute("data-state", "live", timeout=30_000)
    expect(page.locator("#offline-banner")).to_be_hidden(timeout=LIVE_TIMEOUT)
    expect(page.locator("#stat-equity")).to_have_text("4,900.00", timeout=LIVE_TIMEOUT)
    expect(page.locator("#m-daily .meter-value")).to_have_text("40.0 %", timeout=LIVE_TIMEOUT)
    assert page.evaluate("window.__journeyMarker") == "same page", "the page reloaded instead of resyncing"
    shot(page, "12-reconnected")

    # --- a breach turns the page to failed, with the reason in words ---------------------------------------
    set_price(stack, staff_token, "EURUSD", "1.09700")  # equity 4,700.00 < daily floor 4,750.00
    expect(page.locator("#status-badge")).to_have_text("Failed", timeout=LIVE_TIMEOUT)
    expect(page.locator("#breach-card")).to_be_visible()
    expect(page.locator("#breach-message")).to_contain_text("fell below today's loss floor 4750.00")
    expect(page.locator("#breach-details")).to_contain_text("Maximum daily loss")
    expect(page.locator("#positions tr[data-symbol=EURUSD]")).to_have_count(0, timeout=LIVE_TIMEOUT)
    expect(page.locator("#t-submit")).to_be_disabled()
    assert page.evaluate("window.__journeyMarker") == "same page"
    breach = Breach.objects.get(challenge=challenge)
    assert breach.rule == "max_daily_loss" and breach.threshold == Decimal("4750.00")
    challenge.refresh_from_db()
    assert challenge.status == "failed" and challenge.balance == Decimal("4700.00")
    shot(page, "13-failed")

    # --- the other pages, and the dashboard at phone width ---------------------------------------------
    page.goto(stack.base + "/")
    expect(page.locator(f"[data-challenge='{challenge.pk}'] [data-role=status]")).to_have_text("Failed")
    shot(page, "14-home")
    page.goto(stack.base + "/leaderboard/")
    expect(page.locator("h1")).to_have_text("Leaderboard")
    shot(page, "15-leaderboard")

    phone = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    phone_page = phone.new_page()
    phone_page.on("pageerror", lambda exc: js_errors.append(str(exc)))
    phone_page.goto(stack.base + "/login/")
    phone_page.fill("#id_username", "e2etrader")
    phone_page.fill("#id_password", PASSWORD)
    phone_page.click("button[type=submit]")
    expect(phone_page).to_have_url(stack.base + "/")
    phone_page.goto(f"{stack.base}/challenges/{challenge.pk}/")
    expect(phone_page.locator("#status-badge")).to_have_text("Failed")
    expect(phone_page.locator("#conn")).to_have_attribute("data-state", "live", timeout=LIVE_TIMEOUT)
    # Nothing overflows sideways on a phone.
    assert phone_page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
    shot(phone_page, "16-challenge-phone")
    phone_page.goto(stack.base + "/plans/")
    assert phone_page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
    shot(phone_page, "17-plans-phone")
    phone.close()
    context.close()

    assert js_errors == []
    assert stack.sweeper.errors == []
