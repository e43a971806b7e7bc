"""``antoan-provision``: district IT's tool. Today: broker configuration and the local trial stack."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from provisioning.broker import render_plain_conf
from provisioning.localstack import main as local_stack


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """AnToan Check-in provisioning for district IT."""


@main.command("broker-config")
@click.option("--port", type=click.IntRange(1, 65535), default=1883, show_default=True, help="Listener port.")
@click.option("--bind", default="127.0.0.1", show_default=True, help="Listener address.")
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("/var/lib/mosquitto"),
    show_default=True,
    help="Broker persistence folder.",
)
@click.option(
    "--insecure",
    is_flag=True,
    help="Required: write the plain-TCP, no-authentication configuration (loopback trials only).",
)
@click.option("-o", "--output", type=click.File("w"), default="-", help="Write here instead of stdout.")
def broker_config(port: int, bind: str, data_dir: Path, insecure: bool, output) -> None:
    """Write a mosquitto configuration for the AnToan hub."""
    if not insecure:
        raise click.ClickException(
            "only the insecure trial configuration exists in this version; pass --insecure to accept it "
            "(TLS with per-kiosk certificates comes with kiosk enrolment)"
        )
    if bind not in ("127.0.0.1", "::1", "localhost"):
        click.echo(f"warning: {bind} is not loopback; anyone who reaches it can publish", err=True)
    output.write(render_plain_conf(port=port, data_dir=data_dir, bind=bind))


main.add_command(local_stack, "local-stack")

if __name__ == "__main__":
    sys.exit(main())
