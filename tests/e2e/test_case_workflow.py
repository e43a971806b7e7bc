"""A health official in a real browser opens a case and sees the F1 list, then the F2 search finishing.

The check-ins are stored the way the bridge stores them (HubStore.commit) in the live hub's database, by
two people who declared on the hub and whose passes the market's kiosk scanned.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from hub import accounts
from hub import declarations as decl
from hub.cases import VIETNAM
from hub.config import PassSettings
from hub.db import make_engine
from hub.db.schema import devices
from hub.db.store import EventRow, HubStore
from hub.devices import add_venue
from hub.keys import KeyRing
from tests.hub.test_declarations import declarant_data

OFFICIAL = "bacsi.e2e"
OFFICIAL_PASSWORD = "mật khẩu bác sĩ e2e"


def _check(kiosk_id: str, pass_id: str, at: datetime, seq: int, *, out: bool) -> EventRow:
    return EventRow(
        kiosk_id=kiosk_id,
        epoch="e2e",
        seq=seq,
        uuid=str(uuid.uuid4()),
        kind="check_out" if out else "check_in",
        device_time=at,
        body={
            "direction": "out" if out else "in",
            "subject": {"type": "pass", "pass_id": pass_id, "kid": "00" * 8},
            "verdict": "green",
        },
    )


@pytest.fixture(scope="module")
def market_morning(live_hub) -> int:
    """A health official, a market with a kiosk, and two declared people who met there two days ago;
    returns the F0's declaration id."""
    engine = make_engine(live_hub.db_url)
    now = datetime.now(UTC)
    try:
        with engine.begin() as conn:
            accounts.create_user(
                conn,
                username=OFFICIAL,
                display_name="Bác sĩ E2E",
                role="health_official",
                password=OFFICIAL_PASSWORD,
            )
            add_venue(conn, venue_id="cho-e2e", name="Chợ Hôm", venue_type="market", now=now)
            conn.execute(
                devices.insert().values(kiosk_id="kiosk-cho-e2e", venue_id="cho-e2e", enrolled_at=now)
            )
        keyring = KeyRing(engine, PassSettings())
        saved = []
        for id_number, name, phone in (
            ("001190012345", "Nguyễn Thị Ánh Đào", "0912345678"),
            ("001190054321", "Trần Thị Bích", "0987000111"),
        ):
            model = decl.validate_ncovi(
                {"declarant": declarant_data(id_number=id_number, full_name=name, phone=phone), "members": []}
            )
            with engine.begin() as conn:
                saved.append(
                    decl.save_ncovi(conn, model, keyring=keyring, settings=PassSettings(), now=now)[0]
                )
        t0 = (now - timedelta(days=2)).replace(minute=0, second=0, microsecond=0)
        f0, f1 = saved
        HubStore(engine).commit(
            events=[
                _check("kiosk-cho-e2e", f0.pass_.pass_id, t0, 1, out=False),
                _check("kiosk-cho-e2e", f0.pass_.pass_id, t0 + timedelta(hours=1), 2, out=True),
                _check("kiosk-cho-e2e", f1.pass_.pass_id, t0 + timedelta(minutes=30), 3, out=False),
                _check("kiosk-cho-e2e", f1.pass_.pass_id, t0 + timedelta(minutes=90), 4, out=True),
            ]
        )
        return f0.declaration_id
    finally:
        engine.dispose()


def test_a_health_official_opens_a_case_and_sees_the_f1(live_hub, market_morning, page):
    page.goto(f"{live_hub.base_url}/login")
    page.fill("#username", OFFICIAL)
    page.fill("#password", OFFICIAL_PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_hub.base_url}/admin/")
    page.click("nav.admin-nav >> text=Ca bệnh")
    page.wait_for_url(f"{live_hub.base_url}/admin/cases/")
    page.click("#new-case")
    page.fill("#declaration_id", str(market_morning))
    page.fill("#onset_date", datetime.now(UTC).astimezone(VIETNAM).date().isoformat())
    page.click("#case-form button[type=submit]")
    page.wait_for_url(f"{live_hub.base_url}/admin/cases/*")
    assert "Nguyễn Thị Ánh Đào" in page.locator("h1").inner_text()
    row = page.locator("#f1-list tr.contact")
    assert row.count() == 1
    assert "Trần Thị Bích" in row.inner_text() and "Chợ Hôm" in row.inner_text()
    assert "60 phút" in row.locator("ul.reasons").inner_text()
    # cases.js polls the F2 job and reloads the page when it is done (nobody else was there: no F2).
    page.wait_for_selector("#f2-text >> text=Đã tìm xong F2: 0 người.", timeout=30_000)
    assert page.locator("#f1-count").inner_text() == "1"
    assert page.console_errors == []  # no CSP violation from the script
