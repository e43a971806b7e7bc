"""The venues part of the JSON API (``/api/v1/venues``): the venues open cases flag, for the safety map.

Bearer tokens of every staff role: the map shows every role where F0 were, never who (see
:mod:`hub.venue_flags`). Tokens of ``health_official`` and ``admin`` also get the ids of the cases that
flag each venue; those reads tie cases to the places their F0 visited, so they are written to the audit
log like the other reads of a case. The other roles' reads hold nothing personal and nothing of a case,
so, like the fleet list, they are not audited (the map will poll this list).
"""

from __future__ import annotations

from datetime import UTC, datetime

from flask import Blueprint, g
from pydantic import BaseModel, Field

from hub.accounts import Role
from hub.db import from_epoch_s, writing
from hub.openapi import operation
from hub.venue_flags import VenueFlag, flagged_venues
from hub.web.api import TRACING_ROLES, _json
from hub.web.auth import token_required
from hub.web.extensions import audit, hub_web

bp = Blueprint("api_venues", __name__, url_prefix="/api/v1/venues")

#: Every role that will see the safety map.
MAP_ROLES = (Role.ADMIN, Role.HEALTH_OFFICIAL, Role.DISTRICT_IT, Role.VENUE_MANAGER)
#: The roles that also see which cases flag a venue.
CASE_ID_ROLES = frozenset(TRACING_ROLES)


class FlaggedVenueDoc(BaseModel):
    """A venue an open case's F0 visited within the look-back: where and when, never who."""

    venue_id: str = Field(description="The venue id, or kiosk:<kiosk id> for a kiosk enrolled at no venue.")
    name: str | None = Field(description="Null for a venue the hub has not registered.")
    venue_type: str | None
    province: str | None
    district: str | None
    kiosk_id: str | None = Field(description="The kiosk behind a kiosk:<kiosk id> venue, else null.")
    open_cases: int = Field(ge=1, description="Open cases whose F0 was here within the look-back.")
    first_arrival: datetime = Field(description="The earliest arrival of those presences.")
    last_departure: datetime = Field(description="The latest departure of those presences.")
    clear_after: datetime = Field(
        description="When the venue is no longer flagged unless a new presence flags it again: the last "
        "departure plus the look-back."
    )
    case_ids: list[int] | None = Field(
        description="The open cases that flag the venue: for health officials and admins only, null for "
        "the other roles."
    )


class FlaggedVenues(BaseModel):
    as_of: datetime
    lookback_days: int = Field(description="How long a venue stays flagged after an F0's visit ([tracing]).")
    venues: list[FlaggedVenueDoc] = Field(description="The most recent last departure first.")


def _doc(flag: VenueFlag, *, with_cases: bool) -> FlaggedVenueDoc:
    return FlaggedVenueDoc(
        venue_id=flag.venue_id,
        name=flag.name,
        venue_type=flag.venue_type,
        province=flag.province,
        district=flag.district,
        kiosk_id=flag.kiosk_id,
        open_cases=flag.open_cases,
        first_arrival=from_epoch_s(flag.first_arrive_s),
        last_departure=from_epoch_s(flag.last_depart_s),
        clear_after=from_epoch_s(flag.clear_after_s),
        case_ids=list(flag.case_ids) if with_cases else None,
    )


@bp.get("/flagged")
@operation(
    summary="Venues flagged by open cases (safety map)",
    responses={200: ("The flagged venues, the most recent last departure first.", FlaggedVenues)},
    tags=["venues"],
)
@token_required(*MAP_ROLES)
def flagged():
    """Venues where an open case's F0 was, within the case's window, less than the look-back ago: what is
    known of each venue, how many open cases, first arrival, last departure, and when the flag clears.
    Health officials and admins also get the case ids (and their reads are audited)."""
    web = hub_web()
    rules = web.config.tracing
    now = datetime.now(UTC)
    with_cases = g.api_principal.role in CASE_ID_ROLES
    # The audit entry is written in the transaction of the read, as for the case pages.
    reading = writing(web.engine).begin() if with_cases else web.engine.connect()
    with reading as conn:
        flags = flagged_venues(conn, now=now, rules=rules)
        if with_cases:
            cases = sorted({case_id for flag in flags for case_id in flag.case_ids})
            audit(conn, "venue_flags_view", "venues", None, {"via": "api", "cases": cases})
    return _json(
        FlaggedVenues(
            as_of=now,
            lookback_days=rules.lookback_days,
            venues=[_doc(flag, with_cases=with_cases) for flag in flags],
        )
    )
