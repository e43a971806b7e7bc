"""Staff pages in a real browser: login, the dashboard, the language switch, no CSP violations."""

from __future__ import annotations

from tests.e2e.conftest import ADMIN_PASSWORD, ADMIN_USER


def test_login_reaches_the_dashboard_in_vietnamese(live_hub, page):
    page.goto(f"{live_hub.base_url}/admin/")
    assert "/login" in page.url  # anonymous: sent to the login page
    assert page.locator("h1").inner_text() == "Đăng nhập cán bộ"
    page.fill("#username", ADMIN_USER)
    page.fill("#password", ADMIN_PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_hub.base_url}/admin/")
    assert page.locator("h1").inner_text() == "Tình trạng trạm trung tâm"
    assert page.locator("#events-stored").inner_text() == "0"
    assert page.console_errors == []


def test_wrong_password_stays_on_login_with_a_message(live_hub, page):
    page.goto(f"{live_hub.base_url}/login")
    page.fill("#username", ADMIN_USER)
    page.fill("#password", "not the password")
    page.click("button[type=submit]")
    assert "Sai tên đăng nhập hoặc mật khẩu." in page.locator(".flash.error").inner_text()


def test_language_switch_to_english_and_back(live_hub, page):
    page.goto(f"{live_hub.base_url}/login")
    page.click("text=English")
    assert page.locator("h1").inner_text() == "Staff login"
    page.click("text=Tiếng Việt")
    assert page.locator("h1").inner_text() == "Đăng nhập cán bộ"
    assert page.console_errors == []
