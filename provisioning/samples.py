"""Demo material for the local stack: hub keys, trust and status lists, and camera frames of sample codes.

The frames are what a kiosk camera would see: valid passes (green), a pass the status list flags
(yellow), a case's pass (red), an expired and a forged pass (red), chip ID cards with Vietnamese
names, and a code that is not ours. Everything is generated here; no real person's data.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from protocol.healthpass import (
    Colour,
    PassClaims,
    PassKind,
    SigningKey,
    StatusList,
    TrustList,
    encode_pass,
)

FRAME_SIZE = (1280, 720)


@dataclass(frozen=True, slots=True)
class DemoMaterial:
    frames: Path
    trust_json: bytes
    status_json: bytes
    hub_public_key_b64: str
    expected: list[tuple[str, str]]  # (label, expected colour) in frame order


def _render(text: str, *, utf8: bool, rng: np.random.Generator, scale: int = 6) -> np.ndarray:
    """A 1280×720 gray frame with the code on a lightly textured background."""
    import segno

    qr = segno.make(text, error="m", micro=False, encoding="utf-8" if utf8 else None, eci=False)
    modules = np.array([[0 if dark else 255 for dark in row] for row in qr.matrix], dtype=np.uint8)
    code = np.kron(modules, np.ones((scale, scale), dtype=np.uint8))
    code = np.pad(code, 4 * scale, constant_values=255)
    width, height = FRAME_SIZE
    frame = rng.normal(150, 12, size=(height, width)).clip(0, 255).astype(np.uint8)
    h, w = code.shape
    if h > height or w > width:
        raise ValueError("sample code too large for the frame")
    top, left = (height - h) // 2, (width - w) // 2
    frame[top : top + h, left : left + w] = code
    return frame


def _empty(rng: np.random.Generator) -> np.ndarray:
    width, height = FRAME_SIZE
    return rng.normal(140, 15, size=(height, width)).clip(0, 255).astype(np.uint8)


def _cccd(number: str, old_id: str, name: str, birth: str, gender: str, address: str, issued: str) -> str:
    return "|".join([number, old_id, name, birth, gender, address, issued])


def make_demo_material(folder: Path, *, now: datetime | None = None, seed: int = 1324) -> DemoMaterial:
    """Write keys, lists and frames under ``folder`` (created) and describe them."""
    import cv2
    from nacl.public import PrivateKey

    now = now or datetime.now(UTC)
    folder.mkdir(parents=True, exist_ok=True)
    frames = folder / "frames"
    frames.mkdir(exist_ok=True)
    rng = np.random.default_rng(seed)

    hub_key = SigningKey.generate("ES256")
    (folder / "hub-signing-key.pem").write_bytes(hub_key.to_pem())
    sealing = PrivateKey.generate()
    (folder / "hub-sealing-key").write_text(base64.b64encode(bytes(sealing)).decode())
    hub_public_b64 = base64.b64encode(bytes(sealing.public_key)).decode()
    trust = TrustList(
        keys={hub_key.kid: hub_key.trusted(now - timedelta(days=365), now + timedelta(days=365))},
        version=1,
        issued_at=now,
    )
    forger = SigningKey.generate("ES256")

    def claims(
        pass_id: str, colour: Colour, initials: str, year: int, *, age_days: int = 0, valid_days: int = 30
    ):
        issued = now - timedelta(days=age_days)
        return PassClaims(
            pass_id=pass_id,
            colour=colour,
            kind=PassKind.NCOVI,
            initials=initials,
            birth_year=year,
            issuer="AnToan demo hub",
            issued_at=issued,
            expires_at=issued + timedelta(days=valid_days),
        )

    flagged_id = "P-DEMO-0003"
    status = StatusList(version=1, issued_at=now, colours={flagged_id: Colour.YELLOW})
    codes: list[tuple[str, str, str, bool]] = [
        (
            "valid pass NTA",
            "green",
            encode_pass(claims("P-DEMO-0001", Colour.GREEN, "NTA", 1990), hub_key),
            False,
        ),
        (
            "valid pass TVD",
            "green",
            encode_pass(claims("P-DEMO-0002", Colour.GREEN, "TVD", 1985), hub_key),
            False,
        ),
        (
            "flagged pass LHY",
            "yellow",
            encode_pass(claims(flagged_id, Colour.GREEN, "LHY", 2001), hub_key),
            False,
        ),
        (
            "case's pass PMK",
            "red",
            encode_pass(claims("P-DEMO-0004", Colour.RED, "PMK", 1978), hub_key),
            False,
        ),
        (
            "expired pass VTH",
            "red",
            encode_pass(
                claims("P-DEMO-0005", Colour.GREEN, "VTH", 1969, age_days=40, valid_days=30), hub_key
            ),
            False,
        ),
        ("forged pass", "red", encode_pass(claims("P-DEMO-0006", Colour.GREEN, "GIA", 1999), forger), False),
        (
            "CCCD Nguyễn Thị Ánh",
            "green",
            _cccd(
                "079190001234",
                "",
                "Nguyễn Thị Ánh",
                "15031990",
                "Nữ",
                "12 Lê Lợi, Bến Nghé, Quận 1, TP.HCM",
                "01052021",
            ),
            True,
        ),
        (
            "CCCD Trần Văn Đức",
            "green",
            _cccd(
                "001085004321",
                "012345678",
                "Trần Văn Đức",
                "02091985",
                "Nam",
                "5 Hàng Bạc, Hoàn Kiếm, Hà Nội",
                "20042021",
            ),
            True,
        ),
        ("not ours", "red", "https://example.vn/thuc-don", True),
    ]
    expected: list[tuple[str, str]] = []
    index = 0
    for label, colour, text, utf8 in codes:
        # Each code is held to the camera for two frames, then two frames of nothing.
        image = _render(text, utf8=utf8, rng=rng)
        for _ in range(2):
            cv2.imwrite(str(frames / f"{index:04d}.png"), image)
            index += 1
        for _ in range(2):
            cv2.imwrite(str(frames / f"{index:04d}.png"), _empty(rng))
            index += 1
        expected.append((label, colour))
    (folder / "expected.json").write_text(json.dumps(expected, ensure_ascii=False, indent=1))
    return DemoMaterial(
        frames=frames,
        trust_json=trust.to_json(),
        status_json=status.to_json(),
        hub_public_key_b64=hub_public_b64,
        expected=expected,
    )


def cache_lists(folder: Path, material: DemoMaterial) -> None:
    """Leave the demo hub's lists in a kiosk's list cache, as if it had received them before going offline."""
    from kiosk.lists import DownlinkLists
    from protocol import topics

    lists = DownlinkLists(folder)
    lists.handle(topics.BROADCAST_TRUST, material.trust_json)
    lists.handle(topics.BROADCAST_STATUS, material.status_json)
