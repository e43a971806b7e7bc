"""Cases (F0) and their contacts: opening a case, the F2 background job, decisions, pass colours.

Opening a case computes the F1 in the same transaction (milliseconds with the covering index), stores
them with their reasons, and raises the listed colour of the F0's and F1's passes, so the next status
list the bridge publishes turns them on every kiosk. F2 runs afterwards as a job (:class:`TracingJobs`)
that reports progress on the case row and writes its result in chunks; a job interrupted by a restart
is run again (its writes are idempotent: one row per person and case).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, timezone

from sqlalchemy import Connection, Engine, and_, func, insert, select, update

from hub import audit
from hub.db import dialect_insert, to_db_time, writing
from hub.db.schema import case_contacts, cases, declarations
from hub.declarations import normalise_phone
from hub.identity import (
    HubIdentity,
    link_declarations,
    pass_person_keys,
    passes_of,
    person_ids,
)
from hub.passes import clear_statuses, normalise_pass_id, raise_statuses
from hub.tracing import (
    Contact,
    Source,
    VisitIndex,
    f2_sources,
    find_contacts_in_index,
    find_f1,
    find_f1_in_index,
)
from hub.tracing_rules import TracingRules
from protocol import cccd

log = logging.getLogger(__name__)

#: Dates officials enter are Vietnamese calendar days.
VIETNAM = timezone(timedelta(hours=7))
DECISIONS = ("suggested", "confirmed", "dismissed")


class CaseError(ValueError):
    """A case request that cannot be done; the message says what to change."""


@dataclass(frozen=True, slots=True)
class Subject:
    """Who the F0 is, and how the official named them."""

    person_id: int
    opened_from: str  # declaration | pass | cccd | phone
    declaration_id: int | None
    label: str


def _now() -> datetime:
    return datetime.now(UTC)


def day_start_s(day: date) -> int:
    """Epoch seconds of 00:00 of ``day`` in Vietnam."""
    return int(datetime.combine(day, time(0), VIETNAM).timestamp())


# ----------------------------------------------------------------------------------- who is the F0


def resolve_subject(
    conn: Connection,
    identity: HubIdentity,
    *,
    declaration_id: int | None = None,
    pass_id: str | None = None,
    cccd_number: str | None = None,
    phone: str | None = None,
    now: datetime,
) -> Subject:
    """Find the person a case is about from exactly one of: declaration, pass, CCCD number, phone."""
    given = [n for n, v in (("declaration", declaration_id), ("pass", pass_id), ("cccd", cccd_number),
                            ("phone", phone)) if v not in (None, "")]  # fmt: skip
    if len(given) != 1:
        raise CaseError("give exactly one of: a declaration, a pass id, a CCCD number or a phone number")
    link_declarations(conn, identity, now)
    if declaration_id is not None:
        return _from_declaration(conn, identity, int(declaration_id), "declaration", now)
    if pass_id:
        canonical = normalise_pass_id(pass_id)
        if canonical is None:
            raise CaseError("the pass id is not in the form printed on a pass")
        key = pass_person_keys(conn, identity, [canonical])[canonical]
        label = f"pass {canonical}"
        return Subject(person_ids(conn, [key], now)[key], "pass", None, label)
    if cccd_number:
        number = "".join(cccd_number.split())
        if cccd.check_number(number) is not None:
            raise CaseError("the CCCD number is not a valid 12-digit citizen ID number")
        key = identity.person_key(number)
        return Subject(person_ids(conn, [key], now)[key], "cccd", None, f"CCCD …{number[-4:]}")
    try:
        wanted = normalise_phone(phone)
    except ValueError:  # pydantic's error for text that is no phone number at all
        wanted = None
    if wanted is None:
        raise CaseError("the phone number is not a Vietnamese phone number")
    rows = conn.execute(
        select(declarations.c.id, declarations.c.id_number)
        .where(and_(declarations.c.phone == wanted, declarations.c.superseded_at.is_(None)))
        .order_by(declarations.c.id.desc())
    ).all()
    people = {identity.person_key(number) for _, number in rows}
    if not people:
        raise CaseError("no current declaration has this phone number; open the case from the declaration")
    if len(people) > 1:
        raise CaseError(
            f"{len(people)} people declared this phone number (a family); open the case from the declaration"
        )
    return _from_declaration(conn, identity, int(rows[0].id), "phone", now)


def _from_declaration(conn, identity, declaration_id: int, opened_from: str, now) -> Subject:
    row = conn.execute(
        select(declarations.c.id_number, declarations.c.full_name).where(declarations.c.id == declaration_id)
    ).first()
    if row is None:
        raise CaseError(f"there is no declaration {declaration_id}")
    key = identity.person_key(row.id_number)
    return Subject(person_ids(conn, [key], now)[key], opened_from, declaration_id, row.full_name)


# --------------------------------------------------------------------------------------- open a case


def _contact_rows(case_id: int, contacts: Iterable[Contact]) -> list[dict]:
    return [
        {
            "case_id": case_id,
            "person_id": c.person_id,
            "degree": c.degree,
            "via_person_id": c.via_person_id,
            "first_contact_s": c.first_s,
            "last_contact_s": c.last_s,
            "overlap_s": c.longest_s,
            "encounters": len(c.encounters),
            "reasons": c.reasons(),
            "status": "suggested",
        }
        for c in contacts
    ]


def _write_contacts(conn: Connection, rows: list[dict]) -> None:
    stmt = dialect_insert(conn, case_contacts).on_conflict_do_nothing(
        index_elements=[case_contacts.c.case_id, case_contacts.c.person_id]
    )
    for start in range(0, len(rows), 1000):
        conn.execute(stmt, rows[start : start + 1000])


def status_reason(case_id: int, degree: int) -> str:
    """The ``pass_status`` reason a case writes; :func:`decide` clears by its prefix."""
    return f"case {case_id} " + ("F0" if degree == 0 else f"F{degree}")


def _raise_passes(conn, case_id: int, person_degrees: dict[int, int], rules: TracingRules, now) -> int:
    colour = {0: "red", 1: rules.f1_colour, 2: rules.f2_colour}
    owned = passes_of(conn, person_degrees, now)
    changes = {
        pass_id: (colour[degree], status_reason(case_id, degree))
        for person, degree in person_degrees.items()
        for pass_id in owned.get(person, [])
    }
    return raise_statuses(conn, changes, now)


#: How long a case waits for the in-memory index to finish another refresh before asking the database.
INDEX_WAIT_S = 1.0


def _find_f1(
    engine: Engine, index: VisitIndex | None, person_id: int, start_s: int, end_s: int, rules: TracingRules
) -> dict[int, Contact]:
    """The F1, from the in-memory index when it is built (refreshed first: milliseconds), else from the
    database's covering index; both give the same answer (tests/hub/test_tracing.py)."""
    if index is not None and index.current(INDEX_WAIT_S):
        return find_f1_in_index(index, person_id, start_s, end_s, rules)
    with engine.connect() as conn:
        return find_f1(conn, person_id, start_s, end_s, rules)[1]


def open_case(
    engine: Engine,
    identity: HubIdentity,
    subject: Subject,
    *,
    onset_date: date | None,
    test_date: date | None,
    rules: TracingRules,
    actor: str,
    role: str | None,
    note: str | None = None,
    remote_addr: str | None = None,
    now: datetime | None = None,
    index: VisitIndex | None = None,
) -> int:
    """Open a case for ``subject``, find the F1 and raise their passes' colours; returns the case id.

    The F1 are found before the write transaction (from ``index`` when given and built), so the
    database's write lock is held only while the case and its contacts are written."""
    now = now or _now()
    anchors = [d for d in (onset_date, test_date) if d is not None]
    if not anchors:
        raise CaseError("give the onset date or the test date (the look-back window starts from it)")
    if min(anchors) > now.astimezone(VIETNAM).date():
        raise CaseError("the onset or test date is in the future")
    start_s, end_s = rules.window(day_start_s(min(anchors)), int(now.timestamp()))
    f1 = _find_f1(engine, index, subject.person_id, start_s, end_s, rules)
    with writing(engine).begin() as conn:
        case_id = conn.execute(
            insert(cases)
            .values(
                person_id=subject.person_id,
                opened_from=subject.opened_from,
                declaration_id=subject.declaration_id,
                label=subject.label[:200],
                onset_date=onset_date,
                test_date=test_date,
                window_start_s=start_s,
                window_end_s=end_s,
                status="open",
                note=(note or None) and note[:2000],
                created_by=actor[:200],
                created_at=to_db_time(now),
                f1_count=0,
                f2_state="pending",
                f2_progress=0.0,
                f2_count=0,
            )
            .returning(cases.c.id)
        ).scalar_one()
        _write_contacts(conn, _contact_rows(case_id, f1.values()))
        degrees = {subject.person_id: 0, **{p: 1 for p in f1}}
        changed = _raise_passes(conn, case_id, degrees, rules, now)
        conn.execute(update(cases).where(cases.c.id == case_id).values(f1_count=len(f1)))
        audit.record(
            conn,
            actor=actor,
            role=role,
            action="case.open",
            target_type="case",
            target_id=case_id,
            detail={"opened_from": subject.opened_from, "f1": len(f1), "passes_changed": changed},
            remote_addr=remote_addr,
            now=now,
        )
    log.info("case %s opened: %s F1, %s passes changed", case_id, len(f1), changed)
    return int(case_id)


def refresh_case(
    engine: Engine,
    case_id: int,
    rules: TracingRules,
    *,
    actor: str,
    role: str | None,
    remote_addr: str | None = None,
    now: datetime | None = None,
    index: VisitIndex | None = None,
) -> int:
    """Look for F1 again up to now (late kiosks, new check-ins) and queue F2 again; returns new F1.

    Contacts already listed keep their status; a dismissed contact stays dismissed and uncoloured.
    """
    now = now or _now()

    def open_case_row(conn: Connection):
        case = conn.execute(select(cases).where(cases.c.id == case_id)).first()
        if case is None:
            raise CaseError(f"there is no case {case_id}")
        if case.status != "open":
            raise CaseError(f"case {case_id} is closed")
        return case

    with engine.connect() as conn:
        case = open_case_row(conn)
    end_s = max(int(case.window_end_s), int(now.timestamp()))
    f1 = _find_f1(engine, index, int(case.person_id), int(case.window_start_s), end_s, rules)
    with writing(engine).begin() as conn:
        case = open_case_row(conn)  # closed meanwhile?
        known = {
            int(p): (status, degree)
            for p, status, degree in conn.execute(
                select(case_contacts.c.person_id, case_contacts.c.status, case_contacts.c.degree).where(
                    case_contacts.c.case_id == case_id
                )
            )
        }
        fresh = [c for p, c in f1.items() if p not in known]
        _write_contacts(conn, _contact_rows(case_id, fresh))
        # An F2 who turns out to have met the F0 directly becomes an F1, with the direct encounter.
        for row in _contact_rows(case_id, [c for p, c in f1.items() if known.get(p, ("", 1))[1] == 2]):
            conn.execute(
                update(case_contacts)
                .where(
                    and_(case_contacts.c.case_id == case_id, case_contacts.c.person_id == row["person_id"])
                )
                .values({k: v for k, v in row.items() if k not in ("case_id", "person_id", "status")})
            )
        degrees = {int(case.person_id): 0, **{p: 1 for p in f1 if known.get(p, ("",))[0] != "dismissed"}}
        changed = _raise_passes(conn, case_id, degrees, rules, now)
        f1_count = conn.execute(
            select(func.count()).where(and_(case_contacts.c.case_id == case_id, case_contacts.c.degree == 1))
        ).scalar_one()
        conn.execute(
            update(cases)
            .where(cases.c.id == case_id)
            .values(window_end_s=end_s, f1_count=f1_count, f2_state="pending", f2_progress=0.0)
        )
        audit.record(
            conn,
            actor=actor,
            role=role,
            action="case.refresh",
            target_type="case",
            target_id=case_id,
            detail={"new_f1": len(fresh), "passes_changed": changed},
            remote_addr=remote_addr,
            now=now,
        )
    return len(fresh)


# ---------------------------------------------------------------------------------------- F2 (a job)


def run_f2(
    engine: Engine,
    case_id: int,
    index: VisitIndex,
    rules: TracingRules,
    *,
    clock: Callable[[], datetime] = _now,
    progress_every: float = 0.05,
    lease_s: float = 3600.0,
) -> int | None:
    """Compute the case's F2 over ``index`` and store them; returns how many, or None when the job was
    not pending (done, or running elsewhere within ``lease_s``). Progress goes to the case row."""
    with writing(engine).begin() as conn:
        case = conn.execute(select(cases).where(cases.c.id == case_id)).first()
        if case is None:
            raise CaseError(f"there is no case {case_id}")
        # Claim the job: several web workers may resume the same pending case after a restart; only
        # one runs it (a claim older than the lease was left by a worker that died).
        started = clock()
        claimed = conn.execute(
            update(cases)
            .where(
                and_(
                    cases.c.id == case_id,
                    (cases.c.f2_state == "pending")
                    | (
                        (cases.c.f2_state == "running")
                        & (cases.c.f2_started_at < to_db_time(started - timedelta(seconds=lease_s)))
                    ),
                )
            )
            .values(f2_state="running", f2_progress=0.0, f2_started_at=to_db_time(started), f2_error=None)
        ).rowcount
        if not claimed:
            log.info("F2 of case %s is done or running elsewhere", case_id)
            return None
        f1_rows = conn.execute(
            select(
                case_contacts.c.person_id, case_contacts.c.first_contact_s, case_contacts.c.overlap_s
            ).where(
                and_(
                    case_contacts.c.case_id == case_id,
                    case_contacts.c.degree == 1,
                    case_contacts.c.status != "dismissed",
                )
            )
        ).all()
    last = [0.0]

    def report(share: float) -> None:
        if share - last[0] >= progress_every or share >= 1.0:
            last[0] = share
            with writing(engine).begin() as conn:
                conn.execute(update(cases).where(cases.c.id == case_id).values(f2_progress=round(share, 3)))

    index.refresh()
    f1 = [(int(p), int(first), int(longest)) for p, first, longest in f1_rows]
    sources: list[Source] = f2_sources(f1, int(case.window_end_s), rules)
    exclude = {int(case.person_id), *(p for p, _, _ in f1)}

    f2 = find_contacts_in_index(
        index,
        sources,
        buffer_s=rules.buffer_s,
        min_exposure_s=rules.f2_min_overlap_s,
        exclude=exclude,
        progress=lambda share: report(0.9 * share),
    )
    now = clock()
    rows = _contact_rows(case_id, f2.values())
    with writing(engine).begin() as conn:
        _write_contacts(conn, rows)
        changed = _raise_passes(conn, case_id, {p: 2 for p in f2}, rules, now)
        conn.execute(
            update(cases)
            .where(cases.c.id == case_id)
            .values(
                f2_state="done",
                f2_progress=1.0,
                f2_count=len(f2),
                f2_finished_at=to_db_time(now),
            )
        )
    log.info("case %s: %s F2 from %s F1, %s passes changed", case_id, len(f2), len(sources), changed)
    return len(f2)


class TracingJobs:
    """Runs F2 jobs one at a time on a worker thread; cases left pending or running are resumed."""

    def __init__(
        self, engine: Engine, rules: TracingRules, *, index: VisitIndex | None = None, poll_s: float = 60.0
    ):
        self._engine = engine
        self._poll_s = poll_s
        self._rules = rules
        horizon_days = rules.lookback_days + rules.f2_window_days + 1
        self.index = index or VisitIndex(
            engine, horizon_s=lambda: int(_now().timestamp()) - horizon_days * 86400
        )
        self._queue: queue.Queue[int | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def start(self) -> TracingJobs:
        with self._lock:
            if self._thread is not None:
                return self
            self._thread = threading.Thread(target=self._run, name="tracing-jobs", daemon=True)
            self._thread.start()
        self._queue_waiting()
        return self

    def _queue_waiting(self) -> None:
        # Cases a restart left pending, and running ones whose worker died (the claim in run_f2
        # decides which of them really run).
        with self._engine.connect() as conn:
            waiting = conn.execute(
                select(cases.c.id).where(cases.c.f2_state.in_(("pending", "running"))).order_by(cases.c.id)
            ).scalars()
            for case_id in waiting:
                self._queue.put(int(case_id))

    def submit(self, case_id: int) -> None:
        self.start()
        self._queue.put(int(case_id))

    def stop(self, timeout_s: float = 10.0) -> None:
        thread = self._thread
        if thread is not None:
            self._queue.put(None)
            thread.join(timeout_s)
            self._thread = None

    def _run(self) -> None:
        # Build the index first: from then on new cases take their F1 from it (see _find_f1).
        try:
            self.index.refresh()
        except Exception:  # the jobs below retry the build; the F1 meanwhile come from the database
            log.exception("the visit index could not be built")
        while True:
            try:
                case_id = self._queue.get(timeout=self._poll_s)
            except queue.Empty:
                self._queue_waiting()
                continue
            if case_id is None:
                return
            with self._engine.connect() as conn:
                state = conn.execute(select(cases.c.f2_state).where(cases.c.id == case_id)).scalar()
            if state not in ("pending", "running"):
                continue  # queued twice, already done
            try:
                run_f2(self._engine, case_id, self.index, self._rules)
            except Exception as exc:  # a job failing must not end the worker
                log.exception("F2 of case %s failed", case_id)
                with writing(self._engine).begin() as conn:
                    conn.execute(
                        update(cases)
                        .where(cases.c.id == case_id)
                        .values(f2_state="failed", f2_error=f"{type(exc).__name__}: {exc}"[:500])
                    )


# ------------------------------------------------------------------------------------------ decisions


def decide(
    engine: Engine,
    case_id: int,
    person_id: int,
    decision: str,
    *,
    actor: str,
    role: str | None,
    rules: TracingRules | None = None,
    remote_addr: str | None = None,
    now: datetime | None = None,
) -> None:
    """Confirm or dismiss a contact (or set it back to suggested); a dismissal clears the colour this
    case gave their passes, undoing it gives the colour back (by ``rules``, default rules if None)."""
    rules = rules or TracingRules()
    if decision not in DECISIONS:
        raise CaseError(f"decision must be one of {', '.join(DECISIONS)}")
    now = now or _now()
    with writing(engine).begin() as conn:
        row = conn.execute(
            select(case_contacts.c.id, case_contacts.c.degree, case_contacts.c.status).where(
                and_(case_contacts.c.case_id == case_id, case_contacts.c.person_id == person_id)
            )
        ).first()
        if row is None:
            raise CaseError(f"person {person_id} is not a contact of case {case_id}")
        conn.execute(
            update(case_contacts)
            .where(case_contacts.c.id == row.id)
            .values(status=decision, decided_by=actor[:200], decided_at=to_db_time(now))
        )
        if decision == "dismissed":
            owned = passes_of(conn, [person_id], now).get(person_id, [])
            clear_statuses(conn, owned, f"case {case_id} ", now)
        elif row.status == "dismissed":
            # The dismissal is undone: the case's colour applies again.
            _raise_passes(conn, case_id, {person_id: int(row.degree)}, rules, now)
        audit.record(
            conn,
            actor=actor,
            role=role,
            action=f"contact.{decision}",
            target_type="case",
            target_id=case_id,
            detail={"person": person_id, "degree": row.degree},
            remote_addr=remote_addr,
            now=now,
        )


def close_case(
    engine: Engine,
    case_id: int,
    *,
    actor: str,
    role: str | None,
    remote_addr: str | None = None,
    now: datetime | None = None,
) -> int:
    """Close a case (the outbreak is over or it was opened in error): pass colours this case gave are
    cleared, unsent notices are no longer sent. Returns how many pass entries were cleared."""
    now = now or _now()
    with writing(engine).begin() as conn:
        case = conn.execute(select(cases.c.person_id, cases.c.status).where(cases.c.id == case_id)).first()
        if case is None:
            raise CaseError(f"there is no case {case_id}")
        if case.status == "closed":
            return 0
        people = [int(case.person_id)]
        people += [
            int(p)
            for p in conn.execute(
                select(case_contacts.c.person_id).where(case_contacts.c.case_id == case_id)
            ).scalars()
        ]
        owned = passes_of(conn, people, now)
        cleared = clear_statuses(conn, [p for ids in owned.values() for p in ids], f"case {case_id} ", now)
        conn.execute(update(cases).where(cases.c.id == case_id).values(status="closed"))
        audit.record(
            conn,
            actor=actor,
            role=role,
            action="case.close",
            target_type="case",
            target_id=case_id,
            detail={"passes_cleared": cleared},
            remote_addr=remote_addr,
            now=now,
        )
    return cleared


def counts(conn: Connection, case_id: int) -> dict[str, int]:
    """Contacts of a case by degree and status, e.g. ``{"F1": 12, "F1 confirmed": 3, …}``."""
    rows = conn.execute(
        select(case_contacts.c.degree, case_contacts.c.status, func.count())
        .where(case_contacts.c.case_id == case_id)
        .group_by(case_contacts.c.degree, case_contacts.c.status)
    ).all()
    out: dict[str, int] = {}
    for degree, status, n in rows:
        out[f"F{degree}"] = out.get(f"F{degree}", 0) + int(n)
        out[f"F{degree} {status}"] = int(n)
    return out
