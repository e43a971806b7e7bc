"""``python -m bench [ingest|backlog|all|scanner|scan-latency|web|tracing]``: benchmarks, JSON, tables.

Progress goes to stderr, tables to stdout. PostgreSQL is used when reachable at ``--pg-url``
(default ``$ANTOAN_BENCH_PG_URL``, else ``$ANTOAN_TEST_PG_URL``, else postgres@127.0.0.1:5432/test);
each run creates and drops a database ``antoan_bench_<hex>`` there. ``scanner`` (QR decoding on
synthetic camera frames) and ``scan-latency`` (decode → verdict → durable write on the kiosk) need no
database and are not part of ``all``; neither is ``tracing`` (F1/F2 latency and the presence purge on
``--visits`` generated check-ins: minutes at the default million, most of an hour at ten million).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import click

from bench import backlog, ingest, scan_latency, scanner, tracing, web
from bench.common import DEFAULT_PG_ADMIN_URL, RESULTS_DIR, machine_info, pg_reachable, progress, utc_now_iso
from bench.common import write_result as _write


def _default_pg_url() -> str:
    return (
        os.environ.get("ANTOAN_BENCH_PG_URL") or os.environ.get("ANTOAN_TEST_PG_URL") or DEFAULT_PG_ADMIN_URL
    )


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument(
    "which",
    type=click.Choice(["ingest", "backlog", "all", "scanner", "scan-latency", "web", "tracing"]),
    default="all",
)
@click.option(
    "--quick", is_flag=True, help="Small counts and one repeat (10,000 ingest / 5,000 backlog events)."
)
@click.option("--repeats", type=click.IntRange(1, 20), default=None, help="Runs per measurement (default 3).")
@click.option("--events", type=click.IntRange(100), default=None, help="Ingest events per run.")
@click.option("--publishers", type=click.IntRange(1, 32), default=4, show_default=True)
@click.option("--backlog-events", type=click.IntRange(100), default=None, help="Unsent events in the outbox.")
@click.option("--sweep/--no-sweep", default=True, show_default=True, help="Backlog batch/inflight sweep.")
@click.option(
    "--db",
    "db_choice",
    type=click.Choice(["auto", "sqlite", "postgresql"]),
    default="auto",
    show_default=True,
    help="auto: SQLite, plus PostgreSQL when reachable.",
)
@click.option(
    "--frames",
    "scanner_frames",
    type=click.IntRange(10),
    default=None,
    help="Scanner: code frames per resolution (default 1,000; --quick 100).",
)
@click.option(
    "--clients", type=click.IntRange(1, 64), default=8, show_default=True, help="Web: concurrent clients."
)
@click.option("--declarations", type=click.IntRange(1), default=None, help="Web: declarations per run (200).")
@click.option(
    "--visits",
    type=click.IntRange(1000),
    default=1_000_000,
    show_default=True,
    help="Tracing: generated check-ins (a person per 5, a venue per 500, over 30 days).",
)
@click.option(
    "--f0", type=click.IntRange(1, 1000), default=50, show_default=True, help="Tracing: cases (F0)."
)
@click.option(
    "--f2-check",
    type=click.IntRange(1, 1000),
    default=10,
    show_default=True,
    help="Tracing: cases whose F2 is checked against the brute force.",
)
@click.option(
    "--retention/--no-retention",
    default=True,
    show_default=True,
    help="Tracing: load the check-in events too and measure the presence purge under ingest.",
)
@click.option("--pg-url", default=_default_pg_url, help="PostgreSQL admin URL (SQLAlchemy form).")
@click.option(
    "--results-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=RESULTS_DIR,
    show_default=True,
)
def main(
    which: str,
    quick: bool,
    repeats: int | None,
    events: int | None,
    publishers: int,
    backlog_events: int | None,
    sweep: bool,
    db_choice: str,
    scanner_frames: int | None,
    clients: int,
    declarations: int | None,
    visits: int,
    f0: int,
    f2_check: int,
    retention: bool,
    pg_url: str,
    results_dir: Path,
) -> None:
    """Benchmarks: hub ingest throughput (bridge vs raw reference), a kiosk's backlog drain, QR scanner,
    web, tracing (F1/F2 latency, presence purge)."""
    if which == "scanner":
        _run_scanner(quick, scanner_frames, results_dir)
        return
    if which == "web":
        web.main(
            quick=quick,
            repeats=repeats,
            clients=clients,
            declarations=declarations,
            db_choice=db_choice,
            pg_url=pg_url,
            results_dir=results_dir,
        )
        return
    if which == "scan-latency":
        scan_latency.run(scans=100 if quick else 1000, results_dir=results_dir)
        return
    if which == "tracing":
        _run_tracing(
            visits=visits,
            f0=f0,
            f2_check=f2_check,
            retention=retention,
            db_choice=db_choice,
            pg_url=pg_url,
            results_dir=results_dir,
        )
        return
    repeats = repeats or (1 if quick else 3)
    events = events or (10_000 if quick else 100_000)
    backlog_events = backlog_events or (5_000 if quick else 35_000)

    pg_problem = pg_reachable(pg_url)
    if db_choice == "postgresql" and pg_problem:
        raise click.ClickException(f"PostgreSQL not reachable: {pg_problem}")
    if db_choice == "sqlite":
        db_kinds = ["sqlite"]
    elif db_choice == "postgresql":
        db_kinds = ["postgresql"]
    else:
        db_kinds = ["sqlite"] + ([] if pg_problem else ["postgresql"])
    if db_choice == "auto" and pg_problem:
        progress(f"PostgreSQL not reachable ({pg_problem}); SQLite only")
    machine = machine_info(None if pg_problem else pg_url)
    invocation = " ".join(["python -m bench", *sys.argv[1:]])
    failed = False

    def finish(name: str, result: dict, render) -> None:
        nonlocal failed
        doc = {
            "benchmark": name,
            "invocation": invocation,
            "started_at": started_at,
            "finished_at": utc_now_iso(),
            "duration_s": round(time.monotonic() - t0, 1),
            "machine": machine,
            **result,
        }
        doc["all_runs_ok"] = all(
            r["ok"]
            for d in result["databases"].values()
            for r in (d.get("runs") or [run for c in d.get("configs", []) for run in c["runs"]])
        )
        doc["targets_met"] = {k: d["target"]["met"] for k, d in result["databases"].items()}
        failed = failed or not doc["all_runs_ok"]
        path = _write(results_dir, name, doc)
        progress(f"wrote {path}")
        click.echo(render(doc))
        click.echo("")

    if which in ("ingest", "all"):
        started_at, t0 = utc_now_iso(), time.monotonic()
        result = ingest.run_ingest(
            db_kinds=db_kinds, events=events, publishers=publishers, repeats=repeats, pg_admin_url=pg_url
        )
        finish("ingest", result, ingest.render)
    if which in ("backlog", "all"):
        started_at, t0 = utc_now_iso(), time.monotonic()
        result = backlog.run_backlog(
            db_kinds=db_kinds, events=backlog_events, repeats=repeats, sweep=sweep, pg_admin_url=pg_url
        )
        finish("backlog", result, backlog.render)
    if failed:
        raise click.ClickException("some runs failed; see the JSON results for the counts reached")


def _run_tracing(
    *, visits: int, f0: int, f2_check: int, retention: bool, db_choice: str, pg_url: str, results_dir: Path
) -> None:
    """F1/F2 latency and the presence purge on generated check-ins; JSON to tracing.json, tables to stdout."""
    pg_problem = pg_reachable(pg_url)
    if db_choice == "postgresql" and pg_problem:
        raise click.ClickException(f"PostgreSQL not reachable: {pg_problem}")
    if db_choice == "auto" and pg_problem:
        progress(f"PostgreSQL not reachable ({pg_problem}); SQLite only")
    db_kinds = {
        "sqlite": ["sqlite"],
        "postgresql": ["postgresql"],
        "auto": ["sqlite"] + ([] if pg_problem else ["postgresql"]),
    }[db_choice]
    started_at, t0 = utc_now_iso(), time.monotonic()
    machine = machine_info(None if pg_problem else pg_url)
    result = tracing.run_tracing(
        db_kinds=db_kinds, visits=visits, f0=f0, pg_admin_url=pg_url, f2_check=f2_check, retention=retention
    )
    doc = {
        "benchmark": "tracing",
        "invocation": " ".join(["python -m bench", *sys.argv[1:]]),
        "started_at": started_at,
        "finished_at": utc_now_iso(),
        "duration_s": round(time.monotonic() - t0, 1),
        "machine": {**machine, "load_average_1m_at_end": os.getloadavg()[0]},
        **result,
    }
    path = _write(results_dir, "tracing", doc)
    progress(f"wrote {path}")
    click.echo(tracing.render(doc))
    if not result["agree"]:
        raise click.ClickException(
            "tracing engines disagree with their references: " + "; ".join(result["problems"][:5])
        )
    failed = [
        k
        for k, d in result["databases"].items()
        if not d["plans_ok"] or not d.get("retention", {"ok": True})["ok"]
    ]
    if failed:
        raise click.ClickException(
            f"query plans or the purge failed on {', '.join(failed)}; see tracing.json"
        )


def _run_scanner(quick: bool, frames: int | None, results_dir: Path) -> None:
    """Decode rate and cost per backend on synthetic frames; JSON to scanner.json, tables to stdout."""
    started_at, t0 = utc_now_iso(), time.monotonic()
    machine = machine_info(None)  # the load average before the run, not after
    code_count = frames or (100 if quick else 1_000)
    empty_count = 50 if quick else 200
    result = scanner.run_scanner(code_count=code_count, empty_count=empty_count)
    doc = {
        "benchmark": "scanner",
        "invocation": " ".join(["python -m bench", *sys.argv[1:]]),
        "started_at": started_at,
        "finished_at": utc_now_iso(),
        "duration_s": round(time.monotonic() - t0, 1),
        "machine": {**machine, "load_average_1m_at_end": os.getloadavg()[0]},
        **result,
    }
    path = _write(results_dir, "scanner", doc)
    progress(f"wrote {path}")
    click.echo(scanner.render(doc))
    if not result["target"]["no_wrong_decodes"]:
        raise click.ClickException("a decoder returned a wrong payload; see scanner.json")


if __name__ == "__main__":
    main()
