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


if __name__ == "__main__":
    main()
