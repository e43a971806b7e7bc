"""Downlink: publish the trust list and the status list as retained MQTT messages whenever they change.

The bridge process runs one :class:`ListPublisher`. It polls the ``list_versions`` table (one small
query) every few seconds and publishes a list whose version moved, retained at QoS 1 on the broadcast
topics, so a kiosk that connects later gets the current lists from the broker. The status list goes out
as its 32 shards (``antoan/v1/broadcast/status/<c>``), because one message would pass the broker's
``message_size_limit`` for a large case's F2 and the broker would drop it while the publish call still
succeeded; a shard over the limit is not sent and is logged as an error. On every (re)connect it
publishes both lists again, so a broker that lost its retained store, or a publish cut short by a
disconnect, is put right. Database and MQTT work happen on the publisher's own thread; paho's
callbacks only set flags.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime

import paho.mqtt.client as mqtt
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from hub.keys import STATUS, TRUST, KeyRing, list_versions_now
from hub.passes import status_list
from protocol import topics
from protocol.settings import MqttSettings, mqtt_client

log = logging.getLogger(__name__)

#: Seconds between two looks at ``list_versions`` (a bridge setting once hub/config.py has one).
POLL_INTERVAL_S = 2.0


def _utc_now() -> datetime:
    return datetime.now(UTC)


class ListPublisher:
    """Publishes the hub's trust and status lists, retained, whenever their version changes."""

    def __init__(
        self,
        *,
        engine: Engine,
        keyring: KeyRing,
        mqtt_settings: MqttSettings,
        client_id: str,
        poll_interval_s: float = POLL_INTERVAL_S,
        clock: Callable[[], datetime] = _utc_now,
    ):
        if poll_interval_s <= 0:
            raise ValueError(f"poll_interval_s must be positive, got {poll_interval_s}")
        self._engine = engine
        self._keyring = keyring
        self._mqtt_settings = mqtt_settings
        self._client_id = client_id
        self._poll_interval_s = poll_interval_s
        self._clock = clock
        self._client: mqtt.Client | None = None
        self._worker: threading.Thread | None = None
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self._connected = threading.Event()
        self._republish = threading.Event()
        #: Version of each list last handed to the broker (diagnostics and tests).
        self.published: dict[str, int] = {}

    def start(self) -> None:
        """Make sure a signing key exists (the trust list is never empty), connect, start polling.

        Raises :class:`hub.keys.KeyRingError` when the stored key cannot be used (e.g. wrong passphrase).
        """
        kid, _ = self._keyring.signing_key(self._clock())
        log.info("active signing key %s", kid)
        client = mqtt_client(self._mqtt_settings, client_id=self._client_id)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.reconnect_delay_set(min_delay=1, max_delay=self._mqtt_settings.reconnect_max_delay_s)
        self._client = client
        self._worker = threading.Thread(target=self._run, name="bridge-downlink", daemon=True)
        self._worker.start()
        client.connect_async(
            self._mqtt_settings.host, self._mqtt_settings.port, keepalive=self._mqtt_settings.keepalive_s
        )
        client.loop_start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop polling and disconnect (the retained lists stay with the broker)."""
        self._stopping.set()
        self._wake.set()
        if self._worker is not None:
            self._worker.join(timeout_s)
        if self._client is not None:
            self._client.disconnect()
            self._client.loop_stop()

    # ----- paho callbacks (network thread): flags only ---------------------------------------------

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            log.error("broker refused the list publisher: %s (will retry)", reason_code)
            return
        self._connected.set()
        self._republish.set()
        self._wake.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        self._connected.clear()
        if not self._stopping.is_set():
            log.warning("list publisher disconnected: %s", reason_code)

    def _on_publish(self, client, userdata, mid, reason_code, properties):
        if reason_code.is_failure:
            log.error("broker refused a list publication: %s; publishing the lists again", reason_code)
            self._republish.set()

    # ----- worker thread ---------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait(self._poll_interval_s)
            self._wake.clear()
            if self._stopping.is_set() or not self._connected.is_set():
                continue
            try:
                self.publish_changes()
            except SQLAlchemyError as exc:
                log.error(
                    "cannot read the lists (%s); retrying in %.1f s",
                    getattr(exc, "orig", exc),
                    self._poll_interval_s,
                )
            except Exception:
                # Never die: the next poll tries again, and the kiosks keep their cached lists meanwhile.
                log.exception("publishing the lists failed; retrying in %.1f s", self._poll_interval_s)

    def publish_changes(self) -> list[str]:
        """Publish every list whose version moved (all of them after a reconnect); returns their names."""
        force = self._republish.is_set()
        self._republish.clear()
        try:
            return self._publish(force)
        except Exception:
            if force:
                self._republish.set()  # the reconnect's full publication is still owed
            raise

    def _publish(self, force: bool) -> list[str]:
        with self._engine.connect() as conn:
            versions = list_versions_now(conn)
        due = [name for name in (TRUST, STATUS) if force or self.published.get(name) != versions[name]]
        if not due:
            return []
        now = self._clock()
        done: list[str] = []
        for name in due:
            if name == TRUST:
                listed = self._keyring.trust_list(now)
                messages = [(topics.BROADCAST_TRUST, listed.to_json(), len(listed))]
            else:
                with self._engine.connect() as conn:
                    listed = status_list(conn, now)
                messages = [
                    (topics.status_shard(shard.shard), shard.to_json(), len(shard))
                    for shard in listed.shards()
                ]
            if self._send(name, listed.version, messages):
                self.published[name] = listed.version
                done.append(name)
                log.info("%s list v%d published (%d entries)", name, listed.version, len(listed))
        return done

    def _send(self, name: str, version: int, messages: list[tuple[str, bytes, int]]) -> bool:
        """Publish each (topic, payload, entries) retained; False when one could not be handed to the client.

        A message over the broker's limit is skipped with an error rather than sent to be dropped: sending
        it again would not help, and the other messages (shards) still reach the kiosks.
        """
        sent_all = True
        for topic, payload, entries in messages:
            if len(payload) > topics.MAX_MESSAGE_BYTES:
                log.error(
                    "%s list v%d: %s not sent: %d bytes (%d entries) over the broker's limit of %d bytes",
                    name,
                    version,
                    topic,
                    len(payload),
                    entries,
                    topics.MAX_MESSAGE_BYTES,
                )
                continue
            info = self._client.publish(topic, payload, qos=1, retain=True)
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                log.warning(
                    "%s list v%d: %s not sent (%s); will retry",
                    name,
                    version,
                    topic,
                    mqtt.error_string(info.rc),
                )
                self._republish.set()
                sent_all = False
        return sent_all
