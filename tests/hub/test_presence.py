"""Presence intervals derived on ingest: stays, exits, out-of-order kiosks, resends, linking people."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, select

from hub.db.schema import devices, events, persons, venue_stays, visits
from hub.db.store import HubStore
from hub.devices import add_venue
from hub.identity import HubIdentity
from hub.tracing_rules import MAX_STAY_S, TracingRules
from tests.hub.tracing_helpers import T0, card_subject, declare, minutes, pass_subject, place_kiosk, scan

ANH = "001190012345"  # the declarant of tests.hub.test_declarations.declarant_data
BINH = "001090000002"


def _visits(engine) -> list[tuple]:
    with engine.connect() as conn:
        return [
            (r.venue_id, r.person_id, r.depart_s - r.arrive_s, r.arrive_scanned, r.depart_scanned)
            for r in conn.execute(select(visits).order_by(visits.c.arrive_s, visits.c.id))
        ]


def _span(engine) -> list[tuple[int, int]]:
    with engine.connect() as conn:
        return [
            tuple(r) for r in conn.execute(select(visits.c.arrive_s, visits.c.depart_s).order_by(visits.c.id))
        ]


def test_a_check_in_without_exit_lasts_the_venue_types_default_stay(hub_engine):
    place_kiosk(hub_engine, "kiosk-market", "cho-ben-thanh", "market")
    place_kiosk(hub_engine, "kiosk-school", "truong-a", "school")
    identity = HubIdentity(hub_engine)
    HubStore(hub_engine).commit(
        events=[
            scan("kiosk-market", card_subject(identity, BINH), T0),
            scan("kiosk-school", card_subject(identity, BINH), T0 + minutes(120)),
        ]
    )
    rules = TracingRules()
    stays = {v: d for v, _, d, _, _ in _visits(hub_engine)}
    assert stays == {
        "cho-ben-thanh": rules.default_stay_s("market"),
        "truong-a": rules.default_stay_s("school"),
    }
    assert stays["cho-ben-thanh"] == 3600 and stays["truong-a"] == 9 * 3600


def test_check_in_then_out_is_one_exact_interval(hub_engine):
    place_kiosk(hub_engine, "kiosk-1", "quan-pho", "restaurant")
    identity = HubIdentity(hub_engine)
    store = HubStore(hub_engine)
    store.commit(events=[scan("kiosk-1", card_subject(identity, BINH), T0)])
    store.commit(events=[scan("kiosk-1", card_subject(identity, BINH), T0 + minutes(25), out=True)])
    assert _visits(hub_engine) == [("quan-pho", 1, 25 * 60, True, True)]


def test_an_exit_recorded_before_its_entry_is_completed_by_the_late_entry(hub_engine):
    # Entry and exit kiosks at one venue: the exit kiosk synced first.
    place_kiosk(hub_engine, "kiosk-in", "benh-vien", "hospital")
    place_kiosk_exit(hub_engine, "kiosk-out", "benh-vien")
    identity = HubIdentity(hub_engine)
    store = HubStore(hub_engine)
    store.commit(events=[scan("kiosk-out", card_subject(identity, BINH), T0 + minutes(90), out=True)])
    assert _visits(hub_engine) == [("benh-vien", 1, 180 * 60, False, True)]
    store.commit(events=[scan("kiosk-in", card_subject(identity, BINH), T0)])
    assert _visits(hub_engine) == [("benh-vien", 1, 90 * 60, True, True)]


def place_kiosk_exit(engine, kiosk_id, venue_id):
    from hub.db.schema import devices

    with engine.begin() as conn:
        conn.execute(devices.insert().values(kiosk_id=kiosk_id, venue_id=venue_id, enrolled_at=T0))


def test_resent_and_duplicated_events_change_nothing(hub_engine):
    place_kiosk(hub_engine, "kiosk-1", "quan-pho", "restaurant")
    identity = HubIdentity(hub_engine)
    store = HubStore(hub_engine)
    entry = scan("kiosk-1", card_subject(identity, BINH), T0)
    leave = scan("kiosk-1", card_subject(identity, BINH), T0 + minutes(40), out=True)
    store.commit(events=[entry, entry])
    store.commit(events=[leave])
    before = _visits(hub_engine)
    # A resent entry after the exit must not open a second visit; a resent exit must not close another.
    second = scan("kiosk-1", card_subject(identity, BINH), T0 + minutes(60))
    store.commit(events=[second])
    store.commit(events=[entry, leave, leave])
    assert _visits(hub_engine) == [*before, ("quan-pho", 1, 120 * 60, True, False)]


def test_a_kiosk_that_missed_a_day_makes_no_endless_stay(hub_engine):
    place_kiosk(hub_engine, "kiosk-1", "van-phong", "office")
    identity = HubIdentity(hub_engine)
    store = HubStore(hub_engine)
    store.commit(events=[scan("kiosk-1", card_subject(identity, BINH), T0)])
    # The exit comes 30 hours later: it cannot close a visit that began beyond the 12-hour bound.
    store.commit(events=[scan("kiosk-1", card_subject(identity, BINH), T0 + minutes(30 * 60), out=True)])
    rows = _visits(hub_engine)
    assert [(d, a, b) for _, _, d, a, b in rows] == [(9 * 3600, True, False), (9 * 3600, False, True)]
    assert all(d <= MAX_STAY_S for _, _, d, _, _ in rows)


def test_the_longest_stay_per_venue_is_kept_for_range_scans(hub_engine):
    place_kiosk(hub_engine, "kiosk-1", "quan-pho", "restaurant")
    identity = HubIdentity(hub_engine)
    store = HubStore(hub_engine)
    store.commit(events=[scan("kiosk-1", card_subject(identity, BINH), T0)])
    store.commit(events=[scan("kiosk-1", card_subject(identity, BINH), T0 + minutes(300), out=True)])
    store.commit(events=[scan("kiosk-1", card_subject(identity, "001090000003"), T0 + minutes(10))])
    with hub_engine.connect() as conn:
        assert conn.execute(select(venue_stays.c.max_stay_s)).scalar_one() == 300 * 60


def test_a_pass_and_the_id_card_of_one_person_are_one_person(hub_engine):
    place_kiosk(hub_engine, "kiosk-1", "quan-pho", "restaurant")
    saved = declare(hub_engine, id_number=ANH)
    identity = HubIdentity(hub_engine)
    HubStore(hub_engine).commit(
        events=[
            scan("kiosk-1", pass_subject(saved.pass_.pass_id), T0),
            scan("kiosk-1", card_subject(identity, ANH, "Nguyễn Thị Ánh Đào"), T0 + minutes(600)),
            scan("kiosk-1", pass_subject("ZZZZZZZZZZZZ"), T0 + minutes(5)),  # a pass not issued here
        ]
    )
    with hub_engine.connect() as conn:
        people = dict(conn.execute(select(persons.c.id, persons.c.person_key)).all())
        owners = [r.person_id for r in conn.execute(select(visits).order_by(visits.c.arrive_s))]
    assert owners[0] == owners[2] and owners[1] != owners[0]
    assert people[owners[1]] == "pass:ZZZZZZZZZZZZ"
    assert people[owners[0]] == identity.person_key(ANH)
    # The ID number is not stored in clear anywhere on the person.
    assert ANH not in people[owners[0]]


def test_an_unopenable_card_is_stored_as_an_event_but_gives_no_presence(hub_engine):
    place_kiosk(hub_engine, "kiosk-1", "quan-pho", "restaurant")
    other_hub = card_subject(HubIdentity(_other_engine(hub_engine)), BINH)
    HubStore(hub_engine).commit(events=[scan("kiosk-1", other_hub, T0)])
    with hub_engine.connect() as conn:
        assert conn.execute(select(events.c.id)).all()
    assert _visits(hub_engine) == []


def _other_engine(engine):
    import tempfile

    from hub.db import make_engine, migrate

    other = make_engine(f"sqlite:///{tempfile.mkdtemp()}/other.db")
    migrate(other)
    return other


def test_scans_from_a_kiosk_not_enrolled_count_at_a_venue_of_its_own(hub_engine):
    identity = HubIdentity(hub_engine)
    HubStore(hub_engine).commit(events=[scan("kiosk-x", card_subject(identity, BINH), T0)])
    assert _visits(hub_engine) == [("kiosk:kiosk-x", 1, TracingRules().default_stay_s("other"), True, False)]


def test_presence_can_be_turned_off_for_a_store(hub_engine):
    identity = HubIdentity(hub_engine)
    HubStore(hub_engine, presence=None).commit(events=[scan("kiosk-x", card_subject(identity, BINH), T0)])
    assert _visits(hub_engine) == []


# ------------------------------------------------------------------ a commit's scans applied together

_scan_spec = st.tuples(
    st.integers(0, 2),  # person
    st.sampled_from(["kiosk-a", "kiosk-b"]),
    st.integers(0, 30 * 60),  # minutes after T0
    st.booleans(),  # out
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(specs=st.lists(_scan_spec, min_size=1, max_size=14))
def test_a_commits_scans_applied_together_are_the_scans_applied_one_by_one(hub_engine, specs):
    """One commit of many scans leaves exactly the visits that one commit per scan (in time order)
    leaves: entries, exits before entries, exits closing the latest visit, missing exits, 12-hour bounds."""
    with hub_engine.begin() as conn:
        if conn.execute(select(devices.c.kiosk_id)).first() is None:
            for kiosk, venue, kind in (("kiosk-a", "cho", "market"), ("kiosk-b", "quan", "restaurant")):
                add_venue(conn, venue_id=venue, name=venue, venue_type=kind, now=T0)
                conn.execute(devices.insert().values(kiosk_id=kiosk, venue_id=venue, enrolled_at=T0))
    rows = [scan(k, pass_subject(f"PASS{p}"), T0 + minutes(m), out=out) for p, k, m, out in specs]
    store = HubStore(hub_engine)

    def result() -> list[tuple]:
        with hub_engine.begin() as conn:
            found = sorted(
                (r.person_id, r.venue_id, r.arrive_s, r.depart_s, r.arrive_scanned, r.depart_scanned)
                for r in conn.execute(select(visits))
            )
            conn.execute(delete(visits))
            conn.execute(delete(events))
        return found

    store.commit(events=rows)
    together = result()
    for row in sorted(rows, key=lambda r: (r.device_time, r.kiosk_id, r.epoch, r.seq)):
        store.commit(events=[row])
    assert result() == together
    assert len(together) <= len(rows)


def test_a_check_out_closes_the_latest_visit_that_began_within_the_bound(hub_engine):
    """In at 8:00 (no exit scanned), in again at 11:00, out at 12:00: the 11:00 visit ends at 12:00 and
    the 8:00 one keeps the default stay; a second check-out finds the latest visit closed and records
    an exit-only visit."""
    place_kiosk(hub_engine, "kiosk-1", "quan-pho", "restaurant")
    subject = pass_subject("PASS1")
    HubStore(hub_engine).commit(
        events=[
            scan("kiosk-1", subject, T0),
            scan("kiosk-1", subject, T0 + minutes(180)),
            scan("kiosk-1", subject, T0 + minutes(240), out=True),
            scan("kiosk-1", subject, T0 + minutes(250), out=True),
        ]
    )
    stay = TracingRules().default_stay_s("restaurant")
    start = int(T0.timestamp())
    assert _span(hub_engine) == [
        (start, start + stay),
        (start + 180 * 60, start + 240 * 60),
        (start + 250 * 60 - stay, start + 250 * 60),
    ]
