"""The notification outbox: a real local HTTP gateway that checks signatures, real check-ins, real cases.

People declare (passes issued), check in at kiosks (events committed through the hub store, so visits
are derived as on ingest), an official opens a case; the notifier sends each contact one signed notice.
Time is an injected clock: retries and leases are tested by moving it, never by sleeping.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import random
import threading
import uuid
from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, insert, select, update

from hub import declarations as decl
from hub.__main__ import main
from hub.cases import decide, open_case, resolve_subject, run_f2
from hub.config import HubConfig, NotifySettings, PassSettings, load
from hub.db import from_db_time, make_engine
from hub.db.schema import audit_log, cases, devices, notifications, persons
from hub.db.store import EventRow, HubStore
from hub.devices import add_venue
from hub.identity import HubIdentity
from hub.keys import KeyRing
from hub.notify import (
    Exposure,
    Notifier,
    NotifyError,
    SendReport,
    enqueue,
    notice_text,
    release,
    run_notifier_in,
    status_counts,
    verify_signature,
    vietnam_span,
)
from hub.passes import display_pass_id
from hub.tracing import VisitIndex
from hub.tracing_rules import TracingRules
from protocol.settings import ConfigError
from tests.helpers import Child, wait_for
from tests.hub.test_declarations import member_data, ncovi_data

SECRET = "gateway-shared-secret-2026"
T0 = datetime(2026, 11, 20, 1, 0, tzinfo=UTC)  # 08:00 on 20/11/2026 in Viet Nam
NOW = datetime(2026, 11, 21, 3, 0, tzinfo=UTC)  # the case is opened the next morning
DECLARED = T0 - timedelta(days=1)
RULES = TracingRules()
PASS_SETTINGS = PassSettings(issuer="hub-test")

MARKET, MARKET_NAME = "cho-ben-thanh", "Chợ Bến Thành"
RESTAURANT, RESTAURANT_NAME = "quan-pho-thin", "Quán Phở Thìn"


# ------------------------------------------------------------------------------------------ the town


@dataclass
class Person:
    """Someone who declared: what must never appear in another person's notice."""

    name: str
    id_number: str
    phone: str | None
    birth: str
    pass_id: str = ""
    declaration_id: int = 0

    def secrets(self) -> list[str]:
        """Every spelling of this person's data that a leak would show."""
        found = [self.name, self.id_number, self.pass_id, display_pass_id(self.pass_id), self.birth]
        if self.phone:
            digits = self.phone.lstrip("0")
            found += [self.phone, "+84" + digits, "84" + digits]
        return found


@dataclass
class Town:
    """Declared people, their check-ins, and the case opened for ``f0``."""

    engine: Engine
    people: dict[str, Person] = field(default_factory=dict)
    case_id: int = 0
    seq: int = 0

    def person_id(self, who: str) -> int:
        key = HubIdentity(self.engine).person_key(self.people[who].id_number)
        with self.engine.connect() as conn:
            return int(conn.execute(select(persons.c.id).where(persons.c.person_key == key)).scalar_one())

    def declare(self, who: str, name: str, id_number: str, phone: str | None, birth: str, *, child: str = ""):
        """An NCOVI declaration (with a child declared on their behalf when ``child`` is named)."""
        data = ncovi_data(
            members=1 if child else 0, full_name=name, id_number=id_number, phone=phone, birth_date=birth
        )
        model = decl.validate_ncovi(data, today=decl.today_in_vietnam(DECLARED))
        with self.engine.begin() as conn:
            saved = decl.save_ncovi(
                conn, model, keyring=KeyRing(self.engine, PASS_SETTINGS), settings=PASS_SETTINGS, now=DECLARED
            )
        self.people[who] = Person(
            name, id_number, phone, birth, saved[0].pass_.pass_id, saved[0].declaration_id
        )
        if child:
            member = member_data(0)
            self.people[child] = Person(
                member["full_name"],
                member["id_number"],
                None,
                str(member["birth_year"]),
                saved[1].pass_.pass_id,
                saved[1].declaration_id,
            )

    def scans(self, *visits: tuple[str, str, str, datetime]) -> None:
        """Commit check-in/check-out events (kiosk, kind, who, time) as the bridge does."""
        rows = []
        for kiosk, kind, who, at in visits:
            self.seq += 1
            body = {
                "direction": "in" if kind == "check_in" else "out",
                "subject": {"type": "pass", "pass_id": self.people[who].pass_id},
                "verdict": "green",
            }
            rows.append(EventRow(kiosk, "epoch-1", self.seq, str(uuid.uuid4()), kind, at, body))
        HubStore(self.engine).commit(events=rows)

    def open_case(self, who: str = "f0") -> int:
        identity = HubIdentity(self.engine)
        with self.engine.begin() as conn:
            subject = resolve_subject(conn, identity, declaration_id=self.people[who].declaration_id, now=NOW)
        self.case_id = open_case(
            self.engine,
            identity,
            subject,
            onset_date=date(2026, 11, 21),
            test_date=None,
            rules=RULES,
            actor="bs.lan",
            role="health_official",
            now=NOW,
        )
        return self.case_id

    def run_f2(self) -> int:
        return run_f2(
            self.engine, self.case_id, VisitIndex(self.engine, horizon_s=lambda: 0), RULES, clock=lambda: NOW
        )


def build_town(engine: Engine, *, crowd: int = 0) -> Town:
    """The F0 shops at the market 08:00-09:00; Bình (with her child, who has no phone) and Dung are there
    too (F1); Bình later eats at the restaurant with Em (F2 through Bình); Giang comes the next day
    (nobody). ``crowd`` more people with phones are at the market with the F0 (F1)."""
    town = Town(engine)
    with engine.begin() as conn:
        add_venue(conn, venue_id=MARKET, name=MARKET_NAME, venue_type="market", now=DECLARED)
        add_venue(conn, venue_id=RESTAURANT, name=RESTAURANT_NAME, venue_type="restaurant", now=DECLARED)
        conn.execute(
            insert(devices),
            [
                {"kiosk_id": "kiosk-cho-1", "venue_id": MARKET},
                {"kiosk_id": "kiosk-pho-1", "venue_id": RESTAURANT},
            ],
        )
    town.declare("f0", "Phạm Thị Hoa", "001190000001", "0912000001", "1990-01-01")
    town.declare("binh", "Lê Thị Bình", "001190000002", "0912000002", "1990-02-02", child="child")
    town.declare("dung", "Võ Thị Dung", "001190000004", "0912000004", "1990-04-04")
    town.declare("em", "Đỗ Thị Em", "001190000005", "0912000005", "1990-05-05")
    town.declare("giang", "Hồ Thị Giang", "001190000007", "0912000007", "1990-07-07")
    for i in range(crowd):
        town.declare(f"c{i}", "Nguyễn Thị Lan", f"0011901{i:05d}", f"09130{i:05d}", "1990-08-08")
    hour = timedelta(hours=1)
    minute = timedelta(minutes=1)
    town.scans(
        ("kiosk-cho-1", "check_in", "f0", T0),
        ("kiosk-cho-1", "check_out", "f0", T0 + hour),
        ("kiosk-cho-1", "check_in", "binh", T0 + 30 * minute),  # no exit scan: a market visit lasts 1 h
        ("kiosk-cho-1", "check_in", "child", T0 + 40 * minute),
        ("kiosk-cho-1", "check_in", "dung", T0 + 20 * minute),
        ("kiosk-pho-1", "check_in", "binh", T0 + 6 * hour),
        ("kiosk-pho-1", "check_out", "binh", T0 + 7 * hour),
        ("kiosk-pho-1", "check_in", "em", T0 + 6 * hour + 10 * minute),
        ("kiosk-pho-1", "check_out", "em", T0 + 7 * hour + 10 * minute),
        ("kiosk-cho-1", "check_in", "giang", T0 + 24 * hour),
        *(("kiosk-cho-1", "check_in", f"c{i}", T0 + 15 * minute) for i in range(crowd)),
    )
    return town


# --------------------------------------------------------------------------------------- the gateway


class Gateway:
    """A real HTTP server on 127.0.0.1:0 standing in for the SMS gateway.

    It checks every signature (a bad one gets 401) and answers by a script: ``queue`` is consumed in
    arrival order, then ``every_key`` by the request's number for its idempotency key; "500", "503"
    (Retry-After: 90), "hang" (hold until released, then 500) and "slow_ok" (hold, then deliver) fail or
    delay, anything else delivers.
    """

    def __init__(self):
        self.secret = SECRET.encode()
        self.queue: deque[str] = deque()
        self.every_key: list[str] = []
        self.requests: list[tuple[str, str]] = []  # (idempotency key, action)
        self.delivered: list[dict] = []
        self.delivered_keys: list[str] = []
        self.bad_signatures = 0
        self.held = threading.Event()  # a request is being held
        self.release = threading.Event()
        self._lock = threading.Lock()
        self._per_key: Counter[str] = Counter()
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep the test output quiet
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                stamp = self.headers.get("X-AnToan-Timestamp", "")
                expected = (
                    "sha256="
                    + hmac.new(gateway.secret, stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
                )
                if not hmac.compare_digest(expected, self.headers.get("X-AnToan-Signature", "")):
                    with gateway._lock:
                        gateway.bad_signatures += 1
                    return self._answer(401, b"bad signature")
                key = self.headers["Idempotency-Key"]
                with gateway._lock:
                    n = gateway._per_key[key]
                    gateway._per_key[key] += 1
                    if gateway.queue:
                        action = gateway.queue.popleft()
                    else:
                        action = gateway.every_key[n] if n < len(gateway.every_key) else "ok"
                    gateway.requests.append((key, action))
                if action in ("hang", "slow_ok"):
                    gateway.held.set()
                    gateway.release.wait(30)
                if action in ("500", "hang"):
                    return self._answer(500, b"upstream SMS centre unavailable")
                if action == "503":
                    return self._answer(503, b"busy", {"Retry-After": "90"})
                with gateway._lock:
                    gateway.delivered.append(json.loads(body))
                    gateway.delivered_keys.append(key)
                return self._answer(200, b'{"accepted":true}')

            def _answer(self, code: int, text: bytes, headers: dict | None = None):
                try:
                    self.send_response(code)
                    for name, value in (headers or {}).items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(text)))
                    self.end_headers()
                    self.wfile.write(text)
                except OSError:
                    pass  # the client gave up waiting (a timeout test)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/sms/send"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self):
        self.release.set()
        self.server.shutdown()
        self.server.server_close()

    def texts_to(self, phone: str) -> list[str]:
        e164 = "+84" + phone.lstrip("0")
        return [d["text"] for d in self.delivered if d["to"] == e164]


@pytest.fixture
def gateway():
    gw = Gateway()
    yield gw
    gw.close()


class Clock:
    """An injected clock the test moves."""

    def __init__(self, now: datetime):
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def notify_settings(gw: Gateway, **overrides) -> NotifySettings:
    values = {
        "webhook_url": gw.url,
        "webhook_secret": SECRET,
        "status_url": "https://hub.example.vn/tinh-trang",
        "timeout_s": 5.0,
        "lease_s": 60.0,
        "max_attempts": 5,
        "backoff_base_s": 30.0,
        "backoff_max_s": 100.0,
        "hold_above": 500,
        "batch_size": 50,
        "interval_s": 0.05,
    }
    values.update(overrides)
    return NotifySettings.model_validate(values)


def rows(engine: Engine) -> dict[int, dict]:
    """Notification rows by person id."""
    with engine.connect() as conn:
        return {r.person_id: dict(r._mapping) for r in conn.execute(select(notifications))}


# ---------------------------------------------------------------------------------------- the basics


def test_each_contact_is_told_once_where_and_when(hub_engine, gateway):
    town = build_town(hub_engine)
    town.open_case()
    clock = Clock(NOW)
    notifier = Notifier(hub_engine, notify_settings(gateway), clock=clock, rng=random.Random(1))
    queued, sent = notifier.run_once()
    assert queued.pending == {town.case_id: 3} and not queued.held
    assert (sent.sent, sent.no_contact, sent.retrying) == (2, 1, 0)
    assert len(gateway.texts_to("0912000002")) == len(gateway.texts_to("0912000004")) == 1
    (binh,) = gateway.texts_to("0912000002")
    assert "F1" in binh and "tự cách ly" in binh and "trạm y tế" in binh
    assert f"{MARKET_NAME} từ 08:30 đến 09:30 ngày 20/11/2026" in binh
    assert binh.endswith("Tra cứu: https://hub.example.vn/tinh-trang")
    (dung,) = gateway.texts_to("0912000004")
    assert f"{MARKET_NAME} từ 08:20 đến 09:20 ngày 20/11/2026" in dung
    found = rows(hub_engine)
    child = found[town.person_id("child")]
    assert child["status"] == "no_contact" and child["attempts"] == 0 and "no phone" in child["last_error"]
    for who in ("binh", "dung"):
        row = found[town.person_id(who)]
        assert row["status"] == "sent" and row["attempts"] == 1 and from_db_time(row["sent_at"]) == NOW
    assert town.person_id("f0") not in found and town.person_id("giang") not in found

    # F2 arrive later (a background job); only the new contact is told, the F1 not again.
    assert town.run_f2() == 1
    clock.advance(600)
    queued, sent = notifier.run_once()
    assert queued.pending == {town.case_id: 1} and sent.sent == 1
    (em,) = gateway.texts_to("0912000005")
    assert "F2" in em and f"{RESTAURANT_NAME} từ 14:10 đến 15:10 ngày 20/11/2026" in em
    assert "theo dõi sức khỏe 14 ngày" in em
    # Nothing more to do: enqueue again and send again change nothing.
    before = len(gateway.requests)
    queued, sent = notifier.run_once()
    assert queued.total == 0 and sent.claimed == 0 and len(gateway.requests) == before
    assert enqueue(hub_engine, hold_above=500, now=NOW).total == 0
    assert status_counts(hub_engine, town.case_id) == {
        "held": 0,
        "pending": 0,
        "sending": 0,
        "sent": 3,
        "failed": 0,
        "no_contact": 1,
        "cancelled": 0,
    }


def test_a_notice_holds_no_other_persons_data(hub_engine, gateway):
    town = build_town(hub_engine)
    town.open_case()
    town.run_f2()
    Notifier(hub_engine, notify_settings(gateway), clock=Clock(NOW)).run_once()
    assert len(gateway.delivered) == 3
    by_phone = {"+84" + p.phone.lstrip("0"): w for w, p in town.people.items() if p.phone}
    for body in gateway.delivered:
        receiver = by_phone[body["to"]]
        raw = json.dumps(body, ensure_ascii=False)
        assert set(body) == {"id", "to", "text", "lang", "kind"}
        for who, person in town.people.items():
            if who == receiver:
                continue
            for secret in person.secrets():
                assert secret not in raw, f"{who}'s {secret!r} in the notice to {receiver}"
        # Not even the receiver's own name or ID: an SMS can be read by others.
        own = town.people[receiver]
        assert own.name not in raw and own.id_number not in raw and own.pass_id not in raw


def test_signatures_are_checked_by_the_gateway(hub_engine, gateway):
    town = build_town(hub_engine)
    town.open_case()
    wrong = notify_settings(gateway, webhook_secret="not-the-gateway-secret")
    _, sent = Notifier(hub_engine, wrong, clock=Clock(NOW)).run_once()
    assert sent.retrying == 2 and not gateway.delivered and gateway.bad_signatures == 2
    assert {r["last_error"] for r in rows(hub_engine).values() if r["status"] == "pending"} == {
        "HTTP 401: bad signature"
    }
    # The same bytes verify with the right key and not with another.
    stamp, body = "1795000000", b'{"id":1}'
    from hub.notify import signature

    assert verify_signature(SECRET.encode(), stamp, body, signature(SECRET.encode(), stamp, body))
    assert not verify_signature(SECRET.encode(), stamp, body + b" ", signature(SECRET.encode(), stamp, body))


# ------------------------------------------------------------------------------------------- retries


def test_failures_are_retried_with_growing_backoff_until_delivered(hub_engine, gateway):
    town = build_town(hub_engine)
    town.open_case()
    gateway.every_key = ["500", "500", "hang"]  # then delivered
    clock = Clock(NOW)
    settings = notify_settings(gateway, timeout_s=0.3, backoff_base_s=30, backoff_max_s=100)
    notifier = Notifier(hub_engine, settings, clock=clock, rng=random.Random(5))
    binh = town.person_id("binh")
    # Attempt n fails: the next one waits between half and all of min(max, base * 2^(n-1)).
    for attempt, ceiling, error in (
        (1, 30, "HTTP 500"),
        (2, 60, "HTTP 500"),
        (3, 100, "no answer within 0.3 s"),
    ):
        requests_before = len(gateway.requests)
        _, sent = notifier.run_once()
        assert sent.retrying == 2 and len(gateway.requests) == requests_before + 2
        row = rows(hub_engine)[binh]
        assert row["status"] == "pending" and row["attempts"] == attempt
        assert row["last_error"].startswith(error)
        wait = (from_db_time(row["next_attempt_at"]) - clock.now).total_seconds()
        assert ceiling / 2 <= wait <= ceiling
        # Not due yet: a round now sends nothing.
        _, sent = notifier.run_once()
        assert sent.claimed == 0 and len(gateway.requests) == requests_before + 2
        clock.advance(ceiling)
    _, sent = notifier.run_once()
    assert sent.sent == 2
    row = rows(hub_engine)[binh]
    assert row["status"] == "sent" and row["attempts"] == 4 and row["last_error"] is None
    assert Counter(gateway.delivered_keys) == {
        str(row["id"]): 1,
        str(rows(hub_engine)[town.person_id("dung")]["id"]): 1,
    }


def test_retry_after_from_the_gateway_is_respected(hub_engine, gateway):
    town = build_town(hub_engine)
    town.open_case()
    gateway.every_key = ["503"]
    clock = Clock(NOW)
    Notifier(hub_engine, notify_settings(gateway, backoff_base_s=5), clock=clock).run_once()
    row = rows(hub_engine)[town.person_id("binh")]
    assert row["last_error"] == "HTTP 503: busy"
    assert (from_db_time(row["next_attempt_at"]) - NOW).total_seconds() >= 90


def test_a_notice_fails_after_the_last_attempt(hub_engine, gateway):
    town = build_town(hub_engine)
    town.open_case()
    gateway.every_key = ["500"] * 10
    clock = Clock(NOW)
    notifier = Notifier(hub_engine, notify_settings(gateway, max_attempts=3, backoff_max_s=40), clock=clock)
    results = []
    for _ in range(5):
        results.append(notifier.run_once()[1])
        clock.advance(40)
    assert [(r.retrying, r.failed) for r in results] == [(2, 0), (2, 0), (0, 2), (0, 0), (0, 0)]
    assert len(gateway.requests) == 6 and not gateway.delivered
    row = rows(hub_engine)[town.person_id("binh")]
    assert row["status"] == "failed" and row["attempts"] == 3 and row["next_attempt_at"] is None
    assert row["last_error"].startswith("HTTP 500")


# ------------------------------------------------------------------------------ exactly once, concurrency


def test_two_enqueues_and_two_senders_at_once_tell_each_person_once(hub_engine, db_url, gateway):
    town = build_town(hub_engine, crowd=24)
    town.open_case()
    engines = [make_engine(db_url), make_engine(db_url)]
    try:
        settings = notify_settings(gateway, batch_size=4)
        notifiers = [Notifier(e, settings, clock=Clock(NOW), name=f"n{i}") for i, e in enumerate(engines)]
        start = threading.Barrier(2)
        failures: list[BaseException] = []
        totals = [SendReport(), SendReport()]

        def work(i: int, notifier: Notifier) -> None:
            try:
                start.wait()
                for _ in range(3):
                    totals[i].add(notifier.run_once()[1])
            except BaseException as exc:  # reported below
                failures.append(exc)

        threads = [threading.Thread(target=work, args=(i, n)) for i, n in enumerate(notifiers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not failures, failures
        # Each notice was claimed by exactly one of them (the other found it taken or not due).
        assert totals[0].sent + totals[1].sent == 26 and totals[0].no_contact + totals[1].no_contact == 1
        print("concurrent senders:", [t.as_dict() for t in totals])
    finally:
        for e in engines:
            e.dispose()
    found = rows(hub_engine)
    assert len(found) == 24 + 3  # one row per contact, though both enqueued
    assert Counter(r["status"] for r in found.values()) == {"sent": 26, "no_contact": 1}
    assert len(gateway.delivered_keys) == 26 and len(set(gateway.delivered_keys)) == 26
    assert len({d["to"] for d in gateway.delivered}) == 26
    assert all(r["attempts"] == 1 for r in found.values() if r["status"] == "sent")


def test_a_crashed_senders_claim_is_taken_again_after_its_lease(hub_engine, db_url, gateway, tmp_path):
    town = build_town(hub_engine)
    town.open_case()
    gateway.queue.append("hang")  # the first request overall is held: its sender is killed meanwhile
    env = {
        "ANTOAN_HUB__DATABASE__URL": db_url,
        "ANTOAN_HUB__NOTIFY__WEBHOOK_URL": gateway.url,
        "ANTOAN_HUB__NOTIFY__WEBHOOK_SECRET": SECRET,
        "ANTOAN_HUB__NOTIFY__TIMEOUT_S": "30",
        "ANTOAN_HUB__NOTIFY__LEASE_S": "60",
        "ANTOAN_HUB_CONFIG": "",
    }
    child = Child(["-m", "hub", "notify", "--once"], log_path=tmp_path / "notify.log", env=env).start()
    try:
        assert gateway.held.wait(60), child.log_text()
        child.kill9()
    finally:
        child.kill9()
    ((held_key, _),) = gateway.requests
    claimed = [r for r in rows(hub_engine).values() if r["status"] == "sending"]
    assert [str(r["id"]) for r in claimed] == [held_key] and claimed[0]["attempts"] == 1
    lease_end = from_db_time(claimed[0]["next_attempt_at"])
    clock = Clock(lease_end - timedelta(seconds=1))
    notifier = Notifier(hub_engine, notify_settings(gateway), clock=clock)
    _, sent = notifier.run_once()
    assert sent.sent == 1 and held_key not in gateway.delivered_keys  # the other notice; this one is leased
    clock.advance(2)
    _, sent = notifier.run_once()
    assert sent.sent == 1 and gateway.delivered_keys.count(held_key) == 1
    row = next(r for r in rows(hub_engine).values() if str(r["id"]) == held_key)
    assert row["status"] == "sent" and row["attempts"] == 2


def test_a_sender_past_its_lease_cannot_overwrite_the_newer_attempt(hub_engine, gateway):
    town = build_town(hub_engine)
    town.open_case()
    binh = town.person_id("binh")
    assert enqueue(hub_engine, hold_above=500, now=NOW).pending == {town.case_id: 3}
    with hub_engine.begin() as conn:  # only Bình's notice is due, to follow one row
        conn.execute(update(notifications).where(notifications.c.person_id != binh).values(status="held"))
    gateway.queue.extend(["slow_ok", "ok"])
    settings = notify_settings(gateway, timeout_s=10, lease_s=20)
    slow = Notifier(hub_engine, settings, clock=Clock(NOW))
    slow_thread = threading.Thread(target=slow.send_due)
    slow_thread.start()
    try:
        assert gateway.held.wait(30)
        # The slow sender's lease has ended by the other sender's clock: it takes the row and delivers.
        _, sent = Notifier(hub_engine, settings, clock=Clock(NOW + timedelta(seconds=21))).run_once()
        assert sent.sent == 1
    finally:
        gateway.release.set()
        slow_thread.join(30)
    row = rows(hub_engine)[binh]
    assert row["status"] == "sent" and row["attempts"] == 2
    assert from_db_time(row["sent_at"]) == NOW + timedelta(seconds=21)  # the newer attempt's result stands
    # The gateway got the same idempotency key twice: it is how it drops the repeat.
    assert gateway.delivered_keys == [str(row["id"])] * 2


# ------------------------------------------------------------------------------ hold, dismiss, no phone


def test_a_large_batch_is_held_until_an_official_releases_it(hub_engine, gateway):
    town = build_town(hub_engine)
    town.open_case()
    clock = Clock(NOW)
    notifier = Notifier(hub_engine, notify_settings(gateway, hold_above=2), clock=clock)
    queued, sent = notifier.run_once()
    assert queued.held == {town.case_id: 3} and not queued.pending and sent.claimed == 0
    clock.advance(3600)
    assert notifier.run_once()[1].claimed == 0 and not gateway.requests
    assert release(hub_engine, town.case_id, actor="bs.lan", role="health_official", now=clock.now) == 3
    with hub_engine.connect() as conn:
        entry = conn.execute(select(audit_log).where(audit_log.c.action == "notify.release")).one()
    assert (entry.actor, entry.target_id, entry.detail) == ("bs.lan", str(town.case_id), {"released": 3})
    _, sent = notifier.run_once()
    assert (sent.sent, sent.no_contact) == (2, 1)
    # The F2 pass adds one person: not above the threshold, sent without waiting.
    town.run_f2()
    queued, sent = notifier.run_once()
    assert queued.pending == {town.case_id: 1} and sent.sent == 1
    assert release(hub_engine, town.case_id, actor="bs.lan", role="health_official") == 0


def test_dismissed_contacts_and_closed_cases_are_not_notified(hub_engine, gateway):
    town = build_town(hub_engine)
    town.open_case()
    dung, binh = town.person_id("dung"), town.person_id("binh")
    decide(hub_engine, town.case_id, dung, "dismissed", actor="bs.lan", role="health_official", now=NOW)
    clock = Clock(NOW)
    notifier = Notifier(hub_engine, notify_settings(gateway), clock=clock)
    queued = notifier.enqueue()
    assert queued.pending == {town.case_id: 2} and dung not in rows(hub_engine)
    # Dismissed after the notice was queued, before it went out: cancelled at the claim.
    decide(hub_engine, town.case_id, binh, "dismissed", actor="bs.lan", role="health_official", now=NOW)
    _, sent = notifier.run_once()
    assert (sent.sent, sent.cancelled, sent.no_contact) == (0, 1, 1) and not gateway.requests
    assert rows(hub_engine)[binh]["last_error"] == "contact dismissed"
    # The official changes their mind: the notice is due again and goes out once.
    decide(hub_engine, town.case_id, binh, "confirmed", actor="bs.lan", role="health_official", now=NOW)
    decide(hub_engine, town.case_id, dung, "suggested", actor="bs.lan", role="health_official", now=NOW)
    queued, sent = notifier.run_once()
    assert queued.revived == 1 and queued.pending == {town.case_id: 1} and sent.sent == 2
    assert len(gateway.texts_to("0912000002")) == 1 and len(gateway.texts_to("0912000004")) == 1
    # A closed case sends nothing more (the F2 found after closing are not even queued).
    town.run_f2()
    with hub_engine.begin() as conn:
        conn.execute(update(cases).where(cases.c.id == town.case_id).values(status="closed"))
    assert notifier.run_once()[0].total == 0 and not gateway.texts_to("0912000005")


def test_a_queued_notice_of_a_case_closed_before_sending_is_cancelled(hub_engine, gateway):
    town = build_town(hub_engine)
    town.open_case()
    notifier = Notifier(hub_engine, notify_settings(gateway), clock=Clock(NOW))
    notifier.enqueue()
    with hub_engine.begin() as conn:
        conn.execute(update(cases).where(cases.c.id == town.case_id).values(status="closed"))
    _, sent = notifier.run_once()
    assert sent.cancelled == 3 and not gateway.requests
    assert {r["last_error"] for r in rows(hub_engine).values()} == {"case closed"}


# ------------------------------------------------------------------------------------- the message


def test_a_span_across_midnight_names_both_days():
    start = int(datetime(2026, 11, 20, 16, 30, tzinfo=UTC).timestamp())  # 23:30 in Viet Nam
    assert vietnam_span(start, start + 3600) == "từ 23:30 ngày 20/11/2026 đến 00:30 ngày 21/11/2026"
    assert vietnam_span(start - 3600, start) == "từ 22:30 đến 23:30 ngày 20/11/2026"


def test_a_notice_lists_a_few_places_and_says_when_there_were_more():
    places = [
        Exposure(f"v{i}", f"Chợ số {i}", 1795000000 + i * 7200, 1795003600 + i * 7200) for i in range(5)
    ]
    text = notice_text(1, places, more=False, status_url=None)
    assert [f"Chợ số {i}" in text for i in range(5)] == [True, True, True, False, False]
    assert "và một số lần khác" in text and "Tra cứu" not in text
    assert "và một số lần khác" not in notice_text(2, places[:1], more=False, status_url=None)
    assert "và một số lần khác" in notice_text(2, places[:1], more=True, status_url=None)


def test_overlapping_encounters_at_one_venue_are_one_place(hub_engine):
    from hub.notify import exposures

    reasons = [
        {"venue_id": MARKET, "via": 7, "start_s": 100, "end_s": 200, "minutes": 1, "source": "venue"},
        {"venue_id": MARKET, "via": 8, "start_s": 150, "end_s": 300, "minutes": 2, "source": "venue"},
        {"venue_id": MARKET, "via": 9, "start_s": 400, "end_s": 500, "minutes": 1, "source": "venue"},
        {
            "venue_id": "kiosk:kiosk-x",
            "via": 7,
            "start_s": 120,
            "end_s": 130,
            "minutes": 0,
            "source": "venue",
        },
    ]
    with hub_engine.begin() as conn:
        add_venue(conn, venue_id=MARKET, name=MARKET_NAME, venue_type="market", now=NOW)
        found = exposures(conn, reasons)
    assert found == [
        Exposure(MARKET, MARKET_NAME, 100, 300),
        Exposure("kiosk:kiosk-x", "kiosk:kiosk-x", 120, 130),
        Exposure(MARKET, MARKET_NAME, 400, 500),
    ]


# -------------------------------------------------------------------------- the thread, config, CLI


def test_the_notifier_thread_sends_and_stops(hub_engine, gateway):
    town = build_town(hub_engine)
    town.open_case()
    notifier = Notifier(hub_engine, notify_settings(gateway), clock=Clock(NOW), name="notifier-test").start()
    try:
        wait_for(lambda: len(gateway.delivered) == 2, timeout_s=30, what="two notices delivered")
    finally:
        notifier.stop()
    assert "notifier-test" not in {t.name for t in threading.enumerate()}


def test_run_notifier_in_the_bridge_follows_its_stop_event(hub_engine, db_url, gateway):
    town = build_town(hub_engine)
    town.open_case()
    off = HubConfig.model_validate({"database": {"url": db_url}})
    assert run_notifier_in(off, engine=hub_engine) is None
    config = HubConfig.model_validate(
        {"database": {"url": db_url}, "notify": {"webhook_url": gateway.url, "webhook_secret": SECRET}}
    )
    stop = threading.Event()
    assert run_notifier_in(config, engine=hub_engine, stop=stop) is not None
    wait_for(lambda: len(gateway.delivered) == 2, timeout_s=30, what="two notices delivered")
    stop.set()
    wait_for(
        lambda: "notifier" not in {t.name for t in threading.enumerate()},
        timeout_s=30,
        what="the thread to end",
    )


def test_notify_settings_are_checked(tmp_path):
    with pytest.raises(ConfigError, match="webhook_secret"):
        load(environ={"ANTOAN_HUB__NOTIFY__WEBHOOK_URL": "https://sms.example.vn/send"})
    with pytest.raises(ConfigError, match="http"):
        load(
            environ={"ANTOAN_HUB__NOTIFY__WEBHOOK_URL": "ftp://x", "ANTOAN_HUB__NOTIFY__WEBHOOK_SECRET": "s"}
        )
    with pytest.raises(ConfigError, match="lease_s"):
        load(environ={"ANTOAN_HUB__NOTIFY__TIMEOUT_S": "30", "ANTOAN_HUB__NOTIFY__LEASE_S": "20"})
    secret_file = tmp_path / "webhook_secret"
    secret_file.write_text("from-a-file\n")
    config = load(
        environ={
            "ANTOAN_HUB__NOTIFY__WEBHOOK_URL": "https://sms.example.vn/send",
            "ANTOAN_HUB__NOTIFY__WEBHOOK_SECRET_FILE": str(secret_file),
        }
    )
    assert config.notify.webhook_secret.get_secret_value() == "from-a-file"
    assert "from-a-file" not in repr(config)
    assert load(environ={}).notify.webhook_url is None
    with pytest.raises(NotifyError, match="webhook_url"):
        Notifier(make_engine("sqlite://"), NotifySettings())


def test_the_notify_command_sends_once_and_reports(hub_engine, db_url, gateway, monkeypatch):
    for key in [k for k in os.environ if k.startswith("ANTOAN_HUB")]:
        monkeypatch.delenv(key)
    town = build_town(hub_engine)
    town.open_case()
    env = {"ANTOAN_HUB__DATABASE__URL": db_url}
    result = CliRunner().invoke(main, ["notify", "--once"], env=env)
    assert result.exit_code != 0 and "notifications are off" in result.output
    env |= {"ANTOAN_HUB__NOTIFY__WEBHOOK_URL": gateway.url, "ANTOAN_HUB__NOTIFY__WEBHOOK_SECRET": SECRET}
    result = CliRunner().invoke(main, ["notify", "--once"], env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {
        "queued": 3,
        "held": 0,
        "sent": 2,
        "retrying": 0,
        "failed": 0,
        "no_contact": 1,
        "cancelled": 0,
        "busy": 0,
    }
    assert len(gateway.delivered) == 2


def test_the_notify_command_runs_until_sigterm_and_logs_no_phone_numbers(
    hub_engine, db_url, gateway, tmp_path
):
    town = build_town(hub_engine)
    town.open_case()
    gateway.every_key = ["500"]  # each notice fails once, so the log has errors to write
    env = {
        "ANTOAN_HUB__DATABASE__URL": db_url,
        "ANTOAN_HUB__NOTIFY__WEBHOOK_URL": gateway.url,
        "ANTOAN_HUB__NOTIFY__WEBHOOK_SECRET": SECRET,
        "ANTOAN_HUB__NOTIFY__INTERVAL_S": "0.2",
        "ANTOAN_HUB__NOTIFY__BACKOFF_BASE_S": "0.2",
        "ANTOAN_HUB__NOTIFY__BACKOFF_MAX_S": "0.4",
        "ANTOAN_HUB_CONFIG": "",
    }
    child = Child(["-m", "hub", "-v", "notify"], log_path=tmp_path / "notify.log", env=env).start()
    try:
        wait_for(lambda: len(gateway.delivered) == 2, timeout_s=60, what="both notices delivered")
        assert child.terminate() == 0, child.log_text()
    finally:
        child.kill9()
    log = child.log_text()
    assert "notifier stopped" in log and "HTTP 500" in log
    for person in town.people.values():
        for secret in person.secrets():
            if len(secret) > 4:
                assert secret not in log
