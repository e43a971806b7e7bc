"""Tracing benchmark: F1 and F2 latency on synthetic check-ins, query plans, and the presence purge.

The data (seeded, deterministic) is a city over ``days`` days: venues of the hub's venue types with a
Zipf-like popularity, each type with its own dwell time and hours; people with a home district and a
few favourite places there, office workers and pupils going to their workplace or school on weekdays,
and errands (favourites mostly, sometimes anywhere in the city). A share of exits is missing (the visit
then lasts the venue type's default stay, as :mod:`hub.presence` records it) and a few entries (an
exit-only visit). Rows go straight into ``visits``, ``venue_stays``, ``venues`` and ``devices`` (and,
for the purge, one ``events`` row per scan) in bulk: COPY on PostgreSQL, big executemany transactions
with load-only PRAGMAs on SQLite, secondary indexes built after the load.

Measured on each database (engines' answers are compared, and the run fails loudly if they differ):

* F1 of ``f0`` random people (anyone with a presence in the look-back window) with
  :func:`hub.tracing.find_f1`; references in the same run: the same range queries through the bare
  driver returning rows only (the floor for an SQL engine), and a brute-force numpy scan of the
  generated arrays for the answers. SQLite is measured without statistics and after ``ANALYZE``.
* F2 of the same people over :class:`hub.tracing.VisitIndex` with
  :func:`hub.tracing.find_contacts_in_index` (index build time, latency, answer sizes); on a subset, a
  brute-force numpy reference with the same answers (person, longest exposure, encounters, first, last).
* The query plans of the F1 statements (SQLite: EXPLAIN QUERY PLAN before and after ANALYZE must use
  the covering index ``ix_visits_venue_span``; PostgreSQL: EXPLAIN ANALYZE).
* Retention: :func:`hub.retention.purge` of a day of presence data past ``retention.presence_days``
  (at full speed, then the next day resting between batches as the bridge's schedule does) while a
  thread commits check-ins through :class:`hub.db.store.HubStore` in a loop; the ingest's commit
  latencies while purging against the same loop alone. On PostgreSQL the UTC days wholly past it are
  dropped as partitions (the load makes a partition for every day of the data first).
"""

from __future__ import annotations

import contextlib
import sqlite3
import statistics
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import fmt, fresh_database, progress, table
from hub.tracing_rules import MAX_STAY_S, TracingRules

VIETNAM = timezone(timedelta(hours=7))
DAY = 86400
#: The first day of the generated data (a Thursday), 00:00 in Viet Nam.
DAY0 = datetime(2026, 10, 1, tzinfo=VIETNAM)
EPOCH = "bench000000000000000000000000001"  # the kiosks' outbox epoch (one per kiosk file in the field)
F1_P95_TARGET_MS = 5.0
F2_P95_TARGET_S = 1.0


class EnginesDisagree(AssertionError):
    """Two tracing engines gave different answers for the same case."""


# ------------------------------------------------------------------------------------- the city


@dataclass(frozen=True, slots=True)
class VenueKind:
    """A venue type: its share of venues, dwell time, arrival hours and how often it is visited."""

    name: str  # the hub's venue_type
    share: float  # of all venues
    dwell_median_min: float
    dwell_sigma: float  # lognormal
    hours: tuple[tuple[float, float, float], ...]  # arrival mixture: (weight, local hour, sd in hours)
    pull: float  # how much a venue of this type attracts errands, next to the others (0: workplaces)


KINDS = (
    VenueKind("market", 0.14, 60, 0.5, ((1.0, 7.5, 1.5),), 3.0),
    VenueKind("restaurant", 0.24, 90, 0.35, ((0.5, 11.8, 0.7), (0.5, 18.8, 1.0)), 2.0),
    VenueKind("school", 0.04, 510, 0.08, ((1.0, 7.2, 0.3),), 0.0),
    VenueKind("office", 0.12, 540, 0.12, ((1.0, 7.9, 0.5),), 0.0),
    VenueKind("hospital", 0.02, 150, 0.7, ((1.0, 10.0, 2.5),), 4.0),
    VenueKind("clinic", 0.06, 45, 0.5, ((1.0, 12.0, 3.0),), 1.0),
    VenueKind("hotel", 0.03, 600, 0.15, ((1.0, 20.0, 2.0),), 0.5),
    VenueKind("other", 0.35, 40, 0.6, ((1.0, 14.0, 3.5),), 1.0),
)
_KIND_INDEX = {k.name: i for i, k in enumerate(KINDS)}
OFFICE, SCHOOL = _KIND_INDEX["office"], _KIND_INDEX["school"]


@dataclass(frozen=True, slots=True)
class Shape:
    """The knobs of the generated city (defaults: 20k venues and 2M people at 10M visits)."""

    visits: int
    people: int
    venues: int
    days: int = 30
    seed: int = 20211
    zipf: float = 0.9  # popularity exponent over a type's venues
    workers: float = 0.14  # share of people with an office
    pupils: float = 0.06  # share of people with a school
    favourites: int = 4  # places near home each person goes to most
    near_home: float = 0.75  # share of errands at a favourite
    missing_exit: float = 0.25  # no exit scan: the default stay applies
    missing_entry: float = 0.03  # exit scan only

    @classmethod
    def for_visits(cls, visits: int, **overrides: Any) -> Shape:
        """The default city for ``visits`` presences: a person per 5 visits, a venue per 500."""
        values = {"people": max(50, visits // 5), "venues": max(16, visits // 500), **overrides}
        return cls(visits=visits, **values)


@dataclass
class Dataset:
    """The generated presences (sorted by arrival, as ingest would number them) and their venues."""

    shape: Shape
    venue_ids: list[str]
    venue_kind: np.ndarray  # per venue: index into KINDS
    venue_district: np.ndarray
    venue: np.ndarray  # per visit: venue index
    person: np.ndarray
    arrive: np.ndarray
    depart: np.ndarray
    arrive_scanned: np.ndarray
    depart_scanned: np.ndarray
    seq: np.ndarray  # the key (kiosk of the venue, EPOCH, seq) of the event that created the visit
    start_s: int
    end_s: int

    @property
    def size(self) -> int:
        return int(self.venue.size)

    def kiosk_id(self, venue: int) -> str:
        return f"kiosk-{self.venue_ids[venue]}"

    def max_stays(self) -> np.ndarray:
        """Per venue: the longest stay recorded there (what hub.presence keeps in venue_stays)."""
        out = np.zeros(len(self.venue_ids), np.int64)
        np.maximum.at(out, self.venue, self.depart - self.arrive)
        return out

    def stats(self) -> dict[str, Any]:
        per_venue = np.bincount(self.venue, minlength=len(self.venue_ids))
        per_person = np.bincount(self.person)[1:]
        stays = self.depart - self.arrive
        return {
            "visits": self.size,
            "people": self.shape.people,
            "people_with_visits": int((per_person > 0).sum()),
            "venues": len(self.venue_ids),
            "days": self.shape.days,
            "visits_per_venue_day_p50_p99_max": [
                round(float(x) / self.shape.days, 1) for x in np.percentile(per_venue, [50, 99, 100])
            ],
            "visits_per_person_p50_p99_max": [int(x) for x in np.percentile(per_person, [50, 99, 100])],
            "stay_min_p50_p95": [round(float(x) / 60, 1) for x in np.percentile(stays, [50, 95])],
            "share_by_type": {
                k.name: round(float((self.venue_kind[self.venue] == i).mean()), 3)
                for i, k in enumerate(KINDS)
            },
            "missing_exit_share": round(float((~self.depart_scanned).mean()), 3),
            "missing_entry_share": round(float((~self.arrive_scanned).mean()), 3),
        }


def _zipf_weights(rng: np.random.Generator, n: int, exponent: float) -> np.ndarray:
    """Popularity of ``n`` venues: 1/rank^exponent, ranks shuffled."""
    if n == 0:
        return np.empty(0)
    return 1.0 / rng.permutation(np.arange(1, n + 1)) ** exponent


def _pick(rng: np.random.Generator, candidates: np.ndarray, weights: np.ndarray, size: int) -> np.ndarray:
    """``size`` draws from ``candidates`` with probability proportional to ``weights``."""
    cdf = np.cumsum(weights)
    return candidates[np.searchsorted(cdf, rng.random(size) * cdf[-1], "right").clip(0, len(cdf) - 1)]


def generate(shape: Shape, rules: TracingRules | None = None) -> Dataset:
    """The city and its presences: exactly ``shape.visits`` of them, deterministic for a seed."""
    rules = rules or TracingRules()
    rng = np.random.default_rng(shape.seed)
    n_venues, n_people = shape.venues, shape.people
    districts = max(1, n_venues // 100)
    # Venues: types by share (at least one office, school and errand place), a district, a popularity.
    shares = np.array([k.share for k in KINDS])
    counts = np.maximum(1, np.floor(shares * n_venues).astype(int))
    counts[-1] += n_venues - counts.sum()
    venue_kind = rng.permutation(np.repeat(np.arange(len(KINDS)), counts))
    venue_district = rng.integers(0, districts, n_venues)
    popularity = np.empty(n_venues)
    for i in range(len(KINDS)):
        mine = np.flatnonzero(venue_kind == i)
        popularity[mine] = _zipf_weights(rng, mine.size, shape.zipf)
    pull = np.array([k.pull for k in KINDS])[venue_kind] * popularity
    errand_venues = np.flatnonzero(pull > 0)

    # People: a district, favourites there, maybe an office (anywhere) or a school (near home).
    person_district = rng.integers(0, districts, n_people)
    role = rng.random(n_people)
    workers = np.flatnonzero(role < shape.workers)
    pupils = np.flatnonzero((role >= shape.workers) & (role < shape.workers + shape.pupils))
    offices = np.flatnonzero(venue_kind == OFFICE)
    schools = np.flatnonzero(venue_kind == SCHOOL)
    workplace = np.full(n_people, -1)
    workplace[workers] = _pick(rng, offices, popularity[offices], workers.size)
    favourites = np.empty((n_people, shape.favourites), np.int64)
    for d in range(districts):
        people_here = np.flatnonzero(person_district == d)
        if people_here.size == 0:
            continue
        near = errand_venues[venue_district[errand_venues] == d]
        near = near if near.size else errand_venues
        favourites[people_here] = _pick(rng, near, pull[near], people_here.size * shape.favourites).reshape(
            -1, shape.favourites
        )
        local_schools = schools[venue_district[schools] == d]
        local_schools = local_schools if local_schools.size else schools
        mine = pupils[person_district[pupils] == d]
        workplace[mine] = _pick(rng, local_schools, popularity[local_schools], mine.size)
    # How often each person checks in at all (many rarely, some a lot); mean 1.
    activity = rng.gamma(0.8, 1 / 0.8, n_people)

    day0_s = int(DAY0.timestamp())
    weekday0 = DAY0.weekday()
    attend = {"weekday": 0.75, "saturday": 0.08, "sunday": 0.0}

    def day_type(d: int) -> str:
        wd = (weekday0 + d) % 7
        return "weekday" if wd < 5 else ("saturday" if wd == 5 else "sunday")

    commuters = np.concatenate([workers, pupils])
    work_expected = sum(attend[day_type(d)] for d in range(shape.days)) * commuters.size
    errand_factor = [1.3 if day_type(d) != "weekday" else 1.0 for d in range(shape.days)]
    wanted = shape.visits * 1.04  # a little over, then an exact random subset
    scale = min(1.0, 0.4 * wanted / work_expected) if work_expected else 1.0
    errand_rate = max(0.0, wanted - work_expected * scale) / (n_people * sum(errand_factor))

    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # (person, venue, day)
    total = 0
    for d in range(shape.days):
        going = commuters[rng.random(commuters.size) < attend[day_type(d)] * scale]
        parts.append((going, workplace[going], np.full(going.size, d)))
        n = rng.poisson(errand_rate * errand_factor[d] * activity)
        who = np.repeat(np.arange(n_people), n)
        parts.append(
            (who, _errand_venues(rng, who, favourites, errand_venues, pull, shape), np.full(who.size, d))
        )
        total += going.size + who.size
    while total < shape.visits:  # rare: top up with errands on random days
        d = int(rng.integers(0, shape.days))
        who = rng.choice(n_people, shape.visits - total + 16, p=activity / activity.sum())
        parts.append(
            (who, _errand_venues(rng, who, favourites, errand_venues, pull, shape), np.full(who.size, d))
        )
        total += who.size
    person = np.concatenate([p for p, _, _ in parts])
    venue = np.concatenate([v for _, v, _ in parts])
    day = np.concatenate([d for _, _, d in parts])
    keep = np.sort(rng.permutation(person.size)[: shape.visits])
    person, venue, day = person[keep] + 1, venue[keep], day[keep]  # person ids start at 1

    kind = venue_kind[venue]
    arrive, depart = _times(rng, kind, day, day0_s)
    # Missing scans: the hub then assumes the venue type's default stay (hub.presence does the same).
    default_stay = np.array([rules.default_stay_s(k.name) for k in KINDS], np.int64)[kind]
    u = rng.random(person.size)
    no_exit = u < shape.missing_exit
    no_entry = (u >= shape.missing_exit) & (u < shape.missing_exit + shape.missing_entry)
    depart = np.where(no_exit, arrive + default_stay, depart)
    arrive = np.where(no_entry, depart - default_stay, arrive)
    order = np.argsort(arrive, kind="stable")
    person, venue, arrive, depart = person[order], venue[order], arrive[order], depart[order]
    arrive_scanned, depart_scanned = ~no_entry[order], ~no_exit[order]
    assert ((depart - arrive) <= MAX_STAY_S).all() and (depart >= arrive).all()
    seq = _scan_table(venue, arrive, depart, arrive_scanned, depart_scanned)[3][: venue.size]
    return Dataset(
        shape=shape,
        venue_ids=[f"v{i:06d}" for i in range(n_venues)],
        venue_kind=venue_kind,
        venue_district=venue_district,
        venue=venue,
        person=person,
        arrive=arrive,
        depart=depart,
        arrive_scanned=arrive_scanned,
        depart_scanned=depart_scanned,
        seq=seq,
        start_s=day0_s,
        end_s=day0_s + shape.days * DAY,
    )


def _errand_venues(rng, who, favourites, errand_venues, pull, shape: Shape) -> np.ndarray:
    near = rng.random(who.size) < shape.near_home
    out = favourites[who, rng.integers(0, shape.favourites, who.size)]
    far = np.flatnonzero(~near)
    out[far] = _pick(rng, errand_venues, pull[errand_venues], far.size)
    return out


def _times(rng, kind: np.ndarray, day: np.ndarray, day0_s: int) -> tuple[np.ndarray, np.ndarray]:
    """Arrival (by the type's hours, local time) and departure (lognormal dwell, 5 min to 12 h)."""
    n = kind.size
    hour = np.empty(n)
    dwell = np.empty(n)
    for i, k in enumerate(KINDS):
        mine = np.flatnonzero(kind == i)
        if mine.size == 0:
            continue
        weights = np.array([w for w, _, _ in k.hours])
        which = _pick(rng, np.arange(len(k.hours)), weights, mine.size)
        means = np.array([m for _, m, _ in k.hours])[which]
        sds = np.array([s for _, _, s in k.hours])[which]
        hour[mine] = rng.normal(means, sds)
        dwell[mine] = k.dwell_median_min * 60 * np.exp(rng.normal(0, k.dwell_sigma, mine.size))
    arrive = day0_s + day * DAY + (hour.clip(0.25, 23.75) * 3600).astype(np.int64)
    depart = arrive + dwell.clip(300, MAX_STAY_S).astype(np.int64)
    return arrive, depart


def _scan_table(venue, arrive, depart, arrive_scanned, depart_scanned):
    """Every scan behind the visits: (visit, is a check-out, time, seq) in visit order, the creating
    scan of each visit first (its check-in, or the check-out of an exit-only visit), then the
    check-outs of visits that had a check-in too. ``seq`` numbers each venue kiosk's scans in time order."""
    extra = np.flatnonzero(arrive_scanned & depart_scanned)
    visit = np.concatenate([np.arange(venue.size), extra])
    out = np.concatenate([~arrive_scanned, np.ones(extra.size, bool)])
    at = np.concatenate([np.where(arrive_scanned, arrive, depart), depart[extra]])
    scan_venue = venue[visit]
    order = np.lexsort((at, scan_venue))
    sorted_venue = scan_venue[order]
    seq = np.empty(order.size, np.int64)
    seq[order] = np.arange(order.size) - np.searchsorted(sorted_venue, sorted_venue, "left") + 1
    return visit, out, at, seq


def scans(ds: Dataset) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Every scan event behind the visits, in time order: (visit index, is a check-out, time, seq)."""
    visit, out, at, seq = _scan_table(ds.venue, ds.arrive, ds.depart, ds.arrive_scanned, ds.depart_scanned)
    by_time = np.argsort(at, kind="stable")
    return visit[by_time], out[by_time], at[by_time], seq[by_time]


# ------------------------------------------------------------------------------------- bulk load

#: Secondary indexes dropped for the load and built afterwards (a sorted build beats 10M inserts).
_LOAD_INDEXES = {
    "visits": ("ix_visits_venue_span", "ix_visits_person_arrive", "ix_visits_rev"),
    "events": ("ix_events_kind_device_time",),
}
#: On PostgreSQL the unique constraints go too; hub.db.partitions.build_keys makes both again, on every
#: partition under its own name first.
_PG_LOAD_CONSTRAINTS = {
    "visits": ("uq_visits_kiosk_id_epoch_seq_arrive_s",),
    "events": ("uq_events_kiosk_id_epoch_seq_kind_device_time",),
}
_CHUNK = 200_000
_VISIT_COLUMNS = (
    "id, venue_id, person_id, arrive_s, depart_s, arrive_scanned, depart_scanned, rev, kiosk_id, epoch, seq"
)
_EVENT_COLUMNS = "id, kiosk_id, epoch, seq, uuid, kind, device_time, received_at, body"


def _event_body(pass_id: str, out: bool) -> str:
    direction = "out" if out else "in"
    return (
        f'{{"direction":"{direction}","subject":{{"type":"pass","pass_id":"{pass_id}","kid":"0000000000000000"}},'
        '"verdict":"green"}'
    )


def _pass_id(person: int) -> str:
    return f"B{person:09d}"


def _time_texts(seconds: np.ndarray, sep: str) -> list[str]:
    """UTC times as text: ``YYYY-MM-DD HH:MM:SS.ffffff`` (what SQLAlchemy writes on SQLite)."""
    text = np.datetime_as_string(seconds.astype("datetime64[s]").astype("datetime64[us]"), unit="us")
    return [t.replace("T", sep) for t in text.tolist()]


def _fixed_rows(ds: Dataset, created: datetime) -> tuple[list[tuple], list[tuple], list[tuple]]:
    """Rows of venues, devices (one kiosk per venue) and venue_stays."""
    stays = ds.max_stays()
    venue_rows = [
        (
            venue_id,
            f"Địa điểm {i} ({KINDS[int(ds.venue_kind[i])].name})",
            KINDS[int(ds.venue_kind[i])].name,
            "Hà Nội",
            f"Quận {int(ds.venue_district[i]) + 1}",
            created,
        )
        for i, venue_id in enumerate(ds.venue_ids)
    ]
    device_rows = [(ds.kiosk_id(i), venue_id) for i, venue_id in enumerate(ds.venue_ids)]
    stay_rows = [(venue_id, int(stays[i])) for i, venue_id in enumerate(ds.venue_ids) if stays[i] > 0]
    return venue_rows, device_rows, stay_rows


def _visit_rows(ds: Dataset, lo: int, hi: int, rev: int) -> Iterator[tuple]:
    venue_ids = ds.venue_ids
    for i, v, p, a, d, a_sc, d_sc, s in zip(
        range(lo + 1, hi + 1),
        ds.venue[lo:hi].tolist(),
        ds.person[lo:hi].tolist(),
        ds.arrive[lo:hi].tolist(),
        ds.depart[lo:hi].tolist(),
        ds.arrive_scanned[lo:hi].tolist(),
        ds.depart_scanned[lo:hi].tolist(),
        ds.seq[lo:hi].tolist(),
        strict=True,
    ):
        venue_id = venue_ids[v]
        yield (i, venue_id, p, a, d, a_sc, d_sc, rev, f"kiosk-{venue_id}", EPOCH, s)


def _event_rows(ds: Dataset, table: tuple, lo: int, hi: int, time_sep: str, tz: str) -> Iterator[tuple]:
    visit, out, at, seq = (col[lo:hi] for col in table)
    times = _time_texts(at, time_sep)
    venue_ids = ds.venue_ids
    for i, person, v, o, t, s in zip(
        range(lo + 1, hi + 1),
        ds.person[visit].tolist(),
        ds.venue[visit].tolist(),
        out.tolist(),
        times,
        seq.tolist(),
        strict=True,
    ):
        venue_id = venue_ids[v]
        yield (
            i,
            f"kiosk-{venue_id}",
            EPOCH,
            s,
            f"00000000-0000-4000-8000-{i:012x}",
            "check_out" if o else "check_in",
            t + tz,
            t + tz,
            _event_body(_pass_id(person), o),
        )


@dataclass
class LoadReport:
    """How long the bulk load took, by phase."""

    visits: int = 0
    events: int = 0
    insert_s: float = 0.0
    index_s: float = 0.0
    analyze_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        total = self.insert_s + self.index_s
        rows = self.visits + self.events
        return {
            "visits": self.visits,
            "events": self.events,
            "insert_s": round(self.insert_s, 1),
            "index_build_s": round(self.index_s, 1),
            "analyze_s": round(self.analyze_s, 1),
            "rows_per_s_insert": round(rows / self.insert_s) if self.insert_s else None,
            "rows_per_s_with_indexes": round(rows / total) if total else None,
        }


def load_sqlite(path: Path, ds: Dataset, *, with_events: bool) -> LoadReport:
    """Bulk-load a migrated SQLite file: load-only PRAGMAs, big transactions, indexes built after."""
    report = LoadReport()
    created = DAY0.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        # For the load only: no fsync, an in-memory rollback journal, a big page cache.
        conn.execute("PRAGMA journal_mode=MEMORY")
        conn.execute("PRAGMA synchronous=OFF")
        conn.execute("PRAGMA cache_size=-1000000")
        conn.execute("PRAGMA temp_store=MEMORY")
        saved = {
            name: sql
            for name, sql in conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'index'")
            if any(name in names for names in _LOAD_INDEXES.values())
        }
        t0 = time.perf_counter()
        conn.execute("BEGIN")
        for name in saved:
            conn.execute(f"DROP INDEX {name}")
        venue_rows, device_rows, stay_rows = _fixed_rows(ds, DAY0)
        conn.executemany(
            "INSERT INTO venues (venue_id, name, venue_type, province, district, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            [(*r[:5], created) for r in venue_rows],
        )
        conn.executemany("INSERT INTO devices (kiosk_id, venue_id) VALUES (?, ?)", device_rows)
        conn.executemany("INSERT INTO venue_stays (venue_id, max_stay_s) VALUES (?, ?)", stay_rows)
        conn.execute(
            "INSERT INTO list_versions (name, version, changed_at) VALUES ('visits', 1, ?)", (created,)
        )
        for lo in range(0, ds.size, _CHUNK):
            hi = min(ds.size, lo + _CHUNK)
            conn.executemany(
                f"INSERT INTO visits ({_VISIT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                _visit_rows(ds, lo, hi, 1),
            )
            if hi % 2_000_000 < _CHUNK or hi == ds.size:
                progress(f"sqlite: {hi:,} visits inserted")
                conn.execute("COMMIT")
                conn.execute("BEGIN")
        report.visits = ds.size
        if with_events:
            scan_table = scans(ds)
            n = scan_table[0].size
            for lo in range(0, n, _CHUNK):
                hi = min(n, lo + _CHUNK)
                conn.executemany(
                    f"INSERT INTO events ({_EVENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    _event_rows(ds, scan_table, lo, hi, " ", ""),
                )
                if hi % 2_000_000 < _CHUNK or hi == n:
                    progress(f"sqlite: {hi:,} events inserted")
                    conn.execute("COMMIT")
                    conn.execute("BEGIN")
            report.events = n
        conn.execute("COMMIT")
        report.insert_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        for name, sql in saved.items():
            conn.execute(sql)
            progress(f"sqlite: index {name} built")
        report.index_s = time.perf_counter() - t0
        conn.execute("PRAGMA journal_mode=WAL")
    finally:
        conn.close()
    return report


def load_postgresql(conninfo: str, ds: Dataset, *, with_events: bool) -> LoadReport:
    """Bulk-load a migrated PostgreSQL database with COPY into the day partitions of the data (made
    first); indexes and unique constraints built after."""
    import psycopg

    report = LoadReport()
    _make_partitions(conninfo, ds)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("SET synchronous_commit = off")
        for names in _LOAD_INDEXES.values():
            for name in names:
                conn.execute(f"DROP INDEX {name}")
        for table_name, names in _PG_LOAD_CONSTRAINTS.items():
            for name in names:
                conn.execute(f"ALTER TABLE {table_name} DROP CONSTRAINT {name}")
        t0 = time.perf_counter()
        venue_rows, device_rows, stay_rows = _fixed_rows(ds, DAY0)
        with conn.cursor() as cur:
            with cur.copy(
                "COPY venues (venue_id, name, venue_type, province, district, created_at) FROM STDIN"
            ) as cp:
                for row in venue_rows:
                    cp.write_row(row)
            with cur.copy("COPY devices (kiosk_id, venue_id) FROM STDIN") as cp:
                for row in device_rows:
                    cp.write_row(row)
            with cur.copy("COPY venue_stays (venue_id, max_stay_s) FROM STDIN") as cp:
                for row in stay_rows:
                    cp.write_row(row)
            cur.execute(
                "INSERT INTO list_versions (name, version, changed_at) VALUES ('visits', 1, %s)", (DAY0,)
            )
            with cur.copy(f"COPY visits ({_VISIT_COLUMNS}) FROM STDIN") as cp:
                for lo in range(0, ds.size, _CHUNK):
                    hi = min(ds.size, lo + _CHUNK)
                    cp.write(_copy_text(_visit_rows(ds, lo, hi, 1)))
                    if hi % 2_000_000 < _CHUNK or hi == ds.size:
                        progress(f"postgresql: {hi:,} visits copied")
            cur.execute("SELECT setval(pg_get_serial_sequence('visits', 'id'), %s)", (max(1, ds.size),))
            report.visits = ds.size
            if with_events:
                scan_table = scans(ds)
                n = scan_table[0].size
                with cur.copy(f"COPY events ({_EVENT_COLUMNS}) FROM STDIN") as cp:
                    for lo in range(0, n, _CHUNK):
                        hi = min(n, lo + _CHUNK)
                        cp.write(_copy_text(_event_rows(ds, scan_table, lo, hi, " ", "+00")))
                        if hi % 2_000_000 < _CHUNK or hi == n:
                            progress(f"postgresql: {hi:,} events copied")
                cur.execute("SELECT setval(pg_get_serial_sequence('events', 'id'), %s)", (max(1, n),))
                report.events = n
        report.insert_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        _build_keys(conninfo)
        report.index_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        # What autovacuum does after a load: statistics, and the visibility map for index-only scans.
        conn.execute("VACUUM ANALYZE visits")
        conn.execute("VACUUM ANALYZE venue_stays")
        if with_events:
            conn.execute("VACUUM ANALYZE events")
        report.analyze_s = time.perf_counter() - t0
    return report


def _make_partitions(conninfo: str, ds: Dataset) -> None:
    """Every day of the data gets its partitions, as a bridge running all along made them ahead."""
    from hub.config import RetentionSettings
    from hub.db import make_engine
    from hub.db.partitions import ensure_partitions

    engine = make_engine(conninfo)
    try:
        settings = RetentionSettings(presence_days=ds.shape.days)
        for day in range(ds.shape.days + 1):
            ensure_partitions(engine, datetime.fromtimestamp(ds.start_s + day * DAY, UTC), settings)
    finally:
        engine.dispose()


def _build_keys(conninfo: str) -> None:
    """The unique keys and indexes of visits and events, on each partition under its own name first."""
    from hub.db import make_engine
    from hub.db.partitions import EVENTS_KEYS, VISITS_KEYS, build_keys

    engine = make_engine(conninfo)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("SET LOCAL maintenance_work_mem = '1GB'")
            for keys in (VISITS_KEYS, EVENTS_KEYS):
                build_keys(conn, keys)
                progress(f"postgresql: {keys.table}: keys and indexes built")
    finally:
        engine.dispose()


def _copy_text(rows: Iterator[tuple]) -> bytes:
    """COPY text format for rows of ints, bools and strings without tabs, newlines or backslashes."""
    lines = []
    for row in rows:
        lines.append("\t".join("t" if v is True else "f" if v is False else str(v) for v in row))
    lines.append("")
    return "\n".join(lines).encode()


# -------------------------------------------------------------------------------------- helpers


def _summary(values_ms: Sequence[float], digits: int = 2) -> dict[str, float | None]:
    if not values_ms:
        return {"n": 0, "median": None, "p95": None, "max": None}
    arr = np.asarray(values_ms, float)
    return {
        "n": int(arr.size),
        "median": round(float(np.median(arr)), digits),
        "p95": round(float(np.percentile(arr, 95)), digits),
        "max": round(float(arr.max()), digits),
    }


def _sizes(values: Sequence[int]) -> dict[str, int]:
    arr = np.asarray(values, np.int64) if values else np.zeros(1, np.int64)
    return {
        "median": int(np.median(arr)),
        "p95": int(np.percentile(arr, 95)),
        "max": int(arr.max()),
        "total": int(arr.sum()),
    }


@contextlib.contextmanager
def _capture(engine) -> Iterator[list[tuple[str, Any]]]:
    """The SQL statements (and parameters) an engine sends while the block runs."""
    from sqlalchemy import event

    seen: list[tuple[str, Any]] = []

    def record(conn, cursor, statement, parameters, context, executemany):
        seen.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


def _raw(conn):
    """The driver's own connection under a SQLAlchemy connection."""
    return conn.connection.driver_connection


def choose_f0(ds: Dataset, count: int, rules: TracingRules, seed: int) -> list[int]:
    """``count`` distinct people, uniformly among those with a presence in the look-back window."""
    start, end = ds.end_s - rules.lookback_days * DAY, ds.end_s
    present = np.unique(ds.person[(ds.arrive < end) & (ds.depart > start)])
    rng = np.random.default_rng(seed)
    return sorted(int(p) for p in rng.choice(present, min(count, present.size), replace=False))


# ----------------------------------------------------------------------- brute-force references


class BruteForce:
    """The contact rule applied to the generated arrays directly (no database, no index, no venue
    stays): every presence at the venue within the 12-hour bound is compared."""

    def __init__(self, ds: Dataset):
        self.ds = ds
        order = np.lexsort((ds.arrive, ds.venue))
        self.v_venue, self.v_person = ds.venue[order], ds.person[order]
        self.v_arrive, self.v_depart = ds.arrive[order], ds.depart[order]
        self.venue_lo = np.searchsorted(self.v_venue, np.arange(len(ds.venue_ids)), "left")
        self.venue_hi = np.searchsorted(self.v_venue, np.arange(len(ds.venue_ids)), "right")
        by_person = np.argsort(ds.person, kind="stable")
        self.p_sorted, self.p_rows = ds.person[by_person], by_person

    def presences(self, person: int, start_s: int, end_s: int, *, end_inclusive: bool) -> np.ndarray:
        """The person's presences overlapping the span (F1: one arriving at ``end_s`` counts)."""
        lo, hi = np.searchsorted(self.p_sorted, [person, person + 1])
        rows = self.p_rows[lo:hi]
        before_end = self.ds.arrive[rows] <= end_s if end_inclusive else self.ds.arrive[rows] < end_s
        return rows[before_end & (self.ds.depart[rows] > start_s)]

    def contacts(
        self,
        spans: Sequence[tuple[int, int, int]],
        exclude: set[int],
        buffer_s: int,
        need: int,
        *,
        end_inclusive: bool = False,
    ) -> dict[int, tuple[int, int, int, int]]:
        """``person -> (longest, encounters, first, last)`` for the presences of each ``(person, from,
        until)`` that overlap its span."""
        ds = self.ds
        excluded = np.zeros(int(ds.person.max()) + 2, bool)
        excluded[[p for p in exclude if 0 <= p < excluded.size]] = True
        parts = []
        for source, from_s, until_s in spans:
            for row in self.presences(source, from_s, until_s, end_inclusive=end_inclusive):
                v, a1, a2 = int(ds.venue[row]), int(ds.arrive[row]), int(ds.depart[row])
                lo = self.venue_lo[v] + np.searchsorted(
                    self.v_arrive[self.venue_lo[v] : self.venue_hi[v]], a1 - buffer_s - MAX_STAY_S, "left"
                )
                hi = self.venue_lo[v] + np.searchsorted(
                    self.v_arrive[self.venue_lo[v] : self.venue_hi[v]], a2 + buffer_s, "left"
                )
                b1, b2, other = self.v_arrive[lo:hi], self.v_depart[lo:hi], self.v_person[lo:hi]
                first = np.maximum(0, np.minimum(a2 + buffer_s, b2) - np.maximum(a1 - buffer_s, b1))
                second = np.maximum(0, np.minimum(a2, b2 + buffer_s) - np.maximum(a1, b1 - buffer_s))
                shared = np.maximum(first, second)
                keep = (shared >= need) & (other != source) & ~excluded[other]
                use_first = first >= second
                s1 = np.where(use_first, np.maximum(a1 - buffer_s, b1), np.maximum(a1, b1 - buffer_s))
                s2 = np.where(use_first, np.minimum(a2 + buffer_s, b2), np.minimum(a2, b2 + buffer_s))
                parts.append((other[keep], shared[keep], s1[keep], s2[keep]))
        if not parts:
            return {}
        person, shared, first_s, last_s = (np.concatenate(col) for col in zip(*parts, strict=True))
        if person.size == 0:
            return {}
        order = np.argsort(person, kind="stable")
        person, shared, first_s, last_s = person[order], shared[order], first_s[order], last_s[order]
        starts = np.flatnonzero(np.concatenate(([True], person[1:] != person[:-1])))
        return dict(
            zip(
                person[starts].tolist(),
                zip(
                    np.maximum.reduceat(shared, starts).tolist(),
                    np.diff(np.append(starts, person.size)).tolist(),
                    np.minimum.reduceat(first_s, starts).tolist(),
                    np.maximum.reduceat(last_s, starts).tolist(),
                    strict=True,
                ),
                strict=True,
            )
        )


def _answer(contacts) -> dict[int, tuple[int, int, int, int]]:
    """An engine's contacts in the brute force's form."""
    return {p: (c.longest_s, c.encounter_count, c.first_s, c.last_s) for p, c in contacts.items()}


def _diff(name: str, expected: dict, got: dict) -> str | None:
    if expected == got:
        return None
    missing = sorted(set(expected) - set(got))[:5]
    extra = sorted(set(got) - set(expected))[:5]
    changed = sorted(p for p in set(expected) & set(got) if expected[p] != got[p])[:3]
    return (
        f"{name}: {len(expected)} expected, {len(got)} found; missing {missing}, extra {extra}, "
        f"different {[(p, expected[p], got[p]) for p in changed]}"
    )


# ------------------------------------------------------------------------------------------- F1


@dataclass
class F1Run:
    """find_f1 over the chosen F0s on one database, and the references."""

    label: str
    first_ms: list[float]
    ms: list[float]
    bare_ms: list[float]
    sizes: list[int]
    presences: list[int]
    scanned_rows: list[int]
    answers: dict[int, dict]
    contacts: dict[int, dict]  # f0 -> the engine's Contact objects (for F2)
    statements: dict[int, list[tuple[str, Any]]]

    def as_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "rounds": len(self.ms) // max(1, len(self.sizes)),
            "find_f1_ms": _summary(self.ms),
            "find_f1_first_pass_ms": _summary(self.first_ms),
            "bare_index_scan_ms": _summary(self.bare_ms),
            "f1_per_case": _sizes(self.sizes),
            "f0_presences_per_case": _sizes(self.presences),
            "index_rows_scanned_per_case": _sizes(self.scanned_rows),
        }


def measure_f1(engine, ds: Dataset, f0s: Sequence[int], rules: TracingRules, label: str) -> F1Run:
    """find_f1 for every F0 twice (the second pass is the measurement), then the bare scans it sent."""
    from hub.tracing import find_f1

    start, end = ds.end_s - rules.lookback_days * DAY, ds.end_s
    run = F1Run(label, [], [], [], [], [], [], {}, {}, {})
    with engine.connect() as conn:
        for rep in range(2):
            for f0 in f0s:
                with _capture(engine) as sent:
                    t0 = time.perf_counter()
                    own, contacts = find_f1(conn, f0, start, end, rules)
                    elapsed = (time.perf_counter() - t0) * 1000
                conn.rollback()
                if rep == 0:
                    run.first_ms.append(elapsed)
                    continue
                run.ms.append(elapsed)
                run.sizes.append(len(contacts))
                run.presences.append(len(own))
                run.answers[f0] = _answer(contacts)
                run.contacts[f0] = contacts
                run.statements[f0] = list(sent)
        # The reference: the very statements find_f1 sent, through the bare driver, rows only.
        raw = _raw(conn)
        for f0 in f0s:
            cur = raw.cursor()
            rows = 0
            t0 = time.perf_counter()
            for statement, parameters in run.statements[f0]:
                cur.execute(statement, parameters)
                rows += len(cur.fetchall())
            run.bare_ms.append((time.perf_counter() - t0) * 1000)
            run.scanned_rows.append(rows)
            cur.close()
            raw.rollback()
    return run


def check_f1(run: F1Run, brute: BruteForce, ds: Dataset, rules: TracingRules) -> list[str]:
    """Differences between find_f1 and the brute force (none expected)."""
    start, end = ds.end_s - rules.lookback_days * DAY, ds.end_s
    problems = []
    for f0, got in run.answers.items():
        expected = brute.contacts(
            [(f0, start, end)], set(), rules.buffer_s, rules.min_overlap_s, end_inclusive=True
        )
        problem = _diff(f"{run.label} F1 of person {f0}", expected, got)
        if problem:
            problems.append(problem)
    return problems


# ------------------------------------------------------------------------------------ query plans


def _is_venue_scan(statement: str) -> bool:
    """Whether a statement is find_f1's range scan of a venue's presences."""
    flat = " ".join(statement.split())
    return "FROM visits WHERE venue_id =" in flat or "FROM visits WHERE visits.venue_id =" in flat


def sqlite_plans(engine, statements: Sequence[tuple[str, Any]]) -> list[dict[str, Any]]:
    """EXPLAIN QUERY PLAN of each distinct statement; for the venue range scans, whether every search
    of visits uses the covering index; any Bloom filter anywhere, any full scan of visits."""
    out = []
    seen = set()
    with engine.connect() as conn:
        raw = _raw(conn)
        for statement, parameters in statements:
            if statement in seen or not statement.lstrip().upper().startswith("SELECT"):
                continue
            seen.add(statement)
            plan = [row[3] for row in raw.execute("EXPLAIN QUERY PLAN " + statement, parameters)]
            searches = [line for line in plan if line.startswith(("SEARCH visits", "SCAN visits"))]
            venue_scan = _is_venue_scan(statement)
            out.append(
                {
                    "statement": " ".join(statement.split())[:400],
                    "plan": plan[:12],
                    "venue_scan": venue_scan,
                    "bloom_filter": any("BLOOM" in line.upper() for line in plan),
                    "full_scan": any(
                        line.startswith("SCAN visits") and " INDEX " not in line for line in plan
                    ),
                    # Small tables (venue_stays: a row per venue) may be scanned when they hold a few rows.
                    "other_scans": [
                        line for line in plan if line.startswith("SCAN ") and "visits" not in line
                    ],
                    "covering_index": bool(searches)
                    and all("COVERING INDEX ix_visits_venue_span" in line for line in searches),
                }
            )
        raw.rollback()
    return out


def postgresql_plans(engine, statements: Sequence[tuple[str, Any]]) -> list[dict[str, Any]]:
    """EXPLAIN (ANALYZE, BUFFERS) of each distinct statement."""
    out = []
    seen = set()
    with engine.connect() as conn:
        raw = _raw(conn)
        for statement, parameters in statements:
            if statement in seen or not statement.lstrip().upper().startswith("SELECT"):
                continue
            seen.add(statement)
            with raw.cursor() as cur:
                cur.execute("EXPLAIN (ANALYZE, BUFFERS, TIMING OFF) " + statement, parameters)
                plan = [row[0] for row in cur.fetchall()]
            text = " | ".join(plan)
            venue_scan = _is_venue_scan(statement)
            out.append(
                {
                    "statement": " ".join(statement.split())[:400],
                    "plan": plan[:16],
                    "venue_scan": venue_scan,
                    "index_only": "Index Only Scan" in text,
                    "full_scan": "Seq Scan on visits" in text,
                    "covering_index": "ix_visits_venue_span" in text and "Seq Scan on visits" not in text,
                }
            )
        raw.rollback()
    return out


def _scan_statements(run: F1Run) -> list[tuple[str, Any]]:
    """find_f1's statements for the F0 with the most presences (every shape it sends, the longest)."""
    f0 = max(run.statements, key=lambda p: (sum(len(st) for st, _ in run.statements[p]), p))
    return run.statements[f0]


# ------------------------------------------------------------------------------------------- F2


def _f2_inputs(contacts: dict, f0: int, end_s: int, rules: TracingRules):
    from hub.tracing import f2_sources

    sources = f2_sources(((p, c.first_s, c.longest_s) for p, c in contacts.items()), end_s, rules)
    return sources, {f0, *contacts}


def measure_f2(
    engine, ds: Dataset, f1: F1Run, rules: TracingRules, *, check: int, brute: BruteForce
) -> tuple[dict[str, Any], list[str]]:
    """VisitIndex build, then find_contacts_in_index for every F0 (its F1 from ``f1``); the brute
    force on ``check`` of them (spread over the F1 sizes, the largest included)."""
    from hub.tracing import VisitIndex, find_contacts_in_index

    horizon_days = rules.lookback_days + rules.f2_window_days + 1
    index = VisitIndex(engine, horizon_s=lambda: ds.end_s - horizon_days * DAY)
    t0 = time.perf_counter()
    index.refresh()
    build_s = time.perf_counter() - t0
    progress(f"F2: visit index of {index.size:,} presences built in {build_s:.1f} s")
    ms, sizes, source_counts, answers = [], [], [], {}
    for f0, contacts in f1.contacts.items():
        sources, exclude = _f2_inputs(contacts, f0, ds.end_s, rules)
        t0 = time.perf_counter()
        found = find_contacts_in_index(
            index,
            sources,
            buffer_s=rules.buffer_s,
            min_exposure_s=rules.f2_min_overlap_s,
            exclude=exclude,
        )
        ms.append((time.perf_counter() - t0) * 1000)
        sizes.append(len(found))
        source_counts.append(len(sources))
        answers[f0] = found
    # The references: the largest case and others spread over the F1 sizes.
    by_size = sorted(f1.contacts, key=lambda p: (len(f1.contacts[p]), p))
    picks = sorted({by_size[round(i * (len(by_size) - 1) / max(1, check - 1))] for i in range(check)})
    # What the F2 job does next with each answer (hub.cases stores a row per contact with its reasons).
    rows_ms = []
    try:
        from hub.cases import _contact_rows
    except ImportError:  # the job's internals moved: measured no more
        _contact_rows = None
    problems, brute_ms = [], []
    for f0 in picks if by_size else []:
        if _contact_rows is not None:
            t0 = time.perf_counter()
            _contact_rows(0, answers[f0].values())
            rows_ms.append((time.perf_counter() - t0) * 1000)
        sources, exclude = _f2_inputs(f1.contacts[f0], f0, ds.end_s, rules)
        t0 = time.perf_counter()
        expected = brute.contacts(
            [(s.person_id, s.from_s, s.until_s) for s in sources],
            exclude,
            rules.buffer_s,
            rules.f2_min_overlap_s,
        )
        brute_ms.append((time.perf_counter() - t0) * 1000)
        problem = _diff(f"F2 of person {f0}", expected, _answer(answers[f0]))
        if problem:
            problems.append(problem)
    result = {
        "index_presences": index.size,
        "index_build_s": round(build_s, 2),
        "find_contacts_in_index_ms": _summary(ms, 1),
        "f2_per_case": _sizes(sizes),
        "f1_followed_per_case": _sizes(source_counts),
        "f2_share_of_people_p95": round(float(np.percentile(sizes, 95)) / ds.shape.people, 4)
        if sizes
        else None,
        "brute_force_checked_cases": len(picks) if by_size else 0,
        "case_rows_ms_on_checked_cases": _summary(rows_ms, 1),
        "brute_force_ms": _summary(brute_ms, 1),
        "agree": not problems,
    }
    result["f1_in_index"], f1_problems = measure_f1_in_index(engine, ds, index, f1, rules)
    return result, problems + f1_problems


def _f1_in_index_pass(index, f0s: Sequence[int], rules: TracingRules, start: int, end: int):
    from hub.tracing import find_f1_in_index

    ms, answers = [], {}
    for f0 in f0s:
        t0 = time.perf_counter()
        contacts = find_f1_in_index(index, f0, start, end, rules)
        ms.append((time.perf_counter() - t0) * 1000)
        answers[f0] = _answer(contacts)
    return ms, answers


def measure_f1_in_index(
    engine, ds: Dataset, index, f1: F1Run, rules: TracingRules, *, batches: int = 10, batch: int = 1000
) -> tuple[dict[str, Any], list[str]]:
    """F1 from the in-memory index for the same F0 (find_f1's answers are the reference; the second
    pass is the measurement); then ``batches`` commits of ``batch`` check-ins through HubStore, each
    followed by a refresh of the index (timed: it reads only the changed rows and re-sorts the delta),
    and F1 from index and database again, which must still agree."""
    from hub.tracing import find_f1

    start, end = ds.end_s - rules.lookback_days * DAY, ds.end_s
    f0s = list(f1.answers)
    _f1_in_index_pass(index, f0s, rules, start, end)
    ms, answers = _f1_in_index_pass(index, f0s, rules, start, end)
    problems = [
        p for f0 in f0s if (p := _diff(f"F1 in the index of person {f0}", f1.answers[f0], answers[f0]))
    ]
    progress(f"F1 in the index: {batches} commits of {batch} check-ins, each followed by a refresh …")
    ingest = _Ingest(
        engine,
        ds,
        now_s=end - 2 * 3600,
        batch=batch,
        interval_s=0,
        seed=11,
        epoch="refresh0000000000000000000001",
    )
    refresh_ms, commit_ms = [], []
    for _ in range(batches):
        commit_ms.append(ingest.commit_once())
        t0 = time.perf_counter()
        index.refresh()
        refresh_ms.append((time.perf_counter() - t0) * 1000)
    delta = index.state[1].key.size
    after_ms, after = _f1_in_index_pass(index, f0s, rules, start, end)
    with engine.connect() as conn:
        for f0 in f0s:
            expected = _answer(find_f1(conn, f0, start, end, rules)[1])
            problem = _diff(f"F1 in the index of person {f0} after new check-ins", expected, after[f0])
            if problem:
                problems.append(problem)
    return {
        "find_f1_in_index_ms": _summary(ms),
        "find_f1_in_index_with_delta_ms": _summary(after_ms),
        "delta_presences": int(delta),
        "check_ins_per_commit": batch,
        "commit_ms": _summary(commit_ms, 1),
        "refresh_ms": _summary(refresh_ms),
        "agree": not problems,
    }, problems


# ------------------------------------------------------------------------------------- retention


class _Ingest:
    """A thread committing batches of check-ins through HubStore at a steady pace, timing each commit."""

    def __init__(
        self,
        engine,
        ds: Dataset,
        *,
        now_s: int,
        batch: int,
        interval_s: float,
        seed: int,
        epoch: str = "ingest00000000000000000000000001",
    ):
        from hub.db.store import HubStore

        self._store = HubStore(engine)
        self._ds = ds
        self._now_s = now_s
        self._batch = batch
        self._interval = interval_s
        self._rng = np.random.default_rng(seed)
        self._seq = 0
        self._epoch = epoch
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.latencies_ms: list[float] = []
        self.error: BaseException | None = None

    def _events(self) -> list:
        from hub.db.store import EventRow

        rows = []
        for venue in self._rng.integers(0, len(self._ds.venue_ids), self._batch).tolist():
            self._seq += 1
            at = datetime.fromtimestamp(self._now_s + self._seq, UTC)
            rows.append(
                EventRow(
                    kiosk_id=self._ds.kiosk_id(venue),
                    epoch=self._epoch,
                    seq=self._seq,
                    uuid=f"00000000-0000-4000-9000-{self._seq:012x}",
                    kind="check_in",
                    device_time=at,
                    body={
                        "direction": "in",
                        "subject": {
                            "type": "pass",
                            "pass_id": f"N{self._epoch[0].upper()}{self._seq:09d}",
                            "kid": "0" * 16,
                        },
                        "verdict": "green",
                    },
                )
            )
        return rows

    def set_interval(self, interval_s: float) -> None:
        self._interval = interval_s

    def commit_once(self) -> float:
        rows = self._events()
        t0 = time.perf_counter()
        self._store.commit(events=rows)
        return (time.perf_counter() - t0) * 1000

    def run_for(self, commits: int) -> None:
        """Commit ``commits`` batches on this thread at the pace (the baseline)."""
        tick = time.perf_counter()
        for _ in range(commits):
            self.latencies_ms.append(self.commit_once())
            tick += self._interval
            time.sleep(max(0.0, tick - time.perf_counter()))

    def start(self) -> _Ingest:
        def loop():
            tick = time.perf_counter()
            try:
                while True:  # at least one commit, however short the purge
                    self.latencies_ms.append(self.commit_once())
                    tick += self._interval
                    if self._stop.wait(max(0.0, tick - time.perf_counter())):
                        break
            except BaseException as exc:  # reported by the caller
                self.error = exc

        self._thread = threading.Thread(target=loop, name="bench-ingest", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(60)


def _latency(values: Sequence[float]) -> dict[str, Any]:
    arr = np.asarray(values, float) if values else np.zeros(1)
    return {
        "commits": len(values),
        "p50_ms": round(float(np.median(arr)), 1),
        "p99_ms": round(float(np.percentile(arr, 99)), 1),
        "max_ms": round(float(arr.max()), 1),
    }


def measure_retention(engine, ds: Dataset, *, batch_size: int, ingest_batch: int = 50) -> dict[str, Any]:
    """The presence purge while a thread ingests check-ins, against the same ingest alone: a day of
    data at full speed, then the next day as the bridge's schedule runs it (resting between batches).

    The ingest commits ``ingest_batch`` check-ins at a time, paced at half of what it can do alone on
    this machine (measured first), so that commits wait on the purge and not on each other."""
    from hub.config import RetentionSettings
    from hub.retention import SCHEDULED_REST

    settings = RetentionSettings(presence_days=ds.shape.days)
    runs_at = [(1, 0.0, "full speed"), (2, SCHEDULED_REST, "as scheduled")]
    ingest_s = ds.end_s + runs_at[-1][0] * DAY - 3600  # check-ins newer than any cutoff
    ingest = _Ingest(engine, ds, now_s=ingest_s, batch=ingest_batch, interval_s=1.0, seed=7)
    ingest.commit_once()  # first use: identity keys, warm statements
    warm = [ingest.commit_once() for _ in range(5)]
    interval_s = max(0.05, 2 * statistics.median(warm) / 1000)
    ingest.set_interval(interval_s)
    # 20 s of ingest alone at the default sizes, a couple of seconds for a smoke run.
    baseline_commits = max(10, int(min(20.0, max(2.0, ds.size / 50_000)) / interval_s))
    progress(f"retention: ingest alone, {baseline_commits} commits of {ingest_batch} check-ins …")
    ingest.run_for(baseline_commits)
    alone = _latency(ingest.latencies_ms)
    ingest.latencies_ms.clear()
    runs = []
    for days, rest, mode in runs_at:
        # Now is ``days`` after the data's end: its first ``days`` days are past retention.
        now = datetime.fromtimestamp(ds.end_s + days * DAY, UTC)
        runs.append(_purge_while_ingesting(engine, settings, now, ingest, batch_size, rest, mode, alone))
    return {
        "presence_days": settings.presence_days,
        "batch_size": batch_size,
        "ingest": {"check_ins_per_commit": ingest_batch, "commits_per_s": round(1 / interval_s, 1)},
        "commit_alone": alone,
        "runs": runs,
        "ok": all(r["ok"] for r in runs),
    }


def _purge_while_ingesting(engine, settings, now, ingest: _Ingest, batch_size, rest, mode, alone) -> dict:
    from sqlalchemy import func, select

    from hub.db.schema import visits
    from hub.retention import purge

    dry = purge(engine, settings, now, dry_run=True)
    gaps: list[float] = []
    last = [time.perf_counter()]

    def on_batch(part: str, report) -> None:
        t = time.perf_counter()
        gaps.append((t - last[0]) * 1000)
        last[0] = t
        if report.batches % 200 == 0:
            progress(f"retention: {report.visits:,} visits, {report.presence_events:,} events purged")

    progress(f"retention ({mode}): purging {dry.visits:,} visits and {dry.presence_events:,} events …")
    ingest.latencies_ms.clear()
    ingest.start()
    t0 = time.perf_counter()
    try:
        report = purge(engine, settings, now, batch_size=batch_size, progress=on_batch, rest=rest)
    finally:
        elapsed = time.perf_counter() - t0
        ingest.stop()
    if ingest.error is not None:
        raise RuntimeError(f"the ingest failed while purging: {ingest.error!r}") from ingest.error
    during = _latency(ingest.latencies_ms)
    rows = report.visits + report.presence_events
    with engine.connect() as conn:
        left = conn.execute(
            select(func.count())
            .select_from(visits)
            .where(visits.c.depart_s < int(report.presence_cutoff.timestamp()))
        ).scalar_one()
    return {
        "mode": mode,
        "rest": rest,
        "presence_cutoff": report.presence_cutoff.isoformat(),
        "due": {"visits": dry.visits, "presence_events": dry.presence_events},
        "removed": {"visits": report.visits, "presence_events": report.presence_events},
        # PostgreSQL: day partitions dropped whole (their rows are counted in "removed").
        "partitions_dropped": report.partitions,
        "due_visits_left": int(left),
        "purge_s": round(elapsed, 2),
        "purge_rows_per_s": round(rows / elapsed) if elapsed else None,
        "batch_gap_ms": _summary(gaps, 1),
        "commit_while_purging": during,
        "ratio_p99": round(during["p99_ms"] / alone["p99_ms"], 2) if alone["p99_ms"] else None,
        "ratio_max": round(during["max_ms"] / alone["max_ms"], 2) if alone["max_ms"] else None,
        "ok": (
            (report.visits, report.presence_events, report.partitions)
            == (dry.visits, dry.presence_events, dry.partitions)
            and left == 0
        ),
    }


# ------------------------------------------------------------------------------------------- run


def _plans_ok(plans: Sequence[dict[str, Any]]) -> bool:
    """No Bloom filter, no full scan of visits, and every venue range scan on the covering index."""
    return (
        any(p["venue_scan"] for p in plans)
        and not any(p.get("bloom_filter") or p["full_scan"] for p in plans)
        and all(p["covering_index"] for p in plans if p["venue_scan"])
    )


def _drop_sqlite_stats(engine) -> None:
    with engine.connect() as conn:
        if conn.exec_driver_sql("SELECT 1 FROM sqlite_master WHERE name = 'sqlite_stat1'").first():
            conn.exec_driver_sql("DROP TABLE sqlite_stat1")
        conn.commit()
    engine.dispose()  # new connections plan without statistics


def _merged(runs: Sequence[F1Run]) -> F1Run:
    """Rounds of the same F1 measurement as one (their latencies pooled; the answers must agree)."""
    first = runs[0]
    for run in runs[1:]:
        if run.answers != first.answers:
            raise EnginesDisagree(f"{first.label}: two rounds gave different answers")
    return F1Run(
        first.label,
        [x for r in runs for x in r.first_ms],
        [x for r in runs for x in r.ms],
        [x for r in runs for x in r.bare_ms],
        first.sizes,
        first.presences,
        first.scanned_rows,
        first.answers,
        runs[-1].contacts,
        runs[-1].statements,
    )


def _analyze_sqlite(engine) -> float:
    t0 = time.perf_counter()
    with engine.connect() as conn:
        conn.exec_driver_sql("ANALYZE")
        conn.commit()
    engine.dispose()  # new connections plan with the statistics
    return time.perf_counter() - t0


def _bench_database(
    db_kind: str,
    ds: Dataset,
    f0s: list[int],
    rules: TracingRules,
    brute: BruteForce,
    *,
    workdir: Path,
    pg_admin_url: str,
    f2_check: int,
    retention: bool,
) -> tuple[dict[str, Any], list[str], dict[int, dict]]:
    from hub.db import make_engine

    out: dict[str, Any] = {}
    problems: list[str] = []
    with fresh_database(db_kind, workdir, pg_admin_url) as db:
        db.migrate()
        progress(f"{db_kind}: loading {ds.size:,} visits …")
        if db_kind == "sqlite":
            load = load_sqlite(db.sqlite_path, ds, with_events=retention)
        else:
            load = load_postgresql(db.pg_conninfo, ds, with_events=retention)
        out["load"] = load.as_dict()
        progress(f"{db_kind}: loaded: {out['load']}")
        engine = make_engine(db.url)
        try:
            f1_runs = []
            if db_kind == "sqlite":
                # Two rounds of each, alternating, so that a busy minute on a shared machine does not
                # pass for the effect of the statistics.
                rounds: dict[str, list[F1Run]] = {"no ANALYZE": [], "after ANALYZE": []}
                analyze_s = []
                for _ in range(2):
                    progress("sqlite: F1 without statistics …")
                    _drop_sqlite_stats(engine)
                    rounds["no ANALYZE"].append(measure_f1(engine, ds, f0s, rules, "sqlite, no ANALYZE"))
                    analyze_s.append(_analyze_sqlite(engine))
                    progress("sqlite: F1 after ANALYZE …")
                    rounds["after ANALYZE"].append(
                        measure_f1(engine, ds, f0s, rules, "sqlite, after ANALYZE")
                    )
                out["load"]["analyze_s"] = round(analyze_s[0], 1)
                no_stats, analyzed = (_merged(runs) for runs in rounds.values())
                plans_before = sqlite_plans(engine, _scan_statements(no_stats))
                plans_after = sqlite_plans(engine, _scan_statements(analyzed))
                out["plans"] = {"no_analyze": plans_before, "after_analyze": plans_after}
                out["plans_ok"] = _plans_ok(plans_before + plans_after)
                f1_runs = [no_stats, analyzed]
            else:
                progress("postgresql: F1 …")
                run = measure_f1(engine, ds, f0s, rules, "postgresql")
                out["plans"] = postgresql_plans(engine, _scan_statements(run))
                out["plans_ok"] = _plans_ok(out["plans"])
                f1_runs = [run]
            for run in f1_runs:
                problems += check_f1(run, brute, ds, rules)
            out["f1"] = [run.as_dict() for run in f1_runs]
            progress(f"{db_kind}: F2 …")
            out["f2"], f2_problems = measure_f2(engine, ds, f1_runs[-1], rules, check=f2_check, brute=brute)
            problems += [f"{db_kind}: {p}" for p in f2_problems]
            if retention:
                out["retention"] = measure_retention(engine, ds, batch_size=500)
        finally:
            engine.dispose()
    return out, problems, f1_runs[-1].answers


def run_tracing(
    *,
    db_kinds: list[str],
    visits: int,
    f0: int,
    pg_admin_url: str,
    f2_check: int = 10,
    retention: bool = True,
    seed: int = 20211,
) -> dict[str, Any]:
    """Generate, load and measure on every database; the result document (``agree`` says whether every
    engine matched its reference)."""
    rules = TracingRules()
    shape = Shape.for_visits(visits, seed=seed)
    progress(f"generating {visits:,} visits ({shape.people:,} people, {shape.venues:,} venues) …")
    t0 = time.perf_counter()
    ds = generate(shape, rules)
    generate_s = time.perf_counter() - t0
    f0s = choose_f0(ds, f0, rules, seed)
    brute = BruteForce(ds)
    result: dict[str, Any] = {
        "parameters": {
            "visits": visits,
            "people": shape.people,
            "venues": shape.venues,
            "days": shape.days,
            "seed": seed,
            "f0": len(f0s),
            "f2_brute_force_cases": f2_check,
            "rules": {
                "lookback_days": rules.lookback_days,
                "buffer_min": rules.buffer_min,
                "min_overlap_min": rules.min_overlap_min,
                "f2_window_days": rules.f2_window_days,
                "f2_min_overlap_min": rules.f2_min_overlap_min,
            },
        },
        "data": {**ds.stats(), "generate_s": round(generate_s, 1)},
        "databases": {},
        "problems": [],
    }
    answers_by_db = {}
    with tempfile.TemporaryDirectory(prefix="antoan-bench-tracing-") as tmp:
        for db_kind in db_kinds:
            out, problems, answers = _bench_database(
                db_kind,
                ds,
                f0s,
                rules,
                brute,
                workdir=Path(tmp),
                pg_admin_url=pg_admin_url,
                f2_check=f2_check,
                retention=retention,
            )
            answers_by_db[db_kind] = answers
            # Cases take their F1 from the in-memory index once it is built (hub.cases._find_f1);
            # find_f1 over SQL is what they use before that.
            f1_p95 = out["f2"]["f1_in_index"]["find_f1_in_index_ms"]["p95"]
            sql_p95 = out["f1"][-1]["find_f1_ms"]["p95"]
            f2_p95 = out["f2"]["find_contacts_in_index_ms"]["p95"]
            out["target"] = {
                "f1_p95_ms": F1_P95_TARGET_MS,
                "f2_p95_s": F2_P95_TARGET_S,
                "at_visits": 10_000_000,
                "f1_met": f1_p95 is not None and f1_p95 <= F1_P95_TARGET_MS,
                "f1_sql_met": sql_p95 is not None and sql_p95 <= F1_P95_TARGET_MS,
                "f2_met": f2_p95 is not None and f2_p95 <= F2_P95_TARGET_S * 1000,
            }
            result["databases"][db_kind] = out
            result["problems"] += problems
            if problems:
                progress(f"{db_kind}: ENGINES DISAGREE: {problems[:3]}")
    if len(answers_by_db) > 1:
        first, *others = answers_by_db
        for other in others:
            if answers_by_db[other] != answers_by_db[first]:
                result["problems"].append(f"F1 answers differ between {first} and {other}")
    result["agree"] = not result["problems"]
    return result


def _pair(a: float | None, b: float | None, digits: int = 1) -> str:
    return f"{fmt(a, digits)} / {fmt(b, digits)}"


def render(doc: dict[str, Any]) -> str:
    """The printed tables of a tracing result."""
    p, data = doc["parameters"], doc["data"]
    lines = [
        f"Tracing: {p['visits']:,} visits, {p['people']:,} people, {p['venues']:,} venues, {p['days']} days; "
        f"{p['f0']} F0; times in ms (median / p95)"
    ]
    rows = []
    for d in doc["databases"].values():
        load = d["load"]
        for f1 in d["f1"]:
            m, bare = f1["find_f1_ms"], f1["bare_index_scan_ms"]
            rows.append(
                [
                    f1["label"],
                    f"{fmt(m['median'], 2)} / {fmt(m['p95'], 2)}",
                    f"{fmt(bare['median'], 2)} / {fmt(bare['p95'], 2)}",
                    f"{fmt(f1['f1_per_case']['median'])} / {fmt(f1['f1_per_case']['p95'])}",
                    fmt(load["rows_per_s_with_indexes"]),
                    fmt(d["plans_ok"]),
                ]
            )
    lines.append(table(["F1", "find_f1", "bare index scan", "F1 people", "load rows/s", "plans ok"], rows))
    lines.append("")
    rows = []
    for db_kind, d in doc["databases"].items():
        f2 = d["f2"]
        m = f2["find_contacts_in_index_ms"]
        rows.append(
            [
                db_kind,
                fmt(f2["index_build_s"], 1),
                f"{fmt(m['median'])} / {fmt(m['p95'])}",
                f"{fmt(f2['f2_per_case']['median'])} / {fmt(f2['f2_per_case']['p95'])}",
                f"{fmt(f2['brute_force_ms']['median'])} ({f2['brute_force_checked_cases']} cases)",
                fmt(f2["agree"]),
                f"F1 {fmt(d['target']['f1_met'])}, F2 {fmt(d['target']['f2_met'])}",
            ]
        )
    lines.append(
        table(
            ["F2", "index build s", "find_contacts_in_index", "F2 people", "brute force", "agree", "targets"],
            rows,
        )
    )
    lines.append("")
    rows = []
    for db_kind, d in doc["databases"].items():
        f1 = d["f2"]["f1_in_index"]
        rows.append(
            [
                db_kind,
                _pair(f1["find_f1_in_index_ms"]["median"], f1["find_f1_in_index_ms"]["p95"], 2),
                _pair(
                    f1["find_f1_in_index_with_delta_ms"]["median"],
                    f1["find_f1_in_index_with_delta_ms"]["p95"],
                    2,
                ),
                fmt(f1["delta_presences"]),
                _pair(f1["commit_ms"]["median"], f1["commit_ms"]["p95"]),
                _pair(f1["refresh_ms"]["median"], f1["refresh_ms"]["p95"], 2),
                fmt(f1["agree"]),
            ]
        )
    lines.append(
        table(
            [
                "F1 in the index",
                "find_f1_in_index",
                "with a delta",
                "delta rows",
                "commit of check-ins",
                "refresh after it",
                "agree",
            ],
            rows,
        )
    )
    rows = []
    for db_kind, d in doc["databases"].items():
        retention = d.get("retention")
        if not retention:
            continue
        alone = retention["commit_alone"]
        for r in retention["runs"]:
            rows.append(
                [
                    f"{db_kind}, {r['mode']}",
                    f"{r['removed']['visits']:,} + {r['removed']['presence_events']:,}",
                    fmt(r["partitions_dropped"]),
                    fmt(r["purge_s"], 1),
                    fmt(r["purge_rows_per_s"]),
                    _pair(alone["p99_ms"], alone["max_ms"]),
                    _pair(r["commit_while_purging"]["p99_ms"], r["commit_while_purging"]["max_ms"]),
                    _pair(r["ratio_p99"], r["ratio_max"], 2),
                    fmt(r["ok"]),
                ]
            )
    if rows:
        lines.append("")
        lines.append(
            table(
                [
                    "purge",
                    "visits + events",
                    "days dropped",
                    "s",
                    "rows/s",
                    "commit alone p99/max",
                    "while purging p99/max",
                    "ratio",
                    "ok",
                ],
                rows,
            )
        )
    lines.append("")
    lines.append(
        f"data: {data['visits_per_venue_day_p50_p99_max']} visits per venue-day (p50, p99, max); "
        f"engines agree with the references: {fmt(doc['agree'])}"
    )
    return "\n".join(lines)
