"""Contact tracing: F1 from the database's covering index, F2 from an in-memory index of presences.

F1 (interactive): for each presence of the F0 in the window, one range scan of the covering index
``(venue, arrive, depart, person)`` from ``arrive - buffer - longest stay at that venue``, all of them
in one statement; the contact rule is then applied to the rows with numpy.
F2 (a background job): the F1's presences are many, and the answer can be a large share of the
population, so it runs over :class:`VisitIndex`, sorted numpy arrays built from the database and kept
current from ``visits.rev``; every step is vectorised over all the F1's presences at once, and the
rows of people excluded (the F0 and the F1 themselves) are dropped before pairs are formed.
Both engines return :class:`Contact` objects built from encounter columns: an :class:`Encounter`
object is made only when a contact's encounters or reasons are asked for.
The contact rule itself is in :mod:`hub.tracing_rules`; both engines use it and agree with the
brute-force reference in the tests.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import itertools
import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from sqlalchemy import Connection, Engine, and_, func, select

from hub.db.schema import venue_stays, visits
from hub.keys import list_version
from hub.presence import VISITS_REV
from hub.tracing_rules import MAX_STAY_S, TracingRules, scan_range

log = logging.getLogger(__name__)

#: Encounters kept per contact as its reasons (the count of all of them is kept too).
MAX_REASONS = 10


@dataclass(frozen=True, slots=True)
class Presence:
    """One visit: who, where, from when to when (epoch seconds)."""

    person_id: int
    venue_id: str
    arrive_s: int
    depart_s: int


@dataclass(frozen=True, slots=True)
class Encounter:
    """Why someone is a contact: their presence met ``via``'s presence at a venue."""

    venue_id: str
    via_person_id: int
    start_s: int  # when the counted shared time began
    end_s: int
    exposure_s: int

    def as_reason(self) -> dict:
        return {
            "venue_id": self.venue_id,
            "via": self.via_person_id,
            "start_s": self.start_s,
            "end_s": self.end_s,
            "minutes": self.exposure_s // 60,
            "source": "venue",
        }


class Contact:
    """A person found by tracing: how many encounters made them one, when the first began and the last
    ended, the longest, and whom it was through (the F0, or the F1 of the longest encounter).

    The engines build contacts from arrays (:class:`_Encounters`), a contact being a small handle into
    them; :attr:`encounters` makes :class:`Encounter` objects only when asked, and :meth:`reasons` picks
    the first ``MAX_REASONS`` without making the rest (an F2 case can hold millions of encounters).
    """

    __slots__ = ("_encounters", "_group", "_table", "degree", "person_id")

    def __init__(self, person_id: int, degree: int, group: int, table: _Encounters):
        self.person_id = person_id
        self.degree = degree
        self._group = group
        self._table = table
        self._encounters: list[Encounter] | None = None

    def __repr__(self) -> str:
        return (
            f"Contact(person_id={self.person_id}, degree={self.degree}, encounters={self.encounter_count}, "
            f"longest_s={self.longest_s}, via={self.via_person_id})"
        )

    @property
    def encounter_count(self) -> int:
        """Every encounter found, not only the ones listed as reasons."""
        return self._table.counts[self._group]

    @property
    def first_s(self) -> int:
        return self._table.first[self._group]

    @property
    def last_s(self) -> int:
        return self._table.last[self._group]

    @property
    def longest_s(self) -> int:
        return self._table.longest[self._group]

    @property
    def via_person_id(self) -> int:
        """Whom the longest encounter was with (the first found, on a tie)."""
        return self._table.via_of[self._group]

    @property
    def encounters(self) -> list[Encounter]:
        """Every encounter that made this person a contact, in the order the engine found them."""
        if self._encounters is None:
            self._encounters = self._table.make(self._table.rows_of(self._group))
        return self._encounters

    def reasons(self) -> list[dict]:
        """The first ``MAX_REASONS`` encounters by time (then venue, then whom), as stored reasons."""
        return [e.as_reason() for e in self._table.first_encounters(self._group, MAX_REASONS)]


class _Encounters:
    """Encounters as columns in the order found, and each contact's totals (contacts numbered in the
    order of their person id). Which rows are whose is sorted out only when encounters are asked for."""

    __slots__ = (
        "_group_of",
        "_order",
        "counts",
        "end",
        "exposure",
        "first",
        "last",
        "lo",
        "longest",
        "start",
        "venue_code",
        "venues",
        "via",
        "via_of",
    )

    def __init__(self, group_of: np.ndarray, groups: int, venue_code, via, start, end, exposure, venues):
        self.venue_code, self.via, self.start, self.end, self.exposure = venue_code, via, start, end, exposure
        self.venues = venues  # venue_code -> venue_id
        self._group_of = group_of
        self._order: np.ndarray | None = None
        n = group_of.size
        counts = np.bincount(group_of, minlength=groups)
        longest = np.zeros(groups, np.int64)
        np.maximum.at(longest, group_of, exposure)
        first = np.full(groups, np.iinfo(np.int64).max, np.int64)
        np.minimum.at(first, group_of, start)
        last = np.full(groups, np.iinfo(np.int64).min, np.int64)
        np.maximum.at(last, group_of, end)
        # Through whom: the first found of each contact's longest encounters.
        at_longest = np.flatnonzero(exposure == longest[group_of])
        first_found = np.full(groups, n, np.int64)
        np.minimum.at(first_found, group_of[at_longest], at_longest)
        # Plain lists: a contact reads its totals as Python ints.
        self.counts = counts.tolist()
        self.lo = (np.cumsum(counts) - counts).tolist()
        self.first = first.tolist()
        self.last = last.tolist()
        self.longest = longest.tolist()
        self.via_of = via[first_found].tolist()

    def rows_of(self, group: int) -> np.ndarray:
        """A contact's rows, in the order found."""
        if self._order is None:
            self._order = _stable_order(self._group_of)
        lo = self.lo[group]
        return self._order[lo : lo + self.counts[group]]

    def first_encounters(self, group: int, limit: int) -> list[Encounter]:
        """The first ``limit`` of a contact's encounters by (start, venue id, via, order found)."""
        rows = self.rows_of(group).tolist()
        venues, codes, vias, starts = self.venues, self.venue_code, self.via, self.start
        keys = {r: (int(starts[r]), venues[int(codes[r])], int(vias[r]), r) for r in rows}
        return self.make(np.array(sorted(rows, key=keys.__getitem__)[:limit], np.int64))

    def make(self, rows: np.ndarray) -> list[Encounter]:
        """Encounter objects of the given rows."""
        venues = self.venues
        return [
            Encounter(venues[code], via, start, end, secs)
            for code, via, start, end, secs in zip(
                self.venue_code[rows].tolist(),
                self.via[rows].tolist(),
                self.start[rows].tolist(),
                self.end[rows].tolist(),
                self.exposure[rows].tolist(),
                strict=True,
            )
        ]


def _stable_order(values: np.ndarray) -> np.ndarray:
    """The permutation that sorts small non-negative ints, equal ones kept in their order."""
    n = values.size
    if n < 1 << 32 and (n == 0 or int(values.max()) < 1 << 31):
        # One plain sort of (value, position) packed in an int64: many times faster than a stable
        # argsort, and the same permutation.
        return np.sort((values.astype(np.int64) << 32) | np.arange(n, dtype=np.int64)) & 0xFFFFFFFF
    return np.argsort(values, kind="stable")


#: Above this many encounters, people are numbered through a table indexed by person id (no sort).
_DIRECT_FROM = 50_000


def _number_people(person: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(the distinct people ascending, the number of each row's person among them)."""
    top = int(person.max())
    if person.size >= _DIRECT_FROM and int(person.min()) >= 0 and top < max(4 * person.size, 1 << 22):
        seen = np.zeros(top + 1, bool)
        seen[person] = True
        people = np.flatnonzero(seen)
        number = np.cumsum(seen, dtype=np.int32) - 1
        return people, number[person].astype(np.int64)
    return np.unique(person, return_inverse=True)


def _contacts(
    person: np.ndarray,
    venue_code: np.ndarray,
    via: np.ndarray,
    start: np.ndarray,
    end: np.ndarray,
    exposure: np.ndarray,
    *,
    degree: int,
    venues: Sequence[str],
) -> dict[int, Contact]:
    """Contacts from encounter columns in the order found: totals per person with numpy, a small
    :class:`Contact` handle per person, no object per encounter."""
    if person.size == 0:
        return {}
    people, group_of = _number_people(person)
    table = _Encounters(group_of.reshape(-1), people.size, venue_code, via, start, end, exposure, venues)
    with _no_gc():
        return {p: Contact(p, degree, g, table) for g, p in enumerate(people.tolist())}


@contextlib.contextmanager
def _no_gc() -> Iterator[None]:
    """No cyclic garbage collection while the block runs: making hundreds of thousands of objects
    otherwise sets off collections that walk the whole heap again and again (3x slower here); the
    objects made hold no cycles of their own."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _exposures(
    a1: np.ndarray, a2: np.ndarray, b1: np.ndarray, b2: np.ndarray, buffer_s: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`~hub.tracing_rules.exposure` and :func:`~hub.tracing_rules.exposure_span` over arrays:
    (shared seconds, start, end)."""
    lo1, hi1 = np.maximum(a1 - buffer_s, b1), np.minimum(a2 + buffer_s, b2)
    lo2, hi2 = np.maximum(a1, b1 - buffer_s), np.minimum(a2, b2 + buffer_s)
    d1, d2 = hi1 - lo1, hi2 - lo2
    use_first = d1 >= d2
    shared = np.maximum(d1, d2)
    np.maximum(shared, 0, out=shared)
    return shared, np.where(use_first, lo1, lo2), np.where(use_first, hi1, hi2)


# ------------------------------------------------------------------------------------------- F1 (SQL)


def presences_of(conn: Connection, person_id: int, start_s: int, end_s: int) -> list[Presence]:
    """The person's presences that overlap ``[start_s, end_s]``, in time order."""
    rows = conn.execute(
        select(visits.c.venue_id, visits.c.arrive_s, visits.c.depart_s)
        .where(
            and_(
                visits.c.person_id == person_id,
                visits.c.arrive_s >= start_s - MAX_STAY_S,
                visits.c.arrive_s <= end_s,
                visits.c.depart_s > start_s,
            )
        )
        .order_by(visits.c.arrive_s)
    )
    return [Presence(person_id, v, int(a), int(d)) for v, a, d in rows]


def _max_stays(conn: Connection, venue_ids: Iterable[str]) -> dict[str, int]:
    wanted = sorted(set(venue_ids))
    found = dict(
        conn.execute(
            select(venue_stays.c.venue_id, venue_stays.c.max_stay_s).where(venue_stays.c.venue_id.in_(wanted))
        ).all()
    )
    return {v: int(found.get(v, MAX_STAY_S)) for v in wanted}


#: Pairs of presences compared at once by the F2 engine.
_PAIRS_PER_BLOCK = 1 << 18

#: Range scans sent in one statement (SQLite allows at most 500 terms in a compound SELECT).
_SCANS_PER_STATEMENT = 100


@functools.lru_cache(maxsize=256)
def _scan_sql(count: int, placeholder: str) -> str:
    """``count`` range scans of the covering index in one statement, each row tagged with its scan.

    One round trip for all of an F0's presences, and no join: each term is a plain search of
    ``ix_visits_venue_span`` whatever statistics ``ANALYZE`` left (a join is where SQLite >= 3.38 may
    choose to build a Bloom filter over a whole table first); ``bench/tracing.py`` checks the plans.
    """
    p = placeholder
    return " UNION ALL ".join(
        f"SELECT {k}, person_id, arrive_s, depart_s FROM visits "
        f"WHERE venue_id = {p} AND arrive_s >= {p} AND arrive_s < {p} AND depart_s > {p}"
        for k in range(count)
    )


def _scan(conn: Connection, own: Sequence[Presence], bounds: Sequence[tuple[int, int, int]]) -> np.ndarray:
    """Rows ``(presence index, person, arrive, depart)`` of the range scans, as an int64 array."""
    placeholder = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    found: list[np.ndarray] = []
    for lo in range(0, len(own), _SCANS_PER_STATEMENT):
        part = range(lo, min(len(own), lo + _SCANS_PER_STATEMENT))
        params: list[object] = []
        for k in part:
            params.extend((own[k].venue_id, *bounds[k]))
        result = conn.exec_driver_sql(_scan_sql(len(part), placeholder), tuple(params))
        # The driver's own tuples: making a Row of each costs more than the scan for a large answer.
        rows = result.cursor.fetchall()
        result.close()
        if rows:
            block = np.fromiter(itertools.chain.from_iterable(rows), np.int64, 4 * len(rows)).reshape(-1, 4)
            block[:, 0] += lo
            found.append(block)
    if not found:
        return np.empty((0, 4), np.int64)
    rows = np.concatenate(found)
    return rows[np.argsort(rows[:, 0], kind="stable")]


def find_f1(
    conn: Connection, person_id: int, start_s: int, end_s: int, rules: TracingRules
) -> tuple[list[Presence], dict[int, Contact]]:
    """The F0's presences in the window and every F1 with their encounters."""
    own = presences_of(conn, person_id, start_s, end_s)
    if not own:
        return own, {}
    stays = _max_stays(conn, (p.venue_id for p in own))
    buffer_s = rules.buffer_s
    rows = _scan(conn, own, [scan_range(p.arrive_s, p.depart_s, buffer_s, stays[p.venue_id]) for p in own])
    k, other, b1, b2 = rows.T
    a1 = np.array([p.arrive_s for p in own], np.int64)[k]
    a2 = np.array([p.depart_s for p in own], np.int64)[k]
    shared, start, end = _exposures(a1, a2, b1, b2, buffer_s)
    keep = (shared >= rules.min_overlap_s) & (other != person_id)
    start, end = start[keep], end[keep]
    venues = sorted({p.venue_id for p in own})
    venue_code = np.array([venues.index(p.venue_id) for p in own], np.int64)[k[keep]]
    via = np.full(int(keep.sum()), person_id, np.int64)
    return own, _contacts(other[keep], venue_code, via, start, end, shared[keep], degree=1, venues=venues)


# ----------------------------------------------------------------------------- in-memory visit index

#: arrive_s < 2**33 (year 2242): the sort key is venue_code * 2**33 + arrive.
_SHIFT = np.int64(1 << 33)
_COLUMNS = (
    visits.c.id,
    visits.c.venue_id,
    visits.c.person_id,
    visits.c.arrive_s,
    visits.c.depart_s,
)


class VisitIndex:
    """Sorted numpy arrays of the presences since ``horizon_s``, refreshed from ``visits.rev``.

    Rows changed since the last build live in a small overlay; the base copy of a changed row is
    masked out. When the overlay grows past ``rebuild_after`` rows the arrays are rebuilt.
    """

    def __init__(self, engine: Engine, *, horizon_s: Callable[[], int], rebuild_after: int = 200_000):
        self._engine = engine
        self._horizon = horizon_s
        self._rebuild_after = rebuild_after
        self._lock = threading.Lock()
        self._venue_codes: dict[str, int] = {}
        self._venues: list[str] = []
        self.rev = -1
        self._base_ids = np.empty(0, np.int64)
        self._empty()

    def _empty(self) -> None:
        self.key = np.empty(0, np.int64)
        self.depart = np.empty(0, np.int64)
        self.person = np.empty(0, np.int64)
        self.ids = np.empty(0, np.int64)
        self.by_person = np.empty(0, np.int64)
        self.person_sorted = np.empty(0, np.int64)
        self._overlay: dict[int, tuple[int, int, int, int]] = {}

    def _code(self, venue_id: str) -> int:
        code = self._venue_codes.get(venue_id)
        if code is None:
            code = self._venue_codes[venue_id] = len(self._venues)
            self._venues.append(venue_id)
        return code

    def venue(self, code: int) -> str:
        return self._venues[code]

    @property
    def venue_ids(self) -> Sequence[str]:
        """Venue id of each venue code (codes are only ever added)."""
        return self._venues

    @property
    def size(self) -> int:
        return int(self.key.size)

    def refresh(self, progress: Callable[[float], None] | None = None) -> None:
        """Bring the index up to the database's current ``visits`` (a full build the first time)."""
        with self._lock, self._engine.connect() as conn:
            current = list_version(conn, VISITS_REV)
            if current == self.rev:
                return
            horizon = self._horizon()
            if self.rev < 0:
                self._build(conn, horizon, current, progress)
                return
            changed = conn.execute(
                select(
                    visits.c.id, visits.c.venue_id, visits.c.person_id, visits.c.arrive_s, visits.c.depart_s
                )
                .where(and_(visits.c.rev > self.rev, visits.c.depart_s >= horizon))
                .order_by(visits.c.id)
            ).all()
            for vid, venue, person, arrive, depart in changed:
                self._overlay[int(vid)] = (self._code(venue), int(person), int(arrive), int(depart))
            self.rev = current
            if len(self._overlay) > self._rebuild_after:
                self._build(conn, horizon, current, progress)
            else:
                self._merge_overlay()

    def _build(self, conn: Connection, horizon: int, current: int, progress) -> None:
        count = int(
            conn.execute(
                select(func.count()).select_from(visits).where(visits.c.depart_s >= horizon)
            ).scalar_one()
        )
        ids = np.empty(count, np.int64)
        key = np.empty(count, np.int64)
        depart = np.empty(count, np.int64)
        person = np.empty(count, np.int64)
        n = 0
        result = conn.execution_options(stream_results=True, yield_per=100_000).execute(
            select(
                visits.c.id, visits.c.venue_id, visits.c.person_id, visits.c.arrive_s, visits.c.depart_s
            ).where(visits.c.depart_s >= horizon)
        )
        for chunk in result.partitions(100_000):
            m = min(len(chunk), count - n)
            if m <= 0:
                break
            cols = list(zip(*chunk[:m], strict=True))
            ids[n : n + m] = cols[0]
            codes = np.fromiter((self._code(v) for v in cols[1]), np.int64, m)
            person[n : n + m] = cols[2]
            key[n : n + m] = codes * _SHIFT + np.asarray(cols[3], np.int64)
            depart[n : n + m] = cols[4]
            n += m
            if progress is not None and count:
                progress(min(1.0, n / count))
        order = np.argsort(key[:n], kind="stable")
        self.ids, self.key, self.depart, self.person = ids[order], key[order], depart[order], person[order]
        self.by_person = np.argsort(self.person, kind="stable")
        self.person_sorted = self.person[self.by_person]
        self._overlay = {}
        self.rev = current
        log.info("visit index built: %s presences since %s", n, horizon)

    def _merge_overlay(self) -> None:
        if not self._overlay:
            return
        # Drop the base copies of changed rows, append the overlay, re-sort (cheap next to a build:
        # a sorted base plus a short unsorted tail).
        ids = np.fromiter(self._overlay.keys(), np.int64, len(self._overlay))
        keep = ~np.isin(self.ids, ids)
        rows = np.array(list(self._overlay.values()), np.int64).reshape(-1, 4)
        key = np.concatenate([self.key[keep], rows[:, 0] * _SHIFT + rows[:, 2]])
        depart = np.concatenate([self.depart[keep], rows[:, 3]])
        person = np.concatenate([self.person[keep], rows[:, 1]])
        all_ids = np.concatenate([self.ids[keep], ids])
        order = np.argsort(key, kind="stable")
        self.key, self.depart, self.person, self.ids = (
            key[order],
            depart[order],
            person[order],
            all_ids[order],
        )
        self.by_person = np.argsort(self.person, kind="stable")
        self.person_sorted = self.person[self.by_person]
        self._overlay = {}

    def presences(self, person_ids: np.ndarray) -> np.ndarray:
        """Row positions of every presence of ``person_ids``."""
        lo = np.searchsorted(self.person_sorted, person_ids, "left")
        hi = np.searchsorted(self.person_sorted, person_ids, "right")
        return self.by_person[_ranges(lo, hi)]

    def venue_code(self, row: int) -> int:
        return int(self.key[row] // _SHIFT)


def _ranges(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Concatenated ``arange(lo[i], hi[i])`` for all i, without a Python loop."""
    lengths = hi - lo
    total = int(lengths.sum())
    if total == 0:
        return np.empty(0, np.int64)
    starts = np.repeat(lo - np.concatenate(([0], np.cumsum(lengths)[:-1])), lengths)
    return starts + np.arange(total, dtype=np.int64)


@dataclass(frozen=True, slots=True)
class Source:
    """An F1 followed to F2: their presences from ``from_s`` to ``until_s`` count."""

    person_id: int
    from_s: int
    until_s: int


def find_contacts_in_index(
    index: VisitIndex,
    sources: Sequence[Source],
    *,
    buffer_s: int,
    min_exposure_s: int,
    exclude: set[int],
    max_stays: Callable[[Sequence[str]], dict[str, int]],
    progress: Callable[[float], None] | None = None,
    chunk: int = 2000,
) -> dict[int, Contact]:
    """Contacts (degree 2) of every source's presences in their span, vectorised over the index."""
    order = sorted(sources, key=lambda s: s.person_id)
    view = _View(index.key, index.depart, index.person, index.by_person, index.person_sorted)
    excluded = _exclusion(np.fromiter(exclude, np.int64, len(exclude)), view.person_sorted)
    stays: dict[int, int] = {}  # venue code -> longest stay, asked once per venue
    parts = []
    for start in range(0, len(order), chunk):
        part = order[start : start + chunk]
        parts += _encounters_of_chunk(index, view, part, buffer_s, min_exposure_s, excluded, max_stays, stays)
        if progress is not None:
            progress(min(1.0, (start + len(part)) / len(order)))
    if not parts:
        return {}
    person, venue_code, via, first_s, last_s, shared = (
        np.concatenate(col) for col in zip(*parts, strict=True)
    )
    return _contacts(person, venue_code, via, first_s, last_s, shared, degree=2, venues=index.venue_ids)


@dataclass(frozen=True, slots=True)
class _View:
    """The index's arrays as they were when a search began (a refresh replaces them)."""

    key: np.ndarray
    depart: np.ndarray
    person: np.ndarray
    by_person: np.ndarray
    person_sorted: np.ndarray


def _encounters_of_chunk(index, view: _View, part, buffer_s, need, excluded, max_stays, stays) -> list[tuple]:
    """Encounter columns (person, venue code, via, start, end, exposure) of the sources in ``part``."""
    person_ids = np.array([s.person_id for s in part], np.int64)
    from_s = np.array([s.from_s for s in part], np.int64)
    until_s = np.array([s.until_s for s in part], np.int64)
    lo = np.searchsorted(view.person_sorted, person_ids, "left")
    hi = np.searchsorted(view.person_sorted, person_ids, "right")
    rows = view.by_person[_ranges(lo, hi)]
    source = np.repeat(np.arange(len(part)), hi - lo)
    key = view.key[rows]
    arrive, depart, codes = key % _SHIFT, view.depart[rows], key // _SHIFT
    # Each source's own span: presences that overlap [from, until].
    inside = (arrive < until_s[source]) & (depart > from_s[source])
    if not inside.any():
        return []
    arrive, depart, codes = arrive[inside], depart[inside], codes[inside]
    src_person = person_ids[source[inside]]
    venues, venue_of = np.unique(codes, return_inverse=True)
    missing = [c for c in venues.tolist() if c not in stays]
    if missing:
        got = max_stays([index.venue(c) for c in missing])
        stays.update({c: int(got[index.venue(c)]) for c in missing})
    stay_of = np.array([stays[c] for c in venues.tolist()], np.int64)[venue_of]
    lo = np.searchsorted(view.key, codes * _SHIFT + (arrive - buffer_s - stay_of), "left")
    hi = np.searchsorted(view.key, codes * _SHIFT + (depart + buffer_s), "left")
    # The rows these ranges cover, each once, minus the excluded people (the F0 and F1 meet each other
    # all the time, at a workplace above all: skipping them first saves most of the pairs).
    candidates = _union(lo, hi)
    if excluded is not None:
        candidates = candidates[~excluded(view.person[candidates])]
    first_pos = np.searchsorted(candidates, lo)
    end_pos = np.searchsorted(candidates, hi)
    # Pairs in blocks of about _PAIRS_PER_BLOCK: the temporaries stay in the CPU caches and off the
    # page-fault path of fresh large allocations (a big case has millions of pairs).
    counts = end_pos - first_pos
    before = np.concatenate(([0], np.cumsum(counts)))
    found = []
    lo_owner = 0
    while lo_owner < arrive.size:
        hi_owner = max(
            lo_owner + 1, int(np.searchsorted(before, before[lo_owner] + _PAIRS_PER_BLOCK, "right")) - 1
        )
        block = slice(lo_owner, hi_owner)
        lo_owner = hi_owner
        pairs = _ranges(first_pos[block], end_pos[block])
        if pairs.size == 0:
            continue
        owner = block.start + np.repeat(np.arange(hi_owner - block.start), counts[block])
        cand = candidates[pairs]
        a1, a2 = arrive[owner], depart[owner]
        b1, b2 = view.key[cand] % _SHIFT, view.depart[cand]
        shared, start, end = _exposures(a1, a2, b1, b2, buffer_s)
        other = view.person[cand]
        keep = (shared >= need) & (other != src_person[owner])
        if not keep.any():
            continue
        owner = owner[keep]
        found.append((other[keep], codes[owner], src_person[owner], start[keep], end[keep], shared[keep]))
    return found


def _union(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """The positions in any ``[lo[i], hi[i])``, each once, ascending."""
    nonempty = hi > lo
    lo, hi = lo[nonempty], hi[nonempty]
    if lo.size == 0:
        return np.empty(0, np.int64)
    order = np.argsort(lo, kind="stable")
    lo, reach = lo[order], np.maximum.accumulate(hi[order])
    new = np.flatnonzero(np.concatenate(([True], lo[1:] > reach[:-1])))
    return _ranges(lo[new], np.append(reach[new[1:] - 1], reach[-1]))


def _exclusion(excluded: np.ndarray, person_sorted: np.ndarray) -> Callable[[np.ndarray], np.ndarray] | None:
    """A test of "is this person excluded", element-wise (None when nobody is): a byte per person id
    up to the largest in the index when that is small enough, else a binary search."""
    if excluded.size == 0:
        return None
    limit = int(person_sorted[-1]) + 1 if person_sorted.size else 0
    if limit <= 1 << 26:
        table = np.zeros(limit, bool)
        table[excluded[(excluded >= 0) & (excluded < limit)]] = True
        return table.__getitem__
    ordered = np.unique(excluded)

    def member(values: np.ndarray) -> np.ndarray:
        pos = np.searchsorted(ordered, values).clip(0, ordered.size - 1)
        return ordered[pos] == values

    return member


def f2_sources(f1: Iterable[tuple[int, int, int]], end_s: int, rules: TracingRules) -> list[Source]:
    """The F1 followed to F2 (``(person, first contact, longest encounter)`` each) and the span of their
    presences that counts: from their first contact with the F0, ``f2_window_days`` long."""
    strict = rules.f2_strict_min_overlap_min
    sources = []
    for person_id, first_s, longest_s in f1:
        if strict is not None and longest_s < strict * 60:
            continue
        sources.append(Source(person_id, first_s, min(end_s, first_s + rules.f2_window_days * 86400)))
    return sources
