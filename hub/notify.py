"""The notification outbox: notices to a case's contacts, sent once each through a signed webhook.

Three steps, each safe to run in several processes at once:

1. **Enqueue** (:func:`enqueue`): every contact of an open case (not dismissed) without a notice gets
   one row in ``notifications`` (unique per case and person, so running it twice changes nothing). The
   circuit breaker: when one pass finds more than ``notify.hold_above`` new contacts for one case (a
   large F2), their rows are created ``held`` and nothing is sent until an official releases them
   (:func:`release`, audited).
2. **Claim**: a sender takes a due row with one conditional ``UPDATE … WHERE status = 'pending'``, so two
   senders never take the same row; the claim (``sending``) carries a lease, and a row whose sender
   died is taken again when the lease ends. The contact's status is checked again at that moment: a
   contact dismissed (or a case closed) since the enqueue is ``cancelled``; a person whose current
   declaration has no phone number is ``no_contact``.
3. **Send**: the notice (Vietnamese, no other person's data: venue names and times only) is POSTed as
   JSON to ``notify.webhook_url``, signed with HMAC-SHA256 over ``<timestamp>.<body>``; a failure is
   retried with exponential backoff and jitter, up to ``notify.max_attempts``.

Statuses: ``held`` → ``pending`` → ``sending`` → ``sent`` | ``failed`` (after the last attempt), or
``no_contact`` / ``cancelled``. At most once per person and case: the database row is unique, and a
retry after a crash between the gateway's answer and our commit carries the same ``Idempotency-Key``
(the notification id), so the gateway drops the repeat.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import logging
import random
import ssl
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from urllib.parse import urlsplit

from sqlalchemy import Engine, and_, exists, func, literal, select, update
from sqlalchemy.exc import OperationalError

from hub import audit
from hub.config import HubConfig, NotifySettings
from hub.db import dialect_insert, to_db_time
from hub.db.schema import case_contacts, cases, declaration_persons, declarations, notifications, venues
from hub.identity import HubIdentity, link_declarations

log = logging.getLogger(__name__)

#: Notices are about Vietnamese calendar days and clock times (Viet Nam keeps UTC+7 all year).
VIETNAM = timezone(timedelta(hours=7))

HELD, PENDING, SENDING, SENT, FAILED, NO_CONTACT, CANCELLED = (
    "held",
    "pending",
    "sending",
    "sent",
    "failed",
    "no_contact",
    "cancelled",
)
STATUSES = (HELD, PENDING, SENDING, SENT, FAILED, NO_CONTACT, CANCELLED)

SIGNATURE_HEADER = "X-AnToan-Signature"
TIMESTAMP_HEADER = "X-AnToan-Timestamp"
IDEMPOTENCY_HEADER = "Idempotency-Key"
#: Encounters spelled out in one notice (an SMS); the rest are summed up.
MAX_ENCOUNTERS_IN_TEXT = 3
#: Longest gateway answer kept in ``last_error``.
MAX_ERROR_CHARS = 300
_RESPONSE_READ_LIMIT = 64 * 1024


class NotifyError(Exception):
    """The notifier cannot run as configured; the message says what to set."""


def _now() -> datetime:
    return datetime.now(UTC)


# ------------------------------------------------------------------------------------------ enqueue


@dataclass
class EnqueueReport:
    """Notices created by one pass, by case: ``pending`` to send now, ``held`` for an official."""

    pending: dict[int, int] = field(default_factory=dict)
    held: dict[int, int] = field(default_factory=dict)
    revived: int = 0

    @property
    def total(self) -> int:
        """Notices created, pending and held."""
        return sum(self.pending.values()) + sum(self.held.values())


def _no_notice_yet():
    return ~exists().where(
        and_(
            notifications.c.case_id == case_contacts.c.case_id,
            notifications.c.person_id == case_contacts.c.person_id,
        )
    )


def _wanted():
    """Contacts that should be told: not dismissed, in an open case."""
    return and_(case_contacts.c.status != "dismissed", cases.c.status == "open")


def enqueue(engine: Engine, *, hold_above: int, now: datetime | None = None) -> EnqueueReport:
    """Create the missing notices of every open case; above ``hold_above`` new ones for a case they are
    ``held``. Idempotent, and safe while other processes enqueue or send."""
    now = to_db_time(now or _now())
    report = EnqueueReport()
    joined = case_contacts.join(cases, cases.c.id == case_contacts.c.case_id)
    # Counted first, on a read-only connection (a SQLite transaction that reads before it writes can
    # fail when another writer commits in between); the insert then takes only the rows counted.
    with engine.connect() as conn:
        waiting = conn.execute(
            select(case_contacts.c.case_id, func.count(), func.max(case_contacts.c.id))
            .select_from(joined)
            .where(and_(_wanted(), _no_notice_yet()))
            .group_by(case_contacts.c.case_id)
            .order_by(case_contacts.c.case_id)
        ).all()
    for case_id, count, max_id in waiting:
        status = HELD if count > hold_above else PENDING
        rows = (
            select(
                case_contacts.c.case_id,
                case_contacts.c.person_id,
                case_contacts.c.degree,
                literal(status, notifications.c.status.type),
                literal(0, notifications.c.attempts.type),
                literal(now, notifications.c.next_attempt_at.type),
                literal(now, notifications.c.created_at.type),
            )
            .select_from(joined)
            .where(
                and_(
                    case_contacts.c.case_id == case_id,
                    case_contacts.c.id <= max_id,
                    _wanted(),
                    _no_notice_yet(),
                )
            )
            # One order for every process: two inserting the same rows wait on each other, never deadlock.
            .order_by(case_contacts.c.person_id)
        )
        stmt = (
            dialect_insert(engine, notifications)
            .from_select(
                ["case_id", "person_id", "degree", "status", "attempts", "next_attempt_at", "created_at"],
                rows,
            )
            .on_conflict_do_nothing(index_elements=[notifications.c.case_id, notifications.c.person_id])
            # Counted from RETURNING: the driver's rowcount of INSERT … SELECT is not reliable everywhere.
            .returning(notifications.c.id)
        )
        with engine.begin() as conn:
            made = len(conn.execute(stmt).all())
        if not made:
            continue
        (report.held if status == HELD else report.pending)[int(case_id)] = made
        if status == HELD:
            log.warning(
                "case %s: %s notices held (more than notify.hold_above = %s); an official must release them",
                case_id,
                made,
                hold_above,
            )
        else:
            log.info("case %s: %s notices queued", case_id, made)
    report.revived = _revive(engine, now)
    return report


def _revive(engine: Engine, now: datetime) -> int:
    """A notice cancelled because its contact was dismissed is due again once the official undoes that."""
    contact_wanted = (
        select(case_contacts.c.id)
        .join(cases, cases.c.id == case_contacts.c.case_id)
        .where(
            and_(
                case_contacts.c.case_id == notifications.c.case_id,
                case_contacts.c.person_id == notifications.c.person_id,
                _wanted(),
            )
        )
        .exists()
    )
    with engine.begin() as conn:
        result = conn.execute(
            update(notifications)
            .where(and_(notifications.c.status == CANCELLED, contact_wanted))
            .values(status=PENDING, next_attempt_at=now, last_error=None)
        )
    return max(0, result.rowcount or 0)


def release(
    engine: Engine,
    case_id: int,
    *,
    actor: str,
    role: str | None,
    remote_addr: str | None = None,
    now: datetime | None = None,
) -> int:
    """Send the held notices of ``case_id`` (an official's decision, audited); returns how many."""
    now = to_db_time(now or _now())
    with engine.begin() as conn:
        released = conn.execute(
            update(notifications)
            .where(and_(notifications.c.case_id == case_id, notifications.c.status == HELD))
            .values(status=PENDING, next_attempt_at=now)
        ).rowcount
        audit.record(
            conn,
            actor=actor,
            role=role,
            action="notify.release",
            target_type="case",
            target_id=case_id,
            detail={"released": int(released or 0)},
            remote_addr=remote_addr,
            now=now,
        )
    log.info("case %s: %s held notices released by %s", case_id, released, actor)
    return int(released or 0)


def status_counts(engine_or_conn, case_id: int) -> dict[str, int]:
    """Notices of a case by status, e.g. ``{"sent": 12, "held": 0, …}`` (every status present)."""

    def run(conn):
        return conn.execute(
            select(notifications.c.status, func.count())
            .where(notifications.c.case_id == case_id)
            .group_by(notifications.c.status)
        ).all()

    if isinstance(engine_or_conn, Engine):
        with engine_or_conn.connect() as conn:
            rows = run(conn)
    else:
        rows = run(engine_or_conn)
    found = {status: 0 for status in STATUSES}
    found.update({status: int(n) for status, n in rows})
    return found


# ------------------------------------------------------------------------------------- the message


@dataclass(frozen=True, slots=True)
class Exposure:
    """When and where someone was exposed: a venue (by name) and a span in epoch seconds."""

    venue_id: str
    venue_name: str
    start_s: int
    end_s: int


def venue_names(conn, venue_ids: Iterable[str]) -> dict[str, str]:
    """The name of each venue (its id for a venue the hub does not know, e.g. ``kiosk:<id>``)."""
    wanted = sorted(set(venue_ids))
    if not wanted:
        return {}
    found = dict(
        conn.execute(select(venues.c.venue_id, venues.c.name).where(venues.c.venue_id.in_(wanted))).all()
    )
    return {v: found.get(v, v) for v in wanted}


def exposures(conn, reasons: Sequence[dict]) -> list[Exposure]:
    """A contact's encounters (``case_contacts.reasons``) as venue spans, overlapping ones at the same
    venue merged (an F2 meets several F1 at once), in time order. Whom they met is left out."""
    spans: list[tuple[str, int, int]] = []
    for reason in reasons or ():
        if not isinstance(reason, dict):
            continue
        venue, start, end = reason.get("venue_id"), reason.get("start_s"), reason.get("end_s")
        if isinstance(venue, str) and isinstance(start, int) and isinstance(end, int) and end >= start:
            spans.append((venue, start, end))
    merged: list[list] = []
    for venue, start, end in sorted(spans):
        if merged and merged[-1][0] == venue and start <= merged[-1][2]:
            merged[-1][2] = max(merged[-1][2], end)
        else:
            merged.append([venue, start, end])
    names = venue_names(conn, (m[0] for m in merged))
    return sorted(
        (Exposure(v, names[v], s, e) for v, s, e in merged), key=lambda x: (x.start_s, x.venue_name)
    )


def vietnam_span(start_s: int, end_s: int) -> str:
    """``từ 08:00 đến 09:30 ngày 20/11/2026`` (both days spelled out when the span crosses midnight)."""
    a = datetime.fromtimestamp(start_s, VIETNAM)
    b = datetime.fromtimestamp(end_s, VIETNAM)
    if a.date() == b.date():
        return f"từ {a:%H:%M} đến {b:%H:%M} ngày {a:%d/%m/%Y}"
    return f"từ {a:%H:%M} ngày {a:%d/%m/%Y} đến {b:%H:%M} ngày {b:%d/%m/%Y}"


def notice_text(degree: int, places: Sequence[Exposure], *, more: bool, status_url: str | None) -> str:
    """The notice (Vietnamese, for an SMS): what happened, where and when, what to do.

    It names venues and times only: never the case, the F1 an F2 met, or anyone else.
    """
    shown = [f"{p.venue_name} {vietnam_span(p.start_s, p.end_s)}" for p in places[:MAX_ENCOUNTERS_IN_TEXT]]
    where = "; ".join(shown) if shown else "một địa điểm công cộng"
    if more or len(places) > MAX_ENCOUNTERS_IN_TEXT:
        where += " và một số lần khác"
    if degree == 1:
        text = (
            "[AnToan] Thông báo y tế: bạn có mặt cùng lúc với một ca COVID-19 đã được xác nhận "
            f"(tiếp xúc gần, F1) tại {where}. Hãy tự cách ly tại nhà, đeo khẩu trang, theo dõi sức khỏe "
            "(sốt, ho, khó thở) và gọi ngay trạm y tế xã/phường nơi bạn ở để được hướng dẫn xét nghiệm."
        )
    else:
        text = (
            "[AnToan] Thông báo y tế: bạn có mặt cùng lúc với một người tiếp xúc gần của ca COVID-19 "
            f"(F2) tại {where}. Hãy hạn chế tiếp xúc, đeo khẩu trang, tự theo dõi sức khỏe 14 ngày và "
            "liên hệ trạm y tế xã/phường nơi bạn ở nếu có sốt, ho hoặc khó thở."
        )
    if status_url:
        text += f" Tra cứu: {status_url}"
    return text


# ------------------------------------------------------------------------------------- the webhook


def signature(secret: bytes, timestamp: str, body: bytes) -> str:
    """The ``X-AnToan-Signature`` value: ``sha256=`` and the hex HMAC-SHA256 of ``<timestamp>.<body>``."""
    return "sha256=" + hmac.new(secret, timestamp.encode("ascii") + b"." + body, hashlib.sha256).hexdigest()


def verify_signature(secret: bytes, timestamp: str, body: bytes, header: str) -> bool:
    """Whether ``header`` is the signature of ``body`` at ``timestamp`` (for gateways written in Python;
    they should also refuse timestamps more than a few minutes away from their clock)."""
    return hmac.compare_digest(signature(secret, timestamp, body).encode(), header.encode())


@dataclass(frozen=True, slots=True)
class Delivery:
    """What one webhook request came to."""

    ok: bool
    error: str | None = None
    retry_after_s: float | None = None


class Webhook:
    """POSTs signed JSON to the gateway; one connection per request, no redirects followed."""

    def __init__(self, settings: NotifySettings):
        if settings.webhook_url is None or settings.webhook_secret is None:
            raise NotifyError("notifications are off: set notify.webhook_url and notify.webhook_secret")
        self._url = urlsplit(settings.webhook_url)
        self._secret = settings.webhook_secret.get_secret_value().encode("utf-8")
        self._timeout = settings.timeout_s
        self._context = None
        if self._url.scheme == "https":
            self._context = ssl.create_default_context(
                cafile=str(settings.ca_file) if settings.ca_file is not None else None
            )

    def post(self, body: bytes, *, notification_id: int, now: datetime) -> Delivery:
        """Send one notice; 2xx is delivered, anything else (or no answer in time) is retried later."""
        timestamp = str(int(now.timestamp()))
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "User-Agent": "antoan-hub-notify/1",
            TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: signature(self._secret, timestamp, body),
            IDEMPOTENCY_HEADER: str(notification_id),
        }
        host, port = self._url.hostname or "", self._url.port
        path = (self._url.path or "/") + (f"?{self._url.query}" if self._url.query else "")
        if self._context is not None:
            conn = http.client.HTTPSConnection(host, port, timeout=self._timeout, context=self._context)
        else:
            conn = http.client.HTTPConnection(host, port, timeout=self._timeout)
        try:
            conn.request("POST", path, body=body, headers=headers)
            response = conn.getresponse()
            answer = response.read(_RESPONSE_READ_LIMIT)
        except TimeoutError:
            return Delivery(False, f"no answer within {self._timeout:g} s")
        except (OSError, http.client.HTTPException) as exc:
            return Delivery(False, f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS])
        finally:
            conn.close()
        if 200 <= response.status < 300:
            return Delivery(True)
        text = answer.decode("utf-8", "replace").strip().replace("\n", " ")
        return Delivery(
            False,
            f"HTTP {response.status}: {text}"[:MAX_ERROR_CHARS],
            _retry_after(response.getheader("Retry-After")),
        )


def _retry_after(value: str | None) -> float | None:
    if value is None or not value.strip().isdigit():
        return None  # the HTTP-date form is rare from gateways; the backoff applies
    return float(value.strip())


def backoff_s(attempt: int, settings: NotifySettings, rng: random.Random) -> float:
    """Wait after failed attempt ``attempt`` (1-based): base doubled each time, capped, then "equal
    jitter" (a random point in its upper half), so a gateway outage is not hit by every sender at once."""
    ceiling = min(settings.backoff_max_s, settings.backoff_base_s * 2 ** (attempt - 1))
    return ceiling * rng.uniform(0.5, 1.0)


# ---------------------------------------------------------------------------------------- the sender


@dataclass
class SendReport:
    """What one round (or run) of the sender did."""

    sent: int = 0
    retrying: int = 0
    failed: int = 0
    no_contact: int = 0
    cancelled: int = 0
    busy: int = 0  # due rows another sender took first

    def add(self, other: SendReport) -> None:
        """Add another round's counts to these."""
        for name, value in asdict(other).items():
            setattr(self, name, getattr(self, name) + value)

    @property
    def claimed(self) -> int:
        """Notices this sender dealt with (all but ``busy``)."""
        return self.sent + self.retrying + self.failed + self.no_contact + self.cancelled

    def as_dict(self) -> dict[str, int]:
        """The counts by name (for logs and the CLI)."""
        return asdict(self)


@dataclass(frozen=True, slots=True)
class _Claim:
    id: int
    attempt: int
    body: bytes


def phone_of(conn, person_id: int) -> str | None:
    """The phone number on the person's newest current declaration (None without one)."""
    return conn.execute(
        select(declarations.c.phone)
        .join(declaration_persons, declaration_persons.c.declaration_id == declarations.c.id)
        .where(and_(declaration_persons.c.person_id == person_id, declarations.c.superseded_at.is_(None)))
        .order_by(declarations.c.created_at.desc(), declarations.c.id.desc())
        .limit(1)
    ).scalar()


class Notifier:
    """Enqueues and sends notices; :meth:`run_once` for one pass, :meth:`start` for a thread.

    ``clock`` and ``rng`` are injectable (tests move time instead of waiting). ``stop_event`` ends the
    thread when set (the bridge passes its own); :meth:`stop` sets it.
    """

    def __init__(
        self,
        engine: Engine,
        settings: NotifySettings,
        *,
        clock: Callable[[], datetime] = _now,
        rng: random.Random | None = None,
        identity: HubIdentity | None = None,
        stop_event: threading.Event | None = None,
        name: str = "notifier",
    ):
        self._engine = engine
        self._settings = settings
        self._webhook = Webhook(settings)
        self._clock = clock
        self._rng = rng or random.Random()
        self._identity = identity or HubIdentity(engine)
        self._stop = stop_event or threading.Event()
        self._name = name
        self._thread: threading.Thread | None = None

    # -- one pass

    def enqueue(self) -> EnqueueReport:
        """Create the missing notices (see :func:`enqueue`)."""
        return enqueue(self._engine, hold_above=self._settings.hold_above, now=self._clock())

    def send_due(self, *, link: bool = True) -> SendReport:
        """Claim and send up to ``batch_size`` due notices; returns what happened to them.

        ``link`` first ties declarations made since the last pass to their person (so their phone is
        found); a run of several rounds does it once.
        """
        report = SendReport()
        now = to_db_time(self._clock())
        with self._engine.connect() as conn:
            due = conn.execute(
                select(notifications.c.id)
                .where(
                    and_(
                        notifications.c.status.in_((PENDING, SENDING)),
                        notifications.c.next_attempt_at <= now,
                    )
                )
                .order_by(notifications.c.next_attempt_at, notifications.c.id)
                .limit(self._settings.batch_size)
            ).scalars()
            ids = [int(i) for i in due]
        if ids and link:
            self._link_declarations()
        for notification_id in ids:
            if self._stop.is_set():
                break
            self._send_one(notification_id, report)
        return report

    def run_once(self) -> tuple[EnqueueReport, SendReport]:
        """Enqueue, then send rounds until nothing more is due now (or the notifier is stopped)."""
        queued = self.enqueue()
        total = SendReport()
        while not self._stop.is_set():
            report = self.send_due(link=total.claimed + total.busy == 0)
            total.add(report)
            if report.claimed + report.busy < self._settings.batch_size:
                break
        return queued, total

    # -- the thread

    def start(self) -> Notifier:
        """Run :meth:`run_once` every ``interval_s`` on a thread until stopped."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout_s: float | None = None) -> None:
        """Stop the thread after the notice in hand (at most one request's timeout)."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(self._settings.timeout_s + 5 if timeout_s is None else timeout_s)

    def _run(self) -> None:
        log.info("notifier started: webhook %s", urlsplit(self._settings.webhook_url or "").netloc)
        while not self._stop.is_set():
            try:
                queued, sent = self.run_once()
                if queued.total or sent.claimed:
                    log.info("notifier: queued %s, %s", queued.total, sent.as_dict())
            except Exception:  # the database may be away for a while; try again next round
                log.exception("notifier round failed")
            self._stop.wait(self._settings.interval_s)
        log.info("notifier stopped")

    # -- details

    def _link_declarations(self) -> None:
        # Declarations made since the last pass get their person, so their phone can be found.
        for attempt in range(3):
            try:
                with self._engine.begin() as conn:
                    link_declarations(conn, self._identity, self._clock())
                return
            except OperationalError:
                # SQLite: another writer committed between this transaction's read and its write.
                if attempt == 2:
                    raise

    def _send_one(self, notification_id: int, report: SendReport) -> None:
        claim = self._claim(notification_id, report)
        if claim is None:
            return
        delivery = self._webhook.post(claim.body, notification_id=claim.id, now=self._clock())
        self._record(claim, delivery, report)

    def _claim(self, notification_id: int, report: SendReport) -> _Claim | None:
        settings = self._settings
        now = self._clock()
        with self._engine.begin() as conn:
            # The write comes first: it takes the row (PostgreSQL) or the database (SQLite) at once, and
            # a second sender re-checks the condition after the first commits, and finds nothing.
            row = conn.execute(
                update(notifications)
                .where(
                    and_(
                        notifications.c.id == notification_id,
                        notifications.c.status.in_((PENDING, SENDING)),
                        notifications.c.next_attempt_at <= to_db_time(now),
                    )
                )
                .values(status=SENDING, next_attempt_at=to_db_time(now + timedelta(seconds=settings.lease_s)))
                .returning(
                    notifications.c.case_id,
                    notifications.c.person_id,
                    notifications.c.degree,
                    notifications.c.attempts,
                    notifications.c.last_error,
                )
            ).first()
            if row is None:
                report.busy += 1
                return None

            def finish(status: str, error: str | None) -> None:
                conn.execute(
                    update(notifications)
                    .where(notifications.c.id == notification_id)
                    .values(status=status, next_attempt_at=None, last_error=error)
                )

            if row.attempts >= settings.max_attempts:
                # The last attempt's sender stopped before recording its result.
                finish(FAILED, row.last_error or "the sender stopped during the last attempt")
                report.failed += 1
                return None
            contact = conn.execute(
                select(
                    case_contacts.c.status.label("contact_status"),
                    case_contacts.c.reasons,
                    case_contacts.c.encounters,
                    cases.c.status.label("case_status"),
                )
                .join(cases, cases.c.id == case_contacts.c.case_id)
                .where(
                    and_(case_contacts.c.case_id == row.case_id, case_contacts.c.person_id == row.person_id)
                )
            ).first()
            if contact is None or contact.case_status != "open":
                finish(CANCELLED, "case closed")
                report.cancelled += 1
                return None
            if contact.contact_status == "dismissed":
                finish(CANCELLED, "contact dismissed")
                report.cancelled += 1
                return None
            phone = phone_of(conn, row.person_id)
            if not phone:
                finish(NO_CONTACT, "no phone number on the person's current declaration")
                report.no_contact += 1
                return None
            places = exposures(conn, contact.reasons)
            text = notice_text(
                row.degree,
                places,
                more=int(contact.encounters) > len(contact.reasons or ()),
                status_url=settings.status_url,
            )
            attempt = int(row.attempts) + 1
            conn.execute(
                update(notifications).where(notifications.c.id == notification_id).values(attempts=attempt)
            )
        body = json.dumps(
            {
                "id": notification_id,
                "to": phone,
                "text": text,
                "lang": "vi",
                "kind": f"exposure_f{int(row.degree)}",
            },
            ensure_ascii=False,
            separators=(",", ":"),
            sort_keys=True,
        ).encode("utf-8")
        return _Claim(notification_id, attempt, body)

    def _record(self, claim: _Claim, delivery: Delivery, report: SendReport) -> None:
        settings = self._settings
        now = self._clock()
        if delivery.ok:
            values = {"status": SENT, "sent_at": to_db_time(now), "next_attempt_at": None, "last_error": None}
            outcome = "sent"
        elif claim.attempt >= settings.max_attempts:
            values = {"status": FAILED, "next_attempt_at": None, "last_error": delivery.error}
            outcome = "failed"
        else:
            wait = backoff_s(claim.attempt, settings, self._rng)
            if delivery.retry_after_s is not None:
                wait = max(wait, min(delivery.retry_after_s, settings.backoff_max_s))
            values = {
                "status": PENDING,
                "next_attempt_at": to_db_time(now + timedelta(seconds=wait)),
                "last_error": delivery.error,
            }
            outcome = "retrying"
        with self._engine.begin() as conn:
            # Only the holder of this attempt writes its result: a sender whose lease ran out (and
            # whose row another sender took) must not overwrite the newer attempt.
            written = conn.execute(
                update(notifications)
                .where(
                    and_(
                        notifications.c.id == claim.id,
                        notifications.c.status == SENDING,
                        notifications.c.attempts == claim.attempt,
                    )
                )
                .values(**values)
            ).rowcount
        if not written:
            log.warning(
                "notice %s: attempt %s ended after its lease; result dropped", claim.id, claim.attempt
            )
            report.busy += 1
            return
        setattr(report, outcome, getattr(report, outcome) + 1)
        if outcome != "sent":
            log.warning("notice %s attempt %s: %s (%s)", claim.id, claim.attempt, delivery.error, outcome)


def run_notifier_in(
    config: HubConfig, *, engine: Engine | None = None, stop: threading.Event | None = None
) -> Notifier | None:
    """Start the notifier thread inside another process (the bridge); None when notifications are off.

    With ``stop`` (the process's stop event) the thread ends when that is set; ``engine`` defaults to
    a new one on ``config.database.url`` (already migrated by the caller).
    """
    if config.notify.webhook_url is None:
        log.info("notifications are off (notify.webhook_url is not set)")
        return None
    if engine is None:
        from hub.db import make_engine

        engine = make_engine(config.database.url)
    return Notifier(engine, config.notify, stop_event=stop).start()
