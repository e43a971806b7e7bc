"""Presence intervals from check-in and check-out events, derived in the ingest transaction.

Each new check-in opens a visit ``[arrive, arrive + default stay]`` at the kiosk's venue; a check-out
closes the person's latest open visit there (within the 12-hour bound), or, when no check-in was
recorded (an exit kiosk that synced first, a missed scan), records an exit-only visit
``[depart - default stay, depart]`` that a late check-in then completes. So every visit is a closed,
bounded interval, whatever order the kiosks' events arrive in, and a kiosk that missed a day creates no
endless stays. Only events stored for the first time are applied: resends change nothing.

A commit's scans are applied together: one read of the visits they may touch (their people's visits in
the batch's time range, through ``(person_id, arrive_s)``), the scans worked through in time order in
memory exactly as one-by-one statements would (each sees what the earlier ones did), then one insert of
the new visits and one update of the changed ones. Two statements per scan (a lookup, then an insert
or update) had cost 1-3 ms a check-in.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, Connection, and_, bindparam, func, or_, select, true, update

from hub.db import dialect_insert, from_db_time
from hub.db.schema import devices, events, venue_stays, venues, visits
from hub.identity import HubIdentity, IdentityError, pass_person_keys, person_ids
from hub.keys import bump_list_version
from hub.tracing_rules import MAX_STAY_S, TracingRules

log = logging.getLogger(__name__)

#: The ``list_versions`` row whose value stamps ``visits.rev`` (held until commit: revs follow commit order).
VISITS_REV = "visits"
PRESENCE_KINDS = frozenset({"check_in", "check_out"})


#: How the venue of a kiosk enrolled at no venue is named: ``kiosk:<kiosk id>``.
KIOSK_VENUE_PREFIX = "kiosk:"


def venue_of_kiosk(kiosk_id: str, venue_id: str | None) -> str:
    """The venue a kiosk's scans count at: its enrolled venue, else a venue of its own."""
    return venue_id if venue_id is not None else f"{KIOSK_VENUE_PREFIX}{kiosk_id}"


def kiosk_of_venue(venue_id: str) -> str | None:
    """The kiosk behind a venue of its own (:func:`venue_of_kiosk`), else None."""
    return venue_id.removeprefix(KIOSK_VENUE_PREFIX) if venue_id.startswith(KIOSK_VENUE_PREFIX) else None


@dataclass(frozen=True, slots=True)
class Scan:
    """One presence scan ready to apply."""

    kiosk_id: str
    epoch: str
    seq: int
    venue_id: str
    person_id: int
    at_s: int
    entering: bool


@dataclass(slots=True)
class _Visit:
    """A visit as the batch sees it: read from the database (``id``) or made by a scan of the batch."""

    id: int | None
    order: int  # the database's id order, the batch's new visits after every stored one
    arrive_s: int
    depart_s: int
    arrive_scanned: bool
    depart_scanned: bool
    #: ``arrive_s`` as stored (a stored visit only): the update finds the row by id and it, so
    #: PostgreSQL searches only the row's day partition (hub/db/partitions.py).
    stored_arrive_s: int | None = None
    changed: bool = False


class Presence:
    """Turns newly stored check-in/check-out events into visits (see the module docstring)."""

    def __init__(self, identity: HubIdentity, rules: TracingRules):
        self._identity = identity
        self._rules = rules

    def prepare(self) -> None:
        """Load the identity keys outside any transaction (the first use writes them)."""
        self._identity.load()

    @staticmethod
    def new_keys(conn: Connection, rows: Sequence) -> set[tuple[str, str, int]]:
        """Keys of the presence events in ``rows`` that are not stored yet (call before inserting)."""
        keys = {(r.kiosk_id, r.epoch, r.seq) for r in rows if r.kind in PRESENCE_KINDS}
        if not keys:
            return set()
        # A few statements for all the streams at once, not one per kiosk stream (a bridge commit
        # gathers the batches of many kiosks): an OR of ``kiosk_id = ? AND epoch = ? AND seq IN (…)``,
        # which SQLite runs as one search of uq_events_kiosk_epoch_seq per key ("MULTI-INDEX OR") and
        # PostgreSQL as a BitmapOr. (A row-value IN made SQLite scan the whole index.)
        # PostgreSQL: only the partitions of the batch's kinds and days (hub/db/partitions.py; a resend
        # repeats its kind and time): the OR searched in every day's partition cost a commit of 50
        # check-ins three times as much.
        window = true()
        if conn.dialect.name == "postgresql":
            times = [r.device_time for r in rows if r.kind in PRESENCE_KINDS]
            window = and_(
                events.c.kind.in_(sorted(PRESENCE_KINDS)),
                events.c.device_time.between(min(times), max(times)),
            )
        by_stream: dict[tuple[str, str], list[int]] = defaultdict(list)
        for kiosk_id, epoch, seq in sorted(keys):
            by_stream[(kiosk_id, epoch)].append(seq)
        terms, size = [], 0
        for (kiosk_id, epoch), seqs in by_stream.items():
            for start in range(0, len(seqs), 500):
                part = seqs[start : start + 500]
                terms.append(
                    and_(events.c.kiosk_id == kiosk_id, events.c.epoch == epoch, events.c.seq.in_(part))
                )
                size += len(part)
                if size >= 500 or len(terms) >= 100:
                    keys.difference_update(_stored(conn, terms, window))
                    terms, size = [], 0
        if terms:
            keys.difference_update(_stored(conn, terms, window))
        return keys

    def apply(self, conn: Connection, rows: Sequence, fresh: set[tuple[str, str, int]], now: datetime) -> int:
        """Apply the presence events of ``rows`` whose key is in ``fresh``; returns visits touched."""
        todo = [r for r in rows if (r.kiosk_id, r.epoch, r.seq) in fresh]
        if not todo:
            return 0
        scans = self._scans(conn, todo, now)
        if not scans:
            return 0
        rev = bump_list_version(conn, VISITS_REV, now)
        venue_types = self._venue_types(conn, {s.venue_id for s in scans})
        held = self._visits_near(conn, scans)
        made: list[tuple[Scan, _Visit]] = []
        longest: dict[str, int] = {}
        for scan in sorted(scans, key=lambda s: (s.at_s, s.kiosk_id, s.epoch, s.seq)):
            stay = self._rules.default_stay_s(venue_types.get(scan.venue_id))
            mine = held[(scan.person_id, scan.venue_id)]
            span, new = _enter(mine, scan, stay) if scan.entering else _leave(mine, scan, stay)
            if new is not None:
                new.order = (1 << 62) + len(made)  # after every stored visit, in the order made
                mine.append(new)
                made.append((scan, new))
            longest[scan.venue_id] = max(longest.get(scan.venue_id, 0), span)
        self._write(conn, held, made, rev)
        self._record_longest(conn, longest)
        return len(scans)

    # ------------------------------------------------------------------------------------- details

    def _scans(self, conn: Connection, rows: Sequence, now: datetime) -> list[Scan]:
        kiosk_ids = sorted({r.kiosk_id for r in rows})
        venue_by_kiosk = dict(
            conn.execute(
                select(devices.c.kiosk_id, devices.c.venue_id).where(devices.c.kiosk_id.in_(kiosk_ids))
            ).all()
        )
        pass_ids = [r.body["subject"]["pass_id"] for r in rows if _subject(r).get("type") == "pass"]
        pass_keys = pass_person_keys(conn, self._identity, pass_ids)
        keyed: list[tuple[object, str]] = []
        for r in rows:
            subject = _subject(r)
            if subject.get("type") == "pass" and isinstance(subject.get("pass_id"), str):
                keyed.append((r, pass_keys[subject["pass_id"]]))
            elif subject.get("type") == "cccd" and isinstance(subject.get("sealed"), str):
                try:
                    card = self._identity.open_card(subject["sealed"])
                except IdentityError as exc:
                    log.warning("check-in %s/%s/%s gives no presence: %s", r.kiosk_id, r.epoch, r.seq, exc)
                    continue
                keyed.append((r, self._identity.person_key(card["number"])))
            else:
                log.warning("check-in %s/%s/%s has no known subject; no presence", r.kiosk_id, r.epoch, r.seq)
        ids = person_ids(conn, (k for _, k in keyed), now)
        return [
            Scan(
                kiosk_id=r.kiosk_id,
                epoch=r.epoch,
                seq=r.seq,
                venue_id=venue_of_kiosk(r.kiosk_id, venue_by_kiosk.get(r.kiosk_id)),
                person_id=ids[key],
                at_s=int(from_db_time(r.device_time).timestamp()),
                entering=r.kind == "check_in",
            )
            for r, key in keyed
        ]

    @staticmethod
    def _venue_types(conn: Connection, venue_ids: set[str]) -> dict[str, str]:
        return dict(
            conn.execute(
                select(venues.c.venue_id, venues.c.venue_type).where(venues.c.venue_id.in_(venue_ids))
            ).all()
        )

    @staticmethod
    def _visits_near(conn: Connection, scans: Sequence[Scan]) -> dict[tuple[int, str], list[_Visit]]:
        """The stored visits of the scans' people that a scan of the batch may complete or close:
        arriving within ``MAX_STAY_S`` of the batch's earliest and latest scan, by (person, venue)."""
        held: dict[tuple[int, str], list[_Visit]] = defaultdict(list)
        wanted = {(s.person_id, s.venue_id) for s in scans}
        people = sorted({p for p, _ in wanted})
        lo = min(s.at_s for s in scans) - MAX_STAY_S
        hi = max(s.at_s for s in scans) + MAX_STAY_S
        columns = (
            visits.c.id,
            visits.c.person_id,
            visits.c.venue_id,
            visits.c.arrive_s,
            visits.c.depart_s,
            visits.c.arrive_scanned,
            visits.c.depart_scanned,
        )
        for start in range(0, len(people), 500):
            rows = conn.execute(
                select(*columns).where(
                    and_(
                        visits.c.person_id.in_(people[start : start + 500]),
                        visits.c.arrive_s >= lo,
                        visits.c.arrive_s <= hi,
                    )
                )
            )
            for vid, person, venue, arrive, depart, arrive_scanned, depart_scanned in rows:
                if (person, venue) in wanted:
                    held[(int(person), venue)].append(
                        _Visit(
                            int(vid),
                            int(vid),
                            int(arrive),
                            int(depart),
                            bool(arrive_scanned),
                            bool(depart_scanned),
                            int(arrive),
                        )
                    )
        return held

    @staticmethod
    def _write(
        conn: Connection, held: dict[tuple[int, str], list[_Visit]], made: list[tuple[Scan, _Visit]], rev: int
    ) -> None:
        changed = [v for mine in held.values() for v in mine if v.changed and v.id is not None]
        if changed:
            conn.execute(
                update(visits)
                .where(visits.c.id == bindparam("visit_id"), visits.c.arrive_s == bindparam("stored_arrive"))
                .values(
                    arrive_s=bindparam("arrive"),
                    depart_s=bindparam("depart"),
                    arrive_scanned=bindparam("arrive_scanned"),
                    depart_scanned=bindparam("depart_scanned"),
                    rev=rev,
                ),
                [
                    {
                        "visit_id": v.id,
                        "stored_arrive": v.stored_arrive_s,
                        "arrive": v.arrive_s,
                        "depart": v.depart_s,
                        "arrive_scanned": v.arrive_scanned,
                        "depart_scanned": v.depart_scanned,
                    }
                    for v in sorted(changed, key=lambda v: v.order)
                ],
            )
        if made:
            conn.execute(
                # PostgreSQL's key holds the partition key arrive_s too (hub/db/partitions.py): an
                # insert's arrive_s follows from its event, so a resent event still finds its row (only
                # events stored for the first time get here at all).
                dialect_insert(conn, visits).on_conflict_do_nothing(
                    index_elements=[visits.c.kiosk_id, visits.c.epoch, visits.c.seq]
                    + ([visits.c.arrive_s] if conn.dialect.name == "postgresql" else [])
                ),
                [
                    {
                        **_key(scan),
                        "venue_id": scan.venue_id,
                        "person_id": scan.person_id,
                        "arrive_s": v.arrive_s,
                        "depart_s": v.depart_s,
                        "arrive_scanned": v.arrive_scanned,
                        "depart_scanned": v.depart_scanned,
                        "rev": rev,
                    }
                    for scan, v in made
                ],
            )

    @staticmethod
    def _record_longest(conn: Connection, longest: dict[str, int]) -> None:
        if not longest:
            return
        stmt = dialect_insert(conn, venue_stays)
        stmt = stmt.on_conflict_do_update(
            index_elements=[venue_stays.c.venue_id],
            set_={
                "max_stay_s": _greatest(conn, venue_stays.c.max_stay_s, stmt.excluded.max_stay_s),
            },
        )
        conn.execute(stmt, [{"venue_id": v, "max_stay_s": s} for v, s in sorted(longest.items())])


def _stored(conn: Connection, terms: list, window: ColumnElement[bool]) -> list[tuple[str, str, int]]:
    rows = conn.execute(select(events.c.kiosk_id, events.c.epoch, events.c.seq).where(window, or_(*terms)))
    return [(k, e, int(s)) for k, e, s in rows]


def _enter(mine: list[_Visit], scan: Scan, stay: int) -> tuple[int, _Visit | None]:
    """A check-in: complete the exit-only visit ending soonest within the bound, if a check-out recorded
    first left one; else a new visit of the default stay. (The span it counts, the new visit or None.)"""
    exit_only = [
        v
        for v in mine
        if not v.arrive_scanned
        and scan.at_s - MAX_STAY_S <= v.arrive_s <= scan.at_s + MAX_STAY_S
        and scan.at_s <= v.depart_s <= scan.at_s + MAX_STAY_S
    ]
    if exit_only:
        visit = min(exit_only, key=lambda v: (v.depart_s, v.order))
        visit.arrive_s, visit.arrive_scanned, visit.changed = scan.at_s, True, True
        return visit.depart_s - scan.at_s, None
    return stay, _Visit(None, 0, scan.at_s, scan.at_s + stay, True, False)


def _leave(mine: list[_Visit], scan: Scan, stay: int) -> tuple[int, _Visit | None]:
    """A check-out: close the person's latest visit here that began within the bound, if nobody did
    yet; else an exit-only visit of the default stay that a late check-in may complete."""
    began = [v for v in mine if scan.at_s - MAX_STAY_S <= v.arrive_s <= scan.at_s]
    latest = max(began, key=lambda v: (v.arrive_s, v.order), default=None)
    if latest is not None and not latest.depart_scanned:
        latest.depart_s, latest.depart_scanned, latest.changed = scan.at_s, True, True
        return scan.at_s - latest.arrive_s, None
    return stay, _Visit(None, 0, scan.at_s - stay, scan.at_s, False, True)


def _subject(row) -> dict:
    subject = row.body.get("subject") if isinstance(row.body, dict) else None
    return subject if isinstance(subject, dict) else {}


def _key(scan: Scan) -> dict:
    return {"kiosk_id": scan.kiosk_id, "epoch": scan.epoch, "seq": scan.seq}


def _greatest(conn: Connection, a, b):
    return func.greatest(a, b) if conn.dialect.name == "postgresql" else func.max(a, b)


def max_stays(conn: Connection, venue_ids: Sequence[str]) -> dict[str, int]:
    """The longest recorded stay at each venue (``MAX_STAY_S`` for venues with none yet)."""
    found = dict(
        conn.execute(
            select(venue_stays.c.venue_id, venue_stays.c.max_stay_s).where(
                venue_stays.c.venue_id.in_(list(venue_ids))
            )
        ).all()
    )
    return {v: int(found.get(v, MAX_STAY_S)) for v in venue_ids}
