"""Shared benchmark machinery: progress output, machine facts, databases, broker and bridge processes.

Every wait here has a deadline; a helper that runs out of time raises :class:`BenchTimeout` so the
caller records a failed run with the counts reached instead of hanging.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import random
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from protocol import topics
from protocol.messages import EventKind, batch_payload, event_json
from provisioning.broker import MosquittoProcess, mosquitto_binary

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "bench" / "results"
DEFAULT_PG_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
_CLK_TCK = os.sysconf("SC_CLK_TCK")


class BenchTimeout(RuntimeError):
    """A deadline passed while waiting for something."""


def progress(message: str) -> None:
    """One progress line on stderr."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def wait_until(predicate: Callable[[], Any], *, timeout_s: float, what: str, poll_s: float = 0.02) -> Any:
    """Poll ``predicate`` until truthy; raise :class:`BenchTimeout` naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise BenchTimeout(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(poll_s)


def median(values: Sequence[float | None]) -> float | None:
    """Median of the values that are not None, or None when there are none."""
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def utc_now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# ----- machine facts ------------------------------------------------------------------------------


def mosquitto_version() -> str | None:
    try:
        out = subprocess.run(
            [mosquitto_binary(), "-h"], capture_output=True, text=True, timeout=5, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError, RuntimeError):
        return None
    first = out.strip().splitlines()[:1]
    return first[0].removeprefix("mosquitto version ").strip() if first else None


def machine_info(pg_admin_url: str | None) -> dict[str, Any]:
    """CPU count, Python, SQLite, mosquitto and PostgreSQL server versions."""
    pg_version = None
    if pg_admin_url is not None:
        with contextlib.suppress(Exception):
            pg_version = pg_scalar(pg_admin_url, "SHOW server_version")
    load = None
    with contextlib.suppress(OSError):
        load = os.getloadavg()[0]
    return {
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "mosquitto": mosquitto_version(),
        "postgresql": pg_version,
        "load_average_1m_at_start": load,
    }


# ----- process CPU time ---------------------------------------------------------------------------


def cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU seconds of a live process, read from /proc/<pid>/stat (None if unavailable)."""
    if pid is None:
        return None
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    # Fields after the command name start at field 3 (state); utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def cpu_delta(before: float | None, after: float | None) -> float | None:
    return None if before is None or after is None else round(after - before, 3)


# ----- databases ----------------------------------------------------------------------------------


def _pg_conninfo(sqlalchemy_url: str) -> str:
    """libpq URL from a SQLAlchemy ``postgresql+psycopg://`` URL."""
    from sqlalchemy import make_url

    url = make_url(sqlalchemy_url).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


def pg_scalar(sqlalchemy_url: str, sql: str, *, autocommit: bool = True) -> Any:
    import psycopg

    with psycopg.connect(_pg_conninfo(sqlalchemy_url), autocommit=autocommit, connect_timeout=5) as conn:
        return conn.execute(sql).fetchone()[0]


def pg_reachable(admin_url: str) -> str | None:
    """None when PostgreSQL answers on ``admin_url``, else the first line of the reason."""
    try:
        pg_scalar(admin_url, "SELECT 1")
    except Exception as exc:
        return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return None


@dataclass
class Database:
    """A fresh hub database for one run: a SQLite file or a PostgreSQL database of its own."""

    kind: str  # "sqlite" or "postgresql"
    url: str  # SQLAlchemy URL
    sqlite_path: Path | None = None
    pg_admin_url: str | None = None
    pg_name: str | None = None

    @property
    def pg_conninfo(self) -> str:
        return _pg_conninfo(self.url)

    def migrate(self) -> None:
        """Create the hub schema (what the bridge does at start-up)."""
        from hub.db import make_engine, migrate

        engine = make_engine(self.url)
        try:
            migrate(engine)
        finally:
            engine.dispose()

    def counts(self, kiosk_like: str) -> dict[str, int]:
        """Rows, distinct keys and distinct uuids of events whose kiosk id is LIKE ``kiosk_like``."""
        sql = (
            "SELECT count(*), count(DISTINCT uuid) FROM events WHERE kiosk_id LIKE ?"
            if self.kind == "sqlite"
            else "SELECT count(*), count(DISTINCT uuid) FROM events WHERE kiosk_id LIKE %s"
        )
        if self.kind == "sqlite":
            conn = sqlite3.connect(self.sqlite_path, timeout=30)
            try:
                rows, uuids = conn.execute(sql, (kiosk_like,)).fetchone()
                dead = conn.execute("SELECT count(*) FROM dead_letters").fetchone()[0]
            finally:
                conn.close()
        else:
            import psycopg

            with psycopg.connect(self.pg_conninfo, connect_timeout=5) as conn:
                rows, uuids = conn.execute(sql, (kiosk_like,)).fetchone()
                dead = conn.execute("SELECT count(*) FROM dead_letters").fetchone()[0]
        return {"rows": int(rows), "distinct_uuids": int(uuids), "dead_letters": int(dead)}

    def drop(self) -> None:
        """Drop the PostgreSQL database (SQLite files are removed by :func:`fresh_database`)."""
        if self.kind != "postgresql" or not self.pg_admin_url or not self.pg_name:
            return
        import psycopg

        try:
            with psycopg.connect(_pg_conninfo(self.pg_admin_url), autocommit=True, connect_timeout=5) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.pg_name}" WITH (FORCE)')
        except Exception as exc:
            progress(f"could not drop PostgreSQL database {self.pg_name}: {exc}")


@contextlib.contextmanager
def fresh_database(kind: str, workdir: Path, pg_admin_url: str) -> Iterator[Database]:
    """A new empty database (dropped or deleted afterwards)."""
    if kind == "sqlite":
        folder = Path(tempfile.mkdtemp(prefix="db-", dir=workdir))
        path = folder / "hub.db"
        try:
            yield Database(kind="sqlite", url=f"sqlite:///{path}", sqlite_path=path)
        finally:
            for suffix in ("", "-wal", "-shm", ".migrate.lock"):
                with contextlib.suppress(OSError):
                    Path(str(path) + suffix).unlink()
        return
    if kind != "postgresql":
        raise ValueError(f"unknown database kind {kind!r}")
    import psycopg
    from sqlalchemy import make_url

    name = f"antoan_bench_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(_pg_conninfo(pg_admin_url), autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = make_url(pg_admin_url).set(database=name).render_as_string(hide_password=False)
    db = Database(kind="postgresql", url=url, pg_admin_url=pg_admin_url, pg_name=name)
    try:
        yield db
    finally:
        db.drop()


# ----- broker and processes -----------------------------------------------------------------------


@contextlib.contextmanager
def broker(workdir: Path) -> Iterator[MosquittoProcess]:
    """A mosquitto of our own on a free loopback port, stopped afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="broker-", dir=workdir))
    proc = MosquittoProcess(folder).start()
    try:
        yield proc
    finally:
        proc.stop()


class ChildProcess:
    """A Python child process (``python -m …``) with its output in a log file."""

    def __init__(self, args: list[str], *, log_path: Path):
        self.args = [sys.executable, *args]
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    def start(self) -> ChildProcess:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self.args, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        return self

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def cpu_seconds(self) -> float | None:
        return cpu_seconds(self.pid) if self.alive() else None

    def stop(self, timeout_s: float = 15.0) -> int | None:
        """SIGTERM, wait, SIGKILL if needed; returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout_s)
        return self.proc.returncode

    def log_tail(self, lines: int = 15) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def bridge_process(db: Database, mosq: MosquittoProcess, workdir: Path) -> ChildProcess:
    """The real bridge (``python -m hub --config <toml> bridge``) with default bridge settings."""
    folder = Path(tempfile.mkdtemp(prefix="bridge-", dir=workdir))
    conf = folder / "hub.toml"
    conf.write_text(
        f"[database]\nurl = {json.dumps(db.url)}\n\n"
        f"[mqtt]\nhost = {json.dumps(mosq.host)}\nport = {mosq.port}\n"
    )
    return ChildProcess(["-m", "hub", "--config", str(conf), "bridge"], log_path=folder / "bridge.log")


def raw_subscriber_process(db: Database, mosq: MosquittoProcess, workdir: Path) -> ChildProcess:
    """The raw reference subscriber (bench/raw_subscriber.py) on the same database."""
    folder = Path(tempfile.mkdtemp(prefix="raw-", dir=workdir))
    target = ["--sqlite", str(db.sqlite_path)] if db.kind == "sqlite" else ["--pg", db.pg_conninfo]
    return ChildProcess(
        ["-m", "bench.raw_subscriber", "--host", mosq.host, "--port", str(mosq.port), *target],
        log_path=folder / "raw.log",
    )


# ----- event payloads -----------------------------------------------------------------------------

_KINDS = (
    [EventKind.CHECK_IN.value] * 6
    + [EventKind.CHECK_OUT.value] * 2
    + [EventKind.CHECKLIST.value, EventKind.BLE_PRESENCE.value]
)


#: Distinct people whose passes the sample check-ins carry (people come back: the hub links their visits).
SAMPLE_PEOPLE = 50_000


def sample_body(rng: random.Random, kind: str, venue_id: str) -> dict[str, Any]:
    """A realistic small event body. Check-ins and check-outs are what a kiosk records for a scanned
    health pass (kiosk/verdict.py), so the hub derives presence from them as it would in service."""
    if kind in (EventKind.CHECK_IN.value, EventKind.CHECK_OUT.value):
        return {
            "direction": "in" if kind == EventKind.CHECK_IN.value else "out",
            "subject": {"type": "pass", "pass_id": f"B{rng.randrange(SAMPLE_PEOPLE):09d}", "kid": "00" * 8},
            "verdict": rng.choice(("green", "green", "green", "yellow")),
            "flagged": False,
        }
    body: dict[str, Any] = {"venue_id": venue_id, "holder": f"{rng.getrandbits(64):016x}"}
    if kind == EventKind.CHECKLIST.value:
        body.update(
            form="daily-v3", answers={"masks": True, "sanitiser": True, "distancing": rng.random() < 0.9}
        )
    else:
        body.update(beacon=f"{rng.getrandbits(48):012x}", rssi=rng.randint(-95, -40))
    return body


def sample_items(rng: random.Random, count: int, venue_id: str) -> list[tuple[str, dict[str, Any]]]:
    """``count`` (kind, body) pairs as a kiosk outbox would record them."""
    out = []
    for _ in range(count):
        kind = rng.choice(_KINDS)
        out.append((kind, sample_body(rng, kind, venue_id)))
    return out


def build_batches(
    kiosk_id: str, epoch: str, count: int, batch_size: int, *, seed: int, first_seq: int = 1
) -> list[tuple[int, int, bytes]]:
    """Pre-rendered events messages ``(lo_seq, hi_seq, payload)`` with ``count`` events in all."""
    rng = random.Random(seed)
    start = datetime(2026, 5, 1, 8, 0, tzinfo=UTC)
    batches = []
    seq = first_seq
    remaining = count
    while remaining > 0:
        n = min(batch_size, remaining)
        wires = []
        for s in range(seq, seq + n):
            kind = rng.choice(_KINDS)
            body = json.dumps(sample_body(rng, kind, "venue-0042"), separators=(",", ":"))
            device_time = (start + timedelta(milliseconds=s * 731)).isoformat(timespec="milliseconds")
            wires.append(
                event_json(s, str(uuid.UUID(int=rng.getrandbits(128), version=4)), kind, device_time, body)
            )
        batches.append((seq, seq + n - 1, batch_payload(kiosk_id, epoch, wires)))
        seq += n
        remaining -= n
    return batches


# ----- warm-up: wait until a subscriber commits and acks ------------------------------------------


def warm_up(host: str, port: int, kiosk_id: str, *, timeout_s: float = 60.0) -> float:
    """Publish a small batch (again every second) until the system under test acks it.

    This proves the subscriber is connected, subscribed and writing. Returns seconds waited.
    """
    from protocol.settings import MqttSettings, mqtt_client

    epoch = uuid.uuid4().hex
    ((_, _, payload),) = build_batches(kiosk_id, epoch, 10, 10, seed=7)
    acked = threading.Event()
    subscribed = threading.Event()

    def on_connect(client, userdata, flags, reason_code, properties):
        if not reason_code.is_failure:
            client.subscribe(topics.ack(kiosk_id), qos=1)

    def on_subscribe(client, userdata, mid, reason_codes, properties):
        subscribed.set()

    def on_message(client, userdata, message):
        with contextlib.suppress(ValueError):
            if json.loads(message.payload).get("epoch") == epoch:
                acked.set()

    client = mqtt_client(MqttSettings(host=host, port=port), client_id=f"{kiosk_id}-{uuid.uuid4().hex[:6]}")
    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    started = time.monotonic()
    deadline = started + timeout_s
    client.connect(host, port, keepalive=30, clean_start=True)
    client.loop_start()
    try:
        if not subscribed.wait(max(0.1, deadline - time.monotonic())):
            raise BenchTimeout("warm-up client could not subscribe to its ack topic")
        while not acked.is_set():
            if time.monotonic() > deadline:
                raise BenchTimeout(f"no ack for the warm-up batch within {timeout_s:g} s")
            client.publish(topics.events(kiosk_id), payload, qos=1)
            acked.wait(min(1.0, max(0.05, deadline - time.monotonic())))
    finally:
        client.disconnect()
        client.loop_stop()
    return time.monotonic() - started


# ----- results and tables -------------------------------------------------------------------------


def write_result(results_dir: Path, name: str, data: dict[str, Any]) -> Path:
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f"{name}.json"
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    return path


def fmt(value: Any, digits: int = 0) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, int | float):
        return f"{value:,.{digits}f}"
    return str(value)


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Plain-text columns: text left-aligned, the rest right-aligned by width."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    for row in rows:
        cells = []
        for i, (cell, w) in enumerate(zip(row, widths, strict=True)):
            cells.append(cell.ljust(w) if i == 0 else cell.rjust(w))
        lines.append("  ".join(cells))
    return "\n".join(lines)
