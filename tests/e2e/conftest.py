"""Page tests in a real browser: Debian's chromium, headless, driven by Playwright (``executable_path``).

The hub runs as its own process (``python -m hub web``) on a free loopback port with a SQLite database;
the browser talks to it over 127.0.0.1 only.
"""

from __future__ import annotations

import json
import os
import shutil
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from hub import accounts
from hub.db import make_engine, migrate
from provisioning.broker import free_port
from tests.helpers import Child, wait_for

ADMIN_USER = "e2e-admin"
ADMIN_PASSWORD = "e2e admin password"


def chromium_path() -> str | None:
    """Debian's chromium (or ANTOAN_CHROMIUM), or None when this machine has none."""
    return os.environ.get("ANTOAN_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


@dataclass
class LiveHub:
    base_url: str
    db_url: str
    log: Path


@pytest.fixture(scope="module")
def live_hub(tmp_path_factory) -> Iterator[LiveHub]:
    """The hub web app in its own process, with one admin account."""
    folder = tmp_path_factory.mktemp("live-hub")
    db_url = f"sqlite:///{folder / 'hub.db'}"
    engine = make_engine(db_url)
    migrate(engine)
    with engine.begin() as conn:
        accounts.create_user(
            conn, username=ADMIN_USER, display_name="Quản trị E2E", role="admin", password=ADMIN_PASSWORD
        )
    engine.dispose()
    port = free_port()
    env = {
        "ANTOAN_HUB__DATABASE__URL": db_url,
        "ANTOAN_HUB__WEB__PORT": str(port),
        "ANTOAN_HUB__WEB__HOST": "127.0.0.1",
        "ANTOAN_HUB__MQTT__PORT": str(free_port()),
    }
    child = Child(["-m", "hub", "web"], log_path=folder / "web.log", env=env).start()
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            with urllib.request.urlopen(f"{base}/login", timeout=2) as resp:
                return resp.status == 200
        except OSError:
            return False

    try:
        wait_for(lambda: up() or not child.alive(), timeout_s=60, what="the hub web app to answer")
        assert child.alive(), f"hub web exited:\n{child.log_text()[-3000:]}"
        yield LiveHub(base_url=base, db_url=db_url, log=folder / "web.log")
    finally:
        child.terminate()


@pytest.fixture(scope="module")
def browser():
    """A headless Debian chromium; skipped (failed under CI=true) when the machine has none."""
    path = chromium_path()
    if path is None:
        message = "Debian's chromium is not installed (./run test installs it)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=path, headless=True, args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(browser):
    """A fresh browser context per test; console errors (e.g. CSP violations) are collected."""
    context = browser.new_context(locale="vi-VN", viewport={"width": 412, "height": 915})
    page = context.new_page()
    page.console_errors = []  # type: ignore[attr-defined]
    page.on("console", lambda msg: msg.type == "error" and page.console_errors.append(msg.text))
    try:
        yield page
    finally:
        context.close()


def json_of(path: Path) -> dict:
    return json.loads(path.read_text())
