"""A paho-mqtt v5 test client over TLS that records what happens to it, for polling with a deadline."""

from __future__ import annotations

import ssl
import threading
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties


@dataclass
class Record:
    """Everything the broker told one client (appended from paho's network thread)."""

    connacks: list[mqtt.ReasonCode] = field(default_factory=list)
    disconnects: list[mqtt.ReasonCode] = field(default_factory=list)
    pubacks: dict[int, mqtt.ReasonCode] = field(default_factory=dict)
    subacks: dict[int, list[mqtt.ReasonCode]] = field(default_factory=dict)
    messages: list[tuple[str, bytes]] = field(default_factory=list)
    assigned_client_id: str | None = None


class TlsClient:
    """One MQTT v5 client with a client certificate (or none), started with :meth:`start`."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        ca_file: Path,
        cert_file: Path | None = None,
        key_file: Path | None = None,
        client_id: str = "",
        clean_start: bool = True,
        session_expiry_s: int = 0,
    ):
        self.host, self.port = host, port
        self.record = Record()
        self.lock = threading.Lock()
        self.connected = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        self.client.tls_set(
            ca_certs=str(ca_file),
            certfile=str(cert_file) if cert_file else None,
            keyfile=str(key_file) if key_file else None,
            tls_version=ssl.PROTOCOL_TLS_CLIENT,
        )
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = self._on_publish
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        self._clean_start = clean_start
        self._session_expiry_s = session_expiry_s
        self.handshake_error: Exception | None = None

    # paho callbacks (network thread): record only.
    def _on_connect(self, client, userdata, flags, reason_code, properties):
        with self.lock:
            self.record.connacks.append(reason_code)
            if properties is not None and hasattr(properties, "AssignedClientIdentifier"):
                self.record.assigned_client_id = properties.AssignedClientIdentifier
        if not reason_code.is_failure:
            self.connected.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        self.connected.clear()
        with self.lock:
            self.record.disconnects.append(reason_code)

    def _on_publish(self, client, userdata, mid, reason_code, properties):
        with self.lock:
            self.record.pubacks[mid] = reason_code

    def _on_subscribe(self, client, userdata, mid, reason_code_list, properties):
        with self.lock:
            self.record.subacks[mid] = list(reason_code_list)

    def _on_message(self, client, userdata, message):
        with self.lock:
            self.record.messages.append((message.topic, message.payload))

    def start(self) -> TlsClient:
        """Connect in the background. A refused TLS handshake shows as ``handshake_error``."""
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self._session_expiry_s
        # paho's network thread reconnects by itself, as a kiosk does; each refused retry is recorded.
        self.client.reconnect_delay_set(min_delay=1, max_delay=1)
        try:
            self.client.connect(
                self.host, self.port, keepalive=10, clean_start=self._clean_start, properties=props
            )
        except (ssl.SSLError, OSError) as exc:
            self.handshake_error = exc
            return self
        self.client.loop_start()
        return self

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def publish(self, topic: str, payload: bytes = b"x", *, qos: int = 1) -> int:
        return self.client.publish(topic, payload, qos=qos).mid

    def subscribe(self, topic_filter: str, *, qos: int = 1) -> int:
        _, mid = self.client.subscribe(topic_filter, qos=qos)
        return mid

    def messages(self, topic: str | None = None) -> list[tuple[str, bytes]]:
        with self.lock:
            return [m for m in self.record.messages if topic is None or m[0] == topic]
