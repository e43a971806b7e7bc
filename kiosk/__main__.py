"""``antoan-kiosk``: run the kiosk, check its configuration, inspect its outbox."""

from __future__ import annotations

import json
import logging
import signal
import sys
from pathlib import Path

import click

from kiosk import config as kiosk_config
from protocol.settings import ConfigError


def _load(path: Path | None) -> kiosk_config.KioskConfig:
    try:
        return kiosk_config.load(path)
    except ConfigError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)


@click.group(invoke_without_command=True)
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path),
    envvar="ANTOAN_KIOSK_CONFIG",
    help="Kiosk configuration file (TOML). Also ANTOAN_KIOSK_CONFIG.",
)
@click.option("--validate-config", is_flag=True, help="Check the configuration, print the result and exit.")
@click.option("-v", "--verbose", is_flag=True, help="Log debug messages.")
@click.pass_context
def main(ctx: click.Context, config_path: Path | None, validate_config: bool, verbose: bool) -> None:
    """AnToan Check-in kiosk: records check-ins durably and syncs them to the hub."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    ctx.obj = config_path
    if validate_config:
        cfg = _load(config_path)
        click.echo(f"configuration OK: kiosk {cfg.kiosk_id} at venue {cfg.venue_id}")
        ctx.exit(0)
    if ctx.invoked_subcommand is None:
        click.echo(ctx.get_help())


@main.command()
@click.pass_obj
def run(config_path: Path | None) -> None:
    """Run the kiosk until SIGTERM or Ctrl-C."""
    from kiosk.app import KioskApp

    app = KioskApp(_load(config_path))
    signal.signal(signal.SIGTERM, lambda *_: app.request_stop())
    try:
        app.run()
    except KeyboardInterrupt:
        app.request_stop()


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
@click.pass_obj
def status(config_path: Path | None, as_json: bool) -> None:
    """Show the outbox: epoch, events held and events awaiting the hub's ack."""
    from kiosk.outbox import Outbox

    cfg = _load(config_path)
    if not cfg.outbox.path.exists():
        click.echo(f"error: no outbox at {cfg.outbox.path} (has this kiosk run yet?)", err=True)
        sys.exit(1)
    outbox = Outbox(cfg.outbox.path)
    try:
        info = {
            "kiosk_id": cfg.kiosk_id,
            "epoch": outbox.epoch,
            **outbox.counts(),
            "oldest_unacked_age_s": outbox.oldest_unacked_age(),
        }
    finally:
        outbox.close()
    if as_json:
        click.echo(json.dumps(info))
    else:
        for key, value in info.items():
            click.echo(f"{key}: {value}")


@main.command()
@click.option(
    "--bundle",
    type=click.Path(path_type=Path),
    help="Enrolment bundle: the folder holding enrol.json (e.g. /boot/antoan-enrol) or the file.",
)
@click.option("--qr", "qr_text", help="Or the text of a scanned enrolment QR code (ATE1:…).")
@click.option(
    "--camera",
    "camera_source",
    type=click.Choice(["picamera2", "opencv", "replay"]),
    help="Or scan the printed enrolment QR with this camera (first boot).",
)
@click.option("--camera-device", default="0", show_default=True, help="opencv: camera index or device path.")
@click.option(
    "--replay-path",
    type=click.Path(exists=True, path_type=Path),
    help="replay: a folder of images or a video to scan instead of a camera.",
)
@click.option(
    "--scan-timeout",
    type=click.FloatRange(min=1),
    default=300,
    show_default=True,
    help="Give up scanning for the enrolment QR after this many seconds.",
)
@click.option(
    "--identity-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("var/kiosk/identity"),
    show_default=True,
    help="Where the key (0600), certificate and CA are written.",
)
@click.pass_obj
def enrol(
    config_path: Path | None,
    bundle: Path | None,
    qr_text: str | None,
    camera_source: str | None,
    camera_device: str,
    replay_path: Path | None,
    scan_timeout: float,
    identity_dir: Path,
) -> None:
    """Enrol this kiosk with the hub (first boot): make a key, get it signed, write the configuration."""
    from kiosk import enrol as enrolment

    if sum(x is not None for x in (bundle, qr_text, camera_source)) != 1:
        raise click.UsageError("give one of --bundle DIR, --qr TEXT or --camera SOURCE")
    if config_path is None:
        raise click.UsageError("give --config PATH: the configuration file to write")
    try:
        if bundle is not None:
            data = enrolment.read_bundle(bundle)
        elif qr_text is not None:
            data = enrolment.parse_qr(qr_text)
        else:
            data = _scan_enrolment_qr(camera_source, camera_device, replay_path, scan_timeout)
        click.echo(f"contacting {data.hub_url} …")
        done = enrolment.enrol(data, identity_dir=identity_dir, config_path=config_path)
    except enrolment.EnrolError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(
        f"enrolled as {done.kiosk_id} at {done.venue_name} ({done.venue_id}); certificate valid until "
        f"{done.cert_not_after}; configuration written to {done.config_path}"
    )


def _scan_enrolment_qr(source_kind: str, device: str, replay_path: Path | None, timeout_s: float):
    """Open the camera (or replay folder) and wait for the printed enrolment QR."""
    from kiosk import enrol as enrolment
    from kiosk.scanner.decode import make_decoder
    from kiosk.scanner.sources import SourceError, make_source

    if source_kind == "replay" and replay_path is None:
        raise click.UsageError("--camera replay needs --replay-path")
    options: dict = {}
    if source_kind == "replay":
        options = {"path": replay_path}
    elif source_kind == "opencv":
        options = {"device": int(device) if device.isdigit() else device}
    click.echo("hold the printed enrolment QR code to the camera …")
    try:
        return enrolment.scan_enrolment_qr(
            make_source(source_kind, **options),
            make_decoder("layered"),
            timeout_s=timeout_s,
            on_other_code=lambda why: click.echo(f"  skipped a code: {why}", err=True),
        )
    except SourceError as exc:
        raise click.ClickException(str(exc)) from None


@main.command()
@click.option(
    "--days",
    type=click.FloatRange(min=0),
    default=None,
    help="Renew when the certificate expires within this many days [default: renewal.within_days, 30].",
)
@click.option("--force", is_flag=True, help="Renew now, however long the certificate has left.")
@click.pass_obj
def renew(config_path: Path | None, days: float | None, force: bool) -> None:
    """Renew this kiosk's certificate over its current identity when it is close to expiry.

    The running kiosk does this by itself (at start and daily); this command is for doing it now.
    """
    import datetime as dt

    from kiosk import enrol as enrolment

    cfg = _load(config_path)
    tls = cfg.mqtt.tls
    if tls is None or tls.cert_file is None or tls.key_file is None:
        raise click.ClickException("this kiosk has no certificate in its configuration: enrol it first")
    now = dt.datetime.now(dt.UTC)
    try:
        state = enrolment.read_state(tls.cert_file.parent)
        until = enrolment.renew(
            cert_file=tls.cert_file,
            key_file=tls.key_file,
            ca_file=tls.ca_file,
            hub_url=state["hub_url"],
            now=now,
            within_days=cfg.renewal.within_days if days is None else days,
            force=force,
        )
    except enrolment.EnrolError as exc:
        raise click.ClickException(str(exc)) from None
    if until is None:
        left = enrolment.days_left(tls.cert_file, now)
        click.echo(f"nothing to do: the certificate is valid for {left:.0f} more days")
    else:
        click.echo(
            f"certificate renewed; valid until {until} (a running kiosk reconnects with it at its next "
            "certificate check, or restart it)"
        )


if __name__ == "__main__":
    main()
