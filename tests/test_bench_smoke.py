"""Smoke test of the benchmarks: tiny counts, results written, every event stored exactly once.

Nothing here asserts speed; the timings of a shared CI machine mean nothing. PostgreSQL runs join
in only when it is reachable (``--db auto``).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_bench_quick_runs_store_every_event_once(tmp_path):
    results = tmp_path / "results"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "all",
            "--quick",
            "--repeats",
            "1",
            "--events",
            "2000",
            "--publishers",
            "2",
            "--backlog-events",
            "2000",
            "--no-sweep",
            "--db",
            "auto",
            "--results-dir",
            str(results),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr

    ingest = json.loads((results / "ingest.json").read_text())
    assert "sqlite" in ingest["databases"]
    for db_kind, data in ingest["databases"].items():
        systems = sorted(r["system"] for r in data["runs"])
        assert systems == ["bridge", "raw"], db_kind
        for run in data["runs"]:
            assert run["ok"], run
            assert run["acked_events"] == 2000, run
            assert run["stored"]["rows"] == 2000, run
            assert run["stored"]["distinct_uuids"] == 2000, run

    backlog = json.loads((results / "backlog.json").read_text())
    assert "sqlite" in backlog["databases"]
    for db_kind, data in backlog["databases"].items():
        (config,) = data["configs"]
        assert config["is_default"], db_kind
        for run in config["runs"]:
            assert run["ok"], run
            assert run["depth_before"] == 2000, run
            assert run["stored"]["rows"] == 2000, run
            assert run["stored"]["distinct_uuids"] == 2000, run


def test_scan_latency_quick_run_records_every_scan(tmp_path):
    from bench import scan_latency

    result = scan_latency.run(scans=27, results_dir=tmp_path)
    assert (tmp_path / "scan_latency.json").exists()
    # 9 sample codes, each decoded once per pass over them: 6 recorded, 3 refused.
    assert result["scan_to_durable_verdict"]["n"] == 18
    assert result["scan_to_refusal"]["n"] == 9
    assert result["baseline_outbox_append"]["n"] == 27


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_web_bench_tiny_run_stores_every_declaration_once():
    from bench import web
    from bench.common import DEFAULT_PG_ADMIN_URL

    result = web.run_web(
        db_kinds=["sqlite"],
        clients=2,
        declarations=4,
        repeats=1,
        pg_admin_url=DEFAULT_PG_ADMIN_URL,
        pass_count=5,
    )
    assert result["all_runs_ok"], result
    (config,) = [c for c in result["databases"]["sqlite"]["configs"] if c["worker_class"] == "sync"]
    assert [r["completed"] for r in config["form_runs"] + config["api_runs"]] == [4, 4]
    # 2 clients x 2 warm-up cycles + 4 form + 4 API declarations, each stored once.
    assert config["stored_declarations"] == 12
    assert config["healthz"]["completed"] == 16
    assert {c["worker_class"] for c in result["databases"]["sqlite"]["configs"]} == {"sync", "gthread"}
    assert set(result["passes"]) == {"ES256", "EdDSA"}
    assert all(p["sign_per_s"] > 0 and p["verify_per_s"] > 0 for p in result["passes"].values())


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_tracing_bench_tiny_run_agrees_with_its_references(tmp_path):
    results = tmp_path / "results"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "tracing",
            # Enough for PostgreSQL's day partitions to be searched by index (with ~100 rows a day
            # a sequential scan of the day costs less, and the plan check refuses any).
            "--visits",
            "30000",
            "--f0",
            "6",
            "--f2-check",
            "3",
            "--db",
            "auto",
            "--results-dir",
            str(results),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads((results / "tracing.json").read_text())
    assert doc["agree"] and doc["problems"] == []
    assert doc["data"]["visits"] == 30000
    assert "sqlite" in doc["databases"]
    for db_kind, d in doc["databases"].items():
        assert d["load"]["visits"] == 30000, db_kind
        assert d["plans_ok"], (db_kind, d["plans"])
        for f1 in d["f1"]:
            assert f1["find_f1_ms"]["n"] == 6 * f1["rounds"], (db_kind, f1)
        assert d["f2"]["agree"] and d["f2"]["brute_force_checked_cases"] == 3, db_kind
        retention = d["retention"]
        assert retention["ok"] and retention["commit_alone"]["commits"] > 0, (db_kind, retention)
        assert [r["mode"] for r in retention["runs"]] == ["full speed", "as scheduled"]
        for purge in retention["runs"]:
            assert purge["due_visits_left"] == 0, (db_kind, purge)
            assert purge["removed"]["visits"] == purge["due"]["visits"] > 0, (db_kind, purge)
            assert purge["commit_while_purging"]["commits"] > 0, (db_kind, purge)
    # SQLite is measured without statistics and after ANALYZE.
    assert [f1["label"] for f1 in doc["databases"]["sqlite"]["f1"]] == [
        "sqlite, no ANALYZE",
        "sqlite, after ANALYZE",
    ]
