"""The tracing rules in one place: windows, stays, the contact rule, and the pure interval arithmetic.

Every rule is a configuration field (``[tracing]`` in the hub config) with its default documented here.
The functions below are pure (integers in, integers out) so the database engine, the in-memory index,
the property tests' brute-force reference and the pages all share one definition of "a contact".

The contact rule. Each presence is an interval ``[arrive, depart]`` in epoch seconds. Two presences at
the same venue are a contact when, with either one widened by the buffer on both sides (the air
lingers after someone leaves; clocks and scans are not exact before), it overlaps the other's actual
stay by at least the minimum overlap::

    exposure(a, b) = max(|widen(a, buffer) ∩ b|, |a ∩ widen(b, buffer)|)
    contact        = exposure >= min_overlap

The rule is symmetric (a is a contact of b exactly when b is a contact of a), reduces to the plain
overlap when the buffer is 0, and grows with the buffer.
"""

from __future__ import annotations

from typing import Final

from pydantic import Field, model_validator

from protocol.settings import Section

#: No stay is longer than this, whatever the scans say (the database checks it too).
MAX_STAY_S: Final = 12 * 3600

#: Default stay per venue type when nobody scanned out (minutes): the time a typical visit lasts.
DEFAULT_STAYS_MIN: Final = {
    "market": 60,
    "restaurant": 120,
    "school": 540,
    "office": 540,
    "hospital": 180,
    "clinic": 60,
    "hotel": 720,
    "other": 60,
}


class TracingRules(Section):
    """How presences become contacts; defaults follow the 2021 guidance (14-day incubation window)."""

    lookback_days: int = Field(
        default=14,
        ge=1,
        le=60,
        description="F1 look-back from the F0's onset or test date, in days (the 2021 incubation window).",
    )
    min_overlap_min: int = Field(
        default=15, ge=1, le=720, description="Shortest shared presence that makes an F1, in minutes."
    )
    buffer_min: int = Field(
        default=30,
        ge=0,
        le=240,
        description="Each presence is widened by this on both sides when looking for overlap (minutes).",
    )
    f2_window_days: int = Field(
        default=7,
        ge=1,
        le=30,
        description="F2: an F1's presences from their first contact with the F0, up to this many days.",
    )
    f2_min_overlap_min: int = Field(
        default=15, ge=1, le=720, description="Shortest shared presence that makes an F2, in minutes."
    )
    f2_strict_min_overlap_min: int | None = Field(
        default=None,
        ge=1,
        le=720,
        description=(
            "When set, only F1 whose longest encounter lasted at least this long are followed to F2 "
            "(keeps F2 lists manageable in a large outbreak)."
        ),
    )
    default_stay_min: dict[str, int] = Field(
        default_factory=lambda: dict(DEFAULT_STAYS_MIN),
        description="Assumed stay when nobody scanned out, by venue type (minutes, at most 720).",
    )
    f1_colour: str = Field(default="red", description="Pass colour of an F1 (kiosks show it).")
    f2_colour: str = Field(default="yellow", description="Pass colour of an F2.")

    @model_validator(mode="after")
    def _check(self) -> TracingRules:
        for venue_type, minutes in self.default_stay_min.items():
            if not 1 <= minutes <= MAX_STAY_S // 60:
                raise ValueError(f"default_stay_min.{venue_type} must be 1 to {MAX_STAY_S // 60} minutes")
        for name in ("f1_colour", "f2_colour"):
            if getattr(self, name) not in ("yellow", "red"):
                raise ValueError(f"{name} must be yellow or red")
        return self

    @property
    def buffer_s(self) -> int:
        return self.buffer_min * 60

    @property
    def min_overlap_s(self) -> int:
        return self.min_overlap_min * 60

    @property
    def f2_min_overlap_s(self) -> int:
        return self.f2_min_overlap_min * 60

    def default_stay_s(self, venue_type: str | None) -> int:
        """The assumed stay at a venue of ``venue_type`` (unknown types use ``other``)."""
        minutes = self.default_stay_min.get(venue_type or "other", self.default_stay_min.get("other", 60))
        return min(minutes * 60, MAX_STAY_S)

    def window(self, anchor_s: int, now_s: int) -> tuple[int, int]:
        """The F1 look-back window: ``lookback_days`` before the anchor (onset or test) up to now."""
        return anchor_s - self.lookback_days * 86400, now_s


def overlap(a1: int, a2: int, b1: int, b2: int) -> int:
    """Seconds shared by ``[a1, a2]`` and ``[b1, b2]`` (0 when apart)."""
    return max(0, min(a2, b2) - max(a1, b1))


def exposure(a1: int, a2: int, b1: int, b2: int, buffer_s: int) -> int:
    """The contact measure of two presences at one venue (see the module docstring); symmetric."""
    return max(
        overlap(a1 - buffer_s, a2 + buffer_s, b1, b2),
        overlap(a1, a2, b1 - buffer_s, b2 + buffer_s),
    )


def exposure_span(a1: int, a2: int, b1: int, b2: int, buffer_s: int) -> tuple[int, int]:
    """When the encounter happened: the part of ``[b1, b2]`` within ``a`` widened by the buffer,
    or of ``a`` within widened ``b`` when that is longer (the one :func:`exposure` counted)."""
    first = (max(a1 - buffer_s, b1), min(a2 + buffer_s, b2))
    second = (max(a1, b1 - buffer_s), min(a2, b2 + buffer_s))
    return first if first[1] - first[0] >= second[1] - second[0] else second


def scan_range(a1: int, a2: int, buffer_s: int, max_stay_s: int) -> tuple[int, int, int]:
    """Bounds for the range scan of presences that can touch ``[a1, a2]``:
    arrive in ``[lo, hi)`` and depart after ``after`` (exposure > 0 needs both)."""
    return a1 - buffer_s - max_stay_s, a2 + buffer_s, a1 - buffer_s
