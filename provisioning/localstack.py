"""The whole system on one machine for a trial: mosquitto, hub bridge, hub web and one sample kiosk.

``./run demo`` runs this. Everything lives under ``var/demo/`` (broker data, hub database, kiosk
outbox), so a second run continues where the first stopped. Ctrl-C stops the processes in reverse order.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import click

from provisioning.broker import MosquittoProcess, free_port, port_open
from provisioning.samples import DemoMaterial, make_demo_material

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent


def _toml(tree: dict) -> str:
    def value(v) -> str:
        return json.dumps(v) if not isinstance(v, bool) else str(v).lower()

    lines = [f"{k} = {value(v)}" for k, v in tree.items() if not isinstance(v, dict)]
    for section, values in tree.items():
        if isinstance(values, dict):
            lines.append(f"\n[{section}]")
            lines += [f"{k} = {value(v)}" for k, v in values.items()]
    return "\n".join(lines) + "\n"


def _pick_port(preferred: int) -> int:
    return preferred if not port_open("127.0.0.1", preferred) else free_port()


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
        self._offset = 0

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


def _hub_samples(hub_conf: Path, folder: Path) -> DemoMaterial:
    """Migrate the hub database, then issue the sample passes with the hub's own signing key."""
    from hub.config import load
    from hub.db import make_engine
    from hub.keys import KeyRingError
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
    engine = make_engine(config.database.url)
    try:
        return make_demo_material(folder, engine=engine, settings=config.passes)
    except KeyRingError as exc:
        raise click.ClickException(f"cannot sign the sample passes: {exc}") from None
    finally:
        engine.dispose()


DEMO_ADMIN = "admin"


def _demo_credentials(hub_conf: Path, root: Path) -> tuple[str, Path]:
    """The demo's admin account and an API token, made on the first run and kept under ``root``.

    The password is random per demo folder (``admin-password.txt``, mode 0600), never a fixed one.
    Returns the password and the token file.
    """
    import secrets

    from hub import accounts
    from hub.config import load
    from hub.db import make_engine

    password_file, token_file = root / "admin-password.txt", root / "api-token.txt"
    engine = make_engine(load(hub_conf).database.url)
    try:
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
    finally:
        engine.dispose()
    return password_file.read_text().strip(), token_file


def _pass_note(material: DemoMaterial, label: str) -> str:
    from hub.passes import display_pass_id

    pass_id = material.pass_ids.get(label)
    return f"  (pass {display_pass_id(pass_id)})" if pass_id else ""


def _hub_stats(hub_conf: Path) -> dict:
    """Ingest statistics read from the hub database (the JSON API wants a token the demo does not hold)."""
    from sqlalchemy.exc import SQLAlchemyError

    from hub.config import load
    from hub.db import make_engine
    from hub.db.store import HubStore

    engine = make_engine(load(hub_conf).database.url)
    try:
        return HubStore(engine).stats()
    except SQLAlchemyError as exc:
        log.warning("cannot read the hub statistics: %s", exc)
        return {}
    finally:
        engine.dispose()


def _get_json(url: str) -> dict | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
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
def main(
    root: Path, fresh: bool, web_port: int, mqtt_port: int, rate: float, fps: float, duration: float | None
) -> None:
    """Run the AnToan stack locally: broker, bridge, web and one kiosk recording sample check-ins."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if fresh and root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True, exist_ok=True)
    web_port, mqtt_port = _pick_port(web_port), _pick_port(mqtt_port)
    mqtt = {"host": "127.0.0.1", "port": mqtt_port}
    hub_conf = root / "hub.toml"
    hub_conf.write_text(
        _toml(
            {
                "database": {"url": f"sqlite:///{root / 'hub.db'}"},
                "mqtt": mqtt,
                "web": {"host": "127.0.0.1", "port": web_port},
            }
        )
    )
    click.echo("==> hub database migrations")
    click.echo(f"==> sample passes issued by the hub; camera replay frames in {root / 'samples'}")
    material = _hub_samples(hub_conf, root / "samples")
    admin_password, token_file = _demo_credentials(hub_conf, root)
    kiosk_conf = root / "kiosk.toml"
    kiosk_conf.write_text(
        _toml(
            {
                "kiosk_id": "kiosk-demo-001",
                "venue_id": "venue-demo-cho-ben-thanh",
                "mqtt": mqtt,
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

    stack = Stack(root)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        click.echo(f"==> broker (mosquitto) on 127.0.0.1:{mqtt_port}, data in {root / 'broker'}")
        broker = MosquittoProcess(root / "broker", port=mqtt_port)
        broker.write_config()
        stack.broker = broker.start()
        # The bridge publishes the hub's trust and status lists, retained: the kiosk gets them over MQTT.
        click.echo("==> hub bridge (also publishes the trust and status lists) and hub web")
        stack.spawn("bridge", "-m", "hub", "--config", str(hub_conf), "bridge")
        stack.spawn("web", "-m", "hub", "--config", str(hub_conf), "web")
        base = f"http://127.0.0.1:{web_port}"
        deadline = time.monotonic() + 30
        while _get_json(f"{base}/healthz") is None:
            stack.check()
            if time.monotonic() > deadline:
                raise click.ClickException(f"the hub web did not answer within 30 s; see {root / 'web.log'}")
            stop.wait(0.2)
        # The kiosk starts last so its first batches find the bridge subscribed (a kiosk that starts
        # first is fine too: it resends after its ack timeout).
        click.echo("==> kiosk kiosk-demo-001")
        stack.spawn("kiosk", "-m", "kiosk", "--config", str(kiosk_conf), "run")
        click.echo(
            "\nAnToan Check-in is running locally:\n"
            f"  Hub (trang chủ / home):          {base}/\n"
            f"  Declare, get a pass (khai báo):  {base}/khai-bao   (entrants: {base}/nhap-canh)\n"
            f"  Find a pass again (tìm thẻ):     {base}/tim-the\n"
            f"  Staff login (đăng nhập cán bộ):  {base}/login\n"
            f"                                   user {DEMO_ADMIN}, password {admin_password}\n"
            f'  Stats (JSON):                    curl -H "Authorization: Bearer $(cat {token_file})" '
            f"{base}/api/stats\n"
            f"  API description (OpenAPI):       {base}/api/openapi.json\n"
            f"  Health:                          {base}/healthz\n"
            f"  Broker (MQTT):                   127.0.0.1:{mqtt_port}\n"
            f"  Kiosk kiosk-demo-001 scans a replayed camera feed of {len(material.expected)} sample codes:\n"
            + "".join(
                f"      {label:<24} → {colour:<6}{_pass_note(material, label)}\n"
                for label, colour in material.expected
            )
            + f"  Logs and data:                   {root}\n"
            "  Stop: Ctrl-C (nhấn Ctrl-C để dừng)\n"
        )
        scans = _LogTail(root / "kiosk.log", marker="kiosk.app: scan: ")
        started = time.monotonic()
        next_report = started + 5  # the first report once the kiosk had time to sync
        while not stop.is_set():
            stack.check()
            now = time.monotonic()
            if duration is not None and now - started >= duration:
                break
            for line in scans.new_lines():
                click.echo(f"   kiosk: {line}")
            if now >= next_report:
                stats = _hub_stats(hub_conf)
                kiosks = {k["kiosk_id"]: k for k in stats.get("kiosks", [])}
                k = kiosks.get("kiosk-demo-001", {})
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
        click.echo("==> stopping")
        stack.stop()
        click.echo("==> stopped")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
