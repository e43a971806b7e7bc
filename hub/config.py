"""The hub's typed configuration: one TOML file plus ``ANTOAN_HUB__…`` environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from hub.tracing_rules import TracingRules
from protocol.messages import MAX_PAYLOAD_BYTES
from protocol.settings import MqttSettings, Section, TlsSettings, load_config

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
    list_poll_s: float = Field(
        default=2.0,
        gt=0,
        le=300,
        description="How often the bridge checks whether the trust or status list changed, to republish it.",
    )
    lists_tls: TlsSettings | None = Field(
        default=None,
        description=(
            "TLS client certificate of the list publisher (its own broker identity, e.g. CN "
            "antoan-bridge-lists); none: it uses mqtt.tls like the ingest connection."
        ),
    )


class WebSettings(Section):
    host: str = Field(default="127.0.0.1", description="Address the web server listens on.")
    port: int = Field(default=8080, ge=1, le=65535, description="Port the web server listens on.")
    secret_key: SecretStr | None = Field(
        default=None,
        description="Session signing key; set ANTOAN_HUB__WEB__SECRET_KEY. A random one is made if unset.",
    )
    session_minutes: int = Field(
        default=30, ge=1, le=24 * 60, description="Staff sessions end after this many idle minutes."
    )
    cookie_secure: bool = Field(
        default=False,
        description="Send cookies over HTTPS only; turn on behind a TLS proxy (off for the local demo).",
    )
    rate_limit_storage: str = Field(
        default="memory://",
        description="Flask-Limiter storage URI; memory:// counts per worker process, redis://… is shared.",
    )
    public_form_rate: str = Field(
        default="30 per minute;300 per hour", description="Rate limit per address on public forms."
    )
    login_rate: str = Field(
        default="10 per minute;50 per hour", description="Rate limit per address on login."
    )
    trust_proxy: int = Field(
        default=0, ge=0, le=5, description="Proxies in front of the hub whose X-Forwarded-For is trusted."
    )
    broker_probe_tls: TlsSettings | None = Field(
        default=None,
        description=(
            "TLS client certificate /healthz uses to probe the broker (its own identity with no rights, "
            "e.g. CN antoan-web); none: it uses mqtt.tls."
        ),
    )
    tls_cert: Path | None = Field(
        default=None,
        description="Serve HTTPS with this certificate (PEM) in `antoan-hub web`; production: a proxy.",
    )
    tls_key: Path | None = Field(default=None, description="The private key of web.tls_cert.")

    @model_validator(mode="after")
    def _tls_pair(self) -> WebSettings:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key must be given together")
        return self


class PassSettings(Section):
    issuer: str = Field(
        default="antoan-hub", min_length=1, max_length=64, description="Issuer in every pass."
    )
    validity_days: int = Field(default=14, ge=1, le=366, description="How long a health pass is valid.")
    key_alg: Literal["ES256", "EdDSA"] = Field(default="ES256", description="Algorithm of new signing keys.")
    key_passphrase: SecretStr | None = Field(
        default=None,
        description=(
            "Encrypts signing keys at rest; set ANTOAN_HUB__PASSES__KEY_PASSPHRASE_FILE. "
            "Without it keys are stored unencrypted in the database (the demo)."
        ),
    )


class RetentionSettings(Section):
    declaration_days: int = Field(
        default=60, ge=1, description="Declarations and their passes older than this are purged."
    )
    audit_days: int = Field(default=365, ge=30, description="Audit log entries older than this are purged.")
    presence_days: int = Field(
        default=30,
        ge=1,
        description=(
            "Presence data (visits, check-in and check-out events) that ended longer ago than this is "
            "purged; keep it above tracing.lookback_days + tracing.f2_window_days (14 + 7 by default) so "
            "tracing sees a whole window."
        ),
    )
    purge_interval_s: int = Field(
        default=3600, ge=0, description="How often the bridge runs the purge; 0 turns the schedule off."
    )


class EnrolmentSettings(Section):
    ca_dir: Path = Field(
        default=Path("var/hub/ca"),
        description="The hub CA folder (antoan-provision ca init); its key passphrase: ANTOAN_CA_PASSPHRASE.",
    )
    broker_host: str | None = Field(
        default=None, description="Broker address enrolled kiosks use; default: mqtt.host."
    )
    broker_port: int = Field(default=8883, ge=1, le=65535, description="The broker's TLS port for kiosks.")
    cert_days: int = Field(default=90, ge=1, le=825, description="Validity of kiosk certificates.")


class NotifySettings(Section):
    webhook_url: str | None = Field(
        default=None,
        description=(
            "Where notices to contacts are POSTed (an SMS gateway's webhook, http:// or https://); "
            "none: notifications are off."
        ),
    )
    webhook_secret: SecretStr | None = Field(
        default=None,
        description=(
            "Key of the HMAC-SHA256 signature of every webhook request; set "
            "ANTOAN_HUB__NOTIFY__WEBHOOK_SECRET(_FILE). Required with webhook_url."
        ),
    )
    ca_file: Path | None = Field(
        default=None,
        description="CA certificate (PEM) the gateway's HTTPS certificate chains to; default: system.",
    )
    status_url: str | None = Field(
        default=None,
        description="Address of the citizen status page put in each notice, e.g. https://hub.example.vn/tinh-trang.",
    )
    timeout_s: float = Field(default=10.0, gt=0, le=120, description="Time limit of one webhook request.")
    max_attempts: int = Field(
        default=8, ge=1, le=100, description="Requests per notice before it is marked failed."
    )
    backoff_base_s: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        description="Wait after the first failure; doubles each retry (with jitter).",
    )
    backoff_max_s: float = Field(default=3600.0, gt=0, le=86400, description="Longest wait between retries.")
    lease_s: float = Field(
        default=120.0,
        gt=0,
        le=3600,
        description="A notice claimed by a sender that crashed is retried after this; longer than timeout_s.",
    )
    hold_above: int = Field(
        default=500,
        ge=0,
        description=(
            "Circuit breaker: when one pass would notify more people than this for one case, the notices "
            "are held until a health official releases them."
        ),
    )
    batch_size: int = Field(default=100, ge=1, le=10_000, description="Notices claimed per round.")
    interval_s: float = Field(
        default=30.0, gt=0, le=3600, description="How often the notifier looks for work."
    )

    @field_validator("webhook_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("use an http:// or https:// URL")
        return value

    @model_validator(mode="after")
    def _secret_and_lease(self) -> NotifySettings:
        if self.webhook_url is not None and self.webhook_secret is None:
            raise ValueError("webhook_url needs webhook_secret (ANTOAN_HUB__NOTIFY__WEBHOOK_SECRET_FILE)")
        if self.lease_s <= self.timeout_s:
            raise ValueError("lease_s must be longer than timeout_s (else a slow request is sent twice)")
        if self.backoff_max_s < self.backoff_base_s:
            raise ValueError("backoff_max_s must be at least backoff_base_s")
        return self


class HubConfig(Section):
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    mqtt: MqttSettings = Field(default_factory=MqttSettings)
    bridge: BridgeSettings = Field(default_factory=BridgeSettings)
    web: WebSettings = Field(default_factory=WebSettings)
    passes: PassSettings = Field(default_factory=PassSettings)
    retention: RetentionSettings = Field(default_factory=RetentionSettings)
    enrolment: EnrolmentSettings = Field(default_factory=EnrolmentSettings)
    tracing: TracingRules = Field(default_factory=TracingRules)
    notify: NotifySettings = Field(default_factory=NotifySettings)


def load(path: Path | None = None, environ=None) -> HubConfig:
    """Load the hub configuration; raises ``protocol.settings.ConfigError`` with a clear message."""
    return load_config(HubConfig, path, env_prefix=ENV_PREFIX, environ=environ)
