"""Ingest benchmark: events/s from N kiosk-like publishers through mosquitto into the hub database.

Each publisher is a process with its own kiosk id. It pre-renders batches of events
(``protocol.messages.batch_payload``/``event_json``), publishes them QoS 1 and, like a kiosk, keeps at
most ``window`` batches waiting for the hub's application ack on ``antoan/v1/kiosk/<id>/ack``.
Throughput is events / (first publish → last application ack); the application ack is sent only
after the commit, and the stored rows are counted afterwards to prove every event is there once.

Systems measured in the same run, same publishers, same kind of fresh database:

* ``bridge``: the real bridge, ``python -m hub --config <toml> bridge`` (it migrates the schema);
* ``raw``: ``bench/raw_subscriber.py``, a plain paho subscriber doing one executemany + commit per
  message (schema made by ``hub.db.migrate``), the reference the bridge is compared against.
"""

from __future__ import annotations

import multiprocessing as mp
import queue
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import (
    BenchTimeout,
    ChildProcess,
    bridge_process,
    broker,
    build_batches,
    cpu_delta,
    cpu_seconds,
    fmt,
    fresh_database,
    median,
    progress,
    raw_subscriber_process,
    table,
    warm_up,
)

BATCH_SIZE = 100
WINDOW = 8
SQLITE_RATIO_TARGET = 0.5
PG_EVENTS_PER_S_TARGET = 50_000
SYSTEMS = ("bridge", "raw")


# ----- publisher process --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PublisherJob:
    """What one publisher process sends: ``events`` events as ``kiosk_id``, ``window`` batches in flight."""

    host: str
    port: int
    kiosk_id: str
    events: int
    batch_size: int
    window: int
    seed: int
    deadline_s: float


def publisher_main(job: PublisherJob, ready: Any, go: Any, results: Any) -> None:
    """Body of one publisher process; puts one result dict on ``results`` whatever happens."""
    out: dict[str, Any] = {"kiosk_id": job.kiosk_id, "events": job.events, "ok": False, "error": None}
    try:
        out.update(_publish(job, ready, go))
    except Exception as exc:
        out["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        results.put(out)


def _publish(job: PublisherJob, ready: Any, go: Any) -> dict[str, Any]:
    host, port, kiosk_id, events = job.host, job.port, job.kiosk_id, job.events
    batch_size, window, seed, deadline_s = job.batch_size, job.window, job.seed, job.deadline_s
    from protocol import topics
    from protocol.settings import MqttSettings, mqtt_client

    epoch = uuid.uuid4().hex
    batches = build_batches(kiosk_id, epoch, events, batch_size, seed=seed)
    size = {lo: hi - lo + 1 for lo, hi, _ in batches}
    pending: set[int] = set()  # lo seq of batches sent and not yet acked
    state = {"acked_events": 0, "acked_batches": 0, "stray_acks": 0, "last_ack": None, "publish_errors": 0}
    cond = threading.Condition()
    subscribed = threading.Event()

    def on_connect(client, userdata, flags, reason_code, properties):
        if not reason_code.is_failure:
            client.subscribe(topics.ack(kiosk_id), qos=1)

    def on_subscribe(client, userdata, mid, reason_codes, properties):
        subscribed.set()

    def on_publish(client, userdata, mid, reason_code, properties):
        if reason_code.is_failure:
            with cond:
                state["publish_errors"] += 1

    def on_message(client, userdata, message):
        import json

        now = time.monotonic()
        ack = json.loads(message.payload)
        with cond:
            if ack.get("epoch") != epoch:
                state["stray_acks"] += 1
                return
            for lo, _hi in ack["ranges"]:
                if lo in pending:
                    pending.discard(lo)
                    state["acked_events"] += size[lo]
                    state["acked_batches"] += 1
                    state["last_ack"] = now
                else:
                    state["stray_acks"] += 1
            cond.notify_all()

    client = mqtt_client(MqttSettings(host=host, port=port), client_id=kiosk_id)
    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_publish = on_publish
    client.on_message = on_message
    client.max_inflight_messages_set(window + 4)
    client.connect(host, port, keepalive=30, clean_start=True)
    client.loop_start()
    try:
        if not subscribed.wait(30):
            raise BenchTimeout("could not subscribe to the ack topic within 30 s")
        ready.put(kiosk_id)
        if not go.wait(120):
            raise BenchTimeout("no start signal within 120 s")
        cpu0 = time.process_time()
        first = time.monotonic()
        deadline = first + deadline_s
        sent = 0
        for lo, _hi, payload in batches:
            with cond:
                while len(pending) >= window:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise BenchTimeout("deadline passed with the window full")
                    cond.wait(min(left, 1.0))
                pending.add(lo)
            client.publish(topics.events(kiosk_id), payload, qos=1)
            sent += 1
        with cond:
            while pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise BenchTimeout(f"deadline passed with {len(pending)} batch(es) unacked")
                cond.wait(min(left, 1.0))
        return {
            "ok": state["publish_errors"] == 0,
            "error": None if state["publish_errors"] == 0 else "broker rejected publishes",
            "epoch": epoch,
            "batches": len(batches),
            "sent_batches": sent,
            "acked_events": state["acked_events"],
            "acked_batches": state["acked_batches"],
            "stray_acks": state["stray_acks"],
            "first_publish": first,
            "last_ack": state["last_ack"],
            "cpu_s": round(time.process_time() - cpu0, 3),
        }
    except BenchTimeout as exc:
        with cond:
            return {
                "ok": False,
                "error": str(exc),
                "epoch": epoch,
                "batches": len(batches),
                "acked_events": state["acked_events"],
                "acked_batches": state["acked_batches"],
            }
    finally:
        client.disconnect()
        client.loop_stop()


# ----- one run ------------------------------------------------------------------------------------


def _run_once(
    *,
    system: str,
    db_kind: str,
    repeat: int,
    events: int,
    publishers: int,
    workdir: Path,
    pg_admin_url: str,
) -> dict[str, Any]:
    per_pub = [events // publishers + (1 if i < events % publishers else 0) for i in range(publishers)]
    run: dict[str, Any] = {
        "system": system,
        "database": db_kind,
        "repeat": repeat,
        "events": events,
        "ok": False,
        "error": None,
    }
    deadline_s = max(60.0, events / 500)
    ctx = mp.get_context("spawn")
    with broker(workdir) as mosq, fresh_database(db_kind, workdir, pg_admin_url) as db:
        if system == "raw":
            db.migrate()
            sut: ChildProcess = raw_subscriber_process(db, mosq, workdir)
        else:
            sut = bridge_process(db, mosq, workdir)
        sut.start()
        procs: list[Any] = []
        try:
            run["warm_up_s"] = round(warm_up(mosq.host, mosq.port, "warmup-kiosk", timeout_s=60), 3)
            ready, results, go = ctx.Queue(), ctx.Queue(), ctx.Event()
            for i, n in enumerate(per_pub):
                job = PublisherJob(
                    host=mosq.host,
                    port=mosq.port,
                    kiosk_id=f"bench-k{i}",
                    events=n,
                    batch_size=BATCH_SIZE,
                    window=WINDOW,
                    seed=1000 * repeat + i,
                    deadline_s=deadline_s,
                )
                p = ctx.Process(target=publisher_main, args=(job, ready, go, results), daemon=True)
                p.start()
                procs.append(p)
            ready_deadline = time.monotonic() + 120
            for _ in procs:
                try:
                    ready.get(timeout=max(0.1, ready_deadline - time.monotonic()))
                except queue.Empty:
                    raise BenchTimeout("publishers did not get ready within 120 s") from None
            sut_cpu0, mosq_cpu0 = sut.cpu_seconds(), cpu_seconds(mosq.proc.pid if mosq.proc else None)
            go.set()
            pubs: list[dict[str, Any]] = []
            collect_deadline = time.monotonic() + deadline_s + 30
            for _ in procs:
                try:
                    pubs.append(results.get(timeout=max(0.1, collect_deadline - time.monotonic())))
                except queue.Empty:
                    break
            run["sut_cpu_s"] = cpu_delta(sut_cpu0, sut.cpu_seconds())
            run["mosquitto_cpu_s"] = cpu_delta(mosq_cpu0, cpu_seconds(mosq.proc.pid if mosq.proc else None))
            run["publishers"] = sorted(pubs, key=lambda p: p["kiosk_id"])
            acked = sum(p.get("acked_events", 0) for p in pubs)
            run["acked_events"] = acked
            if not sut.alive():
                raise RuntimeError(f"{system} exited early:\n{sut.log_tail()}")
            if len(pubs) < len(procs) or not all(p["ok"] for p in pubs):
                errors = sorted({p.get("error") or "?" for p in pubs if not p["ok"]})
                missing = len(procs) - len(pubs)
                raise BenchTimeout(
                    "; ".join(errors + ([f"{missing} publisher(s) reported nothing"] if missing else []))
                )
            start = min(p["first_publish"] for p in pubs)
            end = max(p["last_ack"] for p in pubs)
            run["elapsed_s"] = round(end - start, 4)
            run["events_per_s"] = round(events / (end - start), 1)
            run["publishers_cpu_s"] = round(sum(p["cpu_s"] for p in pubs), 3)
            run["ok"] = True
        except Exception as exc:
            run["error"] = f"{type(exc).__name__}: {exc}"
            run["sut_log_tail"] = sut.log_tail()
        finally:
            for p in procs:
                p.join(5)
                if p.is_alive():
                    p.kill()
                    p.join(5)
            sut.stop()
        try:
            counts = db.counts("bench-k%")
        except Exception as exc:
            counts = {"error": f"{type(exc).__name__}: {exc}"}
        run["stored"] = counts
        if run["ok"] and (counts.get("rows") != events or counts.get("distinct_uuids") != events):
            run["ok"] = False
            run["error"] = f"stored {counts} but {events} events were acked"
    if not run["ok"]:
        run.pop("events_per_s", None)
    return run


# ----- the benchmark ------------------------------------------------------------------------------


def run_ingest(
    *, db_kinds: list[str], events: int, publishers: int, repeats: int, pg_admin_url: str
) -> dict[str, Any]:
    """Run every (database, repeat, system) combination; returns the result document (without machine)."""
    per_db: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="antoan-bench-ingest-") as tmp:
        workdir = Path(tmp)
        for db_kind in db_kinds:
            runs = []
            for repeat in range(1, repeats + 1):
                # Alternate the order so slow drift on a shared machine does not favour one system.
                order = SYSTEMS if repeat % 2 else tuple(reversed(SYSTEMS))
                for system in order:
                    progress(f"ingest {db_kind} repeat {repeat}/{repeats}: {system}, {events:,} events …")
                    run = _run_once(
                        system=system,
                        db_kind=db_kind,
                        repeat=repeat,
                        events=events,
                        publishers=publishers,
                        workdir=workdir,
                        pg_admin_url=pg_admin_url,
                    )
                    if run["ok"]:
                        progress(
                            f"  {system}: {run['events_per_s']:,.0f} events/s ({run['elapsed_s']:.2f} s, "
                            f"CPU {run.get('sut_cpu_s')} s)"
                        )
                    else:
                        progress(f"  {system}: FAILED: {run['error']}")
                    runs.append(run)
            per_db[db_kind] = _summarise(db_kind, runs)
    return {
        "parameters": {
            "events_per_run": events,
            "publishers": publishers,
            "batch_size": BATCH_SIZE,
            "window_batches_per_publisher": WINDOW,
            "qos": 1,
            "repeats": repeats,
            "databases": db_kinds,
        },
        "databases": per_db,
    }


def _summarise(db_kind: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    def values(system: str, key: str) -> list[float | None]:
        return [r.get(key) for r in runs if r["system"] == system and r["ok"]]

    bridge = median(values("bridge", "events_per_s"))
    raw = median(values("raw", "events_per_s"))
    ratio = None if bridge is None or raw is None else round(bridge / raw, 3)
    if db_kind == "sqlite":
        target = {"metric": "bridge/raw ratio", "threshold": SQLITE_RATIO_TARGET, "value": ratio}
    else:
        target = {"metric": "bridge events/s", "threshold": PG_EVENTS_PER_S_TARGET, "value": bridge}
    target["met"] = target["value"] is not None and target["value"] >= target["threshold"]
    bridge_cpu = median(values("bridge", "sut_cpu_s"))
    raw_cpu = median(values("raw", "sut_cpu_s"))
    return {
        "runs": runs,
        "failed_runs": sum(1 for r in runs if not r["ok"]),
        "median": {
            "bridge_events_per_s": bridge,
            "raw_events_per_s": raw,
            "bridge_cpu_s": bridge_cpu,
            "raw_cpu_s": raw_cpu,
            "bridge_cpu_us_per_event": None
            if bridge_cpu is None
            else round(1e6 * bridge_cpu / runs[0]["events"], 1),
            "raw_cpu_us_per_event": None if raw_cpu is None else round(1e6 * raw_cpu / runs[0]["events"], 1),
        },
        "ratio_bridge_to_raw": ratio,
        "target": target,
    }


def render(result: dict[str, Any]) -> str:
    """The printed table of an ingest result."""
    headers = [
        "database",
        "bridge ev/s",
        "raw ev/s",
        "ratio",
        "bridge CPU µs/ev",
        "raw CPU µs/ev",
        "runs ok",
        "target",
        "met",
    ]
    rows = []
    for db_kind, d in result["databases"].items():
        t = d["target"]
        target = f"ratio >= {t['threshold']}" if db_kind == "sqlite" else f">= {t['threshold']:,} ev/s"
        rows.append(
            [
                db_kind,
                fmt(d["median"]["bridge_events_per_s"]),
                fmt(d["median"]["raw_events_per_s"]),
                fmt(d["ratio_bridge_to_raw"], 2),
                fmt(d["median"]["bridge_cpu_us_per_event"], 1),
                fmt(d["median"]["raw_cpu_us_per_event"], 1),
                f"{len(d['runs']) - d['failed_runs']}/{len(d['runs'])}",
                target,
                fmt(t["met"]),
            ]
        )
    p = result["parameters"]
    title = (
        f"Ingest: {p['events_per_run']:,} events/run, {p['publishers']} publishers, batches of "
        f"{p['batch_size']}, window {p['window_batches_per_publisher']}, median of {p['repeats']}"
    )
    per_run = [
        [
            f"{db_kind} r{r['repeat']} {r['system']}",
            fmt(r.get("events_per_s")),
            fmt(r.get("elapsed_s"), 2),
            fmt(r.get("sut_cpu_s"), 2),
            fmt(r.get("mosquitto_cpu_s"), 2),
            fmt(r.get("publishers_cpu_s"), 2),
            "ok" if r["ok"] else "FAILED",
        ]
        for db_kind, d in result["databases"].items()
        for r in d["runs"]
    ]
    runs_table = table(["run", "ev/s", "wall s", "SUT CPU s", "mosq CPU s", "pubs CPU s", "status"], per_run)
    return f"{title}\n{table(headers, rows)}\n\nPer run:\n{runs_table}"
