"""Ingest: validate kiosk messages, commit them idempotently, then ack to the kiosk, then ack to MQTT.

The order is the delivery guarantee (DESIGN.md): a kiosk hears "stored" only after the commit, and
the broker forgets a message only after that. Messages are committed in groups (one transaction
for up to ``commit_max_messages``) so a durable SQLite commit is shared by many batches. Bad input
goes to the dead letters and is acked; only a database outage holds messages back.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import paho.mqtt.client as mqtt
from sqlalchemy.exc import DBAPIError, OperationalError, SQLAlchemyError

from hub.config import BridgeSettings, HubConfig
from hub.db.store import DeadLetter, EventRow, HubStore, KioskStateRow
from hub.devices import revoked_kiosk_ids
from protocol import topics
from protocol.messages import Ack, MessageError, encode, parse_batch, parse_state, seq_ranges
from protocol.settings import MqttSettings, connect_persistent, mqtt_client

log = logging.getLogger(__name__)

_RETRY_MIN_S = 0.5
_RETRY_MAX_S = 30.0


@dataclass(slots=True)
class _Parsed:
    """What one MQTT message contributes to a commit."""

    topic: str
    payload: bytes
    events: list[EventRow] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    states: list[KioskStateRow] = field(default_factory=list)
    ack: tuple[str, str, list[tuple[int, int]]] | None = None


@dataclass(slots=True)
class BridgeStats:
    messages: int = 0
    events: int = 0
    dead_letters: int = 0
    commits: int = 0
    db_retries: int = 0


#: How often the bridge re-reads which kiosks are revoked.
REVOKED_REFRESH_S = 3.0
REVOKED_REASON = "revoked kiosk"


class RevokedKiosks:
    """The ids of revoked kiosks, re-read from ``devices.revoked_at`` at most every ``refresh_s``.

    Meant for the ingest thread (a test may poll it). A failed read keeps the last known set (the outage
    shows up in the commit that follows anyway)."""

    def __init__(
        self, engine, *, refresh_s: float = REVOKED_REFRESH_S, clock: Callable[[], float] = time.monotonic
    ):
        self._engine = engine
        self._refresh_s = refresh_s
        self._clock = clock
        self._ids: frozenset[str] = frozenset()
        self._read_at: float | None = None

    def current(self) -> frozenset[str]:
        now = self._clock()
        if self._read_at is None or now - self._read_at >= self._refresh_s:
            try:
                with self._engine.connect() as conn:
                    self._ids = frozenset(revoked_kiosk_ids(conn))
                self._read_at = now
            except SQLAlchemyError as exc:
                log.warning("cannot read revoked kiosks (%s); using the last known list", type(exc).__name__)
        return self._ids


class Bridge:
    """Subscribes to kiosk events and state and writes them to the hub database."""

    def __init__(
        self,
        *,
        store: HubStore,
        mqtt_settings: MqttSettings,
        settings: BridgeSettings,
        revoked_refresh_s: float = REVOKED_REFRESH_S,
    ):
        self._store = store
        self.revoked_kiosks = RevokedKiosks(store.engine, refresh_s=revoked_refresh_s)
        self._mqtt_settings = mqtt_settings
        self._settings = settings
        self._queue: queue.SimpleQueue[mqtt.MQTTMessage | None] = queue.SimpleQueue()
        self._stopping = threading.Event()
        self._client: mqtt.Client | None = None
        self._worker: threading.Thread | None = None
        self.stats = BridgeStats()
        self.subscribed = threading.Event()

    def start(self) -> None:
        client = mqtt_client(self._mqtt_settings, client_id=self._settings.client_id, manual_ack=True)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        client.max_inflight_messages_set(1000)
        self._client = client
        self._worker = threading.Thread(target=self._run, name="bridge-ingest", daemon=True)
        self._worker.start()
        connect_persistent(
            client,
            self._mqtt_settings,
            session_expiry_s=self._settings.session_expiry_s,
            receive_maximum=self._settings.receive_maximum,
        )

    def stop(self, timeout_s: float = 10.0) -> None:
        """Finish the group in hand, then disconnect; unacked messages stay with the broker."""
        self._stopping.set()
        self._queue.put(None)
        if self._worker is not None:
            self._worker.join(timeout_s)
        if self._client is not None:
            self._client.disconnect()
            self._client.loop_stop()

    # ----- paho callbacks (network thread): hand over only -----------------------------------------

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            log.error("broker refused the bridge: %s (will retry)", reason_code)
            return
        events_filter = topics.EVENTS_ALL
        if self._settings.shared_group:
            events_filter = topics.shared(events_filter, self._settings.shared_group)
        # State is not shared: retained messages are not delivered to shared subscriptions.
        client.subscribe([(events_filter, 1), (topics.STATE_ALL, 1)])
        log.info(
            "bridge connected (session present: %s), subscribed to %s", flags.session_present, events_filter
        )

    def _on_subscribe(self, client, userdata, mid, reason_code_list, properties):
        failed = [str(rc) for rc in reason_code_list if rc.is_failure]
        if failed:
            log.error("broker refused the bridge's subscriptions: %s", ", ".join(failed))
        else:
            self.subscribed.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        self.subscribed.clear()
        if not self._stopping.is_set():
            log.warning("bridge disconnected: %s", reason_code)

    def _on_message(self, client, userdata, message):
        self._queue.put(message)

    # ----- worker thread ---------------------------------------------------------------------------

    def _run(self) -> None:
        limit = self._settings.commit_max_messages
        while not self._stopping.is_set():
            try:
                first = self._queue.get(timeout=1.0)
            except queue.Empty:
                continue
            group = [] if first is None else [first]
            while len(group) < limit:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is not None:
                    group.append(more)
            if group:
                try:
                    self._ingest(group)
                except Exception:
                    # Never die on one group: its messages stay unacked and the broker redelivers
                    # them on reconnect; the kiosks also resend.
                    log.exception("ingest failed for %d message(s); they stay unacknowledged", len(group))

    def _ingest(self, group: list[mqtt.MQTTMessage]) -> None:
        revoked = self.revoked_kiosks.current()
        parsed = [self._parse(m, revoked) for m in group]
        if not self._commit_with_retry(parsed):
            return  # stopping: leave the group unacked
        for part in parsed:
            if part.ack is not None:
                kiosk_id, epoch, ranges = part.ack
                self._client.publish(topics.ack(kiosk_id), encode(Ack(epoch=epoch, ranges=ranges)), qos=1)
        for message in group:
            self._client.ack(message.mid, message.qos)
        self.stats.messages += len(group)
        self.stats.commits += 1

    def _parse(self, message: mqtt.MQTTMessage, revoked: frozenset[str] = frozenset()) -> _Parsed:
        payload = bytes(message.payload)
        out = _Parsed(topic=message.topic, payload=payload)

        def dead(reason: str, kiosk_id: str | None) -> _Parsed:
            out.dead.append(
                DeadLetter(topic=message.topic, kiosk_id=kiosk_id, reason=reason, payload=payload)
            )
            log.warning("dead letter on %s: %s", message.topic, reason)
            return out

        try:
            where = topics.parse_kiosk_topic(message.topic)
        except topics.TopicError as exc:
            return dead(str(exc), None)
        if where.channel == "state":
            if not payload:
                return out  # a cleared retained message
            try:
                state = parse_state(payload)
            except MessageError as exc:
                return dead(exc.reason, where.kiosk_id)
            if state.kiosk_id != where.kiosk_id:
                return dead(
                    f"state claims kiosk {state.kiosk_id!r} on the topic of {where.kiosk_id!r}",
                    where.kiosk_id,
                )
            out.states.append(
                KioskStateRow(
                    kiosk_id=where.kiosk_id,
                    status=state.status,
                    version=state.version,
                    outbox_depth=state.outbox_depth,
                    oldest_unacked_age_s=state.oldest_unacked_age_s,
                    list_ages=state.list_ages_s,
                    sent_at=state.sent_at,
                )
            )
            return out
        if where.channel != "events":
            return dead(f"the hub does not accept messages on the {where.channel} channel", where.kiosk_id)
        if where.kiosk_id in revoked:
            # Dead-lettered and acked: a revoked kiosk gets no app ack, and the broker no redelivery.
            return dead(REVOKED_REASON, where.kiosk_id)
        try:
            batch = parse_batch(payload, max_bytes=self._settings.max_payload_bytes)
        except MessageError as exc:
            return dead(exc.reason, where.kiosk_id)
        if batch.kiosk_id != where.kiosk_id:
            # The topic is what the broker authenticated; a payload naming another kiosk is forged or broken.
            return dead(
                f"payload claims kiosk {batch.kiosk_id!r} on the topic of {where.kiosk_id!r}", where.kiosk_id
            )
        out.events = [
            EventRow(
                kiosk_id=where.kiosk_id,
                epoch=batch.epoch,
                seq=e.seq,
                uuid=e.uuid,
                kind=e.kind.value,
                device_time=e.device_time,
                body=e.body,
            )
            for e in batch.events
        ]
        out.ack = (where.kiosk_id, batch.epoch, seq_ranges(e.seq for e in batch.events))
        return out

    def _commit_with_retry(self, parsed: list[_Parsed]) -> bool:
        delay = _RETRY_MIN_S
        while not self._stopping.is_set():
            try:
                self._commit(parsed)
                return True
            except OperationalError as exc:
                self.stats.db_retries += 1
                log.error("database unavailable (%s); retrying in %.1f s", exc.orig or exc, delay)
            except DBAPIError as exc:
                if exc.connection_invalidated:
                    self.stats.db_retries += 1
                    log.error("database connection lost; retrying in %.1f s", delay)
                else:
                    # Data the database refuses: find the message(s) at fault and dead-letter them.
                    log.error("database refused a group (%s); committing message by message", exc.orig)
                    self._commit_one_by_one(parsed)
                    return True
            self._stopping.wait(delay)
            delay = min(delay * 2, _RETRY_MAX_S)
        return False

    def _commit(self, parsed: list[_Parsed]) -> None:
        events = [e for p in parsed for e in p.events]
        dead = [d for p in parsed for d in p.dead]
        states = [s for p in parsed for s in p.states]  # the store keeps the last per kiosk
        self._store.commit(events=events, dead_letters=dead, states=states)
        self.stats.events += len(events)
        self.stats.dead_letters += len(dead)

    def _commit_one_by_one(self, parsed: list[_Parsed]) -> None:
        for i, part in enumerate(parsed):
            try:
                self._commit([part])
            except OperationalError:
                raise
            except SQLAlchemyError as exc:
                reason = f"database refused the message: {type(getattr(exc, 'orig', None) or exc).__name__}"
                kiosk_id = None
                with contextlib.suppress(topics.TopicError):
                    kiosk_id = topics.parse_kiosk_topic(part.topic).kiosk_id
                log.warning("dead letter on %s: %s", part.topic, reason)
                parsed[i] = _Parsed(
                    topic=part.topic,
                    payload=part.payload,
                    dead=[
                        DeadLetter(topic=part.topic, kiosk_id=kiosk_id, reason=reason, payload=part.payload)
                    ],
                )
                self._commit([parsed[i]])


#: Seconds after the bridge starts before its first retention purge.
PURGE_FIRST_DELAY_S = 30.0


def _purge_on_schedule(engine, config: HubConfig, stop: threading.Event) -> None:
    """Data retention: purge expired declarations, passes and audit entries every ``purge_interval_s``.

    First, whatever the schedule, the coming week's day partitions of presence data (PostgreSQL; each
    purge makes them too), so that a week of check-ins goes to its days even with the schedule off."""
    import datetime as dt

    from hub.db.partitions import ensure_partitions
    from hub.retention import scheduled_purge

    try:
        ensure_partitions(engine, dt.datetime.now(dt.UTC), config.retention)
    except Exception:  # the ingest goes on: rows of days without a partition go to the default one
        log.exception("presence partitions not made; rows go to the default partitions until they are")
    interval = config.retention.purge_interval_s
    if interval == 0:
        log.info("retention purge schedule is off (retention.purge_interval_s = 0)")
        return
    # First run shortly after start (ingest catches up first), then every interval.
    wait_s = min(PURGE_FIRST_DELAY_S, interval)
    while not stop.wait(wait_s):
        report = scheduled_purge(engine, config.retention)
        if report is not None:
            log.info("retention purge: %s", report.as_dict())
        wait_s = interval


#: How often the bridge looks at the CRL's next update (it warns from CRL_WARN_DAYS before it).
CRL_CHECK_INTERVAL_S = 6 * 3600.0


def _watch_crl(config: HubConfig, stop: threading.Event) -> None:
    """Warn in the log while the CRL in ``enrolment.ca_dir`` is close to (or past) its next update:
    after it the broker refuses every kiosk. Silent where the folder holds no CRL (no CA here)."""
    import datetime as dt

    from provisioning.pki import crl_expiry_warning

    while True:
        warning = crl_expiry_warning(config.enrolment.ca_dir, dt.datetime.now(dt.UTC))
        if warning is not None:
            log.warning("%s", warning)
        if stop.wait(CRL_CHECK_INTERVAL_S):
            return


def run_bridge(config: HubConfig) -> None:
    """Run one bridge worker until SIGTERM or Ctrl-C (``antoan-hub bridge``)."""
    from hub.broker_bridge.downlink import ListPublisher
    from hub.db import make_engine, migrate
    from hub.identity import HubIdentity
    from hub.keys import KeyRing
    from hub.notify import run_notifier_in
    from hub.presence import Presence

    engine = make_engine(config.database.url)
    migrate(engine)
    # Check-ins become presence intervals (tracing) in the ingest transaction, by the configured rules.
    store = HubStore(engine, presence=Presence(HubIdentity(engine).load(), config.tracing))
    bridge = Bridge(store=store, mqtt_settings=config.mqtt, settings=config.bridge)
    # Trust and status lists to the kiosks, retained; its own client, so ingest acks never wait on it.
    downlink = ListPublisher(
        engine=engine,
        keyring=KeyRing(engine, config.passes),
        # Its own certificate when the broker takes the client id from it (else the two take each other over).
        mqtt_settings=(
            config.mqtt.model_copy(update={"tls": config.bridge.lists_tls})
            if config.bridge.lists_tls is not None
            else config.mqtt
        ),
        client_id=f"{config.bridge.client_id}-lists",
        poll_interval_s=config.bridge.list_poll_s,
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    log.info("bridge starting: broker %s:%d", config.mqtt.host, config.mqtt.port)
    purger = threading.Thread(
        target=_purge_on_schedule, args=(engine, config, stop), name="retention-purge", daemon=True
    )
    crl_watch = threading.Thread(target=_watch_crl, args=(config, stop), name="crl-watch", daemon=True)
    try:
        downlink.start()
        bridge.start()
        purger.start()
        crl_watch.start()
        # Notices to the contacts of open cases through the SMS webhook (off without notify.webhook_url).
        run_notifier_in(config, engine=engine, stop=stop)
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        bridge.stop()
        downlink.stop()
        engine.dispose()
        log.info("bridge stopped")
