"""The kiosk's composition root: builds outbox, lists, sync, feedback and scanner; starts them in order.

It also keeps the kiosk's MQTT certificate current: at start and every ``renewal.check_interval_s`` it
renews the certificate when it is close to expiry (:func:`kiosk.enrol.renew`) and then reconnects
with it. Nothing is lost on the way: the outbox is on disk and the new connection resends whatever
the hub has not acknowledged.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kiosk import __version__
from kiosk import enrol as enrolment
from kiosk.config import KioskConfig
from kiosk.feedback import Feedback, NoFeedback, make_feedback
from kiosk.lists import DownlinkLists
from kiosk.outbox import Outbox, OutboxError, Recorded
from kiosk.samples import run_samples
from kiosk.sync import Sync
from kiosk.verdict import Verdict, cannot_record, judge
from protocol.messages import EventKind

log = logging.getLogger(__name__)

#: How long stop() waits for a renewal in progress (an HTTPS request has its own timeout).
_RENEWAL_JOIN_S = 30.0


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(slots=True)
class RenewalStats:
    """What the renewal schedule did (the touchscreen's device page and tests read it)."""

    checks: int = 0
    renewals: int = 0
    failures: int = 0
    reconnects: int = 0
    last_error: str | None = None


class KioskApp:
    """One kiosk: scan, judge, record durably, signal, sync to the hub, keep its certificate current."""

    def __init__(
        self,
        config: KioskConfig,
        *,
        feedback: Feedback | NoFeedback | None = None,
        clock: Callable[[], datetime] = _utcnow,
    ):
        self.config = config
        self.stopping = threading.Event()
        self.outbox: Outbox | None = None
        self.lists: DownlinkLists | None = None
        self.sync: Sync | None = None
        self.feedback = feedback
        self.scanner = None
        #: Called with every verdict (the touchscreen subscribes here); must not block.
        self.verdict_listeners: list[Callable[[Verdict], None]] = []
        self.last_verdict: Verdict | None = None
        self.renewal_stats = RenewalStats()
        self._hub_key = config.hub_key_bytes()
        self._clock = clock
        # Guards replacing self.sync (renewal thread) against stop() (main thread).
        self._sync_lock = threading.Lock()
        self._renewal_stop = threading.Event()
        self._renewer: threading.Thread | None = None
        #: The certificate bytes the current MQTT connection was made with.
        self._connected_cert: bytes | None = None

    def start(self) -> None:
        cfg = self.config
        self.outbox = Outbox(cfg.outbox.path, on_append=self._wake_sync)
        log.info(
            "kiosk %s at venue %s: outbox %s (epoch %s, %d unacked)",
            cfg.kiosk_id,
            cfg.venue_id,
            cfg.outbox.path,
            self.outbox.epoch,
            self.outbox.depth(),
        )
        self.lists = DownlinkLists(cfg.outbox.path.parent / "lists")
        self.lists.load_cached()
        self._repair_identity()
        with self._sync_lock:
            self.sync = self._new_sync()
            self.sync.start()
        if self.feedback is None:
            self.feedback = make_feedback(cfg.gpio)
        if cfg.camera.source != "none":
            self._start_scanner()
        if self._identity() is not None:
            self._renewal_stop.clear()
            self._renewer = threading.Thread(target=self._renewal_loop, name="kiosk-renewal", daemon=True)
            self._renewer.start()

    def _new_sync(self) -> Sync:
        """A Sync over a new MQTT client, which reads the certificate files as they are now."""
        cfg = self.config
        tls = cfg.mqtt.tls
        self._connected_cert = (
            tls.cert_file.read_bytes() if tls is not None and tls.cert_file is not None else None
        )
        return Sync(
            outbox=self.outbox,
            kiosk_id=cfg.kiosk_id,
            mqtt_settings=cfg.mqtt,
            settings=cfg.sync,
            version=__version__,
            prune_acked_after_s=cfg.outbox.prune_acked_after_days * 86400,
            list_ages=self.lists.ages_s,
            downlink=self.lists.handle,
        )

    # ----- certificate renewal ---------------------------------------------------------------------

    def _identity(self):
        """The TLS settings with this kiosk's own certificate, or None (no client certificate)."""
        tls = self.config.mqtt.tls
        return tls if tls is not None and tls.cert_file is not None and tls.key_file is not None else None

    def _repair_identity(self) -> None:
        """Before connecting: finish (or undo) a renewal that a power cut interrupted."""
        tls = self._identity()
        if tls is None or not tls.cert_file.exists():
            return
        try:
            done = enrolment.recover_identity(tls.cert_file, tls.key_file)
        except (enrolment.EnrolError, ValueError, OSError) as exc:
            log.error("certificate files: %s", exc)
            return
        if done:
            log.warning("certificate files: %s", done)

    def check_certificate(self) -> str | None:
        """Renew the certificate if it is due, then reconnect MQTT with it; return the new expiry (ISO)
        or None. Also reconnects when the files changed under the running kiosk (``antoan-kiosk renew``).
        Raises :class:`kiosk.enrol.EnrolError` when the renewal failed (the old certificate stays)."""
        tls = self._identity()
        if tls is None:
            return None
        self.renewal_stats.checks += 1
        now = self._clock()
        until = None
        if enrolment.renewal_due(tls.cert_file, now, self.config.renewal.within_days):
            # Only now is the hub needed: where it is was recorded at enrolment.
            state = enrolment.read_state(tls.cert_file.parent)
            until = enrolment.renew(
                cert_file=tls.cert_file,
                key_file=tls.key_file,
                ca_file=tls.ca_file,
                hub_url=state["hub_url"],
                now=now,
                within_days=self.config.renewal.within_days,
            )
        if until is not None:
            self.renewal_stats.renewals += 1
            log.info("certificate renewed (valid until %s); reconnecting with it", until)
        if tls.cert_file.read_bytes() != self._connected_cert:
            self._reconnect()
        return until

    def _reconnect(self) -> None:
        """Replace the MQTT connection with one made from the certificate files now on disk.

        The old Sync says ``offline`` and disconnects; the new one connects to the same persistent
        session (the client id is the certificate's CN) and resends every unacknowledged event.
        """
        with self._sync_lock:
            if self.sync is None or self._renewal_stop.is_set():
                return
            self.sync.stop()
            self.sync = self._new_sync()
            self.sync.start()
            self.renewal_stats.reconnects += 1

    def _renewal_loop(self) -> None:
        settings = self.config.renewal
        wait_s = 0.0  # the first check at start
        while not self._renewal_stop.wait(wait_s):
            try:
                self.check_certificate()
                wait_s = settings.check_interval_s
                self.renewal_stats.last_error = None
            except (enrolment.EnrolError, OSError, ValueError) as exc:
                self.renewal_stats.failures += 1
                self.renewal_stats.last_error = str(exc)
                log.warning(
                    "certificate renewal failed: %s; the current certificate stays, next try in %.0f s",
                    exc,
                    settings.retry_interval_s,
                )
                wait_s = settings.retry_interval_s
            except Exception:
                # Never let the schedule die: a kiosk that stops renewing is cut off at expiry.
                self.renewal_stats.failures += 1
                log.exception("certificate check failed; next try in %.0f s", settings.retry_interval_s)
                wait_s = settings.retry_interval_s

    def _start_scanner(self) -> None:
        from kiosk.scanner.decode import make_decoder
        from kiosk.scanner.loop import ScanLoop
        from kiosk.scanner.sources import make_source

        cam = self.config.camera
        if cam.source == "replay":
            source = make_source("replay", path=cam.replay_path, fps=cam.replay_fps, loop=cam.replay_loop)
        elif cam.source == "opencv":
            source = make_source("opencv", device=cam.device, size=(cam.width, cam.height))
        else:
            source = make_source("picamera2", size=(cam.width, cam.height))
        self.scanner = ScanLoop(
            source=source,
            decoder=make_decoder(cam.decoder),
            on_scan=self.handle_scan,
            debounce_s=self.config.scan.debounce_s,
        )
        self.scanner.start()
        log.info("scanner started: %s camera, %s decoder", cam.source, cam.decoder)

    def _wake_sync(self) -> None:
        if self.sync is not None:
            self.sync.notify()

    def record(
        self, kind: EventKind, body: dict[str, Any], *, device_time: datetime | None = None
    ) -> Recorded:
        """Record an event durably; only after this returns may the kiosk signal success."""
        if self.outbox is None:
            raise OutboxError("the kiosk is not started")
        return self.outbox.append(kind, body, device_time=device_time)

    def handle_scan(self, raw: bytes) -> Verdict:
        """Judge one scanned code, record it (before any green), then show the verdict."""
        started = time.perf_counter()
        lists = self.lists
        verdict = judge(
            raw,
            trust=lists.trust if lists else None,
            status=lists.status if lists else None,
            hub_public_key=self._hub_key,
            direction=self.config.scan.direction,
            now=datetime.now(UTC),
        )
        if verdict.event is not None:
            try:
                self.record(*verdict.event)
            except OutboxError as exc:
                log.error("cannot record a scan: %s", exc)
                verdict = cannot_record(verdict)
        if self.feedback is not None:
            self.feedback.show(verdict.colour)
        self.last_verdict = verdict
        for listener in list(self.verdict_listeners):
            try:
                listener(verdict)
            except Exception:
                log.exception("a verdict listener failed")
        # Colour, reason and the fixed words only: names and ids stay out of the log.
        log.info(
            "scan: %s (%s) %s / %s, %.1f ms",
            verdict.colour,
            verdict.code,
            verdict.message_vi,
            verdict.message_en,
            (time.perf_counter() - started) * 1000,
        )
        return verdict

    def run(self) -> None:
        """Start, feed samples if configured, and block until :meth:`request_stop`; always stop cleanly."""
        try:
            self.start()
            sample = self.config.sample
            if sample.rate_per_s > 0:
                n = run_samples(
                    self.record, rate_per_s=sample.rate_per_s, limit=sample.limit, stop=self.stopping
                )
                log.info("recorded %d sample check-ins", n)
            self.stopping.wait()
        finally:
            self.stop()

    def request_stop(self) -> None:
        self.stopping.set()

    def stop(self) -> None:
        self._renewal_stop.set()
        if self._renewer is not None:
            self._renewer.join(_RENEWAL_JOIN_S)
            self._renewer = None
        if self.scanner is not None:
            self.scanner.stop()
            self.scanner = None
        if self.feedback is not None:
            self.feedback.close()
            self.feedback = None
        with self._sync_lock:
            if self.sync is not None:
                self.sync.stop()
                self.sync = None
        if self.outbox is not None:
            self.outbox.close()
            self.outbox = None
