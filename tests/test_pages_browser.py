"""The admin and user pages in a real browser: headless Chromium, driven by Playwright.

Playwright drives Debian's `chromium` (never a downloaded browser). Skipped,
saying why, when chromium or the playwright package is missing, unless
POOLGATE_REQUIRE_CHROMIUM=1 (CI installs both and sets it). With
POOLGATE_WRITE_SCREENSHOTS=1 the screenshots are also written to docs/, which
is how the README's pictures are made.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from checks_support import ADMIN_KEY, admin, listed_keys
from test_status_page_browser import CHROMIUM, QUIET_FLAGS
from users_support import create_user, get_user, start_with_admin

ROOT = Path(__file__).resolve().parent.parent
NEW_KEY = "sk-browser-added-key-0000000000000000000000004242"


def _missing(why: str) -> None:
    if os.environ.get("POOLGATE_REQUIRE_CHROMIUM") == "1":
        pytest.fail(f"POOLGATE_REQUIRE_CHROMIUM=1 but {why}")
    pytest.skip(f"{why}; CI runs this test")


@pytest.fixture(scope="module")
def chromium_browser() -> Iterator[Any]:
    if CHROMIUM is None:
        _missing("chromium is not installed here (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("the playwright package is not installed (pip install -e '.[test]')")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=[f for f in QUIET_FLAGS if f != "--headless"])
        yield browser
        browser.close()


@pytest.fixture
def page(chromium_browser: Any) -> Iterator[Any]:
    context = chromium_browser.new_context(viewport={"width": 1200, "height": 1000})
    tab = context.new_page()
    tab.set_default_timeout(20_000)
    yield tab
    context.close()


def submit(page: Any, button: str) -> Any:
    """Click a form's button and wait for the page it posts to (not the one still showing): its response."""
    with page.expect_navigation() as answer:
        page.click(button)
    return answer.value


def log_in(page: Any, url: str, admin_key: str = ADMIN_KEY) -> None:
    page.goto(url + "/admin")
    page.fill("#admin_key", admin_key)
    submit(page, "button:has-text('Log in')")


def screenshot(page: Any, tmp_path: Path, name: str) -> None:
    shot = tmp_path / name
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000, f"{name} is blank"
    if os.environ.get("POOLGATE_WRITE_SCREENSHOTS") == "1":
        shutil.copy(shot, ROOT / "docs" / name)


def test_an_admin_runs_the_proxy_from_the_browser(start_gateway, page, tmp_path):
    gateway = start_with_admin(start_gateway, GATEKEEPER="user_token,app_store", SERVER_TITLE="Friends' proxy",
                               JWT_SECRET="browser-session-secret-0123456789-abcdef", APP_BUNDLE_ID="org.example.chat")
    url = gateway.url

    log_in(page, url)
    assert page.url == url + "/admin/manage/keys"

    page.select_option("#provider", "openai")
    page.fill("#new-keys", NEW_KEY)
    submit(page, "button:has-text('Add keys')")
    assert "Added 1 openai key(s)" in page.inner_text("[role=status]")
    assert NEW_KEY[-4:] in {k["key"][-4:] for k in listed_keys(gateway)}
    assert NEW_KEY not in page.content(), "keys are shown masked"
    screenshot(page, tmp_path, "admin-keys.png")

    page.click("nav.admin >> text=Users")
    page.fill("#nickname", "ann")
    page.click("summary")
    page.fill("[name='quota:gpt-4o']", "5000")
    submit(page, "button:has-text('Create user')")
    token = page.input_value("#token")
    assert token.startswith("pg-")
    assert page.is_visible("button[data-copy=token]"), "the copy button comes with the page's script"
    user_id = admin(gateway, "GET", "/users").json()["users"][0]["id"]
    assert page.url == url + "/admin/manage/users"  # the answer to the post: reloading it cannot show the token again

    page.goto(f"{url}/admin/manage/users/{user_id}")
    assert token not in page.content()
    page.fill("[name='quota:gpt-4o']", "1234")
    submit(page, "button:has-text('Save')")
    assert "The user is saved." in page.inner_text("[role=status]")
    assert get_user(gateway, user_id).json()["user"]["quotas"]["gpt-4o"]["limit"] == 1234
    assert page.input_value("[name='quota:gpt-4o']") == "1234"
    screenshot(page, tmp_path, "admin-user.png")

    page.fill("#reason", "on holiday")
    submit(page, "button:has-text('Disable')")
    assert "disabled" in page.inner_text("#state") and "on holiday" in page.inner_text("#state")
    assert get_user(gateway, user_id).json()["user"]["disabled_reason"] == "on holiday"
    submit(page, "button:has-text('Enable')")
    assert "enabled" in page.inner_text("#state")
    assert get_user(gateway, user_id).json()["user"]["disabled_at"] is None

    session = admin(gateway, "POST", "/sessions", json={"user_id": user_id}).json()["token"]
    spent = _served(gateway, token, "gpt-4o-mini", 3) + _served(gateway, session, "gpt-4o", 1)
    submit(page, "button:has-text('Revoke sessions')")
    assert "sign-in session of the user has ended" in page.inner_text("[role=status]")
    with pytest.raises(openai.AuthenticationError):
        _served(gateway, session, "gpt-4o-mini", 1)
    assert _served(gateway, token, "gpt-4o-mini", 1) >= 0, "the user's own token still works"

    page.click("nav.admin >> text=Usage")
    assert page.inner_text(f"tr[data-user='user:{user_id}'] th") == "ann"
    assert page.inner_text(f"tr[data-user='user:{user_id}'] td.requests") == "5"
    assert page.inner_text("tr[data-model='gpt-4o'] td.requests") == "1"
    assert float(page.inner_text("#totals dd.cost").lstrip("$")) >= spent
    assert page.is_visible("svg.daily-chart polyline")
    screenshot(page, tmp_path, "admin-usage.png")
    with page.expect_download() as download:
        page.click("#downloads >> text=by model")
    rows = (Path(download.value.path())).read_text().splitlines()
    assert rows[0].startswith("model,requests,cost") and len(rows) == 3
    page.goto(f"{url}/admin/manage/usage?month=2020-01")
    assert "No requests this month." in page.inner_text("#by-user")

    export = tmp_path / "oai-users.json"
    export.write_text(json.dumps({"users": [{"token": "legacy-token-browser-01", "type": "special",
                                             "nickname": "imported-friend", "createdAt": 1_700_000_000_000}]}))
    page.click("nav.admin >> text=Users")
    page.set_input_files("#import-file", str(export))
    submit(page, "button:has-text('Import users')")
    assert "Imported 1 user(s)" in page.inner_text("[role=status]")
    page.wait_for_selector("tr[data-user] >> text=imported-friend")
    screenshot(page, tmp_path, "admin-users.png")

    submit(page, "button:has-text('Log out')")
    page.wait_for_selector("#admin_key")
    assert page.url == url + "/admin"
    page.goto(url + "/admin/manage/users")
    assert page.url == url + "/admin", "after logging out the pages ask for the key again"


def _served(gateway: Any, credential: str, model: str, n: int) -> float:
    """What `n` SDK requests cost, as their replies' `cost` headers say."""
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=credential, max_retries=0)
    chat = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 20}
    return sum(float(client.chat.completions.with_raw_response.create(**chat).headers["cost"]) for _ in range(n))


def test_a_form_posted_without_its_csrf_token_is_refused(start_gateway, page):
    gateway = start_with_admin(start_gateway)
    log_in(page, gateway.url)
    before = listed_keys(gateway)

    page.fill("#new-keys", NEW_KEY)
    page.evaluate("document.querySelector('#add-keys input[name=csrf]').remove()")
    with page.expect_navigation() as answer:
        submit(page, "button:has-text('Add keys')")

    assert answer.value.status == 403
    assert "CSRF" in page.inner_text("[role=alert]")
    assert listed_keys(gateway) == before


def test_wrong_passwords_in_the_login_form_lock_the_address_out(start_gateway, page):
    gateway = start_with_admin(start_gateway, ADMIN_LOCKOUT_FAILURES="2", ADMIN_LOCKOUT_SEC="600")

    log_in(page, gateway.url, "guess-one")
    assert "not this proxy's admin key" in page.inner_text("[role=alert]")
    log_in(page, gateway.url, "guess-two")
    log_in(page, gateway.url)  # the right key, too late

    assert "Too many failed admin logins" in page.inner_text("[role=alert]")
    assert page.url == gateway.url + "/admin/login" and not page.is_visible("nav.admin")
    assert admin(gateway, "GET", "/keys").status_code == 429, "the API is locked out for the address too"


def test_the_user_page_shows_only_that_users_data(start_gateway, page, tmp_path):
    gateway = start_with_admin(start_gateway, PUBLIC_URL="https://proxy.example.org", QUOTA_REFRESH_PERIOD="daily",
                               GATEKEEPER="user_token", MONTHLY_BUDGET_USD="5")
    _ann, ann_token = create_user(gateway, nickname="ann-lookup", quotas={"gpt-4o": 2000})
    _bob, bob_token = create_user(gateway, nickname="bob-lookup", quotas={"gpt-4o": 7777})
    spent = _served(gateway, ann_token, "gpt-4o-mini", 2)
    _served(gateway, bob_token, "gpt-4o", 3)

    page.goto(gateway.url + "/user")
    page.fill("#token", ann_token)
    submit(page, "button:has-text('Look up')")

    text = page.inner_text("main")
    assert page.url == gateway.url + "/user", "the token never appears in the address"
    assert "ann-lookup" in text and "bob-lookup" not in text and "7,777" not in text
    assert page.inner_text("tr[data-family='gpt-4o'] td.left") == "2,000"
    assert "next at" in text and "https://proxy.example.org/proxy/openai" in text
    assert page.inner_text("#spend").endswith(" · 2 requests")
    assert float(page.inner_text("#spend").split(" ")[0].lstrip("$")) == pytest.approx(spent, abs=1e-6)
    assert page.inner_text("#budget").startswith("$5.00 a month")
    assert not page.is_visible("tr[data-model='gpt-4o']"), "bob's model is not ann's"
    assert ann_token not in page.content()
    screenshot(page, tmp_path, "user-page.png")


def test_the_pages_are_dark_with_the_system_and_fit_a_phone(start_gateway, chromium_browser, tmp_path):
    gateway = start_with_admin(start_gateway)
    create_user(gateway, nickname="phone-user")
    context = chromium_browser.new_context(viewport={"width": 390, "height": 844}, color_scheme="dark")
    phone = context.new_page()
    try:
        log_in(phone, gateway.url)
        for path in ("/admin/manage/keys", "/admin/manage/users", "/admin/manage/policy", "/admin/manage/usage",
                     "/user"):
            phone.goto(gateway.url + path)
            background = phone.evaluate("getComputedStyle(document.body).backgroundColor")
            overflow = phone.evaluate("document.documentElement.scrollWidth - window.innerWidth")
            assert background == "rgb(22, 24, 28)", (path, background)
            assert overflow <= 0, f"{path} is wider than a phone by {overflow}px"
        phone.goto(gateway.url + "/admin/manage/keys")
        screenshot(phone, tmp_path, "admin-keys-phone-dark.png")
    finally:
        context.close()
