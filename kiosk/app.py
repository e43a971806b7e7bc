"""The kiosk's composition root: builds outbox, lists, sync, feedback and scanner; starts them in order."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from kiosk import __version__
from kiosk.config import KioskConfig
from kiosk.feedback import Feedback, NoFeedback, make_feedback
from kiosk.lists import DownlinkLists
from kiosk.outbox import Outbox, OutboxError, Recorded
from kiosk.samples import run_samples
from kiosk.sync import Sync
from kiosk.verdict import Verdict, cannot_record, judge
from protocol.messages import EventKind

log = logging.getLogger(__name__)


class KioskApp:
    """One kiosk: scan, judge, record durably, signal, sync to the hub."""

    def __init__(self, config: KioskConfig, *, feedback: Feedback | NoFeedback | None = None):
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
        self._hub_key = config.hub_key_bytes()

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
        self.sync = Sync(
            outbox=self.outbox,
            kiosk_id=cfg.kiosk_id,
            mqtt_settings=cfg.mqtt,
            settings=cfg.sync,
            version=__version__,
            prune_acked_after_s=cfg.outbox.prune_acked_after_days * 86400,
            list_ages=self.lists.ages_s,
            downlink=self.lists.handle,
        )
        self.sync.start()
        if self.feedback is None:
            self.feedback = make_feedback(cfg.gpio)
        if cfg.camera.source != "none":
            self._start_scanner()

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
        if self.scanner is not None:
            self.scanner.stop()
            self.scanner = None
        if self.feedback is not None:
            self.feedback.close()
            self.feedback = None
        if self.sync is not None:
            self.sync.stop()
            self.sync = None
        if self.outbox is not None:
            self.outbox.close()
            self.outbox = None
