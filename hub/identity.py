"""Who a check-in belongs to: person keys (an HMAC of the ID number) and the hub's key for sealed ID cards.

A person is linked across passes and ID-card scans by ``id:<HMAC-SHA256(hub key, ID number)>``, so equal
ID numbers meet without the number being stored in clear a second time. A pass the hub cannot tie to a
declaration is its own person, ``pass:<pass id>``. Tracing works on the integer ``persons.id``.

The X25519 key that kiosks seal ID cards to is made on first use and kept with the hub's other secrets;
kiosks receive its public half at enrolment.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
from collections.abc import Iterable
from datetime import datetime
from functools import cached_property

from nacl.public import PrivateKey
from sqlalchemy import Connection, Engine, and_, func, select

from hub.db import dialect_insert, to_db_time
from hub.db.schema import declaration_persons, declarations, passes, persons
from hub.stored_secrets import hub_secret
from protocol import cccd
from protocol.sealed import SealedError, open_sealed

log = logging.getLogger(__name__)

IDENTITY_KEY = "identity_x25519"
PERSON_HMAC_KEY = "person_hmac"
#: How far below the newest linked declaration :func:`link_declarations` looks again.
LINK_OVERLAP = 10_000


class IdentityError(ValueError):
    """A sealed identity that cannot be used; the message never holds personal data."""


def _normalise_number(id_number: str) -> str:
    return "".join(id_number.split()).upper()


class HubIdentity:
    """The hub's identity keys, read once from the database (made there on first use).

    The first use may write the keys, so call :meth:`load` before using it inside a transaction
    (on SQLite a second writer would wait for the caller's own transaction).
    """

    def __init__(self, engine: Engine):
        self._engine = engine

    def load(self) -> HubIdentity:
        """Read (or make) both keys now, outside any transaction; returns self."""
        self._private  # noqa: B018
        self._hmac_key  # noqa: B018
        return self

    @cached_property
    def _private(self) -> bytes:
        return hub_secret(self._engine, IDENTITY_KEY, make=lambda: bytes(PrivateKey.generate()))

    @cached_property
    def _hmac_key(self) -> bytes:
        return hub_secret(self._engine, PERSON_HMAC_KEY, 32)

    @property
    def public_key_b64(self) -> str:
        """The public key kiosks seal ID cards to (standard base64 of 32 raw bytes)."""
        return base64.b64encode(bytes(PrivateKey(self._private).public_key)).decode("ascii")

    def person_key(self, id_number: str) -> str:
        """The person key of an ID (CCCD/CMND or passport) number."""
        digest = hmac.new(self._hmac_key, _normalise_number(id_number).encode("utf-8"), hashlib.sha256)
        return "id:" + digest.hexdigest()[:40]

    def open_card(self, sealed: str) -> dict:
        """Open a sealed ID card; returns its fields (``number``, ``full_name``, ``birth_date``, …).

        Raises :class:`IdentityError` when it does not open or does not hold a valid card number.
        """
        try:
            doc = json.loads(open_sealed(sealed, self._private).decode("utf-8"))
        except SealedError as exc:
            raise IdentityError(f"sealed identity refused: {exc}") from None
        except (UnicodeDecodeError, ValueError):
            raise IdentityError("sealed identity opened but is not a card record") from None
        number = doc.get("number") if isinstance(doc, dict) else None
        if not isinstance(number, str) or cccd.check_number(number) is not None:
            raise IdentityError("sealed identity holds no valid CCCD number")
        return doc


def person_ids(conn: Connection, keys: Iterable[str], now: datetime) -> dict[str, int]:
    """The ``persons.id`` of each key, adding the people not seen before."""
    wanted = sorted(set(keys))
    if not wanted:
        return {}
    conn.execute(
        dialect_insert(conn, persons).on_conflict_do_nothing(index_elements=[persons.c.person_key]),
        [{"person_key": k, "created_at": to_db_time(now)} for k in wanted],
    )
    found: dict[str, int] = {}
    for start in range(0, len(wanted), 500):
        chunk = wanted[start : start + 500]
        rows = conn.execute(select(persons.c.person_key, persons.c.id).where(persons.c.person_key.in_(chunk)))
        found.update({k: int(i) for k, i in rows})
    return found


def pass_person_keys(conn: Connection, identity: HubIdentity, pass_ids: Iterable[str]) -> dict[str, str]:
    """Person key of each pass: its declaration's ID number, or ``pass:<id>`` for a pass not issued here."""
    wanted = sorted(set(pass_ids))
    keys = {p: f"pass:{p}" for p in wanted}
    for start in range(0, len(wanted), 500):
        chunk = wanted[start : start + 500]
        rows = conn.execute(
            select(passes.c.pass_id, declarations.c.id_number)
            .join(declarations, declarations.c.id == passes.c.declaration_id)
            .where(passes.c.pass_id.in_(chunk))
        )
        for pass_id, id_number in rows:
            keys[pass_id] = identity.person_key(id_number)
    return keys


def link_declarations(conn: Connection, identity: HubIdentity, now: datetime, *, batch: int = 2000) -> int:
    """Record the person of every declaration not linked yet; returns how many were linked."""
    linked = 0
    # Only declarations near or past the newest linked one: ids from concurrent saves can commit out
    # of order, but not by this many. Scanning every declaration cost 0.2 s at 500k on each case.
    newest = conn.execute(select(func.max(declaration_persons.c.declaration_id))).scalar()
    start = 0 if newest is None else max(0, int(newest) - LINK_OVERLAP)
    while True:
        rows = conn.execute(
            select(declarations.c.id, declarations.c.id_number)
            .outerjoin(declaration_persons, declaration_persons.c.declaration_id == declarations.c.id)
            .where(and_(declarations.c.id > start, declaration_persons.c.declaration_id.is_(None)))
            .order_by(declarations.c.id)
            .limit(batch)
        ).all()
        if not rows:
            return linked
        keys = {decl_id: identity.person_key(number) for decl_id, number in rows}
        ids = person_ids(conn, keys.values(), now)
        conn.execute(
            dialect_insert(conn, declaration_persons).on_conflict_do_nothing(
                index_elements=[declaration_persons.c.declaration_id]
            ),
            [{"declaration_id": d, "person_id": ids[k]} for d, k in keys.items()],
        )
        linked += len(rows)


def declarations_of(conn: Connection, person_ids_: Iterable[int]) -> dict[int, list[int]]:
    """Declaration ids of each person (linked ones; call :func:`link_declarations` first)."""
    wanted = sorted(set(person_ids_))
    found: dict[int, list[int]] = {p: [] for p in wanted}
    for start in range(0, len(wanted), 500):
        chunk = wanted[start : start + 500]
        rows = conn.execute(
            select(declaration_persons.c.person_id, declaration_persons.c.declaration_id).where(
                declaration_persons.c.person_id.in_(chunk)
            )
        )
        for person_id, decl_id in rows:
            found[int(person_id)].append(int(decl_id))
    return found


def passes_of(conn: Connection, person_ids_: Iterable[int], now: datetime) -> dict[int, list[str]]:
    """Unexpired pass ids of each person: through their declarations, and ``pass:<id>`` persons."""
    wanted = sorted(set(person_ids_))
    found: dict[int, list[str]] = {p: [] for p in wanted}
    for start in range(0, len(wanted), 500):
        chunk = wanted[start : start + 500]
        rows = conn.execute(
            select(declaration_persons.c.person_id, passes.c.pass_id)
            .join(passes, passes.c.declaration_id == declaration_persons.c.declaration_id)
            .where(and_(declaration_persons.c.person_id.in_(chunk), passes.c.expires_at > to_db_time(now)))
        )
        for person_id, pass_id in rows:
            found[int(person_id)].append(pass_id)
        rows = conn.execute(
            select(persons.c.id, persons.c.person_key).where(
                and_(persons.c.id.in_(chunk), persons.c.person_key.like("pass:%"))
            )
        )
        for person_id, key in rows:
            found[int(person_id)].append(key.removeprefix("pass:"))
    return found
