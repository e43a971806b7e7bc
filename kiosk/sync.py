"""Kiosk → hub sync over MQTT v5: sends unacknowledged outbox events and marks them acked on the hub's ack.

Delivery rules (DESIGN.md): events leave the outbox only when the hub's application ack names them;
anything unacked is sent again after a reconnect or an ack timeout (the hub stores each
(kiosk, epoch, seq) once, so repeats are harmless). paho's callbacks only hand items to a queue;
one worker thread does all outbox and publish work.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import paho.mqtt.client as mqtt

from kiosk.config import SyncSettings
from kiosk.outbox import Outbox
from protocol import topics
from protocol.messages import (
    BATCH_ENVELOPE_BYTES,
    KioskState,
    MessageError,
    batch_payload,
    encode,
    parse_ack,
    ranges_cover,
    seq_ranges,
)
from protocol.settings import MqttSettings, connect_persistent, mqtt_client

log = logging.getLogger(__name__)

_PRUNE_INTERVAL_S = 3600.0
_MAX_WAIT_S = 1.0


@dataclass(slots=True)
class _Inflight:
    ranges: list[tuple[int, int]]
    sent_at: float


@dataclass(slots=True)
class SyncStats:
    batches_sent: int = 0
    events_sent: int = 0
    events_acked: int = 0
    resends: int = 0
    connects: int = 0


class Sync:
    """Moves outbox events to the hub and keeps the kiosk's retained state current."""

    def __init__(
        self,
        *,
        outbox: Outbox,
        kiosk_id: str,
        mqtt_settings: MqttSettings,
        settings: SyncSettings,
        version: str,
        prune_acked_after_s: float,
        list_ages: Callable[[], dict[str, float | None]] | None = None,
        downlink: Callable[[str, bytes], object] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ):
        self._outbox = outbox
        self._kiosk_id = kiosk_id
        self._mqtt_settings = mqtt_settings
        self._settings = settings
        self._version = version
        self._prune_after_s = prune_acked_after_s
        self._list_ages = list_ages or dict
        self._downlink = downlink
        self._mono = monotonic
        self._events_topic = topics.events(kiosk_id)
        self._ack_topic = topics.ack(kiosk_id)
        self._state_topic = topics.state(kiosk_id)
        self._queue: queue.SimpleQueue[tuple] = queue.SimpleQueue()
        self._stopping = threading.Event()
        self._worker: threading.Thread | None = None
        self._client: mqtt.Client | None = None
        # Worker-thread state only:
        self._connected = False
        self._inflight: list[_Inflight] = []
        self._cursor = 0
        self._linger: tuple[int, float] | None = None
        self._next_state = 0.0
        self._next_prune = 0.0
        self.stats = SyncStats()
        self.connected_event = threading.Event()

    # ----- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        """Connect in the background (reconnecting for ever) and start the worker."""
        client = mqtt_client(self._mqtt_settings, client_id=self._kiosk_id)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_publish = self._on_publish
        client.max_inflight_messages_set(self._settings.max_inflight_batches + 4)
        client.will_set(self._state_topic, self._state_payload("offline"), qos=1, retain=True)
        self._client = client
        connect_persistent(client, self._mqtt_settings, session_expiry_s=self._settings.session_expiry_s)
        self._worker = threading.Thread(target=self._run, name="kiosk-sync", daemon=True)
        self._worker.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Say ``offline`` (retained), disconnect cleanly and join the threads."""
        self._stopping.set()
        self._queue.put(("wake",))
        if self._worker is not None:
            self._worker.join(timeout_s)
        client = self._client
        if client is not None:
            if client.is_connected():
                info = client.publish(self._state_topic, self._state_payload("offline"), qos=1, retain=True)
                try:
                    info.wait_for_publish(timeout=min(2.0, timeout_s))
                except (RuntimeError, ValueError):
                    log.warning("could not send the offline state before stopping")
            client.disconnect()
            client.loop_stop()

    def notify(self) -> None:
        """Tell the worker that new events are in the outbox (called by the outbox after each append)."""
        self._queue.put(("wake",))

    # ----- paho callbacks (network thread): hand over only -----------------------------------------

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            log.error("broker refused the connection: %s (will retry)", reason_code)
            return
        subscriptions = [(self._ack_topic, 1)]
        if self._downlink is not None:
            subscriptions += [(topics.BROADCAST_TRUST, 1), (topics.BROADCAST_STATUS_SHARDS, 1)]
        client.subscribe(subscriptions)
        self._queue.put(("connected", flags.session_present))

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        self._queue.put(("disconnected", str(reason_code)))

    def _on_message(self, client, userdata, message):
        self._queue.put(("message", message.topic, message.payload))

    def _on_publish(self, client, userdata, mid, reason_code, properties):
        if reason_code.is_failure:
            self._queue.put(("publish_failed", str(reason_code)))

    # ----- worker thread ---------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                item = self._queue.get(timeout=self._wait_s())
            except queue.Empty:
                item = None
            try:
                while item is not None:
                    self._handle(item)
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        item = None
                if not self._stopping.is_set():
                    self._pump()
                    self._housekeeping()
            except Exception:
                # The outbox keeps everything; log and carry on rather than stop syncing for good.
                log.exception("sync step failed; retrying")
                self._stopping.wait(1.0)

    def _wait_s(self) -> float:
        now = self._mono()
        due = [self._next_prune]
        # State, linger and ack deadlines only matter while connected; offline, the worker must sleep
        # until a connection or an event arrives instead of spinning on a deadline it cannot act on.
        if self._connected:
            due.append(self._next_state)
            if self._linger is not None:
                due.append(self._linger[1])
            if self._inflight:
                due.append(min(b.sent_at for b in self._inflight) + self._settings.ack_timeout_s)
        return min(_MAX_WAIT_S, max(0.0, min(due) - now))

    def _handle(self, item: tuple) -> None:
        kind = item[0]
        if kind == "connected":
            self._connected = True
            self.stats.connects += 1
            # Whatever was in flight may be lost with the old connection: start over from the oldest.
            self._inflight.clear()
            self._cursor = 0
            self._next_state = 0.0
            self.connected_event.set()
            log.info("connected to the broker (session present: %s)", item[1])
        elif kind == "disconnected":
            if self._connected:
                log.warning("disconnected from the broker: %s", item[1])
            self._connected = False
            self.connected_event.clear()
        elif kind == "message":
            if item[1] == self._ack_topic:
                self._handle_ack(item[2])
            elif self._downlink is not None:
                self._downlink(item[1], item[2])
        elif kind == "publish_failed":
            log.warning("broker rejected a publish: %s; unacked events will be resent", item[1])

    def _handle_ack(self, payload: bytes) -> None:
        try:
            ack = parse_ack(payload)
        except MessageError as exc:
            log.warning("ignoring a malformed ack: %s", exc.reason)
            return
        if ack.epoch != self._outbox.epoch:
            log.warning("ignoring an ack for another outbox epoch")
            return
        ranges = [tuple(r) for r in ack.ranges]
        self.stats.events_acked += self._outbox.mark_acked(ranges)
        self._inflight = [b for b in self._inflight if not ranges_cover(ranges, b.ranges)]

    def _pump(self) -> None:
        if not self._connected:
            return
        now = self._mono()
        if self._inflight and min(b.sent_at for b in self._inflight) + self._settings.ack_timeout_s <= now:
            self.stats.resends += 1
            log.warning(
                "no ack for %d batch(es) within %.0f s; resending unacked events",
                len(self._inflight),
                self._settings.ack_timeout_s,
            )
            self._inflight.clear()
            self._cursor = 0
        s = self._settings
        while len(self._inflight) < s.max_inflight_batches:
            rows = self._outbox.pending(
                after_seq=self._cursor, limit=s.batch_size, max_bytes=s.max_batch_bytes - BATCH_ENVELOPE_BYTES
            )
            if not rows:
                self._linger = None
                return
            if len(rows) < s.batch_size and s.linger_ms and not self._linger_done(rows[0].seq, now):
                return
            self._linger = None
            payload = batch_payload(self._kiosk_id, self._outbox.epoch, (r.wire for r in rows))
            info = self._client.publish(self._events_topic, payload, qos=1)
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                log.warning("publish failed (%s); will retry", mqtt.error_string(info.rc))
                return
            self._inflight.append(_Inflight(seq_ranges(r.seq for r in rows), now))
            self._cursor = rows[-1].seq
            self.stats.batches_sent += 1
            self.stats.events_sent += len(rows)

    def _linger_done(self, first_seq: int, now: float) -> bool:
        # A part batch waits linger_ms from when this worker first saw its first event (monotonic:
        # a Pi without RTC may step its wall clock at boot).
        if self._linger is None or self._linger[0] != first_seq:
            self._linger = (first_seq, now + self._settings.linger_ms / 1000)
        return now >= self._linger[1]

    def _housekeeping(self) -> None:
        now = self._mono()
        if self._connected and now >= self._next_state:
            self._client.publish(self._state_topic, self._state_payload("online"), qos=1, retain=True)
            self._next_state = now + self._settings.state_interval_s
        if now >= self._next_prune:
            pruned = self._outbox.prune_acked(self._prune_after_s)
            if pruned:
                log.info("pruned %d acknowledged events", pruned)
            self._next_prune = now + _PRUNE_INTERVAL_S

    def _state_payload(self, status: str) -> bytes:
        online = status == "online"
        return encode(
            KioskState(
                kiosk_id=self._kiosk_id,
                status=status,
                version=self._version,
                sent_at=datetime.now(UTC),
                outbox_depth=self._outbox.depth() if online else None,
                oldest_unacked_age_s=self._outbox.oldest_unacked_age() if online else None,
                list_ages_s=self._list_ages(),
            )
        )
