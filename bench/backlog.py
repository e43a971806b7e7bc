"""Backlog drain benchmark: one kiosk with a week of unsent events reconnects; how long until all are acked?

Per run: a fresh outbox pre-filled with ``events`` unsent events (``Outbox.append_many`` in chunks),
a fresh hub database, its own mosquitto and the real bridge (``python -m hub … bridge``), proven
subscribed by an acked warm-up batch. Then an in-process :class:`kiosk.sync.Sync` is started and the
time from ``start()`` until ``outbox.depth() == 0`` is measured (connect included). The default
``SyncSettings()`` carry the target; a small sweep of ``batch_size`` × ``max_inflight_batches``
informs the defaults.
"""

from __future__ import annotations

import random
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import (
    BenchTimeout,
    bridge_process,
    broker,
    cpu_delta,
    cpu_seconds,
    fmt,
    fresh_database,
    median,
    progress,
    sample_items,
    table,
    wait_until,
    warm_up,
)

TARGET_S = 5.0
SWEEP_BATCH_SIZES = (100, 250)
SWEEP_INFLIGHT = (8, 16)
_FILL_CHUNK = 5000


def _fill_outbox(path: Path, events: int, seed: int):
    from kiosk.outbox import Outbox

    outbox = Outbox(path)
    rng = random.Random(seed)
    left = events
    while left > 0:
        n = min(_FILL_CHUNK, left)
        outbox.append_many(sample_items(rng, n, "venue-0042"))
        left -= n
    return outbox


def _run_once(
    *,
    db_kind: str,
    overrides: dict[str, int],
    repeat: int,
    events: int,
    workdir: Path,
    pg_admin_url: str,
    deadline_s: float,
) -> dict[str, Any]:
    from kiosk.config import SyncSettings
    from kiosk.sync import Sync
    from protocol.settings import MqttSettings

    settings = SyncSettings(**overrides)
    run: dict[str, Any] = {
        "database": db_kind,
        "repeat": repeat,
        "events": events,
        "batch_size": settings.batch_size,
        "max_inflight_batches": settings.max_inflight_batches,
        "ok": False,
        "error": None,
    }
    kiosk_id = f"bench-backlog-{repeat}"
    folder = Path(tempfile.mkdtemp(prefix="kiosk-", dir=workdir))
    outbox = _fill_outbox(folder / "outbox.db", events, seed=repeat)
    run["depth_before"] = outbox.depth()
    with broker(workdir) as mosq, fresh_database(db_kind, workdir, pg_admin_url) as db:
        bridge = bridge_process(db, mosq, workdir).start()
        sync = None
        try:
            run["warm_up_s"] = round(warm_up(mosq.host, mosq.port, "warmup-kiosk", timeout_s=60), 3)
            sync = Sync(
                outbox=outbox,
                kiosk_id=kiosk_id,
                mqtt_settings=MqttSettings(host=mosq.host, port=mosq.port),
                settings=settings,
                version="bench",
                prune_acked_after_s=7 * 24 * 3600.0,
            )
            bridge_cpu0 = bridge.cpu_seconds()
            mosq_cpu0 = cpu_seconds(mosq.proc.pid if mosq.proc else None)
            kiosk_cpu0 = time.process_time()
            started = time.monotonic()
            sync.start()
            connected: list[float] = []

            def drained_yet() -> bool:
                if not connected and sync.connected_event.is_set():
                    connected.append(time.monotonic())
                return outbox.depth() == 0

            try:
                wait_until(drained_yet, timeout_s=deadline_s, what="the backlog to drain", poll_s=0.02)
            except BenchTimeout as exc:
                run["depth_at_deadline"] = outbox.depth()
                raise BenchTimeout(
                    f"{exc} ({run['depth_at_deadline']:,} of {events:,} still unacked)"
                ) from None
            drained = time.monotonic()
            run["connected_after_s"] = round(connected[0] - started, 4) if connected else None
            run["drain_s"] = round(drained - started, 4)
            run["events_per_s"] = round(events / (drained - started), 1)
            run["bridge_cpu_s"] = cpu_delta(bridge_cpu0, bridge.cpu_seconds())
            run["mosquitto_cpu_s"] = cpu_delta(mosq_cpu0, cpu_seconds(mosq.proc.pid if mosq.proc else None))
            run["kiosk_process_cpu_s"] = round(time.process_time() - kiosk_cpu0, 3)
            st = sync.stats
            run["sync_stats"] = {
                "batches_sent": st.batches_sent,
                "events_sent": st.events_sent,
                "events_acked": st.events_acked,
                "resends": st.resends,
                "connects": st.connects,
            }
            if not bridge.alive():
                raise RuntimeError(f"the bridge exited early:\n{bridge.log_tail()}")
            run["ok"] = True
        except Exception as exc:
            run["error"] = f"{type(exc).__name__}: {exc}"
            run["bridge_log_tail"] = bridge.log_tail()
        finally:
            if sync is not None:
                sync.stop(timeout_s=5)
            outbox.close()
            bridge.stop()
        try:
            counts = db.counts(kiosk_id)
        except Exception as exc:
            counts = {"error": f"{type(exc).__name__}: {exc}"}
        run["stored"] = counts
        if run["ok"] and (counts.get("rows") != events or counts.get("distinct_uuids") != events):
            run["ok"] = False
            run["error"] = f"stored {counts} but the outbox holds {events} events, all acked"
    if not run["ok"]:
        run.pop("drain_s", None)
        run.pop("events_per_s", None)
    return run


def run_backlog(
    *, db_kinds: list[str], events: int, repeats: int, sweep: bool, pg_admin_url: str
) -> dict[str, Any]:
    """Defaults first, then the sweep cells that differ from the defaults; returns the result document."""
    from kiosk.config import SyncSettings

    defaults = SyncSettings()
    configs: list[dict[str, int]] = [{}]
    if sweep:
        for b in SWEEP_BATCH_SIZES:
            for w in SWEEP_INFLIGHT:
                if (b, w) != (defaults.batch_size, defaults.max_inflight_batches):
                    configs.append({"batch_size": b, "max_inflight_batches": w})
    deadline_s = max(60.0, events / 500)
    per_db: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="antoan-bench-backlog-") as tmp:
        workdir = Path(tmp)
        for db_kind in db_kinds:
            rows = []
            for overrides in configs:
                settings = SyncSettings(**overrides)
                label = f"batch {settings.batch_size} x inflight {settings.max_inflight_batches}"
                runs = []
                for repeat in range(1, repeats + 1):
                    progress(f"backlog {db_kind} {label} repeat {repeat}/{repeats}: {events:,} events …")
                    run = _run_once(
                        db_kind=db_kind,
                        overrides=overrides,
                        repeat=repeat,
                        events=events,
                        workdir=workdir,
                        pg_admin_url=pg_admin_url,
                        deadline_s=deadline_s,
                    )
                    if run["ok"]:
                        progress(
                            f"  drained in {run['drain_s']:.2f} s ({run['events_per_s']:,.0f} events/s, "
                            f"bridge CPU {run['bridge_cpu_s']} s)"
                        )
                    else:
                        progress(f"  FAILED: {run['error']}")
                    runs.append(run)
                drain = median([r.get("drain_s") for r in runs if r["ok"]])
                rows.append(
                    {
                        "batch_size": settings.batch_size,
                        "max_inflight_batches": settings.max_inflight_batches,
                        "is_default": not overrides,
                        "runs": runs,
                        "failed_runs": sum(1 for r in runs if not r["ok"]),
                        "median_drain_s": drain,
                        "median_events_per_s": None if drain is None else round(events / drain, 1),
                        "median_bridge_cpu_s": median([r.get("bridge_cpu_s") for r in runs if r["ok"]]),
                    }
                )
            default = rows[0]
            met = (
                default["median_drain_s"] is not None
                and default["failed_runs"] == 0
                and default["median_drain_s"] <= TARGET_S
            )
            per_db[db_kind] = {
                "configs": rows,
                "target": {
                    "metric": "median drain seconds at SyncSettings() defaults",
                    "threshold": TARGET_S,
                    "value": default["median_drain_s"],
                    "met": met,
                },
            }
    return {
        "parameters": {
            "events": events,
            "repeats": repeats,
            "defaults": {
                "batch_size": defaults.batch_size,
                "max_inflight_batches": defaults.max_inflight_batches,
                "linger_ms": defaults.linger_ms,
            },
            "sweep": sweep,
            "databases": db_kinds,
            "measured": "Sync.start() until outbox.depth() == 0 (connect included)",
        },
        "databases": per_db,
    }


def render(result: dict[str, Any]) -> str:
    """The printed table of a backlog result."""
    p = result["parameters"]
    title = f"Backlog drain: {p['events']:,} unsent events, one kiosk, median of {p['repeats']}"
    rows = []
    for db_kind, d in result["databases"].items():
        for c in d["configs"]:
            target = ""
            if c["is_default"]:
                target = f"<= {d['target']['threshold']:g} s: {fmt(d['target']['met'])}"
            rows.append(
                [
                    f"{db_kind} batch {c['batch_size']} x inflight {c['max_inflight_batches']}"
                    + (" (default)" if c["is_default"] else ""),
                    fmt(c["median_drain_s"], 2),
                    fmt(c["median_events_per_s"]),
                    fmt(c["median_bridge_cpu_s"], 2),
                    " ".join(fmt(r.get("drain_s"), 2) for r in c["runs"]),
                    f"{len(c['runs']) - c['failed_runs']}/{len(c['runs'])}",
                    target,
                ]
            )
    headers = ["config", "drain s", "ev/s", "bridge CPU s", "each run s", "runs ok", "target"]
    return f"{title}\n{table(headers, rows)}"
