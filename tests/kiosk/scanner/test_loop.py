"""The scan loop: one scan per code held to the camera, stale frames dropped, failures contained."""

from __future__ import annotations

import threading

import cv2
import numpy as np
import segno

from kiosk.scanner.decode import Decoded, make_decoder
from kiosk.scanner.loop import Debouncer, ScanLoop
from kiosk.scanner.sources import ReplaySource


class _Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_debouncer_treats_a_code_held_still_as_one_scan():
    clock = _Clock()
    debounce = Debouncer(3.0, clock=clock)
    assert debounce.is_new(b"A")
    for _ in range(10):  # held for 10 s, seen every second
        clock.now += 1
        assert not debounce.is_new(b"A")
    assert debounce.is_new(b"B")
    clock.now += 3.5  # gone for a whole window: a new scan
    assert debounce.is_new(b"A")


def _frames(folder, texts, repeat=3):
    folder.mkdir()
    index = 0
    for text in texts:
        matrix = np.array(segno.make(text, error="m").matrix, dtype=np.uint8)
        code = np.pad(
            np.where(matrix, 0, 255).astype(np.uint8).repeat(8, 0).repeat(8, 1), 40, constant_values=255
        )
        frame = np.full((720, 1280), 200, dtype=np.uint8)
        frame[100 : 100 + code.shape[0], 100 : 100 + code.shape[1]] = code
        for _ in range(repeat):
            cv2.imwrite(str(folder / f"{index:04d}.png"), frame)
            index += 1
    return folder


def _no_wait(_seconds):
    return None


def test_each_code_shown_for_several_frames_is_one_scan(tmp_path):
    folder = _frames(tmp_path / "f", ["AT1:FIRST", "AT1:SECOND", "AT1:THIRD"])
    scans = []
    loop = ScanLoop(
        source=ReplaySource(folder, fps=1000, sleep=_no_wait),
        decoder=make_decoder("zxing"),
        on_scan=scans.append,
        debounce_s=60,
    )
    loop.start()
    try:
        assert loop.wait_idle(timeout_s=30)
    finally:
        loop.stop()
    assert scans == [b"AT1:FIRST", b"AT1:SECOND", b"AT1:THIRD"]
    assert loop.stats.frames_captured == 9


class _BlockingDecoder:
    """Holds the first frame until released: stands for a decode slower than the camera."""

    name = "blocking"

    def __init__(self):
        self.release = threading.Event()
        self.entered = threading.Event()
        self.calls = 0

    def decode(self, gray):
        self.calls += 1
        self.entered.set()
        self.release.wait(30)
        return []


def test_a_slow_decoder_gets_the_newest_frame_and_stale_ones_are_dropped(tmp_path):
    folder = _frames(tmp_path / "f", ["AT1:A", "AT1:B", "AT1:C", "AT1:D"], repeat=5)
    decoder = _BlockingDecoder()
    loop = ScanLoop(source=ReplaySource(folder, fps=1000, sleep=_no_wait), decoder=decoder, on_scan=print)
    loop.start()
    try:
        assert decoder.entered.wait(10)
        assert loop.source_finished.wait(30)  # the camera ran on while the decoder was stuck
        decoder.release.set()
        assert loop.wait_idle(timeout_s=30)
    finally:
        decoder.release.set()
        loop.stop()
    assert loop.stats.frames_captured == 20
    assert decoder.calls <= 3  # the stuck frame, the newest one, and at most one in between
    assert loop.stats.frames_dropped >= 17


class _FailingDecoder:
    name = "failing"

    def __init__(self):
        self.calls = 0

    def decode(self, gray):
        self.calls += 1
        if self.calls == 1:
            raise RuntimeError("decoder crashed on this frame")
        return [Decoded(raw=b"AT1:OK", position=())]


def test_a_decoder_or_handler_failure_does_not_stop_the_loop(tmp_path):
    folder = _frames(tmp_path / "f", ["AT1:X"], repeat=3)
    seen = []

    def on_scan(raw):
        seen.append(raw)
        raise ValueError("handler failed")

    loop = ScanLoop(
        source=ReplaySource(folder, fps=5, sleep=_no_wait),
        decoder=_FailingDecoder(),
        on_scan=on_scan,
        debounce_s=0.001,
    )
    loop.start()
    try:
        assert loop.wait_idle(timeout_s=30)
    finally:
        loop.stop()
    assert seen  # frames after the crash were still decoded and handled
