"""Health passes: issue a signed pass for a declaration, find it again, change its colour, render its QR.

A pass id is 10 random Crockford base32 characters (50 bits): short enough for a QR and for a citizen
to type (shown as ``ABCDE-FGHJK``), unguessable. The signed colour never changes; a later change
(a new F1, a case) goes to ``pass_status``, from which the status list kiosks hold is built.
"""

from __future__ import annotations

import io
import secrets
import unicodedata
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, delete, insert, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError

from hub.config import PassSettings
from hub.db import dialect_insert, from_db_time, to_db_time
from hub.db.schema import pass_status, passes
from hub.keys import STATUS, KeyRing, bump_list_version, list_version
from protocol.healthpass import CROCKFORD, Colour, PassClaims, PassKind, StatusList, encode_pass

#: Characters of a canonical pass id, drawn from CROCKFORD (defined with the pass codec in protocol/).
PASS_ID_CHARS = 10
_GROUP = 5
_READ_AS = str.maketrans({"I": "1", "L": "1", "O": "0"})
_IGNORED = str.maketrans("", "", " -_\t")
_INSERT_ATTEMPTS = 3
MAX_REASON_CHARS = 200
_MAX_INITIALS = 8

#: Letters NFKD does not take apart (Vietnamese đ first).
_PLAIN_LETTERS = str.maketrans({"Đ": "D", "đ": "d", "Ø": "O", "ø": "o", "Ł": "L", "ł": "l", "Ɖ": "D"})


class PassNotFound(LookupError):
    """No pass with that id."""


@dataclass(frozen=True, slots=True)
class IssuedPass:
    """A pass the hub issued, as stored (``pass_id`` in its canonical 10-character form)."""

    pass_id: str
    declaration_id: int
    kind: PassKind
    colour: Colour  # the colour signed into the pass; see current_colour() for later changes
    kid: str
    qr_text: str
    issued_at: datetime
    expires_at: datetime

    @property
    def display_id(self) -> str:
        """The pass id as shown to citizens: ``ABCDE-FGHJK``."""
        return display_pass_id(self.pass_id)


# ------------------------------------------------------------------------------------- ids and names


def new_pass_id() -> str:
    """A fresh random pass id (canonical form: 10 Crockford base32 characters)."""
    return "".join(secrets.choice(CROCKFORD) for _ in range(PASS_ID_CHARS))


def normalise_pass_id(text: str) -> str | None:
    """The canonical form of a typed or scanned pass id, or None when it cannot be one.

    Case, spaces and hyphens are ignored; I and L read as 1, O as 0 (Crockford's decoding rules).
    """
    if not isinstance(text, str):
        return None
    candidate = text.translate(_IGNORED).upper().translate(_READ_AS)
    if len(candidate) != PASS_ID_CHARS or any(c not in CROCKFORD for c in candidate):
        return None
    return candidate


def display_pass_id(pass_id: str) -> str:
    """The pass id grouped for reading and typing: ``ABCDE-FGHJK`` (accepts any form of it)."""
    canonical = normalise_pass_id(pass_id)
    if canonical is None:
        raise ValueError(f"not a pass id: {pass_id!r:.40} (expected 10 letters and digits like ABCDE-FGHJK)")
    return f"{canonical[:_GROUP]}-{canonical[_GROUP:]}"


def initials_of(full_name: str) -> str:
    """Initials of a full name, diacritics stripped: ``"Nguyễn Thị Ánh"`` → ``"NTA"``, ``Đ`` → ``D``.

    At most 8 letters (a longer name keeps its first 7 words and its last, the given name).
    Raises ``ValueError`` when the name has no letter.
    """
    letters: list[str] = []
    for word in unicodedata.normalize("NFC", full_name or "").split():
        plain = unicodedata.normalize("NFKD", word.translate(_PLAIN_LETTERS))
        first = next((c for c in plain if c.isalpha()), None)
        if first is not None:
            # One letter per word: some letters upper-case to two ("ß" -> "SS", "ŉ" -> "ʼN").
            upper = first.upper()
            letters.append(upper if len(upper) == 1 and upper.isalpha() else first)
    if not letters:
        raise ValueError(f"full name {full_name!r:.60} has no letters to take initials from")
    if len(letters) > _MAX_INITIALS:
        letters = letters[: _MAX_INITIALS - 1] + letters[-1:]
    return "".join(letters)


# ------------------------------------------------------------------------------------- issue and read


def _choice(cls, value, what: str):
    try:
        return cls(value)
    except ValueError:
        allowed = ", ".join(m.value for m in cls)
        raise ValueError(f"{what} must be one of {allowed}, got {value!r:.40}") from None


def issue_pass(
    conn: Connection,
    *,
    declaration_id: int,
    kind: PassKind | str,
    full_name: str,
    birth_year: int,
    colour: Colour | str,
    keyring: KeyRing,
    settings: PassSettings,
    now: datetime,
    validity: timedelta | None = None,
) -> IssuedPass:
    """Sign a pass for a declaration and insert its row, inside the caller's transaction ``conn``.

    The pass carries the holder's initials (never the full name), birth year, kind and colour; it
    expires ``validity`` (default ``settings.validity_days``) after ``now``. Raises ``ValueError`` for
    a bad kind, colour, birth year or name, :class:`hub.keys.KeyRingError` when the key is unusable.
    """
    kind = _choice(PassKind, kind, "kind")
    colour = _choice(Colour, colour, "colour")
    validity = timedelta(days=settings.validity_days) if validity is None else validity
    if validity < timedelta(0):
        raise ValueError(f"validity must not be negative, got {validity}")
    now = to_db_time(now)
    initials = initials_of(full_name)
    kid, key = keyring.signing_key(now, conn=conn)
    for attempt in range(_INSERT_ATTEMPTS):
        claims = PassClaims(
            pass_id=new_pass_id(),
            colour=colour,
            kind=kind,
            initials=initials,
            birth_year=birth_year,
            issuer=settings.issuer,
            issued_at=now,
            expires_at=now + validity,
        )
        issued = IssuedPass(
            pass_id=claims.pass_id,
            declaration_id=int(declaration_id),
            kind=kind,
            colour=colour,
            kid=kid,
            qr_text=encode_pass(claims, key),
            issued_at=claims.issued_at,
            expires_at=claims.expires_at,
        )
        try:
            # A savepoint: a (50-bit, vanishingly rare) id collision must not spoil the caller's transaction.
            with conn.begin_nested():
                conn.execute(
                    insert(passes).values(
                        pass_id=issued.pass_id,
                        declaration_id=issued.declaration_id,
                        kind=kind.value,
                        colour=colour.value,
                        kid=kid,
                        qr_text=issued.qr_text,
                        issued_at=issued.issued_at,
                        expires_at=issued.expires_at,
                    )
                )
        except IntegrityError:
            if attempt == _INSERT_ATTEMPTS - 1:
                raise
            continue
        return issued
    raise AssertionError("unreachable")  # the loop returns or raises


def _row_to_pass(row) -> IssuedPass:
    return IssuedPass(
        pass_id=row.pass_id,
        declaration_id=int(row.declaration_id),
        kind=PassKind(row.kind),
        colour=Colour(row.colour),
        kid=row.kid,
        qr_text=row.qr_text,
        issued_at=from_db_time(row.issued_at),
        expires_at=from_db_time(row.expires_at),
    )


def get_pass(conn: Connection, pass_id: str) -> IssuedPass | None:
    """The pass with this id (any form: ``abcde-fghjk``, spaces, hyphens), or None."""
    canonical = normalise_pass_id(pass_id)
    if canonical is None:
        return None
    row = conn.execute(select(passes).where(passes.c.pass_id == canonical)).first()
    return None if row is None else _row_to_pass(row)


def passes_for_declaration(conn: Connection, declaration_id: int) -> list[IssuedPass]:
    """Every pass issued for a declaration, oldest first."""
    rows = conn.execute(
        select(passes)
        .where(passes.c.declaration_id == declaration_id)
        .order_by(passes.c.issued_at, passes.c.pass_id)
    ).all()
    return [_row_to_pass(row) for row in rows]


# ------------------------------------------------------------------------------------- status


def current_colour(conn: Connection, pass_id: str) -> Colour | None:
    """The pass's colour now: the worse of the signed colour and its ``pass_status`` entry, or None."""
    canonical = normalise_pass_id(pass_id)
    if canonical is None:
        return None
    row = conn.execute(
        select(passes.c.colour, pass_status.c.colour.label("listed"))
        .select_from(passes.outerjoin(pass_status, pass_status.c.pass_id == passes.c.pass_id))
        .where(passes.c.pass_id == canonical)
    ).first()
    if row is None:
        return None
    return Colour(row.colour) if row.listed is None else Colour.worst(row.colour, row.listed)


def set_status(conn: Connection, pass_id: str, colour: Colour | str, reason: str, now: datetime) -> None:
    """Record that a pass's colour changed (e.g. a new F1) and bump the ``status`` list version.

    Kiosks show the worse of the signed and the listed colour. The entry lasts until the pass
    expires. Raises :class:`PassNotFound` for an unknown pass, ``ValueError`` for a bad colour or reason.
    """
    colour = _choice(Colour, colour, "colour")
    reason = (reason or "").strip()
    if not 1 <= len(reason) <= MAX_REASON_CHARS:
        raise ValueError(f"reason must be 1 to {MAX_REASON_CHARS} characters, got {len(reason)}")
    found = get_pass(conn, pass_id)
    if found is None:
        raise PassNotFound(f"no pass {pass_id!r:.40}")
    now = to_db_time(now)
    dialect = conn.dialect.name
    upsert = (postgresql if dialect == "postgresql" else sqlite).insert(pass_status)
    upsert = upsert.values(
        pass_id=found.pass_id, colour=colour.value, reason=reason, changed_at=now, expires_at=found.expires_at
    ).on_conflict_do_update(
        index_elements=[pass_status.c.pass_id],
        set_={
            "colour": upsert.excluded.colour,
            "reason": upsert.excluded.reason,
            "changed_at": upsert.excluded.changed_at,
        },
    )
    conn.execute(upsert)
    bump_list_version(conn, STATUS, now)


def raise_statuses(conn: Connection, changes: dict[str, tuple[Colour | str, str]], now: datetime) -> int:
    """Raise many passes' listed colour at once (``{pass_id: (colour, reason)}``), one version bump.

    A pass already listed at the same or a worse colour keeps its entry; unknown or expired passes are
    skipped. Returns how many entries changed.
    """
    if not changes:
        return 0
    now = to_db_time(now)
    ids = sorted(changes)
    current: dict[str, tuple[str, str | None, datetime]] = {}
    for start in range(0, len(ids), 500):
        rows = conn.execute(
            select(
                passes.c.pass_id, passes.c.colour, pass_status.c.colour.label("listed"), passes.c.expires_at
            )
            .select_from(passes.outerjoin(pass_status, pass_status.c.pass_id == passes.c.pass_id))
            .where(passes.c.pass_id.in_(ids[start : start + 500]))
            .where(passes.c.expires_at > now)
        )
        current.update({r.pass_id: (r.colour, r.listed, r.expires_at) for r in rows})
    rows = []
    for pass_id, (signed, listed, expires_at) in current.items():
        colour, reason = changes[pass_id]
        colour = _choice(Colour, colour, "colour")
        shown = Colour.worst(signed, listed) if listed else Colour(signed)
        if colour.severity <= shown.severity:
            continue
        rows.append(
            {
                "pass_id": pass_id,
                "colour": colour.value,
                "reason": reason[:MAX_REASON_CHARS],
                "changed_at": now,
                "expires_at": expires_at,
            }
        )
    if not rows:
        return 0
    upsert = dialect_insert(conn, pass_status)
    upsert = upsert.on_conflict_do_update(
        index_elements=[pass_status.c.pass_id],
        set_={c: upsert.excluded[c] for c in ("colour", "reason", "changed_at")},
    )
    for start in range(0, len(rows), 1000):
        conn.execute(upsert, rows[start : start + 1000])
    bump_list_version(conn, STATUS, now)
    return len(rows)


def clear_statuses(conn: Connection, pass_ids: list[str], reason_prefix: str, now: datetime) -> int:
    """Take passes off the status list when their entry's reason starts with ``reason_prefix``."""
    removed = 0
    ids = sorted(set(pass_ids))
    for start in range(0, len(ids), 500):
        removed += conn.execute(
            delete(pass_status).where(
                pass_status.c.pass_id.in_(ids[start : start + 500]),
                pass_status.c.reason.startswith(reason_prefix, autoescape=True),
            )
        ).rowcount
    if removed:
        bump_list_version(conn, STATUS, now)
    return removed


def clear_status(conn: Connection, pass_id: str, now: datetime) -> None:
    """Take a pass off the status list (its signed colour holds again); bumps the version if it was on it."""
    canonical = normalise_pass_id(pass_id)
    if canonical is None:
        return
    removed = conn.execute(delete(pass_status).where(pass_status.c.pass_id == canonical)).rowcount
    if removed:
        bump_list_version(conn, STATUS, now)


def status_list(conn: Connection, now: datetime) -> StatusList:
    """The status list for kiosks: listed passes not yet expired, with the ``status`` version."""
    now = to_db_time(now)
    # Version first, entries second: entries are then at least as new as the version they carry.
    version = list_version(conn, STATUS)
    rows = conn.execute(
        select(pass_status.c.pass_id, pass_status.c.colour)
        .where(pass_status.c.expires_at > now)
        .order_by(pass_status.c.pass_id)
    ).all()
    return StatusList(version=version, issued_at=now, colours=dict(rows))


# ------------------------------------------------------------------------------------- QR images


def _qr(qr_text: str):
    import segno

    # Error level M exactly (no boosting), so the code stays the size the kiosks were benchmarked on.
    return segno.make(qr_text, error="m", micro=False, boost_error=False)


def qr_png(qr_text: str, *, scale: int = 8) -> bytes:
    """The pass QR as PNG bytes: error level M, a quiet zone of 4 modules, ``scale`` pixels per module."""
    out = io.BytesIO()
    _qr(qr_text).save(out, kind="png", scale=scale, border=4)
    return out.getvalue()


def qr_svg(qr_text: str, *, scale: int = 8) -> bytes:
    """The pass QR as SVG bytes (printable at any size): error level M, a quiet zone of 4 modules."""
    out = io.BytesIO()
    _qr(qr_text).save(out, kind="svg", scale=scale, border=4, title="AnToan health pass")
    return out.getvalue()
