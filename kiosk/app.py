"""The kiosk's composition root: builds the outbox and sync, starts them in order, stops them in reverse."""

from __future__ import annotations

import logging
import threading
from datetime import datetime
from typing import Any

from kiosk import __version__
from kiosk.config import KioskConfig
from kiosk.outbox import Outbox, Recorded
from kiosk.samples import run_samples
from kiosk.sync import Sync
from protocol.messages import EventKind

log = logging.getLogger(__name__)


class KioskApp:
    """One kiosk: record events durably, sync them to the hub."""

    def __init__(self, config: KioskConfig):
        self.config = config
        self.stopping = threading.Event()
        self.outbox: Outbox | None = None
        self.sync: Sync | None = None

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
        self.sync = Sync(
            outbox=self.outbox,
            kiosk_id=cfg.kiosk_id,
            mqtt_settings=cfg.mqtt,
            settings=cfg.sync,
            version=__version__,
            prune_acked_after_s=cfg.outbox.prune_acked_after_days * 86400,
        )
        self.sync.start()

    def _wake_sync(self) -> None:
        if self.sync is not None:
            self.sync.notify()

    def record(
        self, kind: EventKind, body: dict[str, Any], *, device_time: datetime | None = None
    ) -> Recorded:
        """Record an event durably; only after this returns may the kiosk signal success."""
        assert self.outbox is not None, "start() first"
        return self.outbox.append(kind, body, device_time=device_time)

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
        if self.sync is not None:
            self.sync.stop()
            self.sync = None
        if self.outbox is not None:
            self.outbox.close()
            self.outbox = None
