"""Venues flagged by open cases (the safety map's data) and ``GET /api/v1/venues/flagged``, on both databases.

Presences come from real check-in/check-out events committed through HubStore (passes issued for real
declarations, kiosks enrolled at registered venues, and one kiosk enrolled at none); cases are opened
and closed by hub.cases.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from flask import Flask
from sqlalchemy import Engine, select

from hub.accounts import Role
from hub.cases import VIETNAM, close_case, open_case, resolve_subject
from hub.db.schema import audit_log
from hub.db.store import HubStore
from hub.identity import HubIdentity
from hub.tracing_rules import TracingRules
from hub.venue_flags import flagged_venues
from hub.web import create_app
from hub.web.api_venues import FlaggedVenues
from tests.hub.staff_helpers import bearer, engine_of, hub_config, login, make_token, make_user
from tests.hub.tracing_helpers import T0, declare, minutes, pass_subject, place_kiosk, scan

RULES = TracingRules()
LOOKBACK = timedelta(days=RULES.lookback_days)
ONSET = date(2026, 11, 20)  # T0's day in Viet Nam
OPENED = T0 + timedelta(days=1)


def _visit(engine: Engine, kiosk_id: str, saved, arrive: datetime, depart: datetime | None = None) -> None:
    """A check-in (and a check-out when ``depart`` is given) of ``saved``'s pass at ``kiosk_id``."""
    rows = [scan(kiosk_id, pass_subject(saved.pass_.pass_id), arrive)]
    if depart is not None:
        rows.append(scan(kiosk_id, pass_subject(saved.pass_.pass_id), depart, out=True))
    HubStore(engine).commit(events=rows)


def _open(engine: Engine, saved, *, now: datetime = OPENED, onset: date = ONSET, rules=RULES) -> int:
    identity = HubIdentity(engine).load()
    with engine.begin() as conn:
        subject = resolve_subject(conn, identity, declaration_id=saved.declaration_id, now=now)
    return open_case(
        engine, identity, subject, onset_date=onset, test_date=None, rules=rules,
        actor="bs.lan", role="health_official", now=now,
    )  # fmt: skip


def _flags(engine: Engine, now: datetime, rules: TracingRules = RULES) -> dict:
    with engine.connect() as conn:
        return {f.venue_id: f for f in flagged_venues(conn, now=now, rules=rules)}


def _s(at: datetime) -> int:
    return int(at.timestamp())


# ------------------------------------------------------------------------------------------- the engine


def test_a_venue_is_flagged_while_the_case_is_open_and_until_the_lookback_after_the_last_departure(
    hub_engine,
):
    place_kiosk(hub_engine, "kiosk-cho", "cho-a", "market", name="Chợ A")
    place_kiosk(hub_engine, "kiosk-quan", "quan-b", "restaurant", name="Quán B")
    f0 = declare(hub_engine, id_number="001190012345")
    _visit(hub_engine, "kiosk-cho", f0, T0, T0 + minutes(45))
    _visit(hub_engine, "kiosk-quan", f0, T0 + minutes(180), T0 + minutes(240))
    assert _flags(hub_engine, OPENED) == {}  # no case yet
    case_id = _open(hub_engine, f0)

    flags = _flags(hub_engine, OPENED)
    assert list(flags) == ["quan-b", "cho-a"]  # the most recent last departure first
    cho = flags["cho-a"]
    assert (cho.name, cho.venue_type, cho.kiosk_id, cho.open_cases, cho.case_ids) == (
        "Chợ A", "market", None, 1, (case_id,),
    )  # fmt: skip
    assert (cho.first_arrive_s, cho.last_depart_s) == (_s(T0), _s(T0 + minutes(45)))
    assert cho.clear_after_s == _s(T0 + minutes(45) + LOOKBACK)
    # Each venue clears the look-back after the F0 left it, to the second.
    assert set(_flags(hub_engine, T0 + minutes(45) + LOOKBACK - timedelta(seconds=1))) == {"quan-b", "cho-a"}
    assert set(_flags(hub_engine, T0 + minutes(45) + LOOKBACK)) == {"quan-b"}
    assert set(_flags(hub_engine, T0 + minutes(240) + LOOKBACK - timedelta(seconds=1))) == {"quan-b"}
    assert _flags(hub_engine, T0 + minutes(240) + LOOKBACK) == {}
    # A closed case flags nothing.
    close_case(hub_engine, case_id, actor="bs.lan", role="health_official", now=OPENED)
    assert _flags(hub_engine, OPENED) == {}


def test_only_presences_inside_the_case_window_flag_a_venue(hub_engine):
    place_kiosk(hub_engine, "kiosk-cho", "cho-a", "market")
    place_kiosk(hub_engine, "kiosk-truong", "truong-c", "school")
    place_kiosk(hub_engine, "kiosk-ks", "khach-san-d", "hotel")
    f0 = declare(hub_engine, id_number="001190012345")
    # A one-day look-back when the case was opened: its window starts on 19 November (Viet Nam).
    narrow = TracingRules(lookback_days=1)
    window_start = datetime(2026, 11, 19, tzinfo=VIETNAM)
    _visit(hub_engine, "kiosk-truong", f0, window_start - minutes(120), window_start - minutes(60))
    _visit(hub_engine, "kiosk-cho", f0, window_start - minutes(30), window_start + minutes(30))  # overlaps
    case_id = _open(hub_engine, f0, rules=narrow)
    # After the case was opened (and not looked at again): outside its window.
    _visit(hub_engine, "kiosk-ks", f0, OPENED + minutes(60), OPENED + minutes(120))

    flags = _flags(hub_engine, OPENED + minutes(180))
    assert set(flags) == {"cho-a"}
    assert flags["cho-a"].case_ids == (case_id,)
    assert flags["cho-a"].first_arrive_s == _s(window_start - minutes(30))


def test_two_open_cases_at_one_venue_count_two_until_one_is_closed(hub_engine):
    place_kiosk(hub_engine, "kiosk-cho", "cho-a", "market")
    place_kiosk(hub_engine, "kiosk-quan", "quan-b", "restaurant")
    a = declare(hub_engine, id_number="001190012345")
    b = declare(hub_engine, id_number="001190012346", phone="0912345679")
    _visit(hub_engine, "kiosk-cho", a, T0, T0 + minutes(45))
    _visit(hub_engine, "kiosk-quan", a, T0 + minutes(60), T0 + minutes(90))
    _visit(hub_engine, "kiosk-cho", b, T0 + minutes(120), T0 + minutes(180))
    first = _open(hub_engine, a)
    second = _open(hub_engine, b)

    cho = _flags(hub_engine, OPENED)["cho-a"]
    assert (cho.open_cases, cho.case_ids) == (2, tuple(sorted((first, second))))
    assert (cho.first_arrive_s, cho.last_depart_s) == (_s(T0), _s(T0 + minutes(180)))
    close_case(hub_engine, first, actor="bs.lan", role="health_official", now=OPENED)
    flags = _flags(hub_engine, OPENED)
    assert set(flags) == {"cho-a"}
    assert (flags["cho-a"].open_cases, flags["cho-a"].case_ids) == (1, (second,))
    assert flags["cho-a"].first_arrive_s == _s(T0 + minutes(120))


def test_a_kiosk_enrolled_at_no_venue_is_listed_with_its_kiosk_id(hub_engine):
    f0 = declare(hub_engine, id_number="001190012345")
    _visit(hub_engine, "kiosk-lone", f0, T0)  # no check-out: the default stay of an unknown venue type
    _open(hub_engine, f0)
    (flag,) = _flags(hub_engine, OPENED).values()
    assert (flag.venue_id, flag.kiosk_id, flag.name, flag.venue_type, flag.district) == (
        "kiosk:kiosk-lone", "kiosk-lone", None, None, None,
    )  # fmt: skip
    assert flag.last_depart_s == _s(T0) + RULES.default_stay_s(None)


# ------------------------------------------------------------------------------------------- the API

F0_NAME = "Hoàng Thị Phương"
F0_NUMBER = "001190012345"
F0_PHONE = "0987654321"


@pytest.fixture
def app(db_url):
    app = create_app(hub_config(db_url, login_rate="1000 per minute"))
    yield app
    app.extensions["antoan"].close()
    engine_of(app).dispose()


@pytest.fixture
def outbreak(app: Flask) -> tuple[int, object]:
    """An open case whose F0 was at a registered market two days ago; returns (case id, the F0's
    declaration)."""
    engine = engine_of(app)
    now = datetime.now(UTC)
    arrive = (now - timedelta(days=2)).replace(minute=0, second=0, microsecond=0)
    place_kiosk(engine, "kiosk-cho", "cho-a", "market", name="Chợ Bến Thành")
    f0 = declare(engine, id_number=F0_NUMBER, phone=F0_PHONE, now=now, full_name=F0_NAME)
    _visit(engine, "kiosk-cho", f0, arrive, arrive + minutes(45))
    case_id = _open(engine, f0, now=now, onset=now.astimezone(VIETNAM).date())
    return case_id, f0


def _audited(app: Flask) -> list:
    with engine_of(app).connect() as conn:
        return conn.execute(select(audit_log).where(audit_log.c.action == "venue_flags_view")).all()


def test_every_staff_role_reads_the_flags_and_only_officials_get_case_ids(app, outbreak):
    case_id, f0 = outbreak
    client = app.test_client()
    assert client.get("/api/v1/venues/flagged").status_code == 401
    for role in Role:
        _id, token = make_token(app, role, name=f"map {role.value}")
        response = client.get("/api/v1/venues/flagged", headers=bearer(token))
        assert response.status_code == 200, (role, response.get_data(as_text=True))
        body = response.get_json()
        FlaggedVenues.model_validate(body)  # the schema the OpenAPI document gives
        assert body["lookback_days"] == RULES.lookback_days
        (venue,) = body["venues"]
        assert (venue["venue_id"], venue["name"], venue["venue_type"], venue["open_cases"]) == (
            "cho-a", "Chợ Bến Thành", "market", 1,
        )  # fmt: skip
        official = role in (Role.HEALTH_OFFICIAL, Role.ADMIN)
        assert venue["case_ids"] == ([case_id] if official else None), role
        # Nothing that names or identifies the F0, whoever reads it.
        text = response.get_data(as_text=True)
        assert not {"person_id", "person", "label", "full_name", "phone"} & set(venue)
        for secret in (F0_NAME, F0_NUMBER, F0_PHONE, f0.pass_.pass_id):
            assert secret not in text, (role, secret)
    # The officials' reads (which tie the case to where its F0 went) are audited, the others' are not.
    entries = _audited(app)
    assert sorted(e.role for e in entries) == ["admin", "health_official"]
    assert all(e.detail["cases"] == [case_id] for e in entries)


def test_a_session_cookie_is_no_way_into_the_flags(app, outbreak):
    make_user(app, "bacsi.lan", Role.HEALTH_OFFICIAL)
    client = app.test_client()
    assert login(client, "bacsi.lan").status_code == 302
    assert client.get("/api/v1/venues/flagged").status_code == 401


def test_the_case_page_says_until_when_its_venues_are_flagged(app, outbreak):
    case_id, _f0 = outbreak
    make_user(app, "bacsi.lan", Role.HEALTH_OFFICIAL)
    client = app.test_client()
    assert login(client, "bacsi.lan").status_code == 302
    with engine_of(app).connect() as conn:
        (flag,) = flagged_venues(conn, now=datetime.now(UTC), rules=RULES)
    until = datetime.fromtimestamp(flag.clear_after_s, VIETNAM).strftime("%Y-%m-%d %H:%M")
    page = client.get(f"/admin/cases/{case_id}").get_data(as_text=True)
    assert f"Được đánh dấu trên bản đồ an toàn đến {until}" in page
    close_case(engine_of(app), case_id, actor="bs.lan", role="health_official")
    page = client.get(f"/admin/cases/{case_id}").get_data(as_text=True)
    assert "Được đánh dấu trên bản đồ an toàn" not in page
