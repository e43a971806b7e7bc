"""Secrets the hub makes for itself on first use and keeps in its database, shared by every process."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy import Engine, insert, select
from sqlalchemy.exc import IntegrityError

from hub.db.schema import hub_secrets


def hub_secret(
    engine: Engine, name: str, nbytes: int = 32, *, make: Callable[[], bytes] | None = None
) -> bytes:
    """The secret ``name``, made on first use (``make()`` or ``nbytes`` random bytes).

    Every process gets the same value: when two make it at once, the first insert wins and the other
    reads it back.
    """
    with engine.begin() as conn:
        value = conn.execute(select(hub_secrets.c.value).where(hub_secrets.c.name == name)).scalar()
        if value is not None:
            return bytes(value)
    fresh = make() if make is not None else secrets.token_bytes(nbytes)
    try:
        with engine.begin() as conn:
            conn.execute(insert(hub_secrets).values(name=name, value=fresh, created_at=datetime.now(UTC)))
    except IntegrityError:
        pass  # another process made it first
    with engine.connect() as conn:
        return bytes(conn.execute(select(hub_secrets.c.value).where(hub_secrets.c.name == name)).scalar_one())
