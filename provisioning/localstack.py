"""The whole system on one machine for a trial: mosquitto, hub bridge, hub web and one sample kiosk.

``./run demo`` runs this. Everything lives under ``var/demo/`` (hub CA, certificates, broker data, hub
database, kiosk identity and outbox), so a second run continues where the first stopped: same CA, same
certificates, and the kiosk enrols only once. The broker is the secured one of the field (TLS, a client
certificate for every client, ACL, CRL); the bridge, its list publisher and the web's health probe each
have their own certificate, and the kiosk enrols through the real path (token, bundle, CSR over HTTPS
with the CA pinned). ``--insecure-broker`` runs the plain loopback broker instead, for troubleshooting.
Ctrl-C stops the processes in reverse order.
"""

from __future__ import annotations

import datetime as dt
import getpass
import json
import logging
import os
import shutil
import signal
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import click
from cryptography import x509

from provisioning.broker import MosquittoProcess, free_port, port_open, write_secure_broker
from provisioning.pki import BRIDGE_IDENTITY, LISTS_IDENTITY, CaLayout, HubCA, write_private
from provisioning.samples import DEMO_CASE_LABEL, DemoMaterial, make_demo_material

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from hub.config import HubConfig

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent


DEMO_KIOSK = "kiosk-demo-001"
DEMO_VENUE = "venue-demo-cho-ben-thanh"
DEMO_VENUE_NAME = "Chợ Bến Thành (demo)"
#: The web's broker health probe: an identity of its own with no rights in the ACL.
WEB_PROBE_IDENTITY = "antoan-web"
#: Certificates closer than this to expiry are replaced at start, so a kept demo folder keeps working.
_RENEW_BEFORE = dt.timedelta(days=30)


def _toml(tree: dict, prefix: str = "") -> str:
    """TOML for nested dicts of scalars (``None`` values are left out; paths become strings)."""

    def value(v) -> str:
        return str(v).lower() if isinstance(v, bool) else json.dumps(str(v) if isinstance(v, Path) else v)

    out = "\n".join(f"{k} = {value(v)}" for k, v in tree.items() if not isinstance(v, dict) and v is not None)
    for section, values in tree.items():
        if isinstance(values, dict):
            name = f"{prefix}.{section}" if prefix else section
            body = _toml(values, name)
            out += f"\n\n[{name}]" + (body if body.startswith("\n") else "\n" + body)
    return out if prefix else out.strip("\n") + "\n"


def _pick_port(preferred: int) -> int:
    return preferred if not port_open("127.0.0.1", preferred) else free_port()


def _expiring(cert_file: Path) -> bool:
    """True when ``cert_file`` is missing or expires within :data:`_RENEW_BEFORE`."""
    try:
        cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    except (OSError, ValueError):
        return True
    return cert.not_valid_after_utc - dt.datetime.now(dt.UTC) < _RENEW_BEFORE


@dataclass(frozen=True)
class DemoPki:
    """The demo's hub CA (``ca/``) and the certificates made from it (``certs/``), made once and kept."""

    ca: HubCA
    certs: Path

    @property
    def ca_file(self) -> Path:
        return self.ca.layout.ca_cert.resolve()

    def tls(self, name: str) -> dict:
        """MQTT TLS settings (a ``TlsSettings`` table) for the service identity ``name``."""
        return {
            "ca_file": self.ca_file,
            "cert_file": self.certs / f"{name}.pem",
            "key_file": self.certs / f"{name}.key",
        }

    @property
    def web_cert(self) -> Path:
        return self.certs / "web-https.pem"

    @property
    def web_key(self) -> Path:
        return self.certs / "web-https.key"


def _demo_pki(root: Path) -> tuple[DemoPki, bool]:
    """Open the demo CA under ``root/ca`` (made on the first run) and issue what is missing or expiring:
    the hub services' client certificates and the web's HTTPS certificate. Returns it and whether the
    CA was made now."""
    ca_dir = root / "ca"
    made = not CaLayout(ca_dir).exists()
    ca = HubCA.init(ca_dir, common_name="AnToan demo CA (self-made)") if made else HubCA.open(ca_dir)
    # The broker refuses every client once its CRL is past next_update: re-sign it on every start.
    ca.write_crl()
    pki = DemoPki(ca, (root / "certs").resolve())
    pki.certs.mkdir(parents=True, exist_ok=True)
    for name in (BRIDGE_IDENTITY, LISTS_IDENTITY, WEB_PROBE_IDENTITY):
        files = pki.tls(name)
        if _expiring(files["cert_file"]):
            ca.issue_client(name).write(files["cert_file"], files["key_file"])
    if _expiring(pki.web_cert):
        ca.issue_server_cert(dns_names=["localhost"], ip_addresses=["127.0.0.1"]).write(
            pki.web_cert, pki.web_key
        )
    return pki, made


def _secure_broker(folder: Path, ca: HubCA, *, port: int) -> MosquittoProcess:
    """mosquitto with the generated TLS configuration (:func:`write_secure_broker`), no plain listener."""
    server_cert = folder / "server.pem"
    if server_cert.exists() and _expiring(server_cert):
        server_cert.unlink()  # write_secure_broker issues a new one when it is missing

    def conf(broker: MosquittoProcess) -> str:
        files = write_secure_broker(
            broker.layout.root,
            ca,
            port=broker.port,
            bind=broker.host,
            data_dir=broker.layout.data.resolve(),
            # Started as root, mosquitto would switch to its own user, which cannot read the 0600 key.
            user=getpass.getuser(),
        )
        return files.conf.read_text()

    return MosquittoProcess(folder, port=port, config=conf)


def _enrolment_bundle(engine: Engine, pki: DemoPki, *, hub_url: str, folder: Path) -> Path:
    """Add the demo venue (once) and an approved single-use token for the demo kiosk; write the bundle
    district IT would put on the kiosk's boot partition (``enrol.json``, 0600: it holds the token)."""
    from hub import devices
    from protocol.enrolment import BUNDLE_FILE, Bundle

    now = dt.datetime.now(dt.UTC)
    try:
        with engine.begin() as conn:
            try:
                devices.add_venue(
                    conn, venue_id=DEMO_VENUE, name=DEMO_VENUE_NAME, venue_type="market", now=now
                )
            except devices.DeviceError as exc:
                if exc.code != "exists":
                    raise
        with engine.begin() as conn:
            token = devices.create_enrolment_token(
                conn, kiosk_id=DEMO_KIOSK, venue_id=DEMO_VENUE, created_by="demo", now=now, auto_approve=True
            ).token
    except devices.DeviceError as exc:
        raise click.ClickException(f"cannot make the demo kiosk's enrolment token: {exc}") from None
    bundle = Bundle(
        hub_url=hub_url,
        ca_fingerprint=pki.ca.fingerprint,
        token=token,
        kiosk_id=DEMO_KIOSK,
        venue_id=DEMO_VENUE,
    )
    folder.mkdir(parents=True, exist_ok=True)
    write_private(folder / BUNDLE_FILE, json.dumps(bundle.to_json(), indent=1).encode())
    return folder


def _enrol_kiosk(kiosk_conf: Path, *, bundle: Path, identity: Path, root: Path) -> str:
    """``antoan-kiosk enrol --bundle …`` as district IT would run it on the device; its output line."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "kiosk",
            "--config",
            str(kiosk_conf),
            "enrol",
            "--bundle",
            str(bundle),
            "--identity-dir",
            str(identity),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=90,
    )
    with (root / "enrol.log").open("a") as log_file:
        log_file.write(done.stdout + done.stderr)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or done.stdout.strip().splitlines() or ["no output"])[-1]
        raise click.ClickException(f"the demo kiosk could not enrol: {last} (see {root / 'enrol.log'})")
    return (done.stdout.strip().splitlines() or [""])[-1]


class Stack:
    """Child processes of the local stack, started in order and stopped in reverse."""

    def __init__(self, root: Path):
        self.root = root
        self.children: list[tuple[str, subprocess.Popen]] = []
        self.broker: MosquittoProcess | None = None

    def spawn(self, name: str, *args: str) -> subprocess.Popen:
        logfile = (self.root / f"{name}.log").open("ab")
        proc = subprocess.Popen(
            [sys.executable, *args],
            cwd=ROOT,
            stdout=logfile,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        logfile.close()
        self.children.append((name, proc))
        return proc

    def check(self) -> None:
        for name, proc in self.children:
            if proc.poll() is not None:
                raise click.ClickException(
                    f"{name} exited with code {proc.returncode}; see {self.root / (name + '.log')}"
                )

    def stop(self) -> None:
        for name, proc in reversed(self.children):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    click.echo(f"   {name} did not stop in time; killing it", err=True)
                    proc.kill()
                    proc.wait()
        self.children.clear()
        if self.broker is not None:
            self.broker.stop()
            self.broker = None


class _LogTail:
    """New lines of a growing log file that contain ``marker`` (the part after it)."""

    def __init__(self, path: Path, *, marker: str):
        self._path = path
        self._marker = marker
        # Only what is written from now on: a continuing demo appends to the previous run's log.
        self._offset = path.stat().st_size if path.exists() else 0

    def new_lines(self) -> list[str]:
        try:
            with self._path.open("rb") as f:
                f.seek(self._offset)
                data = f.read()
        except FileNotFoundError:
            return []
        end = data.rfind(b"\n") + 1
        self._offset += end
        lines = data[:end].decode("utf-8", "replace").splitlines()
        return [line.split(self._marker, 1)[1] for line in lines if self._marker in line]


def _hub_database(hub_conf: Path) -> tuple[Engine, HubConfig]:
    """Migrate the hub database (as ``antoan-hub migrate`` does) and open the one engine the demo uses."""
    from hub.config import load
    from hub.db import make_engine
    from protocol.settings import ConfigError

    migrated = subprocess.run(
        [sys.executable, "-m", "hub", "--config", str(hub_conf), "migrate"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    if migrated.returncode != 0:
        raise click.ClickException(f"hub migrations failed:\n{migrated.stderr.strip()}")
    try:
        config = load(hub_conf)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    return make_engine(config.database.url), config


def _hub_samples(engine: Engine, config: HubConfig, folder: Path) -> DemoMaterial:
    """Issue the sample passes with the hub's own signing key."""
    from hub.keys import KeyRingError

    try:
        return make_demo_material(folder, engine=engine, settings=config.passes)
    except KeyRingError as exc:
        raise click.ClickException(f"cannot sign the sample passes: {exc}") from None


DEMO_ADMIN = "admin"


def _demo_credentials(engine: Engine, root: Path) -> tuple[str, Path]:
    """The demo's admin account and an API token, made on the first run and kept under ``root``.

    The password is random per demo folder (``admin-password.txt``, mode 0600), never a fixed one.
    Returns the password and the token file.
    """
    import secrets

    from hub import accounts

    password_file, token_file = root / "admin-password.txt", root / "api-token.txt"
    with engine.begin() as conn:
        user = accounts.get_user_by_name(conn, DEMO_ADMIN)
        if user is None or not password_file.exists():
            password = secrets.token_urlsafe(12)
            if user is None:
                user = accounts.create_user(
                    conn,
                    username=DEMO_ADMIN,
                    display_name="Quản trị demo",
                    role="admin",
                    password=password,
                )
            else:
                accounts.set_password(conn, user.id, password)
            password_file.write_text(password + "\n")
            password_file.chmod(0o600)
        if not token_file.exists():
            _id, token = accounts.create_api_token(conn, name="demo", role="admin", created_by=user.id)
            token_file.write_text(token + "\n")
            token_file.chmod(0o600)
    return password_file.read_text().strip(), token_file


def _pass_note(material: DemoMaterial, label: str) -> str:
    from hub.passes import display_pass_id

    pass_id = material.pass_ids.get(label)
    return f"  (pass {display_pass_id(pass_id)})" if pass_id else ""


def _hub_stats(engine: Engine) -> dict:
    """Ingest statistics read from the hub database (the JSON API wants a token the demo does not hold)."""
    from sqlalchemy.exc import SQLAlchemyError

    from hub.db.store import HubStore

    try:
        return HubStore(engine).stats()
    except SQLAlchemyError as exc:
        log.warning("cannot read the hub statistics: %s", exc)
        return {}


def _demo_case(
    engine: Engine, config: HubConfig, material: DemoMaterial, case_id: int | None, index
) -> tuple:
    """Trace the sample F0 as a health official would: open a case once their check-in has reached the
    hub, then look again on each call (later check-ins), F2 as the job does, both over ``index`` (the
    in-memory visit index, kept current between calls as the web keeps its own). Returns (case id, line
    to print or None when nothing changed)."""
    from sqlalchemy import select

    from hub.cases import open_case, refresh_case, resolve_subject, run_f2
    from hub.db import writing
    from hub.db.schema import cases, visits
    from hub.identity import HubIdentity
    from hub.venue_flags import flagged_venues

    identity = HubIdentity(engine).load()
    now = dt.datetime.now(dt.UTC)
    rules = config.tracing
    index.refresh()
    if case_id is None:
        with writing(engine).begin() as conn:
            subject = resolve_subject(conn, identity, pass_id=material.pass_ids[DEMO_CASE_LABEL], now=now)
            seen = select(visits.c.id).where(visits.c.person_id == subject.person_id).limit(1)
            if conn.execute(seen).first() is None:
                return None, None
            case_id = conn.execute(
                select(cases.c.id).where(cases.c.person_id == subject.person_id, cases.c.status == "open")
            ).scalar()
        if case_id is None:
            case_id = open_case(
                engine, identity, subject, onset_date=None, test_date=now.date(), rules=rules,
                actor="demo", role="health_official", note="demo: the sample person with a positive test",
                now=now, index=index,
            )  # fmt: skip
    with engine.connect() as conn:
        before = tuple(
            conn.execute(select(cases.c.f1_count, cases.c.f2_count).where(cases.c.id == case_id)).one()
        )
    refresh_case(engine, case_id, rules, actor="demo", role="health_official", now=now, index=index)
    run_f2(engine, case_id, index, rules)
    with engine.connect() as conn:
        after = tuple(
            conn.execute(select(cases.c.f1_count, cases.c.f2_count).where(cases.c.id == case_id)).one()
        )
        flagged = flagged_venues(conn, now=now, rules=rules)
    if after == before and before != (0, 0):
        return case_id, None
    places = ", ".join(f.name or f.venue_id for f in flagged) or "none yet"
    return case_id, (
        f"case {case_id} for {DEMO_CASE_LABEL} (F0): {after[0]} F1, {after[1]} F2 (visit index of "
        f"{index.size} presences); their passes turn {rules.f1_colour}/{rules.f2_colour} on the kiosk "
        f"through the status list; flagged on the safety map: {places}"
    )


def _get_json(url: str, *, context: ssl.SSLContext | None = None) -> dict | None:
    try:
        with urllib.request.urlopen(url, timeout=2, context=context) as resp:
            return json.load(resp)
    except (OSError, ValueError):
        return None


@click.command()
@click.option(
    "--root",
    type=click.Path(path_type=Path),
    default=ROOT / "var" / "demo",
    show_default=True,
    help="Folder for the broker data, hub database, kiosk outbox and logs.",
)
@click.option("--fresh", is_flag=True, help="Delete the folder first and start from nothing.")
@click.option(
    "--web-port",
    type=int,
    default=8080,
    show_default=True,
    help="Hub web port (another free one is used if taken).",
)
@click.option(
    "--mqtt-port",
    type=int,
    default=18830,
    show_default=True,
    help="Broker port on 127.0.0.1 (another free one is used if taken).",
)
@click.option(
    "--rate",
    type=float,
    default=0.0,
    show_default=True,
    help="Extra generated check-ins per second on top of the camera replay (load demo).",
)
@click.option("--fps", type=float, default=4.0, show_default=True, help="Replay camera frames per second.")
@click.option(
    "--duration",
    type=float,
    default=None,
    help="Stop by itself after this many seconds (default: run until Ctrl-C).",
)
@click.option(
    "--insecure-broker",
    is_flag=True,
    help="Troubleshooting: a plain-TCP broker on loopback without authentication (no kiosk enrolment).",
)
def main(
    root: Path,
    fresh: bool,
    web_port: int,
    mqtt_port: int,
    rate: float,
    fps: float,
    duration: float | None,
    insecure_broker: bool,
) -> None:
    """Run the AnToan stack locally: broker, bridge, web and one kiosk recording sample check-ins."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # The demo's CA key is unencrypted: a district passphrase set in this shell must not be tried on it
    # (by this process or the hub web it starts).
    os.environ.pop("ANTOAN_CA_PASSPHRASE", None)
    if fresh and root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True, exist_ok=True)
    root = root.resolve()
    web_port, mqtt_port = _pick_port(web_port), _pick_port(mqtt_port)
    pki, ca_made = _demo_pki(root)
    click.echo(
        f"==> hub CA {'made' if ca_made else 'kept'} in {pki.ca.layout.root} "
        f"(fingerprint {pki.ca.fingerprint[:23]}…)"
    )
    secure = not insecure_broker
    mqtt: dict = {"host": "127.0.0.1", "port": mqtt_port}
    hub_conf = root / "hub.toml"
    hub_conf.write_text(
        _toml(
            {
                "database": {"url": f"sqlite:///{root / 'hub.db'}"},
                # Each hub MQTT client has a certificate of its own: the broker takes the client id
                # from it, so two clients sharing one would take each other's session over and over.
                "mqtt": {**mqtt, "tls": pki.tls(BRIDGE_IDENTITY) if secure else None},
                "bridge": {"lists_tls": pki.tls(LISTS_IDENTITY) if secure else None},
                "web": {
                    "host": "127.0.0.1",
                    "port": web_port,
                    "cookie_secure": True,
                    "tls_cert": pki.web_cert,
                    "tls_key": pki.web_key,
                    "broker_probe_tls": pki.tls(WEB_PROBE_IDENTITY) if secure else None,
                },
                "enrolment": {
                    "ca_dir": pki.ca.layout.root,
                    "broker_host": "127.0.0.1",
                    "broker_port": mqtt_port,
                },
            }
        )
    )
    click.echo("==> hub database migrations")
    click.echo(f"==> sample passes issued by the hub; camera replay frames in {root / 'samples'}")
    engine, hub_config = _hub_database(hub_conf)  # one engine for everything the demo reads or writes
    material = _hub_samples(engine, hub_config, root / "samples")
    admin_password, token_file = _demo_credentials(engine, root)
    identity = root / "kiosk-identity"
    kiosk_conf = root / "kiosk.toml"
    kiosk_tls = {
        "ca_file": identity / "ca.pem",
        "cert_file": identity / "kiosk.pem",
        "key_file": identity / "kiosk.key",
    }

    def write_kiosk_conf(tls: dict | None) -> None:
        kiosk_conf.write_text(
            _toml(
                {
                    "kiosk_id": DEMO_KIOSK,
                    "venue_id": DEMO_VENUE,
                    "mqtt": {**mqtt, "tls": tls},
                    "hub_public_key": material.hub_public_key_b64,
                    "outbox": {"path": str(root / "kiosk-outbox.db")},
                    "sample": {"rate_per_s": rate},
                    "camera": {
                        "source": "replay",
                        "replay_path": str(material.frames),
                        "replay_fps": fps,
                        "replay_loop": True,
                    },
                    "gpio": {"pin_factory": "mock"},
                }
            )
        )

    # Enrol once; again only when the identity is gone or its certificate is close to expiry.
    enrol_now = secure and _expiring(kiosk_tls["cert_file"])
    write_kiosk_conf(None if enrol_now or not secure else kiosk_tls)

    stack = Stack(root)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        if secure:
            click.echo(
                f"==> broker (mosquitto) on 127.0.0.1:{mqtt_port}: TLS with a client certificate for "
                f"every client, ACL, CRL; data in {root / 'broker'}"
            )
            broker = _secure_broker(root / "broker", pki.ca, port=mqtt_port)
        else:
            click.echo(
                f"==> broker (mosquitto) on 127.0.0.1:{mqtt_port}: PLAIN TCP WITHOUT AUTHENTICATION "
                f"(--insecure-broker); data in {root / 'broker'}"
            )
            broker = MosquittoProcess(root / "broker", port=mqtt_port)
        broker.write_config()
        stack.broker = broker.start()
        # The bridge publishes the hub's trust and status lists, retained: the kiosk gets them over MQTT.
        click.echo("==> hub bridge (also publishes the trust and status lists) and hub web (HTTPS)")
        stack.spawn("bridge", "-m", "hub", "--config", str(hub_conf), "bridge")
        stack.spawn("web", "-m", "hub", "--config", str(hub_conf), "web")
        base = f"https://127.0.0.1:{web_port}"
        pinned = ssl.create_default_context(cafile=str(pki.ca_file))
        deadline = time.monotonic() + 30
        # /healthz answers 200 only once the web's probe identity got into the broker.
        while _get_json(f"{base}/healthz", context=pinned) is None:
            stack.check()
            if time.monotonic() > deadline:
                raise click.ClickException(
                    f"the hub web did not report healthy within 30 s; see {root / 'web.log'} "
                    f"and {root / 'broker' / 'mosquitto.log'}"
                )
            stop.wait(0.2)
        if enrol_now:
            click.echo(
                f"==> kiosk {DEMO_KIOSK} enrols: venue, approved token, bundle, CSR over HTTPS (CA pinned)"
            )
            bundle = _enrolment_bundle(engine, pki, hub_url=base, folder=root / "enrol-bundle")
            enrolled = _enrol_kiosk(kiosk_conf, bundle=bundle, identity=identity, root=root)
            click.echo(f"   antoan-kiosk enrol --bundle {bundle}: {enrolled}")
        elif secure:
            click.echo(f"==> kiosk {DEMO_KIOSK} already enrolled (identity in {identity})")
        if secure:
            write_kiosk_conf(kiosk_tls)  # what enrolment wrote, with this run's broker port
        # The kiosk starts last so its first batches find the bridge subscribed (a kiosk that starts
        # first is fine too: it resends after its ack timeout).
        click.echo(f"==> kiosk {DEMO_KIOSK}")
        scans = _LogTail(root / "kiosk.log", marker="kiosk.app: scan: ")
        stack.spawn("kiosk", "-m", "kiosk", "--config", str(kiosk_conf), "run")
        broker_line = (
            f"127.0.0.1:{mqtt_port}  (TLS; every client needs a certificate from the hub CA)"
            if secure
            else f"127.0.0.1:{mqtt_port}  (plain TCP, no authentication: --insecure-broker)"
        )
        click.echo(
            "\nAnToan Check-in is running locally:\n"
            f"  Hub (trang chủ / home):          {base}/\n"
            f"  Declare, get a pass (khai báo):  {base}/khai-bao   (entrants: {base}/nhap-canh)\n"
            f"  Find a pass again (tìm thẻ):     {base}/tim-the\n"
            f"  Staff login (đăng nhập cán bộ):  {base}/login\n"
            f"                                   user {DEMO_ADMIN}, password {admin_password}\n"
            f'  Stats (JSON):                    curl --cacert {pki.ca_file} -H "Authorization: Bearer '
            f'$(cat {token_file})" {base}/api/stats\n'
            f"  API description (OpenAPI):       {base}/api/openapi.json\n"
            f"  Health:                          {base}/healthz\n"
            f"  Broker (MQTT):                   {broker_line}\n"
            "  HTTPS certificate: signed by the demo's own self-made CA, so a browser warns until you\n"
            f"  import its certificate {pki.ca_file}\n"
            f"  (SHA-256 fingerprint {pki.ca.fingerprint})\n"
            f"  Kiosk {DEMO_KIOSK} scans a replayed camera feed of {len(material.expected)} sample codes:\n"
            + "".join(
                f"      {label:<24} → {colour:<6}{_pass_note(material, label)}\n"
                for label, colour in material.expected
            )
            + f"  Logs and data:                   {root}\n"
            "  Stop: Ctrl-C (nhấn Ctrl-C để dừng)\n"
        )
        started = time.monotonic()
        case_id: int | None = None
        from hub.tracing import VisitIndex

        horizon_days = hub_config.tracing.lookback_days + hub_config.tracing.f2_window_days + 1
        index = VisitIndex(engine, horizon_s=lambda: int(time.time()) - horizon_days * 86400)
        next_report = started + 5  # the first report once the kiosk had time to sync
        while not stop.is_set():
            stack.check()
            now = time.monotonic()
            if duration is not None and now - started >= duration:
                break
            for line in scans.new_lines():
                click.echo(f"   kiosk: {line}")
            if now >= next_report:
                case_id, case_line = _demo_case(engine, hub_config, material, case_id, index)
                if case_line is not None:
                    click.echo(f"==> tracing: {case_line}\n   case page: {base}/admin/cases/{case_id}")
            if now >= next_report:
                stats = _hub_stats(engine)
                kiosks = {k["kiosk_id"]: k for k in stats.get("kiosks", [])}
                k = kiosks.get(DEMO_KIOSK, {})
                click.echo(
                    f"   events stored: {stats.get('events_stored', '?')}, dead letters: "
                    f"{stats.get('dead_letters', '?')}, kiosk {k.get('status', '?')}, "
                    f"outbox depth {k.get('outbox_depth', '?')}"
                )
                next_report = now + 10
            stop.wait(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        try:
            click.echo("==> stopping")
        finally:  # even when the output is gone (a closed pipe), the children must stop
            stack.stop()
            engine.dispose()
        click.echo("==> stopped")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
