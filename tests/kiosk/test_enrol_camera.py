"""First boot: the kiosk reads the printed enrolment QR with its own camera (replayed frames here)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import segno
from click.testing import CliRunner

from kiosk.__main__ import main
from kiosk.enrol import EnrolError, scan_enrolment_qr
from kiosk.scanner.decode import make_decoder
from kiosk.scanner.sources import ReplaySource
from protocol.enrolment import Bundle
from provisioning.broker import free_port

FINGERPRINT = "ab" * 32


def _frame(path, text: str | None) -> None:
    """A 1280×720 gray frame with the QR of ``text`` in the middle (or nothing)."""
    frame = np.full((720, 1280), 200, np.uint8)
    if text is not None:
        qr = segno.make(text, error="m", micro=False)
        matrix = np.array(qr.matrix, dtype=np.uint8)
        matrix = np.pad(matrix, 4)
        code = np.where(matrix == 1, 0, 255).astype(np.uint8)
        code = cv2.resize(code, (400, 400), interpolation=cv2.INTER_NEAREST)
        frame[160:560, 440:840] = code
    cv2.imwrite(str(path), frame)


@pytest.fixture
def bundle() -> Bundle:
    return Bundle(
        hub_url=f"https://127.0.0.1:{free_port()}",
        ca_fingerprint=FINGERPRINT,
        token="ABCDEFGHJKMNPQRSTVWXYZ23",
        kiosk_id="kiosk-q1-0001",
        venue_id="venue-cho-ben-thanh",
    )


def test_the_enrolment_code_is_found_among_other_codes(tmp_path, bundle):
    _frame(tmp_path / "01.png", None)
    _frame(tmp_path / "02.png", "AT1:NOT-AN-ENROLMENT-CODE")
    _frame(tmp_path / "03.png", "ATE1:!!damaged!!")
    _frame(tmp_path / "04.png", bundle.to_qr())
    skipped: list[str] = []
    found = scan_enrolment_qr(
        ReplaySource(tmp_path, fps=1000), make_decoder("layered"), timeout_s=60, on_other_code=skipped.append
    )
    assert found == bundle
    assert skipped[0] == "not an enrolment QR code"
    assert "damaged" in skipped[1]


def test_no_enrolment_code_is_a_clear_error(tmp_path):
    _frame(tmp_path / "01.png", "AT1:NOT-AN-ENROLMENT-CODE")
    with pytest.raises(EnrolError, match="no enrolment QR code was seen"):
        scan_enrolment_qr(ReplaySource(tmp_path, fps=1000), make_decoder("layered"), timeout_s=60)


def test_scanning_stops_at_the_deadline(tmp_path):
    _frame(tmp_path / "01.png", None)
    ticks = iter(range(1000))
    with pytest.raises(EnrolError, match="up to 5 s"):
        scan_enrolment_qr(
            ReplaySource(tmp_path, fps=1000, loop=True),
            make_decoder("layered"),
            timeout_s=5,
            clock=lambda: float(next(ticks)),
        )


def test_enrol_command_scans_the_code_then_contacts_the_hub(tmp_path, bundle):
    frames = tmp_path / "frames"
    frames.mkdir()
    _frame(frames / "01.png", bundle.to_qr())
    result = CliRunner().invoke(
        main,
        [
            "--config",
            str(tmp_path / "kiosk.toml"),
            "enrol",
            "--camera",
            "replay",
            "--replay-path",
            str(frames),
            "--identity-dir",
            str(tmp_path / "identity"),
        ],
    )
    assert result.exit_code == 1, result.output
    assert "hold the printed enrolment QR code to the camera" in result.output
    assert f"contacting {bundle.hub_url}" in result.output
    assert not (tmp_path / "kiosk.toml").exists() and not (tmp_path / "identity" / "kiosk.key").exists()


def test_enrol_command_needs_exactly_one_source(tmp_path):
    result = CliRunner().invoke(main, ["--config", str(tmp_path / "k.toml"), "enrol"])
    assert result.exit_code == 2 and "give one of --bundle DIR, --qr TEXT or --camera SOURCE" in result.output
