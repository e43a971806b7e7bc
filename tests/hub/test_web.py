"""Tests of the hub web app: dashboard (staff login), stats API (token), health check, security headers."""

from __future__ import annotations

import shutil
import subprocess
import uuid
from datetime import UTC, datetime

import pytest
from flask import Flask

from hub.accounts import Role
from hub.config import HubConfig
from hub.db import make_engine
from hub.db.store import DeadLetter, EventRow, KioskStateRow
from hub.web import create_app
from hub.web.app import BrokerHealth
from provisioning.broker import free_port
from tests.hub.staff_helpers import bearer, login, make_token, make_user


def _config(db_url: str, mqtt_port: int, **web) -> HubConfig:
    return HubConfig.model_validate(
        {"database": {"url": db_url}, "mqtt": {"host": "127.0.0.1", "port": mqtt_port}, "web": web}
    )


def _broker_answers(app: Flask) -> None:
    """Swap the app's broker probe for one that always succeeds."""
    web = app.extensions["antoan"]
    web.broker = BrokerHealth(web.config.mqtt, probe=lambda settings, timeout_s: None)


@pytest.fixture
def app(db_url):
    app = create_app(_config(db_url, free_port()))
    yield app
    app.extensions["antoan"].engine.dispose()


@pytest.fixture
def client(app: Flask):
    return app.test_client()


@pytest.fixture
def staff(app: Flask):
    """A client logged in as a venue manager (the dashboard is open to every staff role)."""
    make_user(app, "quanly", Role.VENUE_MANAGER)
    staff = app.test_client()
    assert login(staff, "quanly").status_code == 302
    return staff


@pytest.fixture
def token(app: Flask) -> dict[str, str]:
    """Authorization header of an API token (/api/stats is open to every role's token)."""
    return bearer(make_token(app, Role.DISTRICT_IT)[1])


def _fill(app: Flask) -> None:
    epoch = uuid.uuid4().hex
    now = datetime(2021, 8, 1, 8, 30, tzinfo=UTC)
    app.extensions["antoan"].store.commit(
        events=[
            EventRow("kiosk-a", epoch, seq, str(uuid.uuid4()), "check_in", now, {"seq": seq})
            for seq in range(1, 6)
        ],
        dead_letters=[DeadLetter("antoan/v1/kiosk/kiosk-a/events", "kiosk-a", "malformed JSON", b"{")],
        states=[
            KioskStateRow("kiosk-a", "online", "1.0.0", 4, 12.0, {"trust": 30.0}, now),
            KioskStateRow("kiosk-b", "offline", "1.0.0", None, None, {}, None),
        ],
    )


def test_create_app_migrates_a_fresh_database(client, token):
    response = client.get("/api/stats", headers=token)
    assert response.status_code == 200
    assert response.get_json() == {"events_stored": 0, "dead_letters": 0, "kiosks": []}


def test_api_stats_needs_a_bearer_token(client):
    response = client.get("/api/stats")
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_api_stats_counts_what_was_committed(app, client, token):
    _fill(app)
    stats = client.get("/api/stats", headers=token).get_json()
    assert stats["events_stored"] == 5
    assert stats["dead_letters"] == 1
    assert [k["kiosk_id"] for k in stats["kiosks"]] == ["kiosk-a", "kiosk-b"]
    assert stats["kiosks"][0]["outbox_depth"] == 4


def test_dashboard_needs_a_staff_login(client):
    response = client.get("/admin/")
    assert response.status_code == 302
    assert response.location.startswith("/login?next=/admin/")


def test_dashboard_is_vietnamese_first_and_refreshes_itself(app, staff):
    _fill(app)
    response = staff.get("/admin/")
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    assert response.mimetype_params.get("charset", "").lower() == "utf-8"
    html = response.get_data(as_text=True)
    assert '<html lang="vi">' in html
    assert '<meta http-equiv="refresh" content="15">' in html
    assert "Sự kiện đã lưu" in html
    english = staff.get("/admin/?lang=en").get_data(as_text=True)
    assert "Events stored" in english and "Sự kiện đã lưu" not in english
    assert "Thư lỗi" in html
    assert "kiosk-a" in html and "kiosk-b" in html
    assert "Trực tuyến" in html and "Ngoại tuyến" in html
    assert 'id="events-stored">5<' in html


def test_dashboard_without_kiosks_says_so(staff):
    html = staff.get("/admin/").get_data(as_text=True)
    assert "Chưa có ki-ốt nào" in html


def test_dashboard_stylesheet_is_served_from_self(client):
    response = client.get("/static/hub.css")
    assert response.status_code == 200
    assert response.mimetype == "text/css"
    response.close()


def test_healthz_is_503_with_the_reason_when_the_broker_is_down(client):
    response = client.get("/healthz")
    assert response.status_code == 503
    body = response.get_json()
    assert body["database"] == "ok"
    assert body["broker"] != "ok"
    assert "cannot reach 127.0.0.1:" in body["broker"]


def test_healthz_is_200_when_database_and_broker_answer(app, client):
    _broker_answers(app)
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"database": "ok", "broker": "ok"}


def test_healthz_reports_an_unreachable_database():
    engine = make_engine(f"postgresql+psycopg://nobody@127.0.0.1:{free_port()}/none")
    # With a configured secret key the app starts without its database (no session key to read from it).
    app = create_app(_config("sqlite://", free_port(), secret_key="s3cret"), engine=engine)
    _broker_answers(app)
    try:
        response = app.test_client().get("/healthz")
    finally:
        engine.dispose()
    assert response.status_code == 503
    body = response.get_json()
    assert body["broker"] == "ok"
    assert body["database"].startswith("OperationalError: ")


def test_broker_probe_result_is_reused_for_five_seconds():
    calls: list[float] = []
    now = [100.0]

    def probe(settings, timeout_s):
        calls.append(now[0])
        return "refused" if len(calls) == 1 else None

    health = BrokerHealth(HubConfig().mqtt, probe=probe, clock=lambda: now[0])
    assert health.check() == "refused"
    now[0] += 4.9
    assert health.check() == "refused"
    now[0] += 0.2
    assert health.check() is None
    assert len(calls) == 2


def test_broker_probe_exception_becomes_a_reason():
    def probe(settings, timeout_s):
        raise ValueError("bad certificate path")

    health = BrokerHealth(HubConfig().mqtt, probe=probe)
    assert health.check() == "probe failed: ValueError: bad certificate path"


@pytest.mark.parametrize(
    "url", ["/", "/admin/", "/login", "/api/stats", "/healthz", "/static/hub.css", "/no-such-page"]
)
def test_security_headers_on_every_response(client, url):
    response = client.get(url)
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert "default-src 'self'" in response.headers["Content-Security-Policy"]
    response.close()


def test_secret_key_comes_from_config_or_is_random_and_shared_through_the_database(db_url, tmp_path):
    configured = create_app(_config(db_url, free_port(), secret_key="s3cret-from-env"))
    engine = configured.extensions["antoan"].engine
    # Unset: made at random once and kept in the database, so every worker and restart signs alike.
    random_1 = create_app(_config(db_url, free_port()), engine=engine)
    random_2 = create_app(_config(db_url, free_port()), engine=engine)
    other = create_app(_config(f"sqlite:///{tmp_path / 'other' / 'hub.db'}", free_port()))
    try:
        assert configured.secret_key == "s3cret-from-env"
        assert isinstance(random_1.secret_key, bytes) and len(random_1.secret_key) >= 32
        assert random_1.secret_key == random_2.secret_key
        assert other.secret_key != random_1.secret_key
    finally:
        engine.dispose()
        other.extensions["antoan"].engine.dispose()


@pytest.fixture
def mosquitto(tmp_path):
    """A real mosquitto on a free loopback port (anonymous, plain TCP), stopped afterwards."""
    binary = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/local/sbin")
    if binary is None:
        pytest.skip("mosquitto is not installed")
    port = free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nlog_dest stderr\n")
    proc = subprocess.Popen(
        [binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        # mosquitto logs "... running" once its listener is open; read its log instead of sleeping.
        seen = []
        for line in proc.stderr:
            seen.append(line)
            if " running" in line:
                break
        else:
            pytest.fail(f"mosquitto did not start: {''.join(seen)}")
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        proc.stderr.close()


def test_healthz_is_200_against_a_real_broker(db_url, mosquitto):
    app = create_app(_config(db_url, mosquitto))
    try:
        response = app.test_client().get("/healthz")
        assert response.status_code == 200, response.get_json()
        assert response.get_json() == {"database": "ok", "broker": "ok"}
    finally:
        app.extensions["antoan"].engine.dispose()
