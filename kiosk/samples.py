"""Generated sample check-ins, paced at a fixed rate: the demo's stand-in for a camera."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from typing import Any

from protocol.messages import EventKind

# Sample pass ids only: the real ones come from the hub's health passes.
_PASS_IDS = [f"SAMPLE-{n:04d}" for n in range(1, 41)]


def sample_event(rng: random.Random) -> tuple[EventKind, dict[str, Any]]:
    """One plausible check-in or check-out, marked as a sample."""
    direction = rng.choices(["in", "out"], weights=[3, 2])[0]
    kind = EventKind.CHECK_IN if direction == "in" else EventKind.CHECK_OUT
    return kind, {
        "direction": direction,
        "subject": {"type": "pass", "pass_id": rng.choice(_PASS_IDS)},
        "verdict": "green",
        "sample": True,
    }


def run_samples(
    record: Callable[[EventKind, dict[str, Any]], object],
    *,
    rate_per_s: float,
    limit: int | None,
    stop: threading.Event,
    seed: int | None = None,
) -> int:
    """Record samples at ``rate_per_s`` until ``stop`` is set or ``limit`` is reached; returns the count."""
    rng = random.Random(seed)
    interval = 1.0 / rate_per_s
    count = 0
    while not stop.is_set() and (limit is None or count < limit):
        record(*sample_event(rng))
        count += 1
        stop.wait(interval)
    return count
