"""Contact tracing over the database's covering index and over an in-memory index of presences.

:class:`VisitIndex` holds sorted numpy arrays of the presences, built once from the database and kept
current from ``visits.rev`` (a refresh reads only the changed rows). Every search over it is vectorised
over all the sources' presences at once, and the rows of people excluded (the F0 and the F1 themselves)
are dropped before pairs are formed.
F1 (interactive): :func:`find_f1_in_index` once the index is built (about a millisecond at 10M
check-ins); before that, and as the reference, :func:`find_f1`: for each presence of the F0 in the
window one range scan of the covering index ``(venue, arrive, depart, person)`` from ``arrive - buffer -
longest stay at that venue``, all of them in one statement, the contact rule then applied with numpy.
F2 (a background job): the F1's presences are many and the answer can be a large share of the
population, so it always runs over the index (:func:`find_contacts_in_index`).
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
from dataclasses import dataclass, replace

import numpy as np
from sqlalchemy import Connection, Engine, and_, func, select

from hub.db.schema import visits
from hub.keys import list_version
from hub.presence import VISITS_REV, max_stays
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
    stays = max_stays(conn, sorted({p.venue_id for p in own}))
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
#: ``key & _ARRIVE`` is the arrival (arrivals are never negative): a third of the cost of ``key % _SHIFT``.
_ARRIVE = np.int64((1 << 33) - 1)
_COLUMNS = (
    visits.c.id,
    visits.c.venue_id,
    visits.c.person_id,
    visits.c.arrive_s,
    visits.c.depart_s,
)


@dataclass(frozen=True, slots=True)
class _View:
    """Presences as sorted arrays: rows by (venue code, arrive) in ``key``, and each person's rows
    through ``by_person`` / ``person_sorted``. ``alive`` (when not None) is False for the rows a newer
    copy replaced; a view is never changed once made, so a search keeps the one it started with."""

    ids: np.ndarray
    key: np.ndarray
    depart: np.ndarray
    person: np.ndarray
    by_person: np.ndarray
    person_sorted: np.ndarray
    alive: np.ndarray | None = None

    @classmethod
    def of(cls, ids: np.ndarray, key: np.ndarray, depart: np.ndarray, person: np.ndarray) -> _View:
        order = np.argsort(key, kind="stable")
        person = person[order]
        by_person = np.argsort(person, kind="stable")
        return cls(ids[order], key[order], depart[order], person, by_person, person[by_person])

    @classmethod
    def empty(cls) -> _View:
        nothing = np.empty(0, np.int64)
        return cls(nothing, nothing, nothing, nothing, nothing, nothing)

    def live_rows(self) -> np.ndarray | slice:
        return slice(None) if self.alive is None else np.flatnonzero(self.alive)


class VisitIndex:
    """Sorted numpy arrays of the presences since ``horizon_s``, kept current from ``visits.rev``.

    Two views: a large ``base`` and a small ``delta`` of the rows added or changed since the base was
    made. A refresh reads only the rows whose ``rev`` is newer than the last one seen, marks their old
    copies dead in the base (a copy of its ``alive`` mask) and re-sorts the delta alone, so its cost
    follows the change, not the index; when the delta grows past ``merge_after`` rows (or a twentieth
    of the base) the two are merged in memory and presences older than the horizon are dropped.
    The index also keeps each venue's longest stay among its rows (an upper bound: a stay shortened
    later keeps the old one until a merge), so a search starts each range at ``arrive - buffer -
    that stay`` without asking the database.
    Searches read both views; the state ``(base, delta, stays)`` is replaced as a whole under the lock,
    so a search sees a consistent one whatever refreshes run meanwhile.
    """

    def __init__(self, engine: Engine, *, horizon_s: Callable[[], int], merge_after: int = 200_000):
        self._engine = engine
        self._horizon = horizon_s
        self._merge_after = merge_after
        self._lock = threading.Lock()
        self._venue_codes: dict[str, int] = {}
        self._venues: list[str] = []
        self.rev = -1
        self._state: tuple[_View, _View, np.ndarray] = (_View.empty(), _View.empty(), np.empty(0, np.int64))
        self._size = 0
        # The base's ids in ascending order and where each sits (to find a changed row's old copy).
        self._base_id_order = np.empty(0, np.int64)
        self._base_ids_sorted = np.empty(0, np.int64)
        self._delta: dict[int, tuple[int, int, int, int]] = {}  # id -> (venue code, person, arrive, depart)

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
        """Presences the index holds (current copies only)."""
        return self._size

    @property
    def state(self) -> tuple[_View, _View, np.ndarray]:
        """(base, delta, longest stay by venue code) as of the last refresh."""
        return self._state

    def refresh(self, progress: Callable[[float], None] | None = None) -> None:
        """Bring the index up to the database's current ``visits`` (a full build the first time)."""
        with self._lock:
            self._refresh(progress)

    def current(self, timeout_s: float = 1.0) -> bool:
        """Refresh an index already built, waiting at most ``timeout_s`` for another refresh to end;
        True when it is then current. False when it was never built (a first build takes a while at
        millions of presences: an interactive caller asks the database instead) or stayed busy."""
        if self.rev < 0 or not self._lock.acquire(timeout=timeout_s):
            return False
        try:
            self._refresh(None)
            return True
        finally:
            self._lock.release()

    def _refresh(self, progress: Callable[[float], None] | None) -> None:
        with self._engine.connect() as conn:
            current = list_version(conn, VISITS_REV)
            if current == self.rev:
                return
            horizon = self._horizon()
            if self.rev < 0:
                self._build(conn, horizon, current, progress)
                return
            changed = conn.execute(
                select(*_COLUMNS)
                # No ORDER BY: ordered by id, SQLite after ANALYZE walks the whole table in id order
                # rather than search ix_visits_rev and sort (1.3 s against milliseconds at 10M).
                .where(and_(visits.c.rev > self.rev, visits.c.depart_s >= horizon))
            ).all()
            self._apply(changed, horizon)
            self.rev = current

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
            select(*_COLUMNS).where(visits.c.depart_s >= horizon)
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
        self._set_base(_View.of(ids[:n], key[:n], depart[:n], person[:n]))
        self.rev = current
        log.info("visit index built: %s presences since %s", n, horizon)

    def _set_base(self, base: _View) -> None:
        self._base_id_order = np.argsort(base.ids)
        self._base_ids_sorted = base.ids[self._base_id_order]
        self._delta = {}
        # The base is sorted by venue code first: each venue's longest stay is a max over its segment.
        stays = np.zeros(len(self._venues), np.int64)
        if base.key.size:
            codes = base.key // _SHIFT
            starts = np.flatnonzero(np.concatenate(([True], codes[1:] != codes[:-1])))
            stays[codes[starts]] = np.maximum.reduceat(base.depart - (base.key & _ARRIVE), starts)
        self._state = (base, _View.empty(), stays)
        self._size = int(base.key.size)

    def _apply(self, changed: Sequence[tuple], horizon: int) -> None:
        if not changed:
            return
        base, _, stays = self._state
        ids = np.fromiter((int(row[0]) for row in changed), np.int64, len(changed))
        for vid, venue, person, arrive, depart in changed:
            self._delta[int(vid)] = (self._code(venue), int(person), int(arrive), int(depart))
        # Their old copies in the base (if any) no longer count.
        pos = np.searchsorted(self._base_ids_sorted, ids).clip(0, max(0, self._base_ids_sorted.size - 1))
        hit = self._base_ids_sorted[pos] == ids if self._base_ids_sorted.size else np.zeros(ids.size, bool)
        if hit.any():
            alive = np.ones(base.key.size, bool) if base.alive is None else base.alive.copy()
            alive[self._base_id_order[pos[hit]]] = False
            base = replace(base, alive=alive)
        delta_ids = np.fromiter(self._delta.keys(), np.int64, len(self._delta))
        rows = np.array(list(self._delta.values()), np.int64).reshape(-1, 4)
        delta = _View.of(delta_ids, rows[:, 0] * _SHIFT + rows[:, 2], rows[:, 3], rows[:, 1])
        if len(self._delta) > max(self._merge_after, base.key.size // 20):
            self._merge(base, delta, horizon)
            return
        grown = np.zeros(len(self._venues), np.int64)
        grown[: stays.size] = stays
        np.maximum.at(grown, rows[:, 0], rows[:, 3] - rows[:, 2])
        live_base = int(base.key.size if base.alive is None else np.count_nonzero(base.alive))
        self._state = (base, delta, grown)
        self._size = live_base + int(delta.key.size)

    def _merge(self, base: _View, delta: _View, horizon: int) -> None:
        """One base of the live rows of both views, without what departed before the horizon."""
        live = base.live_rows()
        ids = np.concatenate([base.ids[live], delta.ids])
        key = np.concatenate([base.key[live], delta.key])
        depart = np.concatenate([base.depart[live], delta.depart])
        person = np.concatenate([base.person[live], delta.person])
        recent = depart >= horizon
        self._set_base(_View.of(ids[recent], key[recent], depart[recent], person[recent]))
        log.info("visit index merged: %s presences", self._size)


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
    """A person followed to their contacts: their presences from ``from_s`` to ``until_s`` count."""

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
    progress: Callable[[float], None] | None = None,
    chunk: int = 2000,
    degree: int = 2,
) -> dict[int, Contact]:
    """Contacts of every source's presences in their span, vectorised over the index (as of its last
    refresh: the caller refreshes it). ``min_exposure_s`` is at least one second (the rules' minimum is
    a minute): presences that merely touch are never contacts."""
    if min_exposure_s < 1:
        raise ValueError(f"min_exposure_s must be at least 1, got {min_exposure_s}")
    order = sorted(sources, key=lambda s: s.person_id)
    base, delta, stays = index.state
    views = (base, delta)
    top = max((int(v.person_sorted[-1]) for v in views if v.person_sorted.size), default=-1)
    excluded = _exclusion(np.fromiter(exclude, np.int64, len(exclude)), top + 1)
    parts = []
    for start in range(0, len(order), chunk):
        part = order[start : start + chunk]
        parts += _encounters_of_chunk(views, stays, part, buffer_s, min_exposure_s, excluded)
        if progress is not None:
            progress(min(1.0, (start + len(part)) / len(order)))
    if not parts:
        return {}
    person, venue_code, via, first_s, last_s, shared = (
        np.concatenate(col) for col in zip(*parts, strict=True)
    )
    return _contacts(person, venue_code, via, first_s, last_s, shared, degree=degree, venues=index.venue_ids)


def find_f1_in_index(
    index: VisitIndex,
    person_id: int,
    start_s: int,
    end_s: int,
    rules: TracingRules,
) -> dict[int, Contact]:
    """:func:`find_f1`'s answer from the index (as of its last refresh): the F0's presences that overlap
    ``[start_s, end_s]`` (arriving at ``end_s`` at the latest, as :func:`presences_of` reads them) and
    everyone who shared at least ``min_overlap`` with one of them."""
    return find_contacts_in_index(
        index,
        [Source(person_id, start_s, end_s + 1)],
        buffer_s=rules.buffer_s,
        min_exposure_s=rules.min_overlap_s,
        exclude={person_id},
        degree=1,
    )


def _encounters_of_chunk(views, stays, part, buffer_s, need, excluded) -> list[tuple]:
    """Encounter columns (person, venue code, via, start, end, exposure) of the sources in ``part``."""
    person_ids = np.array([s.person_id for s in part], np.int64)
    from_s = np.array([s.from_s for s in part], np.int64)
    until_s = np.array([s.until_s for s in part], np.int64)
    own = []
    for view in views:
        lo = np.searchsorted(view.person_sorted, person_ids, "left")
        hi = np.searchsorted(view.person_sorted, person_ids, "right")
        rows = view.by_person[_ranges(lo, hi)]
        source = np.repeat(np.arange(len(part)), hi - lo)
        if view.alive is not None:
            live = view.alive[rows]
            rows, source = rows[live], source[live]
        own.append((view.key[rows], view.depart[rows], source))
    key, depart, source = (np.concatenate(col) for col in zip(*own, strict=True))
    arrive, codes = key & _ARRIVE, key // _SHIFT
    # Each source's own span: presences that overlap [from, until).
    inside = (arrive < until_s[source]) & (depart > from_s[source])
    if not inside.any():
        return []
    arrive, depart, codes = arrive[inside], depart[inside], codes[inside]
    src_person = person_ids[source[inside]]
    stay_of = stays[codes]
    lo_key = codes * _SHIFT + (arrive - buffer_s - stay_of)
    hi_key = codes * _SHIFT + (depart + buffer_s)
    found = []
    for view in views:
        found += _pairs(view, lo_key, hi_key, arrive, depart, codes, src_person, buffer_s, need, excluded)
    return found


def _pairs(view: _View, lo_key, hi_key, arrive, depart, codes, src_person, buffer_s, need, excluded) -> list:
    """The encounters of the presences ``(arrive, depart, codes, src_person)`` with ``view``'s rows
    whose key lies in ``[lo_key, hi_key)``."""
    lo = np.searchsorted(view.key, lo_key, "left")
    hi = np.searchsorted(view.key, hi_key, "left")
    # The rows these ranges cover, each once, minus the excluded people (the F0 and F1 meet each other
    # all the time, at a workplace above all: skipping them first saves most of the pairs) and the
    # rows a newer copy replaced.
    candidates = _union(lo, hi)
    if excluded is not None:
        candidates = candidates[~excluded(view.person[candidates])]
    if view.alive is not None:
        candidates = candidates[view.alive[candidates]]
    first_pos = np.searchsorted(candidates, lo)
    end_pos = np.searchsorted(candidates, hi)
    # The candidates' columns, gathered once: a candidate pairs with every presence whose range holds it.
    cand_arrive = view.key[candidates] & _ARRIVE
    cand_depart = view.depart[candidates]
    cand_person = view.person[candidates]
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
        a1, a2 = arrive[owner], depart[owner]
        b1, b2 = cand_arrive[pairs], cand_depart[pairs]
        # The shared time first; where the encounter counted starts and ends only for the pairs kept.
        shared = np.maximum(
            np.minimum(a2 + buffer_s, b2) - np.maximum(a1 - buffer_s, b1),
            np.minimum(a2, b2 + buffer_s) - np.maximum(a1, b1 - buffer_s),
        )
        other = cand_person[pairs]
        keep = (shared >= need) & (other != src_person[owner])
        if not keep.any():
            continue
        owner = owner[keep]
        shared, start, end = _exposures(a1[keep], a2[keep], b1[keep], b2[keep], buffer_s)
        found.append((other[keep], codes[owner], src_person[owner], start, end, shared))
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


def _exclusion(excluded: np.ndarray, limit: int) -> Callable[[np.ndarray], np.ndarray] | None:
    """A test of "is this person excluded", element-wise (None when nobody is): a byte per person id
    below ``limit`` (one more than the largest in the index) when that is small enough, else a binary
    search."""
    if excluded.size == 0:
        return None
    if limit <= 1 << 26:
        table = np.zeros(max(limit, 0), bool)
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
