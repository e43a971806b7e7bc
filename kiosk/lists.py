"""The downlink lists a kiosk verifies passes with: trust list and status list.

They arrive as retained MQTT messages (``antoan/v1/broadcast/trust``, and the status list as 32 shards
``antoan/v1/broadcast/status/<c>`` by the pass id's first character), so a kiosk that connects later
still receives the current ones; each list and each shard is cached in its own file so a kiosk that
restarts without network still verifies passes. A list or shard older than the one held is ignored.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

from protocol import topics
from protocol.healthpass import PassError, StatusList, StatusShards, TrustList

log = logging.getLogger(__name__)


class DownlinkLists:
    """Holds the newest trust list and status shards; safe to read from any thread.

    ``status`` is always a :class:`StatusShards` (empty until the first shard arrives); verification
    reads it like one status list.
    """

    def __init__(self, folder: Path, *, clock: Callable[[], float] = time.time):
        self._folder = Path(folder)
        self._folder.mkdir(parents=True, exist_ok=True)
        self._clock = clock
        self.trust: TrustList | None = None
        self.status = StatusShards()

    @property
    def _trust_file(self) -> Path:
        return self._folder / "trust.json"

    def _shard_file(self, symbol: str) -> Path:
        return self._folder / f"status-{symbol}.json"

    def load_cached(self) -> None:
        """Read the lists saved by an earlier run, if any (a damaged file is skipped with a warning)."""
        if self._trust_file.exists():
            try:
                self.trust = TrustList.from_json(self._trust_file.read_bytes())
            except (OSError, PassError) as exc:
                log.warning("ignoring the cached trust list %s: %s", self._trust_file, exc)
        for symbol in topics.STATUS_SHARDS:
            path = self._shard_file(symbol)
            if not path.exists():
                continue
            try:
                shard = StatusList.from_json(path.read_bytes())
            except (OSError, PassError) as exc:
                log.warning("ignoring the cached status shard %s: %s", path, exc)
                continue
            if shard.shard != symbol:
                log.warning("ignoring the cached status shard %s: it holds shard %r", path, shard.shard)
                continue
            self.status.add(shard)

    def handle(self, topic: str, payload: bytes) -> bool:
        """Take a broadcast message; True when it replaced the trust list or a status shard."""
        if not payload:
            return False
        if topic == topics.BROADCAST_TRUST:
            return self._take_trust(payload)
        symbol = topics.parse_status_shard(topic)
        if symbol is not None:
            return self._take_shard(symbol, payload)
        return False

    def _take_trust(self, payload: bytes) -> bool:
        try:
            new = TrustList.from_json(payload)
        except PassError as exc:
            log.warning("ignoring a malformed trust list: %s", exc)
            return False
        if self.trust is not None and new.version < self.trust.version:
            log.info("ignoring trust list version %d (holding %d)", new.version, self.trust.version)
            return False
        _replace(self._trust_file, payload)
        self.trust = new
        log.info("trust list version %d received", new.version)
        return True

    def _take_shard(self, symbol: str, payload: bytes) -> bool:
        try:
            new = StatusList.from_json(payload)
        except PassError as exc:
            log.warning("ignoring a malformed status shard %s: %s", symbol, exc)
            return False
        if new.shard != symbol:
            # Its entries would be looked up under the wrong symbol; the sender is broken, not the kiosk.
            log.warning("ignoring status shard %r published as shard %s", new.shard, symbol)
            return False
        held = self.status.get(symbol)
        if held is not None and new.version < held.version:
            log.info("ignoring status shard %s version %d (holding %d)", symbol, new.version, held.version)
            return False
        _replace(self._shard_file(symbol), payload)
        before = (self.status.complete, self.status.version)
        self.status.add(new)
        log.debug("status shard %s version %d received (%d entries)", symbol, new.version, len(new))
        if self.status.complete and (True, self.status.version) != before:
            log.info("status list version %d received (%d entries)", self.status.version, len(self.status))
        return True

    def ages_s(self) -> dict[str, float | None]:
        """Seconds since each list was issued by the hub (None when the kiosk has none).

        The status list's age is its oldest shard's: the kiosk is only as current as that one.
        """
        now = self._clock()
        status_issued = self.status.issued_at
        return {
            "trust": None if self.trust is None else max(0.0, now - self.trust.issued_at.timestamp()),
            "status": None if status_issued is None else max(0.0, now - status_issued.timestamp()),
        }


def _replace(path: Path, payload: bytes) -> None:
    """Write the file atomically: a crash leaves the old or the new content, never half of one."""
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(payload)
    os.replace(tmp, path)
