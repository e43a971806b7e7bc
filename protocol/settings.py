"""Typed configuration loading shared by every process, and the MQTT connection settings.

A process reads one TOML file (optional) and then environment variables named
``<PREFIX>__<SECTION>__<FIELD>`` (for example ``ANTOAN_HUB__MQTT__PORT=1884``), which win over the
file. Secrets (passwords, keys) belong in the environment, or in a file (``/run/secrets/…``) named by a
variable ending in ``_FILE`` (``ANTOAN_HUB__WEB__SECRET_KEY_FILE``), never in the TOML file.
Unknown keys are errors, so a typo fails at start-up with the key's path in the message.
"""

from __future__ import annotations

import os
import time
import tomllib
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar, get_args

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

_M = TypeVar("_M", bound=BaseModel)


class ConfigError(Exception):
    """The configuration cannot be used; the message says which setting and what to do."""


class Section(BaseModel):
    """Base of every configuration section: strict, no unknown keys."""

    model_config = ConfigDict(extra="forbid", validate_default=True)


class TlsSettings(Section):
    ca_file: Path = Field(description="CA certificate that signed the broker's certificate.")
    cert_file: Path | None = Field(default=None, description="This client's certificate (PEM).")
    key_file: Path | None = Field(default=None, description="This client's private key (PEM).")

    @model_validator(mode="after")
    def _pair(self) -> TlsSettings:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file must be given together")
        return self


class MqttSettings(Section):
    host: str = Field(default="127.0.0.1", description="Broker host name or address.")
    port: int = Field(default=1883, ge=1, le=65535, description="Broker port.")
    username: str | None = Field(default=None, description="Broker user name, when not using certificates.")
    password: SecretStr | None = Field(
        default=None, description="Broker password; set it through the environment."
    )
    keepalive_s: int = Field(default=30, ge=5, le=3600, description="MQTT keep-alive interval.")
    tls: TlsSettings | None = Field(default=None, description="TLS settings; none means plain TCP.")
    reconnect_max_delay_s: int = Field(
        default=10, ge=1, le=600, description="Longest wait between reconnection attempts (doubles from 1 s)."
    )


def _set_path(tree: dict[str, Any], path: list[str], value: str) -> None:
    node = tree
    for key in path[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"environment sets {'.'.join(path)} but {key} is not a section")
        node = child
    node[path[-1]] = value


def _format_errors(exc: ValidationError, source: str) -> str:
    lines = [f"invalid configuration ({source}):"]
    for err in exc.errors(include_url=False):
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = "unknown setting (check the spelling)" if err["type"] == "extra_forbidden" else err["msg"]
        lines.append(f"  {loc}: {msg}")
    return "\n".join(lines)


def _section_type(annotation: Any) -> type[BaseModel] | None:
    """The configuration section class in a field's annotation (``Section``, ``Section | None``)."""
    for candidate in (annotation, *get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _has_field(model: type[BaseModel], parts: list[str]) -> bool:
    """Whether ``parts`` (section names, then a field) names a setting of ``model``."""
    current: type[BaseModel] | None = model
    for part in parts:
        if current is None or part not in current.model_fields:
            return False
        current = _section_type(current.model_fields[part].annotation)
    return True


def load_config(
    model: type[_M],
    path: Path | None,
    *,
    env_prefix: str,
    environ: Mapping[str, str] | None = None,
) -> _M:
    """Read ``path`` (TOML, optional) and ``<env_prefix>__…`` variables into ``model``.

    Raises :class:`ConfigError` with one line per problem.
    """
    environ = os.environ if environ is None else environ
    data: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"configuration file {path} not found") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"configuration file {path} is not valid TOML: {exc}") from None
        source = str(path)
    marker = env_prefix + "__"
    env_keys = sorted(k for k in environ if k.startswith(marker))
    for key in env_keys:
        path_parts = key[len(marker) :].lower().split("__")
        value = environ[key]
        if path_parts[-1].endswith("_file") and not _has_field(model, path_parts):
            # ANTOAN_HUB__WEB__SECRET_KEY_FILE=/run/secrets/web_key sets web.secret_key from that file
            # (a setting whose own name ends in _file, such as mqtt.tls.ca_file, is set directly).
            path_parts[-1] = path_parts[-1].removesuffix("_file")
            try:
                value = Path(value).read_text(encoding="utf-8").rstrip("\n")
            except OSError as exc:
                raise ConfigError(f"{key}: cannot read the secret file {value}: {exc.strerror}") from None
        _set_path(data, path_parts, value)
    if env_keys:
        source += " + environment"
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, source)) from None


def mqtt_client(settings: MqttSettings, *, client_id: str, **kwargs: Any):
    """A paho-mqtt 2.x MQTT v5 client configured from ``settings`` (not yet connected)."""
    import paho.mqtt.client as mqtt

    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5, **kwargs
    )
    if settings.username:
        password = settings.password.get_secret_value() if settings.password else None
        client.username_pw_set(settings.username, password)
    if settings.tls is not None:
        client.tls_set(
            ca_certs=str(settings.tls.ca_file),
            certfile=str(settings.tls.cert_file) if settings.tls.cert_file else None,
            keyfile=str(settings.tls.key_file) if settings.tls.key_file else None,
        )
    return client


def probe_broker(settings: MqttSettings, *, timeout_s: float = 2.0) -> str | None:
    """Connect once and disconnect. Returns None when the broker accepted us, else the reason."""

    result: dict[str, str | None] = {}

    def on_connect(client, userdata, flags, reason_code, properties):
        result["rc"] = None if not reason_code.is_failure else str(reason_code)

    client = mqtt_client(settings, client_id=f"antoan-probe-{uuid.uuid4().hex[:12]}")
    client.on_connect = on_connect
    try:
        client.connect(settings.host, settings.port, keepalive=max(5, int(timeout_s) + 5))
    except OSError as exc:
        return f"cannot reach {settings.host}:{settings.port}: {exc}"
    try:
        deadline = time.monotonic() + timeout_s
        while "rc" not in result and time.monotonic() < deadline:
            client.loop(timeout=0.1)
        if "rc" not in result:
            return f"no answer from {settings.host}:{settings.port} within {timeout_s:g} s"
        return result["rc"]
    finally:
        client.disconnect()


def connect_persistent(
    client, settings: MqttSettings, *, session_expiry_s: int, receive_maximum: int | None = None
) -> None:
    """Start a background connection with a persistent MQTT v5 session, reconnecting for ever.

    ``clean_start=False`` alone is not enough in MQTT v5: without a session expiry interval the
    broker drops the session at disconnect, and with it the QoS 1 messages queued for this client.
    """
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    client.reconnect_delay_set(min_delay=1, max_delay=settings.reconnect_max_delay_s)
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = session_expiry_s
    if receive_maximum is not None:
        props.ReceiveMaximum = receive_maximum
    client.connect_async(
        settings.host, settings.port, keepalive=settings.keepalive_s, clean_start=False, properties=props
    )
    client.loop_start()
