"""Translations: every message has Vietnamese, compiled catalogs match their sources, vi is the default."""

from __future__ import annotations

import pytest

from hub.config import HubConfig
from hub.web import create_app, i18n
from hub.web.app import TRANSLATION_DOMAINS


@pytest.mark.parametrize("domain", TRANSLATION_DOMAINS)
def test_every_message_has_a_vietnamese_translation_and_compiled_catalog(domain):
    assert i18n.check(domain) == []


def test_check_reports_an_untranslated_message(monkeypatch, tmp_path):
    source = tmp_path / "view.py"
    source.write_text("from flask_babel import gettext as _\n_('A message nobody translated')\n")
    monkeypatch.setattr(i18n, "ROOT", tmp_path)
    monkeypatch.setitem(i18n.SOURCES, "hub", ("view.py",))
    problems = i18n.check("hub")
    assert any("A message nobody translated" in p for p in problems)


@pytest.fixture
def client(tmp_path):
    app = create_app(HubConfig.model_validate({"database": {"url": f"sqlite:///{tmp_path / 'hub.db'}"}}))
    yield app.test_client()
    app.extensions["antoan"].engine.dispose()


def test_vietnamese_is_the_default_and_english_the_second_language(client):
    assert "Đăng nhập cán bộ" in client.get("/login").get_data(as_text=True)
    response = client.get("/lang/en?next=/login")
    assert response.status_code == 302 and response.headers["Location"] == "/login"
    assert "Staff login" in client.get("/login").get_data(as_text=True)
    assert "Đăng nhập cán bộ" in client.get("/login?lang=vi").get_data(as_text=True)


def test_language_switch_refuses_other_languages_and_foreign_redirects(client):
    assert client.get("/lang/fr").status_code == 404
    assert client.get("/lang/en?next=//evil.example/").headers["Location"] == "/"
    assert client.get("/lang/en?next=https://evil.example/").headers["Location"] == "/"
