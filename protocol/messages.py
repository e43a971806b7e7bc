"""Versioned message schemas (contract v1): event batches, application acks and kiosk state.

Parsing goes straight from bytes to validated models (pydantic-core parses the JSON), and every
failure becomes a :class:`MessageError` whose ``reason`` is short enough for a dead-letter row.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal, TypeVar

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from protocol.topics import KIOSK_ID_PATTERN

SCHEMA_VERSION = 1

_M = TypeVar("_M", bound=BaseModel)

#: Largest events message the hub accepts. Kiosks cut batches below it.
MAX_PAYLOAD_BYTES = 256 * 1024
#: Largest number of events in one batch.
MAX_BATCH_EVENTS = 1000
#: Largest JSON body of a single event, so one event always fits a batch.
MAX_EVENT_BODY_BYTES = 16 * 1024

KioskId = Annotated[str, StringConstraints(pattern=KIOSK_ID_PATTERN)]
Epoch = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{32}$")]
Seq = Annotated[int, Field(ge=1, le=2**63 - 1)]
#: Event ids as kiosks write them (``str(uuid.uuid4())``); kept as text end to end.
EventUuid = Annotated[
    str, StringConstraints(pattern=r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
]


class MessageError(ValueError):
    """A payload that does not follow the contract; ``reason`` says why in one line."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class EventKind(StrEnum):
    CHECK_IN = "check_in"
    CHECK_OUT = "check_out"
    CHECKLIST = "checklist"
    BLE_PRESENCE = "ble_presence"
    FEEDBACK = "feedback"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Event(_Strict):
    seq: Seq
    uuid: EventUuid
    kind: EventKind
    device_time: AwareDatetime
    body: dict[str, Any]


class EventBatch(_Strict):
    v: Literal[1]
    kiosk_id: KioskId
    epoch: Epoch
    events: Annotated[list[Event], Field(min_length=1, max_length=MAX_BATCH_EVENTS)]


class Ack(_Strict):
    v: Literal[1] = 1
    epoch: Epoch
    ranges: list[tuple[Seq, Seq]]


class KioskState(_Strict):
    v: Literal[1] = 1
    kiosk_id: KioskId
    status: Literal["online", "offline"]
    version: str = ""
    sent_at: AwareDatetime
    outbox_depth: int | None = Field(default=None, ge=0)
    oldest_unacked_age_s: float | None = Field(default=None, ge=0)
    #: Age in seconds of each downlink list the kiosk holds (trust, status), None when it has none.
    list_ages_s: dict[str, float | None] = Field(default_factory=dict)


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False)[:3]:
        loc = ".".join(str(p) for p in err["loc"]) or "(message)"
        parts.append(f"{loc}: {err['msg']}")
    more = exc.error_count() - len(parts)
    return "; ".join(parts) + (f" (+{more} more)" if more > 0 else "")


def _parse(model: type[_M], payload: bytes, max_bytes: int) -> _M:
    if len(payload) > max_bytes:
        raise MessageError(f"payload of {len(payload)} bytes exceeds the limit of {max_bytes}")
    try:
        return model.model_validate_json(payload)
    except ValidationError as exc:
        if any(e["type"] == "json_invalid" for e in exc.errors()):
            raise MessageError("malformed JSON") from None
        raise MessageError(f"schema: {_describe(exc)}") from None


def parse_batch(payload: bytes, *, max_bytes: int = MAX_PAYLOAD_BYTES) -> EventBatch:
    """Validate an events message; raise :class:`MessageError` with the reason."""
    return _parse(EventBatch, payload, max_bytes)


def parse_ack(payload: bytes) -> Ack:
    return _parse(Ack, payload, MAX_PAYLOAD_BYTES)


def parse_state(payload: bytes) -> KioskState:
    return _parse(KioskState, payload, 64 * 1024)


def encode(message: BaseModel) -> bytes:
    return message.model_dump_json().encode()


def event_json(seq: int, uuid: str, kind: str, device_time: str, body_json: str) -> str:
    """One event as JSON text, from the pieces a kiosk outbox stores (body already JSON)."""
    return (
        f'{{"seq":{int(seq)},"uuid":{json.dumps(uuid)},"kind":{json.dumps(kind)},'
        f'"device_time":{json.dumps(device_time)},"body":{body_json}}}'
    )


def batch_payload(kiosk_id: str, epoch: str, events_json: Iterable[str]) -> bytes:
    """Assemble an events message from pre-rendered events without re-serialising them."""
    return (
        f'{{"v":{SCHEMA_VERSION},"kiosk_id":{json.dumps(kiosk_id)},"epoch":{json.dumps(epoch)},'
        f'"events":[{",".join(events_json)}]}}'
    ).encode()


#: Bytes a batch adds around its events: the envelope plus a comma per event.
BATCH_ENVELOPE_BYTES = len(batch_payload("k" * 64, "0" * 32, []))


def seq_ranges(seqs: Iterable[int]) -> list[tuple[int, int]]:
    """Collapse sequence numbers into sorted inclusive ``(lo, hi)`` ranges."""
    ranges: list[tuple[int, int]] = []
    for s in sorted(set(seqs)):
        if ranges and s == ranges[-1][1] + 1:
            ranges[-1] = (ranges[-1][0], s)
        else:
            ranges.append((s, s))
    return ranges


def ranges_cover(outer: Iterable[tuple[int, int]], inner: Iterable[tuple[int, int]]) -> bool:
    """True when every range of ``inner`` lies inside one range of ``outer``."""
    outer = list(outer)
    return all(any(lo >= olo and hi <= ohi for olo, ohi in outer) for lo, hi in inner)


def utc_iso(ts: datetime) -> str:
    return ts.isoformat(timespec="milliseconds")
