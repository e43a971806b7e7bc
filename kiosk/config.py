"""The kiosk's typed configuration: one TOML file plus ``ANTOAN_KIOSK__…`` environment variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator

from protocol.messages import MAX_PAYLOAD_BYTES
from protocol.settings import MqttSettings, Section, load_config
from protocol.topics import is_valid_kiosk_id

ENV_PREFIX = "ANTOAN_KIOSK"


class OutboxSettings(Section):
    path: Path = Field(default=Path("var/kiosk/outbox.db"), description="SQLite file of the outbox.")
    prune_acked_after_days: float = Field(
        default=7.0, gt=0, description="Acknowledged events older than this are deleted; unacked never."
    )


class SyncSettings(Section):
    batch_size: int = Field(default=100, ge=1, le=1000, description="Most events in one MQTT message.")
    max_batch_bytes: int = Field(
        default=MAX_PAYLOAD_BYTES,
        ge=32 * 1024,
        le=MAX_PAYLOAD_BYTES,
        description="Largest events message sent; must not exceed the hub's limit.",
    )
    max_inflight_batches: int = Field(
        default=16, ge=1, le=64, description="Batches sent and not yet acknowledged by the hub."
    )
    linger_ms: int = Field(
        default=50, ge=0, le=10_000, description="Wait this long for more events before a part batch."
    )
    ack_timeout_s: float = Field(
        default=15.0, gt=0, description="Resend unacknowledged events after this long without an ack."
    )
    state_interval_s: float = Field(default=30.0, gt=0, description="How often the retained state is sent.")
    session_expiry_s: int = Field(
        default=7 * 24 * 3600, ge=0, description="How long the broker keeps this kiosk's session."
    )


class SampleSettings(Section):
    """A stream of generated check-ins, for the demo and fault tests until the camera is wired in."""

    rate_per_s: float = Field(
        default=0.0, ge=0, le=10_000, description="Sample check-ins per second; 0 = off."
    )
    limit: int | None = Field(default=None, ge=1, description="Stop after this many samples.")


class KioskConfig(Section):
    kiosk_id: str = Field(
        description="This kiosk's id, as enrolled (3-64 lowercase letters, digits, dashes)."
    )
    venue_id: str = Field(description="The venue this kiosk stands at.")
    mqtt: MqttSettings = Field(default_factory=MqttSettings)
    outbox: OutboxSettings = Field(default_factory=OutboxSettings)
    sync: SyncSettings = Field(default_factory=SyncSettings)
    sample: SampleSettings = Field(default_factory=SampleSettings)

    @field_validator("kiosk_id")
    @classmethod
    def _kiosk_id(cls, value: str) -> str:
        if not is_valid_kiosk_id(value):
            raise ValueError("use 3-64 lowercase letters, digits or dashes, starting with a letter or digit")
        return value


def load(path: Path | None = None, environ=None) -> KioskConfig:
    """Load the kiosk configuration; raises ``protocol.settings.ConfigError`` with a clear message."""
    return load_config(KioskConfig, path, env_prefix=ENV_PREFIX, environ=environ)
