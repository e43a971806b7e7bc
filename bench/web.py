"""Web benchmark: NCOVI declarations per second through gunicorn and the real public form; pass sign/verify.

The hub runs under real gunicorn (2 workers) on a free loopback port, on a fresh SQLite file and, when
reachable, a scratch PostgreSQL database; a mosquitto of its own answers the health check's broker
probe. Both gunicorn worker classes are measured (``sync``, and ``gthread`` with 4 threads per worker).

Each client is a process of its own acting as one citizen's browser: ``GET /khai-bao`` (the form, its
CSRF token and the session cookie), then ``POST /khai-bao`` with the form's fields (one person, a new
CCCD number every time), expecting the 303 redirect to the result page. Declarations/s is completed
form cycles / (first request → last answer); latencies are per request, seen by the client. Measured in
the same run, same server:

* ``api``: ``POST /api/v1/declarations/ncovi`` with a bearer token (the JSON path, no page rendering);
* ``healthz``: ``GET /healthz`` (a database ping and a cached broker check): the stack's ceiling.

Pass signing and verification (``protocol.healthpass.encode_pass`` / ``verify_pass``) are timed
in-process for ES256 and EdDSA. The public form's rate limit is raised for the run (one address sends
everything); everything else is the hub's default configuration.
"""

from __future__ import annotations

import http.client
import json
import multiprocessing as mp
import os
import queue
import re
import statistics
import subprocess
import tempfile
import time
import urllib.parse
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

from bench.common import (
    ROOT,
    BenchTimeout,
    ChildProcess,
    broker,
    fmt,
    fresh_database,
    median,
    progress,
    table,
)

WORKERS = 2
THREADS = 4
WORKER_CLASSES = ("sync", "gthread")
FORM_PATH = "/khai-bao"
API_PATH = "/api/v1/declarations/ncovi"
HEALTH_PATH = "/healthz"
_CSRF = re.compile(r'name="csrf_token"\s+value="([^"]+)"')
#: The declarant's fields as hub/web/public.py names them; a browser sends every text and select field.
DECLARANT_FIELDS = (
    "full_name",
    "birth_date",
    "gender",
    "id_type",
    "id_number",
    "nationality",
    "phone",
    "address.province",
    "address.district",
    "address.commune",
    "address.street",
    "tests.0.type",
    "tests.0.date",
    "tests.0.result",
    "vaccination.doses",
    "vaccination.last_dose_date",
    "vaccination.vaccine",
)


class WebBenchError(RuntimeError):
    """The web stack did not behave as the benchmark expects; the message says what happened."""


# ----- what a citizen sends -------------------------------------------------------------------------


def cccd_number(serial: int) -> str:
    """A valid CCCD number for a man born in 1990 in Hà Nội (province 001), unique per ``serial``."""
    return f"0010{90:02d}{serial % 1_000_000:06d}"


def person(serial: int) -> dict[str, str]:
    """One declarant's answers (the web form's flat names under ``declarant.``)."""
    return {
        "full_name": "Nguyễn Văn Bình",
        "birth_date": "1990-05-17",
        "gender": "male",
        "id_type": "cccd",
        "id_number": cccd_number(serial),
        "nationality": "VN",
        "phone": f"09{serial % 100_000_000:08d}",
        "address.province": "Hà Nội",
        "address.district": "Ba Đình",
        "address.commune": "Phúc Xá",
        "address.street": f"{serial % 500 + 1} Phố Hàng Bông",
        "tests.0.type": "",
        "tests.0.date": "",
        "tests.0.result": "",
        "vaccination.doses": "2",
        "vaccination.last_dose_date": "2021-08-01",
        "vaccination.vaccine": "astrazeneca",
    }


def form_body(serial: int, csrf_token: str) -> bytes:
    """The urlencoded NCOVI form as a browser posts it (symptom ``cough`` ticked on every 5th)."""
    fields = [("csrf_token", csrf_token), ("member_count", "0")]
    fields += [(f"declarant.{name}", value) for name, value in person(serial).items()]
    if serial % 5 == 0:
        fields.append(("declarant.symptoms", "cough"))
    fields.append(("action", "submit"))
    return urllib.parse.urlencode(fields).encode()


def api_body(serial: int) -> bytes:
    """The same declarant as JSON for the API."""
    flat = person(serial)
    declarant: dict[str, Any] = {
        k: v for k, v in flat.items() if "." not in k and v != "" and not k.startswith("tests")
    }
    declarant["address"] = {k.split(".", 1)[1]: v for k, v in flat.items() if k.startswith("address.")}
    declarant["vaccination"] = {"doses": 2, "last_dose_date": "2021-08-01", "vaccine": "astrazeneca"}
    if serial % 5 == 0:
        declarant["symptoms"] = ["cough"]
    return json.dumps({"declarant": declarant, "members": []}, ensure_ascii=False).encode()


# ----- client processes -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClientJob:
    """One client's work: ``count`` cycles of ``mode`` (form, api or healthz) starting at ``first_serial``."""

    port: int
    mode: str
    count: int
    first_serial: int
    token: str | None
    deadline_s: float


class _Browser:
    """One keep-alive connection with a cookie jar, reconnecting when the server closes (sync workers)."""

    def __init__(self, port: int):
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.cookies: dict[str, str] = {}

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
        headers = dict(headers or {})
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        for attempt in range(2):
            try:
                self.conn.request(method, path, body=body, headers=headers)
                response = self.conn.getresponse()
                data = response.read()
                break
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                # A sync worker closed the kept-alive connection: open a new one, once.
                self.conn.close()
                if attempt:
                    raise
        for header in response.headers.get_all("Set-Cookie") or []:
            jar = SimpleCookie()
            jar.load(header)
            for name, morsel in jar.items():
                self.cookies[name] = morsel.value
        if response.will_close:
            self.conn.close()
        return response.status, response.headers, data

    def close(self) -> None:
        self.conn.close()


def client_main(job: ClientJob, ready: Any, go: Any, results: Any) -> None:
    """Body of one client process; puts one result dict on ``results`` whatever happens."""
    out: dict[str, Any] = {"mode": job.mode, "ok": 0, "failed": 0, "error": None, "latencies_ms": {}}
    try:
        out.update(_client(job, ready, go))
    except Exception as exc:
        out["error"] = f"{type(exc).__name__}: {exc}"
        ready.set()
    finally:
        results.put(out)


def _client(job: ClientJob, ready: Any, go: Any) -> dict[str, Any]:
    browser = _Browser(job.port)
    lat: dict[str, list[float]] = {"get": [], "post": [], "cycle": []}
    ok = failed = 0
    first_error = None
    # Open the connection and (form mode) get a session before the start signal.
    browser.request("GET", HEALTH_PATH)
    ready.set()
    go.wait()
    started = time.monotonic()
    deadline = started + job.deadline_s
    for i in range(job.count):
        if time.monotonic() > deadline:
            break
        serial = job.first_serial + i
        t0 = time.monotonic()
        if job.mode == "healthz":
            status, _headers, _data = browser.request("GET", HEALTH_PATH)
            good = status == 200
            lat["get"].append((time.monotonic() - t0) * 1000)
        elif job.mode == "api":
            status, _headers, data = browser.request(
                "POST",
                API_PATH,
                api_body(serial),
                {"Authorization": f"Bearer {job.token}", "Content-Type": "application/json"},
            )
            good = status == 201
            lat["post"].append((time.monotonic() - t0) * 1000)
        else:
            status, _headers, page = browser.request("GET", FORM_PATH)
            t1 = time.monotonic()
            lat["get"].append((t1 - t0) * 1000)
            found = _CSRF.search(page.decode("utf-8", "replace"))
            if status != 200 or found is None:
                good, data = False, page
            else:
                status, headers, data = browser.request(
                    "POST",
                    FORM_PATH,
                    form_body(serial, found.group(1)),
                    {"Content-Type": "application/x-www-form-urlencoded"},
                )
                lat["post"].append((time.monotonic() - t1) * 1000)
                good = status == 303 and "/ket-qua" in (headers.get("Location") or "")
        lat["cycle"].append((time.monotonic() - t0) * 1000)
        if good:
            ok += 1
        else:
            failed += 1
            if first_error is None:
                text = (data if job.mode != "healthz" else b"").decode("utf-8", "replace")
                first_error = f"HTTP {status}: {' '.join(text.split())[:300]}"
    finished = time.monotonic()
    browser.close()
    return {
        "ok": ok,
        "failed": failed,
        "error": first_error,
        "started": started,
        "finished": finished,
        "latencies_ms": lat,
    }


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))], 2)


def drive(
    port: int,
    mode: str,
    *,
    clients: int,
    total: int,
    first_serial: int,
    token: str | None,
    time_limit_s: float,
) -> dict[str, Any]:
    """Run ``clients`` client processes doing ``total`` cycles of ``mode`` between them; one run's result."""
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    go = ctx.Event()
    per_client = [total // clients + (1 if i < total % clients else 0) for i in range(clients)]
    procs, readies = [], []
    serial = first_serial
    for count in per_client:
        ready = ctx.Event()
        job = ClientJob(port, mode, count, serial, token, time_limit_s)
        serial += count
        proc = ctx.Process(target=client_main, args=(job, ready, go, results), daemon=True)
        proc.start()
        procs.append(proc)
        readies.append(ready)
    try:
        for ready in readies:
            if not ready.wait(60):
                raise BenchTimeout("a client process did not get ready within 60 s")
        go.set()
        outs = []
        for _ in procs:
            try:
                outs.append(results.get(timeout=time_limit_s + 60))
            except queue.Empty:
                raise BenchTimeout(f"a {mode} client did not report within {time_limit_s + 60:g} s") from None
    finally:
        for proc in procs:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
    ok = sum(o["ok"] for o in outs)
    failed = sum(o["failed"] for o in outs)
    errors = [o["error"] for o in outs if o["error"]]
    starts = [o["started"] for o in outs if "started" in o]
    ends = [o["finished"] for o in outs if "finished" in o]
    elapsed = (max(ends) - min(starts)) if starts and ends else None
    lat: dict[str, list[float]] = {"get": [], "post": [], "cycle": []}
    for o in outs:
        for key, values in o["latencies_ms"].items():
            lat[key].extend(values)
    return {
        "mode": mode,
        "clients": clients,
        "requested": total,
        "completed": ok,
        "failed": failed,
        "ok": failed == 0 and ok == total and not errors,
        "first_error": errors[0] if errors else None,
        "elapsed_s": None if elapsed is None else round(elapsed, 3),
        "per_s": None if not elapsed else round(ok / elapsed, 1),
        "latency_ms": {
            key: {"n": len(v), "p50": _percentile(v, 0.5), "p95": _percentile(v, 0.95)}
            for key, v in lat.items()
            if v
        },
    }


# ----- the server -----------------------------------------------------------------------------------


class _Gunicorn(ChildProcess):
    """gunicorn serving ``hub.web.wsgi:app`` with the hub configuration in ``config_path``."""

    def __init__(self, *, port: int, worker_class: str, config_path: Path, log_path: Path):
        args = ["-m", "gunicorn", "-w", str(WORKERS), "-k", worker_class, "-b", f"127.0.0.1:{port}"]
        if worker_class == "gthread":
            args += ["--threads", str(THREADS)]
        args += ["--log-level", "warning", "--graceful-timeout", "10", "hub.web.wsgi:app"]
        super().__init__(args, log_path=log_path)
        self.port = port
        self.config_path = config_path

    def start(self) -> _Gunicorn:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "ANTOAN_HUB_CONFIG": str(self.config_path)}
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self.args, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        return self

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        """Until every worker answers GET /healthz with 200 (a few requests, so both workers are up)."""
        deadline = time.monotonic() + timeout_s
        answered = 0
        while answered < 2 * WORKERS:
            if not self.alive():
                raise WebBenchError(f"gunicorn exited with {self.proc.returncode}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise BenchTimeout(f"gunicorn did not answer within {timeout_s:g} s:\n{self.log_tail()}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                conn.request("GET", HEALTH_PATH)
                status = conn.getresponse().status
                conn.close()
            except OSError:
                time.sleep(0.1)
                continue
            if status == 200:
                answered += 1
            else:
                time.sleep(0.1)


def _write_config(folder: Path, db_url: str, mqtt_host: str, mqtt_port: int) -> Path:
    path = folder / "hub.toml"
    path.write_text(
        f"[database]\nurl = {json.dumps(db_url)}\n\n"
        f"[mqtt]\nhost = {json.dumps(mqtt_host)}\nport = {mqtt_port}\n\n"
        # One address sends everything: lift the per-address limit on the public form for the run.
        '[web]\npublic_form_rate = "1000000 per minute"\n'
    )
    return path


def _api_token(db_url: str) -> str:
    from hub import accounts
    from hub.db import make_engine, migrate

    engine = make_engine(db_url)
    try:
        migrate(engine)
        with engine.begin() as conn:
            _id, token = accounts.create_api_token(
                conn, name="bench-web", role=accounts.Role.HEALTH_OFFICIAL, created_by=None
            )
    finally:
        engine.dispose()
    return token


def _check_form_fields(port: int) -> None:
    """Fail loudly when the public form no longer has the fields this benchmark posts."""
    browser = _Browser(port)
    try:
        status, _headers, page = browser.request("GET", FORM_PATH)
    finally:
        browser.close()
    html = page.decode("utf-8", "replace")
    if status != 200:
        raise WebBenchError(f"GET {FORM_PATH} answered {status}")
    missing = [f for f in DECLARANT_FIELDS if f'name="declarant.{f}"' not in html]
    if missing or _CSRF.search(html) is None:
        raise WebBenchError(f"the NCOVI form lacks fields {missing or ['csrf_token']}: update bench/web.py")


def _count_declarations(db_url: str) -> int:
    from sqlalchemy import func, select

    from hub.db import make_engine
    from hub.db.schema import declarations

    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(declarations)).scalar_one())
    finally:
        engine.dispose()


def _bench_server(
    db_url: str,
    worker_class: str,
    workdir: Path,
    mqtt: tuple[str, int],
    *,
    clients: int,
    declarations: int,
    repeats: int,
    time_limit_s: float,
    token: str,
    serial_base: int,
) -> dict[str, Any]:
    from provisioning.broker import free_port

    folder = Path(tempfile.mkdtemp(prefix=f"gunicorn-{worker_class}-", dir=workdir))
    config = _write_config(folder, db_url, *mqtt)
    server = _Gunicorn(
        port=free_port(), worker_class=worker_class, config_path=config, log_path=folder / "gunicorn.log"
    )
    progress(f"gunicorn {worker_class}: starting on 127.0.0.1:{server.port}")
    server.start()
    out: dict[str, Any] = {
        "worker_class": worker_class,
        "threads": THREADS if worker_class == "gthread" else 1,
    }
    try:
        server.wait_ready()
        _check_form_fields(server.port)
        serial = serial_base
        warm = drive(
            server.port,
            "form",
            clients=clients,
            total=clients * 2,
            first_serial=serial,
            token=None,
            time_limit_s=time_limit_s,
        )
        serial += clients * 2
        if not warm["ok"]:
            raise WebBenchError(f"warm-up failed: {warm['first_error']}")
        out["healthz"] = drive(
            server.port,
            "healthz",
            clients=clients,
            total=declarations * 4,
            first_serial=0,
            token=None,
            time_limit_s=time_limit_s,
        )
        progress(f"gunicorn {worker_class}: healthz {fmt(out['healthz']['per_s'])} req/s")
        out["form_runs"], out["api_runs"] = [], []
        for r in range(repeats):
            form = drive(
                server.port,
                "form",
                clients=clients,
                total=declarations,
                first_serial=serial,
                token=None,
                time_limit_s=time_limit_s,
            )
            serial += declarations
            out["form_runs"].append(form)
            api = drive(
                server.port,
                "api",
                clients=clients,
                total=declarations,
                first_serial=serial,
                token=token,
                time_limit_s=time_limit_s,
            )
            serial += declarations
            out["api_runs"].append(api)
            progress(
                f"gunicorn {worker_class} run {r + 1}/{repeats}: form {fmt(form['per_s'], 1)} decl/s, "
                f"api {fmt(api['per_s'], 1)} decl/s"
            )
        out["serial_end"] = serial
    finally:
        code = server.stop()
        out["server_exit_code"] = code
    out["declarations_per_s"] = median([r["per_s"] for r in out["form_runs"]])
    out["api_declarations_per_s"] = median([r["per_s"] for r in out["api_runs"]])
    out["form_post_p50_ms"] = median([r["latency_ms"].get("post", {}).get("p50") for r in out["form_runs"]])
    out["form_post_p95_ms"] = median([r["latency_ms"].get("post", {}).get("p95") for r in out["form_runs"]])
    out["form_get_p50_ms"] = median([r["latency_ms"].get("get", {}).get("p50") for r in out["form_runs"]])
    out["api_post_p50_ms"] = median([r["latency_ms"].get("post", {}).get("p50") for r in out["api_runs"]])
    out["api_post_p95_ms"] = median([r["latency_ms"].get("post", {}).get("p95") for r in out["api_runs"]])
    return out


# ----- pass signing and verification ----------------------------------------------------------------


def bench_passes(*, count: int, repeats: int) -> dict[str, Any]:
    """Signs and verifications per second, in-process, for each algorithm (median of ``repeats``)."""
    from protocol.healthpass import PassClaims, SigningKey, TrustList, encode_pass, verify_pass

    now = datetime.now(UTC).replace(microsecond=0)
    out: dict[str, Any] = {}
    for alg in ("ES256", "EdDSA"):
        key = SigningKey.generate(alg)
        trust = TrustList([key.trusted(now - timedelta(days=1), now + timedelta(days=365))], 1, now)
        sign_rates, verify_rates = [], []
        texts: list[str] = []
        for _ in range(repeats):
            claims = [
                PassClaims(
                    pass_id=f"{i:010d}"[-10:],
                    colour="green",
                    kind="ncovi",
                    initials="NVB",
                    birth_year=1990,
                    issuer="antoan-hub",
                    issued_at=now,
                    expires_at=now + timedelta(days=14),
                )
                for i in range(count)
            ]
            t0 = time.perf_counter()
            texts = [encode_pass(c, key) for c in claims]
            sign_rates.append(count / (time.perf_counter() - t0))
            t0 = time.perf_counter()
            for text in texts:
                verify_pass(text, trust=trust, now=now)
            verify_rates.append(count / (time.perf_counter() - t0))
        out[alg] = {
            "passes": count,
            "sign_per_s": round(statistics.median(sign_rates), 1),
            "verify_per_s": round(statistics.median(verify_rates), 1),
            "qr_text_chars": len(texts[0]) if texts else None,
        }
    return out


# ----- the whole benchmark --------------------------------------------------------------------------


def run_web(
    *,
    db_kinds: list[str],
    clients: int,
    declarations: int,
    repeats: int,
    pg_admin_url: str,
    time_limit_s: float = 60.0,
    pass_count: int = 2000,
    worker_classes: tuple[str, ...] = WORKER_CLASSES,
) -> dict[str, Any]:
    """Measure every database kind with each worker class, and pass sign/verify; the result dict."""
    result: dict[str, Any] = {
        "settings": {
            "gunicorn_workers": WORKERS,
            "worker_classes": list(worker_classes),
            "gthread_threads": THREADS,
            "clients": clients,
            "declarations_per_run": declarations,
            "repeats": repeats,
            "time_limit_s_per_run": time_limit_s,
            "people_per_declaration": 1,
            "public_form_rate": "raised to 1000000 per minute for the run (one address sends everything)",
        },
        "databases": {},
    }
    with tempfile.TemporaryDirectory(prefix="antoan-bench-web-") as tmp:
        workdir = Path(tmp)
        with broker(workdir) as mosq:
            for kind in db_kinds:
                progress(f"{kind}: fresh database")
                entry: dict[str, Any] = {"configs": []}
                serial = 0
                for worker_class in worker_classes:
                    # A fresh database per worker class, so the second does not start with a fuller one.
                    with fresh_database(kind, workdir, pg_admin_url) as db:
                        token = _api_token(db.url)
                        try:
                            config = _bench_server(
                                db.url,
                                worker_class,
                                workdir,
                                (mosq.host, mosq.port),
                                clients=clients,
                                declarations=declarations,
                                repeats=repeats,
                                time_limit_s=time_limit_s,
                                token=token,
                                serial_base=serial,
                            )
                            config["stored_declarations"] = _count_declarations(db.url)
                            completed = (
                                sum(r["completed"] for r in config["form_runs"] + config["api_runs"])
                                + clients * 2
                            )
                            config["stored_matches_completed"] = config["stored_declarations"] == completed
                        except (WebBenchError, BenchTimeout) as exc:
                            progress(f"{kind} {worker_class}: {exc}")
                            config = {
                                "worker_class": worker_class,
                                "error": str(exc),
                                "form_runs": [],
                                "api_runs": [],
                            }
                        entry["configs"].append(config)
                runs = [r for c in entry["configs"] for r in c["form_runs"] + c["api_runs"]]
                rated = [c for c in entry["configs"] if c.get("declarations_per_s") is not None]
                best = max(rated, key=lambda c: c["declarations_per_s"], default=None)
                entry["fastest_worker_class"] = best["worker_class"] if best else None
                entry["all_runs_ok"] = (
                    bool(runs)
                    and all(r["ok"] for r in runs)
                    and all(c.get("stored_matches_completed") for c in entry["configs"])
                )
                result["databases"][kind] = entry
    progress(f"pass sign/verify: {pass_count} passes per algorithm")
    result["passes"] = bench_passes(count=pass_count, repeats=max(1, repeats))
    result["all_runs_ok"] = all(d["all_runs_ok"] for d in result["databases"].values())
    return result


def render(doc: dict[str, Any]) -> str:
    """Tables: declarations/s and latencies per database and worker class; pass sign/verify rates."""
    rows = []
    for kind, entry in doc["databases"].items():
        for c in entry["configs"]:
            name = f"{kind} {c['worker_class']}"
            if "error" in c:
                rows.append([name, "FAILED", "-", "-", "-", "-", "-", "-"])
                continue
            rows.append(
                [
                    name + (" *" if entry.get("fastest_worker_class") == c["worker_class"] else ""),
                    fmt(c["declarations_per_s"], 1),
                    fmt(c["form_post_p50_ms"], 1),
                    fmt(c["form_post_p95_ms"], 1),
                    fmt(c["form_get_p50_ms"], 1),
                    fmt(c["api_declarations_per_s"], 1),
                    fmt(c["api_post_p95_ms"], 1),
                    fmt(c["healthz"]["per_s"], 0),
                ]
            )
    headers = [
        "database, gunicorn worker",
        "form decl/s",
        "POST p50 ms",
        "POST p95 ms",
        "GET form p50 ms",
        "API decl/s",
        "API p95 ms",
        "healthz req/s",
    ]
    s = doc["settings"]
    lines = [
        f"Web: NCOVI declarations through gunicorn ({s['gunicorn_workers']} workers), "
        f"{s['clients']} clients, "
        f"{s['declarations_per_run']} per run, median of {s['repeats']} (* fastest worker class)",
        table(headers, rows),
        "",
        "Pass signing and verification, in-process",
        table(
            ["algorithm", "sign/s", "verify/s", "QR chars"],
            [
                [alg, fmt(p["sign_per_s"], 0), fmt(p["verify_per_s"], 0), fmt(p["qr_text_chars"])]
                for alg, p in doc["passes"].items()
            ],
        ),
    ]
    return "\n".join(lines)


def main(
    *,
    quick: bool,
    repeats: int | None,
    clients: int,
    declarations: int | None,
    db_choice: str,
    pg_url: str,
    results_dir: Path,
) -> dict[str, Any]:
    """``python -m bench web``: run, write ``web.json``, print the tables; exit non-zero when a run failed."""
    import sys

    import click

    from bench.common import machine_info, pg_reachable, utc_now_iso, write_result

    started_at, t0 = utc_now_iso(), time.monotonic()
    pg_problem = pg_reachable(pg_url) if db_choice != "sqlite" else "not asked for"
    if db_choice == "postgresql" and pg_problem:
        raise click.ClickException(f"PostgreSQL not reachable: {pg_problem}")
    kinds = {"sqlite": ["sqlite"], "postgresql": ["postgresql"]}.get(
        db_choice, ["sqlite"] + ([] if pg_problem else ["postgresql"])
    )
    if db_choice == "auto" and pg_problem:
        progress(f"PostgreSQL not reachable ({pg_problem}); SQLite only")
    machine = machine_info(None if pg_problem else pg_url)
    result = run_web(
        db_kinds=kinds,
        clients=clients,
        declarations=declarations or (40 if quick else 200),
        repeats=repeats or (1 if quick else 3),
        pg_admin_url=pg_url,
        pass_count=200 if quick else 2000,
    )
    doc = {
        "benchmark": "web",
        "invocation": " ".join(["python -m bench", *sys.argv[1:]]),
        "started_at": started_at,
        "finished_at": utc_now_iso(),
        "duration_s": round(time.monotonic() - t0, 1),
        "machine": machine,
        # Other work on the machine shows here: the numbers mean little when it is far above cpu_count.
        "load_average_1m_at_end": os.getloadavg()[0],
        **result,
    }
    path = write_result(results_dir, "web", doc)
    progress(f"wrote {path}")
    click.echo(render(doc))
    if not result["all_runs_ok"]:
        raise click.ClickException("some web runs failed; see web.json for the counts and first errors")
    return doc
