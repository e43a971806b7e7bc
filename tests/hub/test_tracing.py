"""Tracing engines against a brute-force reference of the contact rule (hypothesis), on both databases."""

from __future__ import annotations

from collections import defaultdict
from datetime import date, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, insert, select, update

from hub.cases import CaseError, close_case, decide, open_case, refresh_case, resolve_subject, run_f2
from hub.db.schema import case_contacts, cases, list_versions, venue_stays, visits
from hub.db.store import HubStore
from hub.identity import HubIdentity
from hub.keys import bump_list_version
from hub.passes import current_colour
from hub.presence import VISITS_REV
from hub.tracing import VisitIndex, f2_sources, find_contacts_in_index, find_f1, find_f1_in_index
from hub.tracing_rules import TracingRules, exposure, overlap
from tests.hub.tracing_helpers import T0, card_subject, declare, minutes, pass_subject, place_kiosk, scan

DAY = 86400
VENUES = ("cho", "quan", "truong")


# ------------------------------------------------------------------------------ the brute force


def brute_f1(rows, f0, start, end, buffer_s, need):
    """Every (person -> longest exposure) to the F0's presences overlapping [start, end]."""
    own = [r for r in rows if r[0] == f0 and r[2] <= end and r[3] > start]
    found: dict[int, int] = {}
    for _, venue, a1, a2 in own:
        for person, v, b1, b2 in rows:
            if person == f0 or v != venue:
                continue
            shared = exposure(a1, a2, b1, b2, buffer_s)
            if shared >= need:
                found[person] = max(found.get(person, 0), shared)
    return found


def brute_f2(rows, sources, exclude, buffer_s, need):
    """Contacts of each source's presences overlapping its span, minus ``exclude``."""
    found: dict[int, int] = {}
    for person_id, lo, hi in sources:
        for p, venue, a1, a2 in rows:
            if p != person_id or not (a1 < hi and a2 > lo):
                continue
            for q, v, b1, b2 in rows:
                if q in exclude or q == person_id or v != venue:
                    continue
                shared = exposure(a1, a2, b1, b2, buffer_s)
                if shared >= need:
                    found[q] = max(found.get(q, 0), shared)
    return found


# ------------------------------------------------------------------------------------- the data

presence = st.tuples(
    st.integers(1, 8),  # person
    st.sampled_from(VENUES),
    st.integers(0, 3 * 24 * 60),  # arrive, minutes
    st.integers(1, 12 * 60),  # stay, minutes
).map(lambda t: (t[0], t[1], t[2] * 60, t[2] * 60 + t[3] * 60))

rules_strategy = st.builds(
    TracingRules,
    buffer_min=st.integers(0, 60),
    min_overlap_min=st.integers(1, 90),
    f2_min_overlap_min=st.integers(1, 90),
    f2_window_days=st.integers(1, 3),
)


def load(engine, rows) -> None:
    """Replace the visits with ``rows`` (person, venue, arrive_s, depart_s); record venues' longest stays."""
    with engine.begin() as conn:
        conn.execute(delete(visits))
        conn.execute(delete(venue_stays))
    add(engine, rows, first_seq=0)


def add(engine, rows, *, first_seq: int) -> None:
    """Insert ``rows`` as visits (their ``seq`` from ``first_seq`` on) in one new revision, raising
    the venues' longest stays as ingest does."""
    if not rows:
        return
    with engine.begin() as conn:
        longest = dict(conn.execute(select(venue_stays.c.venue_id, venue_stays.c.max_stay_s)).all())
        rev = bump_list_version(conn, VISITS_REV, T0)
        conn.execute(
            insert(visits),
            [
                {
                    "venue_id": v,
                    "person_id": p,
                    "arrive_s": a,
                    "depart_s": d,
                    "arrive_scanned": True,
                    "depart_scanned": True,
                    "rev": rev,
                    "kiosk_id": "k",
                    "epoch": "e",
                    "seq": first_seq + i,
                }
                for i, (p, v, a, d) in enumerate(rows)
            ],
        )
        grown: dict[str, int] = defaultdict(int, longest)
        for _, venue, a, d in rows:
            grown[venue] = max(grown[venue], d - a)
        conn.execute(delete(venue_stays))
        conn.execute(insert(venue_stays), [{"venue_id": v, "max_stay_s": s} for v, s in grown.items()])


PROPERTY = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@PROPERTY
@given(
    rows=st.lists(presence, max_size=40),
    rules=rules_strategy,
    f0=st.integers(1, 8),
    window=st.tuples(st.integers(0, 3 * DAY), st.integers(0, 3 * DAY)).map(sorted),
)
def test_f1_is_exactly_the_brute_force_answer(hub_engine, rows, rules, f0, window):
    load(hub_engine, rows)
    start, end = window
    with hub_engine.connect() as conn:
        own, contacts = find_f1(conn, f0, start, end, rules)
    expected = brute_f1(rows, f0, start, end, rules.buffer_s, rules.min_overlap_s)
    assert {p: c.longest_s for p, c in contacts.items()} == expected
    for contact in contacts.values():
        for e in contact.encounters:
            # Nothing outside the window: each encounter is with an F0 presence that overlaps it.
            assert any(p.venue_id == e.venue_id and p.arrive_s <= end and p.depart_s > start for p in own)
            assert e.exposure_s >= rules.min_overlap_s and e.end_s - e.start_s == e.exposure_s


@PROPERTY
@given(rows=st.lists(presence, max_size=40), rules=rules_strategy)
def test_f1_is_symmetric(hub_engine, rows, rules):
    load(hub_engine, rows)
    people = sorted({r[0] for r in rows})
    with hub_engine.connect() as conn:
        f1 = {p: set(find_f1(conn, p, -DAY, 5 * DAY, rules)[1]) for p in people}
    for a in people:
        for b in f1[a]:
            assert a in f1[b]


@PROPERTY
@given(
    rows=st.lists(presence, max_size=30),
    later=st.lists(presence, max_size=12),
    shortened=st.sets(st.integers(0, 29), max_size=6),
    rules=rules_strategy,
    f0=st.integers(1, 8),
    window=st.tuples(st.integers(0, 3 * DAY), st.integers(0, 3 * DAY)).map(sorted),
    merge_after=st.sampled_from([0, 1_000_000]),
)
def test_f1_from_the_index_kept_current_is_the_brute_force_and_the_sql_answer(
    hub_engine, rows, later, shortened, rules, f0, window, merge_after
):
    """The index is built, then check-ins arrive and exits shorten earlier stays: with a large
    ``merge_after`` they stay in the delta (their old copies dead in the base), with 0 they are merged
    at once. Either way F1 from the index is the brute force's, and find_f1's, answer."""
    load(hub_engine, rows)
    index = VisitIndex(hub_engine, horizon_s=lambda: -DAY, merge_after=merge_after)
    assert not index.current()  # never built: interactive callers ask the database
    index.refresh()
    final = list(rows)
    add(hub_engine, later, first_seq=len(rows))
    final += later
    with hub_engine.begin() as conn:
        rev = bump_list_version(conn, VISITS_REV, T0)
        for i in sorted(k for k in shortened if k < len(rows)):
            person, venue, a, d = rows[i]
            depart = a + max(60, (d - a) // 3)
            conn.execute(
                update(visits)
                .where((visits.c.kiosk_id == "k") & (visits.c.seq == i))
                .values(depart_s=depart, rev=rev)
            )
            final[i] = (person, venue, a, depart)
    assert index.current()
    assert index.size == len(final)
    start, end = window
    got = find_f1_in_index(index, f0, start, end, rules)
    expected = brute_f1(final, f0, start, end, rules.buffer_s, rules.min_overlap_s)
    assert {p: c.longest_s for p, c in got.items()} == expected
    with hub_engine.connect() as conn:
        _, sql = find_f1(conn, f0, start, end, rules)
    assert {p: (c.encounter_count, c.first_s, c.last_s) for p, c in got.items()} == {
        p: (c.encounter_count, c.first_s, c.last_s) for p, c in sql.items()
    }
    assert all(c.degree == 1 and c.via_person_id == f0 for c in got.values())


@given(
    a=st.tuples(st.integers(0, 10_000), st.integers(0, 10_000)).map(sorted),
    b=st.tuples(st.integers(0, 10_000), st.integers(0, 10_000)).map(sorted),
    buffer_s=st.integers(0, 3600),
)
def test_the_contact_measure_is_symmetric_bounded_and_grows_with_the_buffer(a, b, buffer_s):
    shared = exposure(*a, *b, buffer_s)
    assert shared == exposure(*b, *a, buffer_s)
    assert exposure(*a, *b, 0) == overlap(*a, *b)
    assert overlap(*a, *b) <= shared <= max(a[1] - a[0], b[1] - b[0])
    assert shared <= exposure(*a, *b, buffer_s + 60)


@PROPERTY
@given(rows=st.lists(presence, max_size=40), rules=rules_strategy, f0=st.integers(1, 8))
def test_f2_from_the_index_is_exactly_the_brute_force_answer(hub_engine, rows, rules, f0):
    load(hub_engine, rows)
    start, end = 0, 4 * DAY
    with hub_engine.connect() as conn:
        _, f1 = find_f1(conn, f0, start, end, rules)
    sources = f2_sources(((p, c.first_s, c.longest_s) for p, c in f1.items()), end, rules)
    exclude = {f0, *f1}
    index = VisitIndex(hub_engine, horizon_s=lambda: -DAY)
    index.refresh()

    f2 = find_contacts_in_index(
        index,
        sources,
        buffer_s=rules.buffer_s,
        min_exposure_s=rules.f2_min_overlap_s,
        exclude=exclude,
    )
    spans = [(s.person_id, s.from_s, s.until_s) for s in sources]
    expected = brute_f2(rows, spans, exclude, rules.buffer_s, rules.f2_min_overlap_s)
    assert {p: c.longest_s for p, c in f2.items()} == expected
    # F2 holds every contact of each F1 (by the same rule) that is not already the F0 or an F1.
    for source in spans:
        assert set(brute_f2(rows, [source], exclude, rules.buffer_s, rules.f2_min_overlap_s)) <= set(f2)


def test_the_index_follows_inserts_and_changes_after_it_was_built(hub_engine):
    rules = TracingRules(buffer_min=0, min_overlap_min=10, f2_min_overlap_min=10)
    load(hub_engine, [(1, "cho", 0, 3600), (2, "cho", 600, 3000)])
    index = VisitIndex(hub_engine, horizon_s=lambda: -DAY)
    index.refresh()
    assert index.size == 2
    # A new presence and a changed one (an exit scanned later shortens person 2's stay to 5 minutes).
    with hub_engine.begin() as conn:
        rev = bump_list_version(conn, VISITS_REV, T0)
        conn.execute(
            insert(visits).values(
                venue_id="cho", person_id=3, arrive_s=0, depart_s=3600, arrive_scanned=True,
                depart_scanned=True, rev=rev, kiosk_id="k", epoch="e", seq=99,
            )
        )  # fmt: skip
        conn.execute(visits.update().where(visits.c.person_id == 2).values(depart_s=900, rev=rev))
    index.refresh()
    found = find_contacts_in_index(
        index,
        f2_sources([(1, 0, 3600)], DAY, rules),
        buffer_s=0,
        min_exposure_s=rules.f2_min_overlap_s,
        exclude={1},
    )
    assert set(found) == {3}  # person 2 now shared 5 minutes, under the 10-minute minimum


# ------------------------------------------------------------------------- cases, end to end


@pytest.mark.parametrize("f1_from_index", [False, True], ids=["f1-sql", "f1-index"])
def test_a_case_finds_f1_and_f2_from_real_check_ins_and_turns_their_passes(hub_engine, f1_from_index):
    place_kiosk(hub_engine, "kiosk-cho", "cho-a", "market")
    place_kiosk(hub_engine, "kiosk-quan", "quan-b", "restaurant")
    f0 = declare(hub_engine, id_number="001190012345")
    f1 = declare(hub_engine, id_number="001190012346", phone="0912345679")
    f2 = declare(hub_engine, id_number="001190012347", phone="0912345670")
    identity = HubIdentity(hub_engine).load()
    HubStore(hub_engine).commit(
        events=[
            scan("kiosk-cho", pass_subject(f0.pass_.pass_id), T0),
            scan("kiosk-cho", pass_subject(f0.pass_.pass_id), T0 + minutes(45), out=True),
            scan("kiosk-cho", pass_subject(f1.pass_.pass_id), T0 + minutes(20)),
            # Someone who came after the F0 left and the air had cleared: not a contact.
            scan("kiosk-cho", card_subject(identity, "001090000009"), T0 + minutes(45 + 60)),
            scan("kiosk-quan", pass_subject(f1.pass_.pass_id), T0 + minutes(300)),
            scan("kiosk-quan", pass_subject(f2.pass_.pass_id), T0 + minutes(310)),
        ]
    )
    now = T0 + timedelta(days=2)
    with hub_engine.begin() as conn:
        subject = resolve_subject(conn, identity, pass_id=f0.pass_.pass_id, now=now)
    rules = TracingRules()
    index = VisitIndex(hub_engine, horizon_s=lambda: 0)
    if f1_from_index:
        index.refresh()
    case_id = open_case(
        hub_engine, identity, subject, onset_date=date(2026, 11, 21), test_date=None,
        rules=rules, actor="bs.lan", role="health_official", now=now, index=index,
    )  # fmt: skip
    with hub_engine.connect() as conn:
        assert current_colour(conn, f0.pass_.pass_id) == "red"
        assert current_colour(conn, f1.pass_.pass_id) == rules.f1_colour
        assert current_colour(conn, f2.pass_.pass_id) == "green"  # not until the F2 job ran
        row = conn.execute(select(case_contacts).where(case_contacts.c.case_id == case_id)).one()
    assert (
        row.degree == 1
        and row.reasons[0]["venue_id"] == "cho-a"
        and row.reasons[0]["minutes"] == 45 - 20 + 30
    )
    assert run_f2(hub_engine, case_id, index, rules, clock=lambda: now) == 1
    with hub_engine.connect() as conn:
        assert current_colour(conn, f2.pass_.pass_id) == rules.f2_colour
        state = conn.execute(select(cases.c.f2_state, cases.c.f2_progress, cases.c.f2_count)).one()
        f2_row = conn.execute(select(case_contacts).where(case_contacts.c.degree == 2)).one()
    assert tuple(state) == ("done", 1.0, 1)
    assert f2_row.reasons[0]["venue_id"] == "quan-b"
    # Dismissing the F1 gives their pass its signed colour back.
    decide(hub_engine, case_id, row.person_id, "dismissed", actor="bs.lan", role="health_official", now=now)
    with hub_engine.connect() as conn:
        assert current_colour(conn, f1.pass_.pass_id) == "green"
        status = select(list_versions.c.version).where(list_versions.c.name == "status")
        assert conn.execute(status).scalar() >= 3
    # Undoing the dismissal gives the case's colour back.
    decide(hub_engine, case_id, row.person_id, "confirmed", actor="bs.lan", role="health_official", now=now)
    with hub_engine.connect() as conn:
        assert current_colour(conn, f1.pass_.pass_id) == rules.f1_colour
    # A job already done is not run again (two web workers resuming the same case).
    assert run_f2(hub_engine, case_id, index, rules, clock=lambda: now) is None


def test_a_case_needs_one_subject_and_a_date_not_in_the_future(hub_engine):
    identity = HubIdentity(hub_engine).load()
    with hub_engine.begin() as conn:
        with pytest.raises(CaseError, match="exactly one"):
            resolve_subject(conn, identity, pass_id="X", cccd_number="001190012345", now=T0)
        with pytest.raises(CaseError, match="CCCD"):
            resolve_subject(conn, identity, cccd_number="123", now=T0)
        with pytest.raises(CaseError, match="no current declaration"):
            resolve_subject(conn, identity, phone="0912345678", now=T0)
        with pytest.raises(CaseError, match="not a Vietnamese phone"):
            resolve_subject(conn, identity, phone="abc", now=T0)
        subject = resolve_subject(conn, identity, cccd_number="001190012345", now=T0)
    with pytest.raises(CaseError, match="onset date or the test date"):
        open_case(hub_engine, identity, subject, onset_date=None, test_date=None, rules=TracingRules(),
                  actor="a", role=None, now=T0)  # fmt: skip
    with pytest.raises(CaseError, match="future"):
        open_case(hub_engine, identity, subject, onset_date=date(2030, 1, 1), test_date=None,
                  rules=TracingRules(), actor="a", role=None, now=T0)  # fmt: skip


@pytest.mark.parametrize("f1_from_index", [False, True], ids=["f1-sql", "f1-index"])
def test_looking_again_finds_late_check_ins_and_closing_gives_colours_back(hub_engine, f1_from_index):
    place_kiosk(hub_engine, "kiosk-cho", "cho-a", "market")
    f0 = declare(hub_engine, id_number="001190012345")
    late = declare(hub_engine, id_number="001190012346", phone="0912345679")
    dismissed = declare(hub_engine, id_number="001190012347", phone="0912345670")
    identity = HubIdentity(hub_engine).load()
    store = HubStore(hub_engine)
    store.commit(
        events=[
            scan("kiosk-cho", pass_subject(f0.pass_.pass_id), T0),
            scan("kiosk-cho", pass_subject(dismissed.pass_.pass_id), T0 + minutes(5)),
        ]
    )
    now = T0 + timedelta(hours=3)
    with hub_engine.begin() as conn:
        subject = resolve_subject(conn, identity, declaration_id=f0.declaration_id, now=now)
    rules = TracingRules()
    index = VisitIndex(hub_engine, horizon_s=lambda: 0)
    if f1_from_index:
        index.refresh()  # built before the late check-in: the refresh of the case finds it in the delta
    case_id = open_case(hub_engine, identity, subject, onset_date=None, test_date=date(2026, 11, 20),
                        rules=rules, actor="bs.lan", role="health_official", now=now,
                        index=index)  # fmt: skip
    with hub_engine.begin() as conn:
        person = conn.execute(select(case_contacts.c.person_id)).scalar_one()
    decide(hub_engine, case_id, person, "dismissed", actor="bs.lan", role="health_official", now=now)
    # A kiosk that was offline syncs a check-in from the same morning.
    store.commit(events=[scan("kiosk-cho", pass_subject(late.pass_.pass_id), T0 + minutes(10))])
    assert refresh_case(hub_engine, case_id, rules, actor="bs.lan", role="health_official", now=now,
                        index=index) == 1  # fmt: skip
    with hub_engine.connect() as conn:
        assert current_colour(conn, late.pass_.pass_id) == rules.f1_colour
        assert current_colour(conn, dismissed.pass_.pass_id) == "green"  # stays dismissed
        assert conn.execute(select(cases.c.f1_count, cases.c.f2_state)).one() == (2, "pending")
    assert close_case(hub_engine, case_id, actor="bs.lan", role="health_official", now=now) == 2
    with hub_engine.connect() as conn:
        assert current_colour(conn, late.pass_.pass_id) == "green"
        assert current_colour(conn, f0.pass_.pass_id) == "green"
        assert conn.execute(select(cases.c.status)).scalar_one() == "closed"
    with pytest.raises(CaseError, match="closed"):
        refresh_case(hub_engine, case_id, rules, actor="bs.lan", role="health_official", now=now)
