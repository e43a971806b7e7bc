"""The kiosk's typed configuration: one TOML file plus ``ANTOAN_KIOSK__…`` environment variables."""

from __future__ import annotations

import base64
import binascii
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from kiosk.enrol import DEFAULT_RENEW_DAYS
from kiosk.feedback import GpioSettings
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


class CameraSettings(Section):
    source: Literal["none", "picamera2", "opencv", "replay"] = Field(
        default="none", description="Where frames come from; none = no scanner (sync only)."
    )
    device: int | str = Field(default=0, description="OpenCV camera index or device path (/dev/video0).")
    width: int = Field(
        default=1280, ge=320, le=4608, description="Frame width; do not go below 1280 for ID cards."
    )
    height: int = Field(default=720, ge=240, le=2592, description="Frame height.")
    replay_path: Path | None = Field(default=None, description="Replay: a folder of images or a video file.")
    replay_fps: float = Field(default=5.0, gt=0, le=120, description="Replay: frames per second.")
    replay_loop: bool = Field(default=False, description="Replay: start again at the end.")
    decoder: Literal["layered", "zxing", "pyzbar"] = Field(
        default="layered", description="QR decoder: layered (zxing-cpp with a second pass), zxing, pyzbar."
    )


class ScanSettings(Section):
    direction: Literal["in", "out"] = Field(
        default="in", description="Entrance kiosk (in) or exit kiosk (out)."
    )
    debounce_s: float = Field(
        default=3.0, gt=0, le=60, description="The same code within this many seconds is one scan."
    )


class RenewalSettings(Section):
    """Certificate renewal by the running kiosk (at start, then every ``check_interval_s``)."""

    within_days: float = Field(
        default=DEFAULT_RENEW_DAYS,
        gt=0,
        description="Renew the MQTT certificate when it expires within this many days (at most a third of "
        "its lifetime, the hub's enrolment.cert_days: 90 by default).",
    )
    check_interval_s: float = Field(
        default=24 * 3600.0, gt=0, description="How often the running kiosk checks its certificate's expiry."
    )
    retry_interval_s: float = Field(
        default=3600.0,
        gt=0,
        description="After a failed renewal (hub unreachable, answer lost) try again this much later.",
    )


class KioskConfig(Section):
    kiosk_id: str = Field(
        description="This kiosk's id, as enrolled (3-64 lowercase letters, digits, dashes)."
    )
    venue_id: str = Field(description="The venue this kiosk stands at.")
    mqtt: MqttSettings = Field(default_factory=MqttSettings)
    outbox: OutboxSettings = Field(default_factory=OutboxSettings)
    sync: SyncSettings = Field(default_factory=SyncSettings)
    sample: SampleSettings = Field(default_factory=SampleSettings)
    camera: CameraSettings = Field(default_factory=CameraSettings)
    scan: ScanSettings = Field(default_factory=ScanSettings)
    gpio: GpioSettings = Field(default_factory=GpioSettings)
    renewal: RenewalSettings = Field(default_factory=RenewalSettings)
    hub_public_key: str | None = Field(
        default=None,
        description="Hub X25519 public key (base64) that ID-card identities are sealed to; set at enrolment.",
    )

    @field_validator("hub_public_key")
    @classmethod
    def _key(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                raw = base64.b64decode(value, validate=True)
            except binascii.Error:
                raise ValueError("not base64") from None
            if len(raw) != 32:
                raise ValueError("an X25519 public key is 32 bytes")
        return value

    def hub_key_bytes(self) -> bytes | None:
        return None if self.hub_public_key is None else base64.b64decode(self.hub_public_key)

    @field_validator("kiosk_id")
    @classmethod
    def _kiosk_id(cls, value: str) -> str:
        if not is_valid_kiosk_id(value):
            raise ValueError("use 3-64 lowercase letters, digits or dashes, starting with a letter or digit")
        return value


def load(path: Path | None = None, environ=None) -> KioskConfig:
    """Load the kiosk configuration; raises ``protocol.settings.ConfigError`` with a clear message."""
    return load_config(KioskConfig, path, env_prefix=ENV_PREFIX, environ=environ)
