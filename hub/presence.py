"""Presence intervals from check-in and check-out events, derived in the ingest transaction.

Each new check-in opens a visit ``[arrive, arrive + default stay]`` at the kiosk's venue; a check-out
closes the person's latest open visit there (within the 12-hour bound), or, when no check-in was
recorded (an exit kiosk that synced first, a missed scan), records an exit-only visit
``[depart - default stay, depart]`` that a late check-in then completes. So every visit is a closed,
bounded interval, whatever order the kiosks' events arrive in, and a kiosk that missed a day creates no
endless stays. Only events stored for the first time are applied: resends change nothing.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, and_, func, select, update

from hub.db import dialect_insert, from_db_time
from hub.db.schema import devices, events, venue_stays, venues, visits
from hub.identity import HubIdentity, IdentityError, pass_person_keys, person_ids
from hub.keys import bump_list_version
from hub.tracing_rules import MAX_STAY_S, TracingRules

log = logging.getLogger(__name__)

#: The ``list_versions`` row whose value stamps ``visits.rev`` (held until commit: revs follow commit order).
VISITS_REV = "visits"
PRESENCE_KINDS = frozenset({"check_in", "check_out"})


def venue_of_kiosk(kiosk_id: str, venue_id: str | None) -> str:
    """The venue a kiosk's scans count at: its enrolled venue, else a venue of its own."""
    return venue_id if venue_id is not None else f"kiosk:{kiosk_id}"


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
        by_stream: dict[tuple[str, str], list[int]] = defaultdict(list)
        for kiosk_id, epoch, seq in keys:
            by_stream[(kiosk_id, epoch)].append(seq)
        for (kiosk_id, epoch), seqs in by_stream.items():
            for start in range(0, len(seqs), 500):
                stored = conn.execute(
                    select(events.c.seq).where(
                        and_(
                            events.c.kiosk_id == kiosk_id,
                            events.c.epoch == epoch,
                            events.c.seq.in_(seqs[start : start + 500]),
                        )
                    )
                )
                keys.difference_update((kiosk_id, epoch, int(s)) for (s,) in stored)
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
        longest: dict[str, int] = {}
        for scan in sorted(scans, key=lambda s: (s.at_s, s.kiosk_id, s.epoch, s.seq)):
            stay = self._rules.default_stay_s(venue_types.get(scan.venue_id))
            span = self._enter(conn, scan, stay, rev) if scan.entering else self._leave(conn, scan, stay, rev)
            longest[scan.venue_id] = max(longest.get(scan.venue_id, 0), span)
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

    def _enter(self, conn: Connection, scan: Scan, stay: int, rev: int) -> int:
        # A check-out recorded first left an exit-only visit ending within the bound: complete it.
        exit_only = conn.execute(
            select(visits.c.id, visits.c.depart_s)
            .where(
                and_(
                    visits.c.person_id == scan.person_id,
                    visits.c.venue_id == scan.venue_id,
                    visits.c.arrive_s >= scan.at_s - MAX_STAY_S,
                    visits.c.arrive_s <= scan.at_s + MAX_STAY_S,
                    visits.c.arrive_scanned.is_(False),
                    visits.c.depart_s >= scan.at_s,
                    visits.c.depart_s <= scan.at_s + MAX_STAY_S,
                )
            )
            .order_by(visits.c.depart_s)
            .limit(1)
        ).first()
        if exit_only is not None:
            conn.execute(
                update(visits)
                .where(visits.c.id == exit_only.id)
                .values(arrive_s=scan.at_s, arrive_scanned=True, rev=rev)
            )
            return int(exit_only.depart_s) - scan.at_s
        conn.execute(
            dialect_insert(conn, visits).on_conflict_do_nothing(
                index_elements=[visits.c.kiosk_id, visits.c.epoch, visits.c.seq]
            ),
            {
                **_key(scan),
                "venue_id": scan.venue_id,
                "person_id": scan.person_id,
                "arrive_s": scan.at_s,
                "depart_s": scan.at_s + stay,
                "arrive_scanned": True,
                "depart_scanned": False,
                "rev": rev,
            },
        )
        return stay

    def _leave(self, conn: Connection, scan: Scan, stay: int, rev: int) -> int:
        # The person's latest visit here that began within the bound; close it if nobody did yet.
        latest = conn.execute(
            select(visits.c.id, visits.c.arrive_s, visits.c.depart_scanned)
            .where(
                and_(
                    visits.c.person_id == scan.person_id,
                    visits.c.venue_id == scan.venue_id,
                    visits.c.arrive_s >= scan.at_s - MAX_STAY_S,
                    visits.c.arrive_s <= scan.at_s,
                )
            )
            .order_by(visits.c.arrive_s.desc(), visits.c.id.desc())
            .limit(1)
        ).first()
        if latest is not None and not latest.depart_scanned:
            conn.execute(
                update(visits)
                .where(visits.c.id == latest.id)
                .values(depart_s=scan.at_s, depart_scanned=True, rev=rev)
            )
            return scan.at_s - int(latest.arrive_s)
        conn.execute(
            dialect_insert(conn, visits).on_conflict_do_nothing(
                index_elements=[visits.c.kiosk_id, visits.c.epoch, visits.c.seq]
            ),
            {
                **_key(scan),
                "venue_id": scan.venue_id,
                "person_id": scan.person_id,
                "arrive_s": scan.at_s - stay,
                "depart_s": scan.at_s,
                "arrive_scanned": False,
                "depart_scanned": True,
                "rev": rev,
            },
        )
        return stay

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
