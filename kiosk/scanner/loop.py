"""The scan loop: a capture thread keeps only the newest frame, a decode thread reads codes from it.

A slow decode never builds a queue of stale frames: the capture thread overwrites the single slot,
and frames nobody decoded are counted as dropped. The same code seen again within ``debounce_s`` is
one scan, so a phone held to the camera is one check-in.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from kiosk.scanner.decode import Decoder
from kiosk.scanner.sources import FrameSource

log = logging.getLogger(__name__)


@dataclass(slots=True)
class ScanStats:
    frames_captured: int = 0
    frames_decoded: int = 0
    frames_dropped: int = 0
    codes_seen: int = 0
    scans: int = 0


class Debouncer:
    """Says whether a code is a new scan or the same one seen again within ``window_s``."""

    def __init__(self, window_s: float, *, clock: Callable[[], float] = time.monotonic):
        self._window_s = window_s
        self._clock = clock
        self._last_seen: dict[bytes, float] = {}

    def is_new(self, raw: bytes) -> bool:
        now = self._clock()
        # Forget codes not seen for a whole window, so the table stays small.
        self._last_seen = {k: t for k, t in self._last_seen.items() if now - t < self._window_s}
        new = raw not in self._last_seen
        # Seeing the code again extends the window: a code held still is one scan, however long.
        self._last_seen[raw] = now
        return new


class ScanLoop:
    """Reads frames from ``source``, decodes them and calls ``on_scan(raw_bytes)`` once per new code."""

    def __init__(
        self,
        *,
        source: FrameSource,
        decoder: Decoder,
        on_scan: Callable[[bytes], object],
        debounce_s: float = 3.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._source = source
        self._decoder = decoder
        self._on_scan = on_scan
        self._debounce = Debouncer(debounce_s, clock=clock)
        self._slot: np.ndarray | None = None
        self._busy = False
        self._slot_lock = threading.Condition()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self.source_finished = threading.Event()
        self.stats = ScanStats()

    def start(self) -> None:
        self._source.open()
        self._threads = [
            threading.Thread(target=self._capture, name="scan-capture", daemon=True),
            threading.Thread(target=self._decode, name="scan-decode", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stopping.set()
        with self._slot_lock:
            self._slot_lock.notify_all()
        for thread in self._threads:
            thread.join(timeout_s)
        self._source.close()
        close = getattr(self._decoder, "close", None)  # the layered decoder's helper thread
        if close is not None:
            close()

    def wait_idle(self, timeout_s: float) -> bool:
        """After the source finished: wait until the last frame was decoded (for replays and tests)."""
        deadline = time.monotonic() + timeout_s
        with self._slot_lock:
            while self._slot is not None or self._busy or not self.source_finished.is_set():
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._stopping.is_set():
                    return False
                self._slot_lock.wait(remaining)
        return True

    def _capture(self) -> None:
        while not self._stopping.is_set():
            try:
                frame = self._source.read()
            except Exception:
                log.exception("camera read failed; retrying")
                self._stopping.wait(0.5)
                continue
            if frame is None:
                if self._source.finished:
                    break
                continue
            with self._slot_lock:
                if self._slot is not None:
                    self.stats.frames_dropped += 1
                self._slot = frame
                self.stats.frames_captured += 1
                self._slot_lock.notify_all()
        with self._slot_lock:
            self.source_finished.set()
            self._slot_lock.notify_all()

    def _decode(self) -> None:
        while True:
            with self._slot_lock:
                while self._slot is None:
                    if self._stopping.is_set():
                        return
                    self._slot_lock.wait(0.5)
                frame, self._slot = self._slot, None
                self._busy = True
            try:
                self._handle_frame(frame)
            finally:
                with self._slot_lock:
                    self._busy = False
                    self._slot_lock.notify_all()

    def _handle_frame(self, frame: np.ndarray) -> None:
        try:
            codes = self._decoder.decode(frame)
        except Exception:
            log.exception("decoder failed on a frame; skipping it")
            return
        self.stats.frames_decoded += 1
        for code in codes:
            self.stats.codes_seen += 1
            if self._debounce.is_new(code.raw):
                self.stats.scans += 1
                try:
                    self._on_scan(code.raw)
                except Exception:
                    log.exception("handling a scan failed")
