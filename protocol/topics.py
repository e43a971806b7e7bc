"""MQTT topic builders and parsers for contract version 1."""

from __future__ import annotations

import re
from dataclasses import dataclass

from protocol.healthpass import CROCKFORD

PREFIX = "antoan/v1"

#: Kiosk ids appear inside topics and as MQTT client ids / certificate CNs, so they must not contain
#: MQTT wildcards or separators. Lowercase letters, digits and dashes, 3 to 64 characters.
KIOSK_ID_PATTERN = r"^[a-z0-9][a-z0-9-]{2,63}$"
_KIOSK_ID_RE = re.compile(KIOSK_ID_PATTERN)

KIOSK_CHANNELS = ("events", "ack", "state", "config")

#: The broker's ``message_size_limit``: the largest payload it accepts (a larger publish is dropped).
MAX_MESSAGE_BYTES = 1_048_576

BROADCAST_TRUST = f"{PREFIX}/broadcast/trust"
#: The status list is split by the first character of the pass id into one retained topic per symbol,
#: so each message stays far below :data:`MAX_MESSAGE_BYTES` (one message would pass it at ~47,000 ids).
STATUS_SHARDS = CROCKFORD
_BROADCAST_STATUS = f"{PREFIX}/broadcast/status"
#: What a kiosk subscribes to for every status-list shard.
BROADCAST_STATUS_SHARDS = f"{_BROADCAST_STATUS}/+"

EVENTS_ALL = f"{PREFIX}/kiosk/+/events"
STATE_ALL = f"{PREFIX}/kiosk/+/state"


class TopicError(ValueError):
    """A topic or kiosk id that does not fit the contract."""


def is_valid_kiosk_id(kiosk_id: str) -> bool:
    return bool(_KIOSK_ID_RE.match(kiosk_id))


def _kiosk(kiosk_id: str, channel: str) -> str:
    if not is_valid_kiosk_id(kiosk_id):
        raise TopicError(f"kiosk id {kiosk_id!r} is not valid: use 3-64 lowercase letters, digits or dashes")
    return f"{PREFIX}/kiosk/{kiosk_id}/{channel}"


def events(kiosk_id: str) -> str:
    """Kiosk -> hub: batches of events (QoS 1)."""
    return _kiosk(kiosk_id, "events")


def ack(kiosk_id: str) -> str:
    """Hub -> kiosk: application acks sent after the hub's commit (QoS 1)."""
    return _kiosk(kiosk_id, "ack")


def state(kiosk_id: str) -> str:
    """Kiosk -> hub: retained online/offline state with the last will (QoS 1)."""
    return _kiosk(kiosk_id, "state")


def config(kiosk_id: str) -> str:
    """Hub -> kiosk: retained venue and kiosk settings (QoS 1)."""
    return _kiosk(kiosk_id, "config")


def status_shard(symbol: str) -> str:
    """Hub -> all kiosks: the retained status-list shard of pass ids starting with ``symbol`` (QoS 1)."""
    if len(symbol) != 1 or symbol not in STATUS_SHARDS:
        raise TopicError(f"status-list shard {symbol!r:.20} is not a Crockford base32 symbol")
    return f"{_BROADCAST_STATUS}/{symbol}"


def parse_status_shard(topic: str) -> str | None:
    """The shard symbol of a status-list shard topic, or None for any other topic."""
    head, _, symbol = topic.rpartition("/")
    if head != _BROADCAST_STATUS or len(symbol) != 1 or symbol not in STATUS_SHARDS:
        return None
    return symbol


def shared(topic_filter: str, group: str) -> str:
    """Wrap a filter in an MQTT v5 shared subscription so several bridge workers split the load."""
    if not group or any(c in group for c in "/+#"):
        raise TopicError(f"shared subscription group {group!r} must be a plain word")
    return f"$share/{group}/{topic_filter}"


@dataclass(frozen=True, slots=True)
class KioskTopic:
    kiosk_id: str
    channel: str


def parse_kiosk_topic(topic: str) -> KioskTopic:
    """Split ``antoan/v1/kiosk/<id>/<channel>``; raise :class:`TopicError` for anything else."""
    parts = topic.split("/")
    if len(parts) != 5 or f"{parts[0]}/{parts[1]}" != PREFIX or parts[2] != "kiosk":
        raise TopicError(f"not a kiosk topic of contract {PREFIX}: {topic!r}")
    kiosk_id, channel = parts[3], parts[4]
    if not is_valid_kiosk_id(kiosk_id):
        raise TopicError(f"invalid kiosk id in topic {topic!r}")
    if channel not in KIOSK_CHANNELS:
        raise TopicError(f"unknown channel {channel!r} in topic {topic!r}")
    return KioskTopic(kiosk_id, channel)
