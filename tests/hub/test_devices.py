"""hub.devices on SQLite and PostgreSQL: tokens, redeem (single use, reasons), renewal, revocation, fleet."""

from __future__ import annotations

import datetime as dt
import threading

import pytest
from cryptography import x509
from sqlalchemy import insert, select

from hub import devices
from hub.broker_bridge.bridge import RevokedKiosks
from hub.db.schema import enrolment_tokens, kiosks
from hub.devices import EnrolmentRefused, EnrolmentSettings
from provisioning.pki import HubCA, make_csr, new_key

NOW = dt.datetime(2026, 11, 26, 8, 0, tzinfo=dt.UTC)


@pytest.fixture
def ca(tmp_path) -> HubCA:
    return HubCA.init(tmp_path / "ca", clock=lambda: NOW)


@pytest.fixture
def settings(ca) -> EnrolmentSettings:
    return EnrolmentSettings(ca_dir=ca.layout.root, broker_host="broker.example", broker_port=8883)


@pytest.fixture
def venue(hub_engine) -> str:
    with hub_engine.begin() as conn:
        devices.add_venue(conn, venue_id="school-01", name="Trường THCS Lê Lợi", venue_type="school", now=NOW)
        devices.add_venue(conn, venue_id="market-02", name="Chợ Bến Thành", venue_type="market", now=NOW)
    return "school-01"


def _token(engine, kiosk_id="kiosk-001", venue_id="school-01", *, approve=True, ttl=dt.timedelta(hours=1)):
    with engine.begin() as conn:
        return devices.create_enrolment_token(
            conn,
            kiosk_id=kiosk_id,
            venue_id=venue_id,
            created_by="it-officer",
            now=NOW,
            ttl=ttl,
            auto_approve=approve,
        ).token


def _redeem(engine, ca, settings, token, *, now=NOW, key=None, **claims):
    key = key or new_key()
    return devices.redeem(
        engine, token=token, csr_pem=make_csr(key), ca=ca, now=now, settings=settings, **claims
    )


def _refused(code: str, call) -> str:
    with pytest.raises(EnrolmentRefused) as info:
        call()
    assert info.value.code == code, str(info.value)
    return str(info.value)


def test_token_is_stored_only_as_a_hash_and_redeems_once(hub_engine, venue, ca, settings):
    token = _token(hub_engine)
    assert len(token) == 24 and token.isalnum() and token.isupper()  # QR alphanumeric mode
    with hub_engine.connect() as conn:
        stored = conn.execute(select(enrolment_tokens)).one()
    assert token not in stored.token_sha256 and stored.token_sha256 == devices.token_digest(token)

    done = _redeem(hub_engine, ca, settings, token.lower(), kiosk_id="kiosk-001", venue_id="school-01")
    cert = x509.load_pem_x509_certificate(done.cert_pem.encode())
    assert cert.subject.rfc4514_string() == "CN=kiosk-001"
    assert (done.venue_id, done.venue_name, done.broker_host, done.broker_port) == (
        "school-01",
        "Trường THCS Lê Lợi",
        "broker.example",
        8883,
    )
    assert done.ca_pem.encode() == ca.layout.ca_cert.read_bytes()
    with hub_engine.connect() as conn:
        used = conn.execute(select(enrolment_tokens)).one()
    assert used.used_cert_serial == f"{cert.serial_number:X}"
    message = _refused("token_used", lambda: _redeem(hub_engine, ca, settings, token))
    assert "already used" in message
    (row,) = [r for r in _fleet(hub_engine) if r.kiosk_id == "kiosk-001"]
    assert (row.venue_name, row.status) == ("Trường THCS Lê Lợi", "never seen")


def _fleet(engine):
    with engine.connect() as conn:
        return devices.fleet(conn)


def test_refusals_name_their_reason(hub_engine, venue, ca, settings):
    assert "unknown" in _refused("unknown_token", lambda: _redeem(hub_engine, ca, settings, "A" * 24))
    expired = _token(hub_engine, "kiosk-002", ttl=dt.timedelta(minutes=5))
    later = NOW + dt.timedelta(minutes=6)
    assert "expired" in _refused(
        "token_expired", lambda: _redeem(hub_engine, ca, settings, expired, now=later)
    )
    pending = _token(hub_engine, "kiosk-003", approve=False)
    assert "not approved" in _refused("not_approved", lambda: _redeem(hub_engine, ca, settings, pending))
    other = _token(hub_engine, "kiosk-004")
    message = _refused("mismatch", lambda: _redeem(hub_engine, ca, settings, other, venue_id="market-02"))
    assert "another venue" in message
    _refused("mismatch", lambda: _redeem(hub_engine, ca, settings, other, kiosk_id="kiosk-999"))
    # A refused redeem leaves the token unspent; approval then lets it through.
    _redeem(hub_engine, ca, settings, other, venue_id="school-01")
    with hub_engine.begin() as conn:
        assert devices.approve(conn, kiosk_id="kiosk-003", approved_by="lead", now=NOW) == 1
    _redeem(hub_engine, ca, settings, pending)
    with pytest.raises(devices.DeviceError, match="no enrolment token waiting"), hub_engine.begin() as conn:
        devices.approve(conn, kiosk_id="kiosk-003", approved_by="lead", now=NOW)


def test_a_bad_csr_leaves_the_token_unspent(hub_engine, venue, ca, settings):
    token = _token(hub_engine)
    with pytest.raises(devices.DeviceError) as info:
        devices.redeem(hub_engine, token=token, csr_pem=b"not a csr", ca=ca, now=NOW, settings=settings)
    assert info.value.code == "bad_csr"
    _redeem(hub_engine, ca, settings, token)


def test_concurrent_redeems_give_exactly_one_certificate(hub_engine, venue, ca, settings):
    token = _token(hub_engine)
    barrier = threading.Barrier(4)
    outcomes: list[str] = []
    lock = threading.Lock()

    def attempt():
        barrier.wait()
        try:
            _redeem(hub_engine, ca, settings, token)
            result = "won"
        except EnrolmentRefused as exc:
            result = exc.code
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=attempt) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(outcomes) == ["token_used"] * 3 + ["won"]
    assert len(ca.issued(name="kiosk-001")) == 1


def test_renewal_needs_the_current_certificate_and_key(hub_engine, venue, ca, settings):
    key = new_key()
    first = _redeem(hub_engine, ca, settings, _token(hub_engine), key=key)
    new = new_key()
    csr = make_csr(new)

    def renew(cert_pem, signature, *, now=NOW):
        return devices.renew(
            hub_engine,
            cert_pem_text=cert_pem,
            csr_pem=csr,
            signature=signature,
            ca=ca,
            now=now,
            settings=settings,
        )

    # Signed by another key: refused.
    _refused("bad_proof", lambda: renew(first.cert_pem.encode(), devices.renewal_signature(new_key(), csr)))
    # A certificate from another CA: refused.
    other_ca = HubCA.init(ca.layout.root.parent / "other-ca", clock=lambda: NOW)
    foreign = other_ca.sign_kiosk_csr(make_csr(key), kiosk_id="kiosk-001")
    from provisioning.pki import cert_pem

    _refused("bad_certificate", lambda: renew(cert_pem(foreign), devices.renewal_signature(key, csr)))
    second = renew(first.cert_pem.encode(), devices.renewal_signature(key, csr))
    old = x509.load_pem_x509_certificate(first.cert_pem.encode())
    fresh = x509.load_pem_x509_certificate(second.cert_pem.encode())
    assert fresh.serial_number != old.serial_number
    assert not ca.is_revoked(old.serial_number)  # the old certificate keeps working until it expires
    # A repeat of the same request (the answer was lost) gets the certificate already issued, not another.
    repeat = renew(first.cert_pem.encode(), devices.renewal_signature(key, csr))
    assert repeat.cert_pem == second.cert_pem
    # The superseded certificate cannot renew to any other key.
    other_csr = make_csr(new_key())
    _refused(
        "superseded",
        lambda: devices.renew(
            hub_engine,
            cert_pem_text=first.cert_pem.encode(),
            csr_pem=other_csr,
            signature=devices.renewal_signature(key, other_csr),
            ca=ca,
            now=NOW,
            settings=settings,
        ),
    )
    # An expired one cannot renew at all.
    late = fresh.not_valid_after_utc + dt.timedelta(seconds=1)
    _refused(
        "cert_expired", lambda: renew(second.cert_pem.encode(), devices.renewal_signature(new, csr), now=late)
    )


def test_revoked_kiosk_is_refused_everywhere_and_seen_by_the_bridge_cache(hub_engine, venue, ca, settings):
    key = new_key()
    done = _redeem(hub_engine, ca, settings, _token(hub_engine), key=key)
    spare = _token(hub_engine)  # a second token made before the revocation
    ticks = [0.0]
    cache = RevokedKiosks(hub_engine, refresh_s=3.0, clock=lambda: ticks[0])
    assert cache.current() == frozenset()

    serials = devices.revoke(hub_engine, kiosk_id="kiosk-001", reason="stolen", ca=ca, now=NOW)
    cert = x509.load_pem_x509_certificate(done.cert_pem.encode())
    assert serials == [cert.serial_number] and ca.is_revoked(cert.serial_number)

    assert cache.current() == frozenset()  # cached until the refresh interval passes
    ticks[0] = 3.0
    assert cache.current() == frozenset({"kiosk-001"})

    _refused("revoked", lambda: _redeem(hub_engine, ca, settings, spare))
    csr = make_csr(new_key())
    _refused(
        "revoked",
        lambda: devices.renew(
            hub_engine,
            cert_pem_text=done.cert_pem.encode(),
            csr_pem=csr,
            signature=devices.renewal_signature(key, csr),
            ca=ca,
            now=NOW,
            settings=settings,
        ),
    )
    with pytest.raises(devices.DeviceError, match="revoked"):
        _token(hub_engine)
    (row,) = _fleet(hub_engine)
    assert row.status == "revoked" and row.revoked_at is not None


def test_fleet_joins_devices_venues_and_retained_state(hub_engine, venue, ca, settings):
    _redeem(hub_engine, ca, settings, _token(hub_engine, "kiosk-001"))
    with hub_engine.begin() as conn:
        conn.execute(
            insert(kiosks).values(
                [
                    {
                        "kiosk_id": "kiosk-001",
                        "status": "online",
                        "version": "1.4.0",
                        "outbox_depth": 12,
                        "oldest_unacked_age_s": 3.5,
                        "list_ages": {"trust": 60.0, "status": None},
                        "state_sent_at": NOW,
                        "last_seen": NOW,
                    },
                    {
                        "kiosk_id": "trial-kiosk",
                        "status": "offline",
                        "version": "1.3.9",
                        "outbox_depth": 0,
                        "oldest_unacked_age_s": None,
                        "list_ages": {},
                        "state_sent_at": None,
                        "last_seen": NOW,
                    },
                ]
            )
        )
    enrolled, trial = _fleet(hub_engine)
    assert (enrolled.kiosk_id, enrolled.status, enrolled.version, enrolled.outbox_depth) == (
        "kiosk-001",
        "online",
        "1.4.0",
        12,
    )
    assert enrolled.list_ages == {"trust": 60.0, "status": None}
    assert enrolled.last_seen == NOW and enrolled.oldest_unacked_age_s == 3.5
    assert 89 < enrolled.cert_days_left(NOW) <= 90
    assert (trial.kiosk_id, trial.venue_id, trial.status, trial.cert_not_after) == (
        "trial-kiosk",
        None,
        "offline",
        None,
    )


def test_venue_and_token_input_is_checked(hub_engine, venue):
    with hub_engine.begin() as conn, pytest.raises(devices.DeviceError, match="already exists"):
        devices.add_venue(conn, venue_id="school-01", name="x", now=NOW)
    with hub_engine.begin() as conn, pytest.raises(devices.DeviceError, match="not valid"):
        devices.add_venue(conn, venue_id="Bad Id", name="x", now=NOW)
    with pytest.raises(devices.DeviceError, match="does not exist"):
        _token(hub_engine, venue_id="nowhere")
    with pytest.raises(devices.DeviceError, match="reserved"):
        _token(hub_engine, kiosk_id="antoan-bridge")


def test_fleet_page_shows_district_it_the_kiosks_in_vietnamese(db_url, tmp_path):
    from hub.accounts import Role
    from hub.web import create_app
    from tests.hub.staff_helpers import engine_of, hub_config, login, make_user

    app = create_app(hub_config(db_url, secret_key="fleet-page"))
    engine = engine_of(app)
    try:
        ca = HubCA.init(tmp_path / "ca")
        settings = EnrolmentSettings(ca_dir=ca.layout.root)
        now = dt.datetime.now(dt.UTC)
        with engine.begin() as conn:
            devices.add_venue(
                conn, venue_id="school-01", name="Trường THCS Lê Lợi", venue_type="school", now=now
            )
            token = devices.create_enrolment_token(
                conn, kiosk_id="kiosk-001", venue_id="school-01", created_by="it", now=now, auto_approve=True
            ).token
        _redeem(engine, ca, settings, token, now=now)
        make_user(app, "it-officer", Role.DISTRICT_IT)
        make_user(app, "nurse", Role.HEALTH_OFFICIAL)
        client = app.test_client()
        login(client, "it-officer")
        page = client.get("/admin/fleet")
        assert page.status_code == 200
        html = page.get_data(as_text=True)
        assert "Danh sách ki-ốt" in html and "Trường THCS Lê Lợi" in html and "kiosk-001" in html
        assert "Chưa từng kết nối" in html  # never seen: no retained state yet
        other = app.test_client()
        login(other, "nurse")
        assert other.get("/admin/fleet").status_code == 403
    finally:
        engine.dispose()


def test_enrolling_a_kiosk_again_revokes_its_previous_certificate(hub_engine, venue, ca, settings):
    first = _redeem(hub_engine, ca, settings, _token(hub_engine))
    second = _redeem(hub_engine, ca, settings, _token(hub_engine))
    old = x509.load_pem_x509_certificate(first.cert_pem.encode())
    new = x509.load_pem_x509_certificate(second.cert_pem.encode())
    assert ca.is_revoked(old.serial_number) and not ca.is_revoked(new.serial_number)


def test_enrolment_api_answers_with_codes_and_clear_messages(db_url, tmp_path):
    from hub.web import create_app
    from hub.web.api import ENROLMENT_EXTENSION
    from tests.hub.staff_helpers import engine_of, hub_config

    app = create_app(hub_config(db_url, secret_key="enrol-api", public_form_rate="1000 per minute"))
    engine = engine_of(app)
    client = app.test_client()
    try:
        app.extensions[ENROLMENT_EXTENSION] = EnrolmentSettings(ca_dir=tmp_path / "no-ca-yet")
        assert client.get("/api/v1/ca.pem").status_code == 404
        refused = client.post("/api/v1/enrol", json={"token": "A" * 24, "csr": "x"})
        assert (refused.status_code, refused.json["error"]) == (409, "not_ready")

        ca = HubCA.init(tmp_path / "ca")
        app.extensions[ENROLMENT_EXTENSION] = EnrolmentSettings(ca_dir=ca.layout.root, broker_port=18883)
        pem = client.get("/api/v1/ca.pem")
        assert pem.status_code == 200 and pem.data == ca.layout.ca_cert.read_bytes()
        assert client.post("/api/v1/enrol", data="token=x").status_code == 400
        unknown = client.post("/api/v1/enrol", json={"token": "A" * 24, "csr": make_csr(new_key()).decode()})
        assert (unknown.status_code, unknown.json["error"]) == (403, "unknown_token")
        assert client.post("/api/v1/enrol", json={"token": "A" * 24}).status_code == 422

        now = dt.datetime.now(dt.UTC)
        with engine.begin() as conn:
            devices.add_venue(conn, venue_id="school-01", name="Trường", now=now)
            token = devices.create_enrolment_token(
                conn, kiosk_id="kiosk-001", venue_id="school-01", created_by="it", now=now, auto_approve=True
            ).token
        bad_csr = client.post("/api/v1/enrol", json={"token": token, "csr": "not a csr"})
        assert (bad_csr.status_code, bad_csr.json["error"]) == (422, "bad_csr")
        key = new_key()
        ok = client.post("/api/v1/enrol", json={"token": token, "csr": make_csr(key).decode()})
        assert ok.status_code == 201, ok.json
        assert (ok.json["kiosk_id"], ok.json["mqtt"]["port"]) == ("kiosk-001", 18883)
        used = client.post("/api/v1/enrol", json={"token": token, "csr": make_csr(key).decode()})
        assert (used.status_code, used.json["error"]) == (403, "token_used")

        csr = make_csr(new_key())
        renew = {"certificate": ok.json["certificate"], "csr": csr.decode()}
        forged = client.post(
            "/api/v1/renew", json={**renew, "signature": devices.renewal_signature(new_key(), csr)}
        )
        assert (forged.status_code, forged.json["error"]) == (403, "bad_proof")
        renewed = client.post(
            "/api/v1/renew", json={**renew, "signature": devices.renewal_signature(key, csr)}
        )
        assert renewed.status_code == 201 and renewed.json["certificate"] != ok.json["certificate"]
    finally:
        engine.dispose()
