"""The downlink lists a kiosk verifies passes with: trust list and status list.

They arrive as retained MQTT messages (``antoan/v1/broadcast/trust`` and ``…/status``), so a kiosk
that connects later still receives the current ones; each is cached on disk so a kiosk that
restarts without network still verifies passes. A list older than the one held is ignored.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

from protocol import topics
from protocol.healthpass import PassError, StatusList, TrustList

log = logging.getLogger(__name__)


class DownlinkLists:
    """Holds the newest trust and status lists; safe to read from any thread."""

    def __init__(self, folder: Path, *, clock: Callable[[], float] = time.time):
        self._folder = Path(folder)
        self._folder.mkdir(parents=True, exist_ok=True)
        self._clock = clock
        self.trust: TrustList | None = None
        self.status: StatusList | None = None

    @property
    def _trust_file(self) -> Path:
        return self._folder / "trust.json"

    @property
    def _status_file(self) -> Path:
        return self._folder / "status.json"

    def load_cached(self) -> None:
        """Read the lists saved by an earlier run, if any (a damaged file is skipped with a warning)."""
        for path, parse, name in (
            (self._trust_file, TrustList.from_json, "trust"),
            (self._status_file, StatusList.from_json, "status"),
        ):
            if not path.exists():
                continue
            try:
                setattr(self, name, parse(path.read_bytes()))
            except (OSError, PassError) as exc:
                log.warning("ignoring the cached %s list %s: %s", name, path, exc)

    def handle(self, topic: str, payload: bytes) -> bool:
        """Take a broadcast message; True when it replaced a list."""
        if topic == topics.BROADCAST_TRUST:
            name, parse, path = "trust", TrustList.from_json, self._trust_file
        elif topic == topics.BROADCAST_STATUS:
            name, parse, path = "status", StatusList.from_json, self._status_file
        else:
            return False
        if not payload:
            return False
        try:
            new = parse(payload)
        except PassError as exc:
            log.warning("ignoring a malformed %s list: %s", name, exc)
            return False
        held = getattr(self, name)
        if held is not None and new.version < held.version:
            log.info("ignoring %s list version %d (holding %d)", name, new.version, held.version)
            return False
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(payload)
        os.replace(tmp, path)
        setattr(self, name, new)
        log.info("%s list version %d received", name, new.version)
        return True

    def ages_s(self) -> dict[str, float | None]:
        """Seconds since each list was issued by the hub (None when the kiosk has none)."""
        now = self._clock()
        return {
            name: None if held is None else max(0.0, now - held.issued_at.timestamp())
            for name, held in (("trust", self.trust), ("status", self.status))
        }
