"""Who a traced person is, for the officials who call them: name, phone, birth year, ID hint, passes.

Tracing works on ``persons.id``. A person with a declaration is described by their newest current
declaration (found through ``declaration_persons``); a person known only from ID-card scans is
described by the sealed card of their latest visit, opened with the hub's key. Cards are opened only
for the people asked about, so a page decrypts its own rows and never a whole F2 list. Nothing here is
logged: every field is personal data (the views that call this write the audit entries).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from sqlalchemy import Connection, func, select

from hub.db.schema import declaration_persons, declarations, events, persons, visits
from hub.identity import HubIdentity, IdentityError, link_declarations, passes_of

log = logging.getLogger(__name__)

#: Rows per ``IN (…)`` list.
_CHUNK = 500
#: Latest visits tried per card-only person when the newest event's card does not open.
_CARD_TRIES = 3

Source = Literal["declaration", "card", "pass", "unknown"]


@dataclass(frozen=True, slots=True)
class Person:
    """What an official may see of a traced person (``None`` where the hub does not know it)."""

    person_id: int
    source: Source  # where the details come from
    full_name: str | None = None
    phone: str | None = None
    birth_year: int | None = None
    id_last4: str | None = None  # the last 4 characters of the ID number, never the whole number
    pass_ids: tuple[str, ...] = ()
    declaration_id: int | None = None


def prepare(identity: HubIdentity) -> None:
    """Load the hub's identity keys outside any transaction.

    The first use of a key writes it to the database; inside a SQLite write transaction of the same
    process that write would wait on its own lock, so callers warm the keys before ``engine.begin()``.
    """
    identity.person_key("0")
    identity.public_key_b64  # noqa: B018  (loads the card key)


def _chunks(values: list[int]) -> Iterable[list[int]]:
    for start in range(0, len(values), _CHUNK):
        yield values[start : start + _CHUNK]


def _keys(conn: Connection, wanted: list[int]) -> dict[int, str]:
    found: dict[int, str] = {}
    for chunk in _chunks(wanted):
        rows = conn.execute(select(persons.c.id, persons.c.person_key).where(persons.c.id.in_(chunk)))
        found.update({int(i): k for i, k in rows})
    return found


def _newest_declarations(conn: Connection, wanted: list[int]) -> dict[int, object]:
    """Each person's newest current declaration (or newest of any, when all are superseded)."""
    found: dict[int, object] = {}
    for chunk in _chunks(wanted):
        rows = conn.execute(
            select(
                declaration_persons.c.person_id,
                declarations.c.id,
                declarations.c.full_name,
                declarations.c.phone,
                declarations.c.birth_year,
                declarations.c.id_number,
                declarations.c.superseded_at,
            )
            .join(declarations, declarations.c.id == declaration_persons.c.declaration_id)
            .where(declaration_persons.c.person_id.in_(chunk))
            .order_by(declarations.c.created_at.desc(), declarations.c.id.desc())
        )
        for row in rows:
            person = int(row.person_id)
            best = found.get(person)
            # Newest first: keep the first current one, or the first of all until a current one comes.
            if best is None or (best.superseded_at is not None and row.superseded_at is None):
                found[person] = row
    return found


def _linked(conn: Connection, wanted: list[int]) -> set[int]:
    linked: set[int] = set()
    for chunk in _chunks(wanted):
        rows = conn.execute(
            select(declaration_persons.c.person_id)
            .distinct()
            .where(declaration_persons.c.person_id.in_(chunk))
        )
        linked.update(int(p) for (p,) in rows)
    return linked


def _declarations_pending(conn: Connection) -> bool:
    """Whether declarations newer than the newest linked one exist (two index lookups)."""
    newest = conn.execute(select(func.max(declarations.c.id))).scalar()
    linked = conn.execute(select(func.max(declaration_persons.c.declaration_id))).scalar()
    return newest is not None and (linked is None or int(newest) > int(linked))


def _latest_events(conn: Connection, wanted: list[int]) -> dict[int, list[tuple[str, str, int]]]:
    """The events that made each person's latest visits (newest first, at most ``_CARD_TRIES``)."""
    found: dict[int, list[tuple[str, str, int]]] = {}
    for chunk in _chunks(wanted):
        ranked = (
            select(
                visits.c.person_id,
                visits.c.kiosk_id,
                visits.c.epoch,
                visits.c.seq,
                func.row_number()
                .over(
                    partition_by=visits.c.person_id, order_by=(visits.c.arrive_s.desc(), visits.c.id.desc())
                )
                .label("n"),
            )
            .where(visits.c.person_id.in_(chunk))
            .subquery()
        )
        rows = conn.execute(
            select(ranked.c.person_id, ranked.c.kiosk_id, ranked.c.epoch, ranked.c.seq)
            .where(ranked.c.n <= _CARD_TRIES)
            .order_by(ranked.c.person_id, ranked.c.n)
        )
        for person, kiosk_id, epoch, seq in rows:
            found.setdefault(int(person), []).append((kiosk_id, epoch, int(seq)))
    return found


def _sealed_cards(conn: Connection, keys: list[tuple[str, str, int]]) -> dict[tuple[str, str, int], str]:
    """The sealed card of each event key that has one (one query per kiosk stream: the unique index on
    ``(kiosk_id, epoch, seq)`` serves ``seq IN (…)`` where a row-value ``IN`` scanned the table)."""
    by_stream: dict[tuple[str, str], list[int]] = {}
    for kiosk_id, epoch, seq in keys:
        by_stream.setdefault((kiosk_id, epoch), []).append(seq)
    found: dict[tuple[str, str, int], str] = {}
    for (kiosk_id, epoch), seqs in sorted(by_stream.items()):
        for start in range(0, len(seqs), _CHUNK):
            rows = conn.execute(
                select(events.c.seq, events.c.body).where(
                    events.c.kiosk_id == kiosk_id,
                    events.c.epoch == epoch,
                    events.c.seq.in_(seqs[start : start + _CHUNK]),
                )
            )
            for seq, body in rows:
                subject = body.get("subject") if isinstance(body, dict) else None
                sealed = subject.get("sealed") if isinstance(subject, dict) else None
                if isinstance(sealed, str):
                    found[(kiosk_id, epoch, int(seq))] = sealed
    return found


def _birth_year(value: object) -> int | None:
    if isinstance(value, str) and len(value) >= 4 and value[:4].isdigit():
        return int(value[:4])
    return None


def _from_cards(conn: Connection, identity: HubIdentity, wanted: list[int]) -> dict[int, Person]:
    latest = _latest_events(conn, wanted)
    sealed = _sealed_cards(conn, [k for ks in latest.values() for k in ks])
    found: dict[int, Person] = {}
    for person, keys in latest.items():
        for key in keys:
            text = sealed.get(key)
            if text is None:
                continue
            try:
                card = identity.open_card(text)
            except IdentityError as exc:
                log.warning("person %s: the card of event %s/%s/%s does not open: %s", person, *key, exc)
                continue
            name = card.get("full_name")
            found[person] = Person(
                person_id=person,
                source="card",
                full_name=name if isinstance(name, str) and name.strip() else None,
                birth_year=_birth_year(card.get("birth_date")),
                id_last4=card["number"][-4:],
            )
            break
    return found


def describe(
    conn: Connection,
    identity: HubIdentity,
    person_ids: Iterable[int],
    *,
    now: datetime,
    link: bool = True,
) -> dict[int, Person]:
    """Details of each person in ``person_ids`` (every id gets an entry, ``source="unknown"`` at worst).

    With ``link`` (the default) declarations not yet linked to their person are linked first, when a
    person keyed by an ID number has none linked and newer declarations than the last linked one exist
    (that writes: call it inside ``engine.begin()``, after :func:`prepare`). Cards are opened only for
    people without a declaration.
    """
    wanted = sorted({int(p) for p in person_ids})
    if not wanted:
        return {}
    keys = _keys(conn, wanted)
    if link:
        linked = _linked(conn, wanted)
        unlinked = any(keys.get(p, "").startswith("id:") and p not in linked for p in wanted)
        # Card-only people are never linked; the (whole-table) linking runs only when declarations
        # newer than the last linked one exist.
        if unlinked and _declarations_pending(conn):
            link_declarations(conn, identity, now)
    declared = _newest_declarations(conn, wanted)
    owned = passes_of(conn, wanted, now)
    card_only = [p for p in wanted if p not in declared and keys.get(p, "").startswith("id:")]
    cards = _from_cards(conn, identity, card_only) if card_only else {}
    found: dict[int, Person] = {}
    for person in wanted:
        pass_ids = tuple(sorted(set(owned.get(person, []))))
        row = declared.get(person)
        if row is not None:
            found[person] = Person(
                person_id=person,
                source="declaration",
                full_name=row.full_name,
                phone=row.phone,
                birth_year=int(row.birth_year),
                id_last4=row.id_number[-4:],
                pass_ids=pass_ids,
                declaration_id=int(row.id),
            )
        elif person in cards:
            found[person] = cards[person]
        elif keys.get(person, "").startswith("pass:"):
            found[person] = Person(person_id=person, source="pass", pass_ids=pass_ids)
        else:
            found[person] = Person(person_id=person, source="unknown", pass_ids=pass_ids)
    return found
