"""A citizen in a real browser: NCOVI for herself and her child, the pass page, its QR read by the kiosk."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import cv2
import numpy as np

from hub.config import PassSettings
from hub.db import make_engine
from hub.keys import KeyRing
from kiosk.scanner.decode import make_decoder
from protocol.healthpass import Colour, verify_pass


def _fill_person(page, prefix: str, person: dict) -> None:
    for field, value in person.items():
        selector = f'[name="{prefix}.{field}"]'
        if field == "gender":
            page.check(f'{selector}[value="{value}"]')
            continue
        element = page.locator(selector)
        if element.evaluate("e => e.tagName") == "SELECT":
            element.select_option(value)
        else:
            element.fill(value)


def test_citizen_declares_with_a_family_member_and_the_kiosk_reads_the_screen(live_hub, page, tmp_path):
    page.goto(f"{live_hub.base_url}/khai-bao")
    assert page.locator("html").get_attribute("lang") == "vi"
    _fill_person(
        page,
        "declarant",
        {
            "full_name": "Nguyễn Thị Ánh Đào",
            "birth_date": "1990-03-15",
            "gender": "female",
            "id_type": "cccd",
            "id_number": "001190012345",
            "phone": "0912345678",
            "address.province": "Hà Nội",
            "address.district": "Quận Ba Đình",
            "address.commune": "Phường Phúc Xá",
            "address.street": "12 ngõ 34 phố Phúc Xá",
        },
    )
    page.click("button[value=add_member]")
    # The form came back with a member section and the declarant's answers kept.
    assert page.locator('[name="declarant.full_name"]').input_value() == "Nguyễn Thị Ánh Đào"
    _fill_person(
        page,
        "members.0",
        {
            "full_name": "Trần Minh Khôi",
            "relationship": "child",
            "birth_year": "2015",
            "gender": "male",
            "id_type": "cccd",
            "id_number": "001215000001",
        },
    )
    page.click("button.primary[value=submit]")
    page.wait_for_url(f"{live_hub.base_url}/ket-qua")
    links = page.locator('a[href^="/the/"]').evaluate_all("els => els.map(e => e.getAttribute('href'))")
    pass_links = sorted({href for href in links if href.count("/") == 2})
    assert len(pass_links) == 2, links

    page.goto(f"{live_hub.base_url}{pass_links[0]}")
    shot = tmp_path / "pass.png"
    page.screenshot(path=str(shot), full_page=True)
    gray = cv2.imdecode(np.frombuffer(shot.read_bytes(), np.uint8), cv2.IMREAD_GRAYSCALE)
    decoded = make_decoder("layered").decode(gray)
    assert len(decoded) == 1, "the kiosk decoder must read exactly one QR from the pass page screenshot"
    text = decoded[0].raw.decode("utf-8")

    engine = make_engine(live_hub.db_url)
    try:
        trust = KeyRing(engine, PassSettings()).trust_list(datetime.now(UTC))
    finally:
        engine.dispose()
    result = verify_pass(text, trust=trust, now=datetime.now(UTC) + timedelta(seconds=1))
    assert result.colour == Colour.GREEN and not result.flagged
    assert result.claims.pass_id in pass_links[0].replace("-", "")
    assert page.console_errors == []
