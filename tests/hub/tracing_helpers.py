"""Builders for tracing tests: check-in events as kiosks send them, and people with declarations."""

from __future__ import annotations

import base64
import itertools
import json
import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine

from hub import declarations as decl
from hub.config import PassSettings
from hub.db.store import EventRow
from hub.devices import add_venue
from hub.identity import HubIdentity
from hub.keys import KeyRing
from protocol.sealed import seal
from tests.hub.test_declarations import declarant_data

T0 = datetime(2026, 11, 20, 1, 0, tzinfo=UTC)  # 08:00 in Viet Nam
_seq = itertools.count(1)


def card_subject(identity: HubIdentity, number: str, name: str = "Lê Văn Bình") -> dict:
    """The subject of an ID-card check-in: the card sealed to the hub's key, as a kiosk sends it."""
    card = {
        "number": number,
        "old_id": None,
        "full_name": name,
        "birth_date": f"19{number[4:6]}-01-02",
        "gender": "Nam",
        "address": "Hà Nội",
        "issue_date": None,
    }
    sealed = seal(json.dumps(card, ensure_ascii=False).encode(), base64.b64decode(identity.public_key_b64))
    return {"type": "cccd", "sealed": sealed}


def pass_subject(pass_id: str) -> dict:
    return {"type": "pass", "pass_id": pass_id, "kid": "00" * 8}


def scan(kiosk_id: str, subject: dict, at: datetime, *, out: bool = False, epoch: str = "e1") -> EventRow:
    """A check-in (or, with ``out``, a check-out) event from ``kiosk_id`` at ``at``."""
    return EventRow(
        kiosk_id=kiosk_id,
        epoch=epoch,
        seq=next(_seq),
        uuid=str(uuid.uuid4()),
        kind="check_out" if out else "check_in",
        device_time=at,
        body={"direction": "out" if out else "in", "subject": subject, "verdict": "green"},
    )


def minutes(n: float) -> timedelta:
    return timedelta(minutes=n)


def place_kiosk(
    engine: Engine, kiosk_id: str, venue_id: str, venue_type: str, name: str | None = None
) -> None:
    """Register a venue and an enrolled kiosk standing at it."""
    from hub.db.schema import devices

    with engine.begin() as conn:
        add_venue(conn, venue_id=venue_id, name=name or venue_id, venue_type=venue_type, now=T0)
        conn.execute(devices.insert().values(kiosk_id=kiosk_id, venue_id=venue_id, enrolled_at=T0))


def declare(engine: Engine, *, id_number: str, phone: str = "0912345678", now: datetime = T0, **extra):
    """Save an NCOVI declaration for ``id_number``; returns the SavedDeclaration (with its pass)."""
    keyring = KeyRing(engine, PassSettings())
    data = {"declarant": declarant_data(id_number=id_number, phone=phone, **extra), "members": []}
    model = decl.validate_ncovi(data, today=decl.today_in_vietnam(now))
    with engine.begin() as conn:
        return decl.save_ncovi(conn, model, keyring=keyring, settings=PassSettings(), now=now)[0]
