"""The full kiosk loop offline: replayed camera frames → decode → verdict → outbox rows → pin history."""

from __future__ import annotations

import json
import sqlite3

import pytest
from gpiozero.pins.mock import MockFactory

from kiosk.app import KioskApp
from kiosk.config import CameraSettings, KioskConfig, OutboxSettings, ScanSettings
from kiosk.feedback import Feedback, GpioSettings
from protocol.settings import MqttSettings
from provisioning.broker import free_port
from provisioning.samples import cache_lists, make_demo_material
from tests.helpers import wait_for

FAST = GpioSettings(pin_factory="mock", indicator_s=0.05, door_open_s=0.08, beep_s=0.01)


@pytest.fixture(scope="module")
def material(tmp_path_factory):
    return make_demo_material(tmp_path_factory.mktemp("samples"))


def _kiosk(tmp_path, material, *, direction="in") -> tuple[KioskApp, MockFactory]:
    # The kiosk is offline (nothing listens on the port): it verifies with the lists it cached earlier.
    cache_lists(tmp_path / "lists", material)
    config = KioskConfig(
        kiosk_id="kiosk-001",
        venue_id="venue-001",
        hub_public_key=material.hub_public_key_b64,
        mqtt=MqttSettings(port=free_port(), keepalive_s=5),
        outbox=OutboxSettings(path=tmp_path / "outbox.db"),
        camera=CameraSettings(source="replay", replay_path=material.frames, replay_fps=10),
        scan=ScanSettings(direction=direction, debounce_s=3),
        gpio=FAST,
    )
    factory = MockFactory()
    return KioskApp(config, feedback=Feedback(FAST, pin_factory=factory)), factory


def _run(app: KioskApp) -> list:
    verdicts = []
    app.verdict_listeners.append(verdicts.append)
    app.start()
    try:
        assert app.scanner.wait_idle(timeout_s=60), "replay did not finish"
        wait_for(app.feedback.idle, timeout_s=5, what="the last pattern")
        rows = (
            sqlite3.connect(app.config.outbox.path)
            .execute("SELECT kind, body FROM events ORDER BY seq")
            .fetchall()
        )
    finally:
        app.stop()
    return verdicts, [(kind, json.loads(body)) for kind, body in rows]


def test_replayed_codes_give_the_expected_verdicts_rows_and_pins(tmp_path, material):
    app, factory = _kiosk(tmp_path, material)
    verdicts, rows = _run(app)
    assert [v.colour for v in verdicts] == [colour for _, colour in material.expected]
    codes = [v.code for v in verdicts]
    assert codes[2] == "flagged"
    assert "expired" in codes[4] and "unknown_key" in codes[5].lower()
    # Recorded: every verified pass (whatever its colour) and both ID cards; nothing for the rest.
    assert [r[0] for r in rows] == ["check_in"] * 6
    subjects = [r[1]["subject"]["type"] for r in rows]
    assert subjects == ["pass", "pass", "pass", "pass", "cccd", "cccd"]
    assert [r[1]["verdict"] for r in rows] == ["green", "green", "yellow", "red", "green", "green"]
    stored = json.dumps(rows, ensure_ascii=False)
    for secret in ("Nguyễn", "Trần", "079190001234", "001085004321", "Lê Lợi"):
        assert secret not in stored  # ID cards are sealed to the hub's key
    # The name is shown at scan time only.
    assert verdicts[6].display_name == "Nguyễn Thị Ánh"
    greens = sum(1 for v in verdicts if v.colour == "green")
    door = [s.state for s in factory.pin(FAST.door_relay).states]
    assert door.count(True) == greens == 4
    red = [s.state for s in factory.pin(FAST.red_led).states]
    assert red.count(True) == sum(1 for v in verdicts if v.colour in ("red", "yellow"))


def test_an_exit_kiosk_records_check_outs(tmp_path, material):
    app, _ = _kiosk(tmp_path, material, direction="out")
    verdicts, rows = _run(app)
    assert {r[0] for r in rows} == {"check_out"}
    assert {r[1]["direction"] for r in rows} == {"out"}
    assert "Check-out recorded" in {v.message_en for v in verdicts}


def test_a_failed_outbox_write_is_never_green(tmp_path, material):
    app, factory = _kiosk(tmp_path, material)
    app.start()
    try:
        app.scanner.wait_idle(timeout_s=60)
        wait_for(app.feedback.idle, timeout_s=5, what="the replay's patterns")
        before = [s.state for s in factory.pin(FAST.door_relay).states].count(True)
        app.outbox.close()  # the disk is gone: every write fails
        pass_text = _first_green_pass(material)
        verdict = app.handle_scan(pass_text)
        assert verdict.colour == "red"
        assert verdict.code == "cannot_record"
        wait_for(app.feedback.idle, timeout_s=5, what="the red pattern")
        assert [s.state for s in factory.pin(FAST.door_relay).states].count(True) == before
    finally:
        app.outbox = None
        app.stop()


def _first_green_pass(material) -> bytes:
    import cv2

    from kiosk.scanner.decode import make_decoder

    decoder = make_decoder("zxing")
    first = sorted(material.frames.glob("*.png"))[0]
    (code,) = decoder.decode(cv2.imread(str(first), cv2.IMREAD_GRAYSCALE))
    return code.raw
