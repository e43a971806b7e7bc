"""Venues flagged by open cases: where an F0 was during a case's window, for the safety map.

A venue is flagged while an open case's F0 has a presence there inside the case window (as
:func:`hub.tracing.presences_of` reads the window) that ended less than ``lookback_days`` before now: the
look-back that finds F1 also bounds how long a visit matters to the people who were there. A closed case
flags nothing, and a venue clears by itself once the last such departure is ``lookback_days`` old
(``clear_after_s``). A flag says where and when, never who: it carries no person id and no case label,
only the ids of the cases, which the API shows to health officials and admins alone
(:mod:`hub.web.api_venues`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, and_, select

from hub.db.schema import cases, venues
from hub.presence import kiosk_of_venue
from hub.tracing import Presence, presences_of
from hub.tracing_rules import MAX_STAY_S, TracingRules


@dataclass(frozen=True, slots=True)
class VenueFlag:
    """A flagged venue: what is known of it and when F0 were there (epoch seconds)."""

    venue_id: str
    #: None for a venue the hub has not registered (a kiosk enrolled at no venue: see ``kiosk_id``).
    name: str | None
    venue_type: str | None
    province: str | None
    district: str | None
    #: The kiosk behind a ``kiosk:<id>`` venue, else None.
    kiosk_id: str | None
    open_cases: int
    #: Over the presences that flag the venue (those that ended within the look-back).
    first_arrive_s: int
    last_depart_s: int
    #: When the venue is clear again unless another presence flags it: ``last_depart_s`` + look-back.
    clear_after_s: int
    #: The open cases that flag it, ascending; for officials only.
    case_ids: tuple[int, ...]


def clear_after(last_depart_s: int, rules: TracingRules) -> int:
    """When a venue whose last F0 departure was ``last_depart_s`` stops being flagged."""
    return int(last_depart_s) + rules.lookback_days * 86400


def flagged_venues(conn: Connection, *, now: datetime, rules: TracingRules) -> list[VenueFlag]:
    """Every venue flagged at ``now`` (see the module docstring), the most recent last departure first.

    Cost: one read of the open cases (``cases`` holds hundreds of rows in an outbreak, so a scan), then, per
    open case whose window reaches into the last ``lookback_days``, one range scan of
    ``ix_visits_person_arrive`` over the F0's presences of those days only (tens of rows), then the venues'
    details in batches of 500. Hundreds of open cases are hundreds of small indexed queries: 300 open
    cases over 500,000 visits took about 90 ms on SQLite and 220 ms on a local PostgreSQL (round trips).
    """
    now_s = int(now.timestamp())
    cutoff_s = now_s - rules.lookback_days * 86400
    open_cases = conn.execute(
        select(cases.c.id, cases.c.person_id, cases.c.window_start_s, cases.c.window_end_s).where(
            # A presence arrives within the window and lasts at most MAX_STAY_S: a window that ended
            # earlier than that before the cut-off has nothing left to flag.
            and_(cases.c.status == "open", cases.c.window_end_s > cutoff_s - MAX_STAY_S)
        )
    ).all()
    found: list[tuple[int, Presence]] = []
    for case_id, person_id, window_start_s, window_end_s in open_cases:
        # Starting the window at the cut-off keeps exactly the presences that ended after it.
        start_s = max(int(window_start_s), cutoff_s)
        found += [(int(case_id), p) for p in presences_of(conn, int(person_id), start_s, int(window_end_s))]
    return _flags(found, _venue_details(conn, {p.venue_id for _, p in found}), rules)


def _flags(
    found: Iterable[tuple[int, Presence]], details: dict[str, Sequence], rules: TracingRules
) -> list[VenueFlag]:
    """The presences that flag venues, by case, gathered into one flag per venue."""
    by_venue: dict[str, list[tuple[int, Presence]]] = {}
    for case_id, presence in found:
        by_venue.setdefault(presence.venue_id, []).append((case_id, presence))
    flags = []
    for venue_id, group in by_venue.items():
        name, venue_type, province, district = details.get(venue_id, (None, None, None, None))
        last_depart_s = max(p.depart_s for _, p in group)
        case_ids = tuple(sorted({case_id for case_id, _ in group}))
        flags.append(
            VenueFlag(
                venue_id=venue_id,
                name=name,
                venue_type=venue_type,
                province=province,
                district=district,
                kiosk_id=kiosk_of_venue(venue_id),
                open_cases=len(case_ids),
                first_arrive_s=min(p.arrive_s for _, p in group),
                last_depart_s=last_depart_s,
                clear_after_s=clear_after(last_depart_s, rules),
                case_ids=case_ids,
            )
        )
    return sorted(flags, key=lambda f: (-f.last_depart_s, f.venue_id))


def _venue_details(conn: Connection, venue_ids: Iterable[str]) -> dict[str, Sequence]:
    """(name, type, province, district) of the registered venues among ``venue_ids``."""
    wanted = sorted(set(venue_ids))
    found: dict[str, Sequence] = {}
    for start in range(0, len(wanted), 500):
        rows = conn.execute(
            select(
                venues.c.venue_id, venues.c.name, venues.c.venue_type, venues.c.province, venues.c.district
            ).where(venues.c.venue_id.in_(wanted[start : start + 500]))
        )
        found.update({row[0]: tuple(row[1:]) for row in rows})
    return found
