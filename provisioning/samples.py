"""Demo material for the local stack: passes issued by the hub, its lists, and camera frames of sample codes.

The frames are what a kiosk camera would see: valid passes (green), a pass the status list flags
(yellow), a case's pass (red), an expired and a forged pass (red), chip ID cards with Vietnamese
names, and a code that is not ours. The passes are issued by the hub's own code (``hub.passes``,
signed with the hub database's :class:`hub.keys.KeyRing`), so the lists the bridge publishes verify
them. Everything is generated here; no real person's data.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
from sqlalchemy import Connection, Engine, insert

from hub.config import PassSettings
from hub.db import make_engine, migrate
from hub.db.schema import declarations
from hub.keys import CLOCK_MARGIN, KeyRing
from hub.passes import issue_pass, new_pass_id, set_status, status_list
from protocol.healthpass import Colour, PassClaims, PassKind, SigningKey, StatusList, encode_pass

FRAME_SIZE = (1280, 720)


@dataclass(frozen=True, slots=True)
class DemoMaterial:
    frames: Path
    trust_json: bytes  # the hub's lists when the material was made (for kiosks started offline)
    status_json: bytes  # the whole status list, as the hub's HTTP API serves it
    hub_public_key_b64: str
    expected: list[tuple[str, str]]  # (label, expected colour) in frame order
    pass_ids: dict[str, str]  # label -> pass id of the samples the hub issued


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


@dataclass(frozen=True, slots=True)
class _Person:
    label: str
    full_name: str
    birth_year: int
    gender: str
    colour: Colour  # signed into the pass


# Made-up people (no real person's data); labels show the initials the pass carries.
_PEOPLE = {
    "green1": _Person("valid pass NTA", "Nguyễn Thị Ánh", 1990, "female", Colour.GREEN),
    "green2": _Person("valid pass TVD", "Trần Văn Đức", 1985, "male", Colour.GREEN),
    "flagged": _Person("flagged pass LHY", "Lê Hoàng Yến", 2001, "female", Colour.GREEN),
    "case": _Person("case's pass PMK", "Phạm Minh Khôi", 1978, "male", Colour.RED),
    "expired": _Person("expired pass VTH", "Võ Thị Hằng", 1969, "female", Colour.GREEN),
}
#: The sample person the demo opens a case (F0) for once their check-in reached the hub.
DEMO_CASE_LABEL = _PEOPLE["case"].label


def _demo_declaration(conn: Connection, person: _Person, now: datetime) -> int:
    """A minimal NCOVI declaration row for a sample person, so the sample pass belongs to one."""
    result = conn.execute(
        insert(declarations).values(
            kind=PassKind.NCOVI.value,
            submission_id=str(uuid.uuid4()),
            declared_by=None,
            relationship=None,
            id_number=f"DEMO{uuid.uuid4().hex[:8].upper()}",
            full_name=person.full_name,
            birth_date=None,
            birth_year=person.birth_year,
            gender=person.gender,
            phone=None,
            nationality="VN",
            province=None,
            district=None,
            commune=None,
            address=None,
            answers={"demo_sample": True},
            colour=person.colour.value,
            colour_reasons=["demo sample"] if person.colour != Colour.GREEN else [],
            created_at=now,
            superseded_at=None,
            superseded_by=None,
        )
    )
    return int(result.inserted_primary_key[0])


def issue_demo_passes(
    engine: Engine, settings: PassSettings, *, now: datetime
) -> tuple[dict[str, str], dict[str, str]]:
    """Issue the sample passes with the hub's own key ring and flag one through the status list.

    Returns (key -> QR text, label -> pass id). The expired sample is dated back one validity period;
    on a fresh database the hub's first key is made as of that date, so the kiosks verify it and
    then find it expired (after a key rotation it is dated from the new key and already expired).
    """
    keyring = KeyRing(engine, settings)
    validity = timedelta(days=settings.validity_days)
    back_then = now - validity - timedelta(days=1)
    keys = keyring.list_keys()
    if not keys:
        keyring.signing_key(back_then)  # the demo hub "has been running" since then
        keys = keyring.list_keys()
    active_since = next(k.created_at for k in keys if k.active) - CLOCK_MARGIN
    texts: dict[str, str] = {}
    pass_ids: dict[str, str] = {}
    with engine.begin() as conn:
        for key, person in _PEOPLE.items():
            issued_at, valid_for = now, validity
            if key == "expired":
                issued_at = max(back_then, active_since.replace(microsecond=0) + timedelta(seconds=1))
                valid_for = max(timedelta(0), min(validity, now - issued_at - timedelta(hours=1)))
            issued = issue_pass(
                conn,
                declaration_id=_demo_declaration(conn, person, issued_at),
                kind=PassKind.NCOVI,
                full_name=person.full_name,
                birth_year=person.birth_year,
                colour=person.colour,
                keyring=keyring,
                settings=settings,
                now=issued_at,
                validity=valid_for,
            )
            texts[key] = issued.qr_text
            pass_ids[person.label] = issued.pass_id
        set_status(conn, pass_ids[_PEOPLE["flagged"].label], Colour.YELLOW, "demo: F1 contact", now)
    return texts, pass_ids


def make_demo_material(
    folder: Path,
    *,
    now: datetime | None = None,
    seed: int = 1324,
    engine: Engine | None = None,
    settings: PassSettings | None = None,
) -> DemoMaterial:
    """Issue the sample passes in the hub database, then write frames and keys under ``folder`` (created).

    ``engine`` is the hub database (migrated); without one, a hub database of its own is made at
    ``folder/hub.db`` (kiosk tests and benchmarks that run without a hub).
    """
    import cv2

    from hub.identity import HubIdentity

    now = now or datetime.now(UTC)
    folder.mkdir(parents=True, exist_ok=True)
    frames = folder / "frames"
    frames.mkdir(exist_ok=True)
    rng = np.random.default_rng(seed)
    settings = settings or PassSettings()

    own_engine = engine is None
    if engine is None:
        engine = make_engine(f"sqlite:///{folder / 'hub.db'}")
        migrate(engine)
    try:
        texts, pass_ids = issue_demo_passes(engine, settings, now=now)
        trust_json = KeyRing(engine, settings).trust_list(now).to_json()
        with engine.connect() as conn:
            status_json = status_list(conn, now).to_json()
        # ID cards are sealed to the hub's own key, so the hub can link them to people for tracing.
        hub_public_b64 = HubIdentity(engine).load().public_key_b64
    finally:
        if own_engine:
            engine.dispose()

    # Signed by a key the hub never trusted: kiosks refuse it (unknown key).
    forger = SigningKey.generate("ES256")
    forged = encode_pass(
        PassClaims(
            pass_id=new_pass_id(),
            colour=Colour.GREEN,
            kind=PassKind.NCOVI,
            initials="GIA",
            birth_year=1999,
            issuer=settings.issuer,
            issued_at=now,
            expires_at=now + timedelta(days=settings.validity_days),
        ),
        forger,
    )
    codes: list[tuple[str, str, str, bool]] = [
        (_PEOPLE["green1"].label, "green", texts["green1"], False),
        (_PEOPLE["green2"].label, "green", texts["green2"], False),
        (_PEOPLE["flagged"].label, "yellow", texts["flagged"], False),
        (_PEOPLE["case"].label, "red", texts["case"], False),
        (_PEOPLE["expired"].label, "red", texts["expired"], False),
        ("forged pass", "red", forged, False),
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
        trust_json=trust_json,
        status_json=status_json,
        hub_public_key_b64=hub_public_b64,
        expected=expected,
        pass_ids=pass_ids,
    )


def cache_lists(folder: Path, material: DemoMaterial) -> None:
    """Leave the demo hub's lists in a kiosk's list cache, as if it had received them before going offline."""
    from kiosk.lists import DownlinkLists
    from protocol import topics

    lists = DownlinkLists(folder)
    lists.handle(topics.BROADCAST_TRUST, material.trust_json)
    for shard in StatusList.from_json(material.status_json).shards():
        lists.handle(topics.status_shard(shard.shard), shard.to_json())
