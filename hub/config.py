"""The hub's typed configuration: one TOML file plus ``ANTOAN_HUB__…`` environment variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, field_validator

from protocol.messages import MAX_PAYLOAD_BYTES
from protocol.settings import MqttSettings, Section, load_config

ENV_PREFIX = "ANTOAN_HUB"


class DatabaseSettings(Section):
    url: str = Field(
        default="sqlite:///var/hub/hub.db",
        description="SQLAlchemy URL: sqlite:///path (default) or postgresql+psycopg://user@host/db.",
    )

    @field_validator("url")
    @classmethod
    def _known_backend(cls, value: str) -> str:
        if not value.startswith(("sqlite://", "postgresql://", "postgresql+psycopg://")):
            raise ValueError("use a sqlite:/// or postgresql+psycopg:// URL")
        if value.startswith("postgresql://"):
            value = "postgresql+psycopg://" + value[len("postgresql://") :]
        return value


class BridgeSettings(Section):
    client_id: str = Field(default="antoan-bridge", description="MQTT client id of this bridge worker.")
    shared_group: str | None = Field(
        default=None,
        description="Subscribe through $share/<group>/… so several bridge workers split the kiosks.",
    )
    session_expiry_s: int = Field(
        default=7 * 24 * 3600, ge=0, description="How long the broker keeps this bridge's session."
    )
    receive_maximum: int = Field(
        default=200, ge=1, le=65535, description="Messages the broker may have in flight to the bridge."
    )
    commit_max_messages: int = Field(
        default=200, ge=1, description="Most messages committed in one database transaction."
    )
    max_payload_bytes: int = Field(
        default=MAX_PAYLOAD_BYTES, ge=1024, description="Larger events messages go to the dead letters."
    )


class WebSettings(Section):
    host: str = Field(default="127.0.0.1", description="Address the web server listens on.")
    port: int = Field(default=8080, ge=1, le=65535, description="Port the web server listens on.")
    secret_key: SecretStr | None = Field(
        default=None,
        description="Session signing key; set ANTOAN_HUB__WEB__SECRET_KEY. A random one is made if unset.",
    )


class HubConfig(Section):
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    mqtt: MqttSettings = Field(default_factory=MqttSettings)
    bridge: BridgeSettings = Field(default_factory=BridgeSettings)
    web: WebSettings = Field(default_factory=WebSettings)


def load(path: Path | None = None, environ=None) -> HubConfig:
    """Load the hub configuration; raises ``protocol.settings.ConfigError`` with a clear message."""
    return load_config(HubConfig, path, env_prefix=ENV_PREFIX, environ=environ)
