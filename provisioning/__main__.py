"""``antoan-provision``: district IT's tool: the hub CA, broker configuration and the local trial stack."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import click

from provisioning.broker import BrokerError, render_plain_conf, revoke_kiosk, write_secure_broker
from provisioning.localstack import main as local_stack
from provisioning.pki import (
    DEFAULT_CRL_DAYS,
    DEFAULT_CRL_REFRESH_DAYS,
    DEFAULT_SERVICE_DAYS,
    DEFAULT_SERVICES,
    HubCA,
    PkiError,
)

#: The CA key's passphrase comes from the environment, never from the command line (``ps`` shows it).
PASSPHRASE_ENV = "ANTOAN_CA_PASSPHRASE"

_CA_DIR = click.option(
    "--ca-dir",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help=f"The hub CA folder (ca.pem, ca.key, crl.pem, issued/). Key passphrase from ${PASSPHRASE_ENV}.",
)


def _passphrase() -> bytes | None:
    value = os.environ.get(PASSPHRASE_ENV)
    return value.encode() if value else None


def _open_ca(ca_dir: Path) -> HubCA:
    try:
        return HubCA.open(ca_dir, passphrase=_passphrase())
    except PkiError as exc:
        raise click.ClickException(str(exc)) from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """AnToan Check-in provisioning for district IT."""


@main.group("ca")
def ca_group() -> None:
    """The hub's certificate authority (it signs the broker's and every kiosk's certificate)."""


@ca_group.command("init")
@_CA_DIR
@click.option("--name", default="AnToan Hub CA", show_default=True, help="The CA certificate's common name.")
@click.option(
    "--days", type=click.IntRange(1, 30 * 365), default=3650, show_default=True, help="CA validity."
)
def ca_init(ca_dir: Path, name: str, days: int) -> None:
    """Create a new CA in an empty folder and print its fingerprint (kiosks pin it)."""
    passphrase = _passphrase()
    try:
        ca = HubCA.init(ca_dir, common_name=name, days=days, passphrase=passphrase)
    except PkiError as exc:
        raise click.ClickException(str(exc)) from None
    encrypted = (
        "encrypted with $" + PASSPHRASE_ENV if passphrase else f"NOT encrypted (set ${PASSPHRASE_ENV})"
    )
    click.echo(f"CA created in {ca.layout.root}: key {ca.layout.ca_key} (0600, {encrypted})")
    click.echo(f"fingerprint (SHA-256): {ca.fingerprint}")


@ca_group.command("show")
@_CA_DIR
def ca_show(ca_dir: Path) -> None:
    """Print the CA's subject, validity, fingerprint and revocation count."""
    ca = _open_ca(ca_dir)
    click.echo(f"subject:     {ca.cert.subject.rfc4514_string()}")
    click.echo(f"valid until: {ca.cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC")
    click.echo(f"fingerprint: {ca.fingerprint}")
    click.echo(f"revoked:     {len(ca.revocations())} certificate(s); CRL {ca.layout.crl}")


@ca_group.command("refresh-crl")
@_CA_DIR
@click.option(
    "--within-days",
    type=click.FloatRange(min=0),
    default=DEFAULT_CRL_REFRESH_DAYS,
    show_default=True,
    help="Re-sign when the CRL's next update is this close (or already past).",
)
@click.option("--force", is_flag=True, help="Re-sign now, however long the CRL has left.")
@click.option(
    "--days",
    type=click.IntRange(1, 365),
    default=DEFAULT_CRL_DAYS,
    show_default=True,
    help="Validity of the new CRL.",
)
@click.option(
    "--broker-pid-file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="After re-signing, reload the broker with SIGHUP to the pid in this file.",
)
@click.option("--reload-command", help="Or reload it with this command, e.g. 'systemctl reload mosquitto'.")
def ca_refresh_crl(
    ca_dir: Path,
    within_days: float,
    force: bool,
    days: int,
    broker_pid_file: Path | None,
    reload_command: str | None,
) -> None:
    """Re-sign the revocation list before it expires: past its next update the broker refuses every kiosk.

    Run it daily (provisioning/systemd/antoan-crl-refresh.timer); it does nothing while the CRL has
    more than --within-days left.
    """
    import datetime as dt

    if broker_pid_file is not None and reload_command is not None:
        raise click.UsageError("give --broker-pid-file or --reload-command, not both")
    reload = _reloader(broker_pid_file, reload_command) if broker_pid_file or reload_command else None
    ca = _open_ca(ca_dir)
    try:
        done = ca.refresh_crl(within_days=within_days, force=force, days=days)
    except PkiError as exc:
        raise click.ClickException(str(exc)) from None
    until = f"{done.next_update:%Y-%m-%d %H:%M} UTC"
    if not done.refreshed:
        left = (done.next_update - dt.datetime.now(dt.UTC)).total_seconds() / 86400
        click.echo(f"CRL valid until {until} ({left:.0f} days left): nothing to do")
        return
    if reload is None:
        click.echo(f"CRL re-signed, valid until {until}; reload the broker (SIGHUP) so it reads the new one")
        return
    try:
        reload()
    except BrokerError as exc:
        raise click.ClickException(f"CRL re-signed, valid until {until}, but {exc}") from None
    click.echo(f"CRL re-signed, valid until {until}; broker reloaded")


@ca_group.command("service-cert")
@click.argument("name")
@_CA_DIR
@click.option(
    "--out-dir",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Folder for NAME.pem and NAME.key (0600).",
)
@click.option(
    "--days",
    type=click.IntRange(1, 825),
    default=DEFAULT_SERVICE_DAYS,
    show_default=True,
    help="Validity of a new certificate.",
)
@click.option(
    "--renew-within-days",
    type=click.FloatRange(min=0),
    default=30,
    show_default=True,
    help="Keep an existing certificate from this CA unless it expires within this many days.",
)
def ca_service_cert(name: str, ca_dir: Path, out_dir: Path, days: int, renew_within_days: float) -> None:
    """Issue hub service NAME (antoan-bridge, antoan-bridge-lists, antoan-web, …) its MQTT client
    certificate; safe to run at every start: a current one is kept."""
    import datetime as dt

    from cryptography import x509
    from cryptography.exceptions import InvalidSignature

    ca = _open_ca(ca_dir)
    cert_file, key_file = out_dir / f"{name}.pem", out_dir / f"{name}.key"
    now = dt.datetime.now(dt.UTC)
    try:
        current = x509.load_pem_x509_certificate(cert_file.read_bytes()) if key_file.exists() else None
        if current is not None:
            current.verify_directly_issued_by(ca.cert)  # a certificate of another (older) CA is replaced
    except (OSError, ValueError, TypeError, InvalidSignature):
        current = None
    if (
        current is not None
        and not ca.is_revoked(current.serial_number)
        and current.not_valid_after_utc - now > dt.timedelta(days=renew_within_days)
    ):
        click.echo(f"kept  {cert_file} (valid until {current.not_valid_after_utc:%Y-%m-%d} UTC)")
        return
    try:
        pair = ca.issue_client(name, days=days, service=True)
    except PkiError as exc:
        raise click.ClickException(str(exc)) from None
    pair.write(cert_file, key_file)
    click.echo(
        f"wrote {cert_file} and {key_file} (0600), valid until {pair.cert.not_valid_after_utc:%Y-%m-%d} UTC"
    )


@main.command("broker-config")
@click.option(
    "--tls", "tls", is_flag=True, help="Write the TLS configuration: a client certificate per kiosk."
)
@click.option(
    "--insecure",
    is_flag=True,
    help="Write the plain-TCP, no-authentication configuration instead (loopback trials only).",
)
@click.option(
    "--port", type=click.IntRange(1, 65535), help="Listener port [default: 8883 with --tls, else 1883]."
)
@click.option("--bind", help="Listener address [default: 0.0.0.0 with --tls, else 127.0.0.1].")
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("/var/lib/mosquitto"),
    show_default=True,
    help="Broker persistence folder.",
)
@click.option("-o", "--output", type=click.File("w"), default="-", help="--insecure: write here, not stdout.")
@click.option(
    "--ca-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help=f"--tls: the hub CA folder (from `ca init`); key passphrase from ${PASSPHRASE_ENV}.",
)
@click.option(
    "--out-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="--tls: folder for mosquitto.conf, acl, server.pem and server.key.",
)
@click.option(
    "--hostname",
    "hostnames",
    multiple=True,
    help="--tls: DNS name kiosks use for the broker (repeatable) [default: localhost].",
)
@click.option(
    "--ip",
    "ips",
    multiple=True,
    help="--tls: IP address kiosks use for the broker (repeatable) [default: 127.0.0.1].",
)
@click.option(
    "--service",
    "services",
    multiple=True,
    help="--tls: CN of a hub service with bridge rights (repeatable) [default: "
    + ", ".join(DEFAULT_SERVICES)
    + "].",
)
@click.option(
    "--insecure-listener-port",
    type=click.IntRange(1, 65535),
    help="--tls: also listen WITHOUT authentication on 127.0.0.1:PORT (local trials only).",
)
@click.option(
    "--broker-user",
    default=None,
    help="--tls: account mosquitto runs as when started by root; it must be able to read server.key.",
)
def broker_config(
    tls: bool,
    insecure: bool,
    port: int | None,
    bind: str | None,
    data_dir: Path,
    output,
    ca_dir: Path | None,
    out_dir: Path | None,
    hostnames: tuple[str, ...],
    ips: tuple[str, ...],
    services: tuple[str, ...],
    insecure_listener_port: int | None,
    broker_user: str | None,
) -> None:
    """Write a mosquitto configuration for the AnToan hub: --tls (the field) or --insecure (a trial)."""
    if tls == insecure:
        raise click.ClickException(
            "choose one: --tls --ca-dir DIR --out-dir DIR (kiosks with certificates) "
            "or --insecure (plain TCP without authentication, loopback trials only)"
        )
    if insecure:
        bind = bind or "127.0.0.1"
        if bind not in ("127.0.0.1", "::1", "localhost"):
            click.echo(f"warning: {bind} is not loopback; anyone who reaches it can publish", err=True)
        output.write(render_plain_conf(port=port or 1883, data_dir=data_dir, bind=bind))
        return
    if ca_dir is None or out_dir is None:
        raise click.ClickException("--tls needs --ca-dir (the hub CA folder) and --out-dir (where to write)")
    ca = _open_ca(ca_dir)
    try:
        files = write_secure_broker(
            out_dir,
            ca,
            port=port or 8883,
            bind=bind or "0.0.0.0",
            data_dir=data_dir,
            dns_names=hostnames or ("localhost",),
            ip_addresses=ips or ("127.0.0.1",),
            services=services or DEFAULT_SERVICES,
            insecure_listener_port=insecure_listener_port,
            user=broker_user,
        )
    except (PkiError, BrokerError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"wrote {files.conf}")
    click.echo(f"wrote {files.acl}")
    if files.server_cert_issued:
        note = _give_key_to(files.server_key, broker_user)
        click.echo(f"wrote {files.server_cert} and {files.server_key} ({note})")
    else:
        click.echo(f"kept  {files.server_cert} (delete it and server.key to issue a new one)")
    click.echo(
        f"uses  {ca.layout.ca_cert} and {ca.layout.crl} (reload the broker with SIGHUP after a revocation)"
    )
    if insecure_listener_port is not None:
        click.echo(
            f"warning: 127.0.0.1:{insecure_listener_port} accepts anyone without authentication", err=True
        )


def _give_key_to(key: Path, user: str | None) -> str:
    """As root, hand the broker's key to the account mosquitto drops to; say who can read it."""
    if user and os.geteuid() == 0 and user != "root":
        import pwd

        try:
            entry = pwd.getpwnam(user)
        except KeyError:
            raise click.ClickException(f"--broker-user {user}: no such account on this machine") from None
        os.chown(key, entry.pw_uid, entry.pw_gid)
        return f"0600, owned by {user}"
    return "0600: the broker's account must be able to read it"


def _broker_reload_options(pid_file_help: str):
    """--broker-host/--broker-port (where to drop a live session) and how to reload the broker."""
    options = [
        click.option(
            "--broker-host", default="127.0.0.1", show_default=True, help="The broker's TLS listener address."
        ),
        click.option(
            "--broker-port", type=click.IntRange(1, 65535), default=8883, show_default=True, help="Its port."
        ),
        click.option(
            "--broker-pid-file",
            type=click.Path(dir_okay=False, exists=True, path_type=Path),
            help=pid_file_help,
        ),
        click.option(
            "--reload-command", help="Or reload it with this command, e.g. 'systemctl reload mosquitto'."
        ),
    ]

    def apply(command):
        for option in reversed(options):
            command = option(command)
        return command

    return apply


def _reloader(pid_file: Path | None, command: str | None):
    if (pid_file is None) == (command is None):
        raise click.ClickException(
            "tell me how to reload the broker: --broker-pid-file FILE or --reload-command "
            "'systemctl reload mosquitto'"
        )
    if pid_file is not None:

        def by_signal() -> None:
            try:
                os.kill(int(pid_file.read_text().strip()), signal.SIGHUP)
            except (OSError, ValueError) as exc:
                raise BrokerError(f"cannot signal the broker from {pid_file}: {exc}") from None

        return by_signal

    def by_command() -> None:
        done = subprocess.run(shlex.split(command), capture_output=True, text=True)
        if done.returncode != 0:
            raise BrokerError(f"{command!r} failed ({done.returncode}): {done.stderr.strip()[:200]}")

    return by_command


@main.command("revoke")
@click.argument("kiosk_id")
@_CA_DIR
@click.option(
    "--reason",
    type=click.Choice(
        ["unspecified", "key-compromise", "affiliation-changed", "superseded", "cessation-of-operation"]
    ),
    default="unspecified",
    show_default=True,
    help="Revocation reason written in the CRL.",
)
@_broker_reload_options("Reload the broker with SIGHUP to the pid in this file.")
def revoke(
    kiosk_id: str,
    ca_dir: Path,
    reason: str,
    broker_host: str,
    broker_port: int,
    broker_pid_file: Path | None,
    reload_command: str | None,
) -> None:
    """Cut a kiosk off: revoke its certificates, reload the broker's CRL and drop its live session."""
    reload = _reloader(broker_pid_file, reload_command)
    ca = _open_ca(ca_dir)
    try:
        serials = revoke_kiosk(ca, kiosk_id, host=broker_host, port=broker_port, reload=reload, reason=reason)
    except (PkiError, BrokerError) as exc:
        raise click.ClickException(str(exc)) from None
    already = "" if serials else " (its certificates were already revoked)"
    click.echo(f"revoked {kiosk_id}{already}: {len(serials)} certificate(s); its connection was closed")


# --------------------------------------------------------------------- venues, kiosks and the fleet

_HUB_CONFIG = click.option(
    "--hub-config",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    envvar="ANTOAN_HUB_CONFIG",
    help="The hub's configuration file (its database URL; also ANTOAN_HUB__… variables).",
)
_HUB_CA_DIR = click.option(
    "--ca-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="The hub CA folder [default: the hub's enrolment setting, else var/hub/ca].",
)


class _Hub:
    """The hub database and CA folder the device commands act on."""

    def __init__(self, hub_config: Path | None, ca_dir: Path | None):
        from hub.config import load
        from hub.db import make_engine, migrate
        from hub.devices import enrolment_settings
        from protocol.settings import ConfigError

        try:
            self.config = load(hub_config)
        except ConfigError as exc:
            raise click.ClickException(str(exc).replace("\n", " ")) from None
        self.settings = enrolment_settings(self.config)
        self.ca_dir = ca_dir or self.settings.ca_dir
        try:
            self.engine = make_engine(self.config.database.url)
            migrate(self.engine)
        except Exception as exc:  # one clear line whatever the driver says
            first = (str(getattr(exc, "orig", None) or exc).strip().splitlines() or [type(exc).__name__])[0]
            raise click.ClickException(f"cannot open the hub database: {first}") from None

    def ca(self) -> HubCA:
        return _open_ca(self.ca_dir)

    def close(self) -> None:
        self.engine.dispose()


def _now():
    import datetime as dt

    return dt.datetime.now(dt.UTC)


def _duration(text: str):
    import datetime as dt

    units = {"m": "minutes", "h": "hours", "d": "days"}
    number, unit = text[:-1], text[-1:].lower()
    if unit not in units or not number.isdigit() or int(number) == 0:
        raise click.BadParameter("use a number and a unit: 30m, 12h or 7d")
    return dt.timedelta(**{units[unit]: int(number)})


def _device_call(action):
    from hub.devices import DeviceError

    try:
        return action()
    except (DeviceError, PkiError, BrokerError) as exc:
        raise click.ClickException(str(exc)) from None


@main.group("venue")
def venue_group() -> None:
    """Venues (schools, clinics, markets, …) that kiosks are enrolled at."""


@venue_group.command("add")
@click.argument("venue_id")
@click.option("--name", required=True, help="The venue's name as people know it.")
@click.option(
    "--type",
    "venue_type",
    type=click.Choice(["office", "hospital", "clinic", "school", "market", "hotel", "restaurant", "other"]),
    default="other",
    show_default=True,
    help="Kind of venue (it decides the daily checklist).",
)
@click.option("--province", help="Province or city.")
@click.option("--district", help="District.")
@click.option("--address", help="Street address.")
@_HUB_CONFIG
def venue_add(venue_id, name, venue_type, province, district, address, hub_config) -> None:
    """Add a venue VENUE_ID (3-64 lowercase letters, digits or dashes)."""
    from hub import devices

    hub = _Hub(hub_config, None)
    try:
        with hub.engine.begin() as conn:
            _device_call(
                lambda: devices.add_venue(
                    conn,
                    venue_id=venue_id,
                    name=name,
                    venue_type=venue_type,
                    province=province,
                    district=district,
                    address=address,
                    now=_now(),
                )
            )
    finally:
        hub.close()
    click.echo(f"venue {venue_id} added: {name}")


@main.group("kiosk")
def kiosk_group() -> None:
    """Enrol, approve and revoke kiosks."""


@kiosk_group.command("enrol")
@click.argument("kiosk_id")
@click.option("--venue", "venue_id", required=True, help="The venue the kiosk stands at (from `venue add`).")
@click.option("--ttl", default="7d", show_default=True, help="How long the token is valid: 30m, 12h, 7d.")
@click.option(
    "--auto-approve/--needs-approval",
    default=True,
    show_default=True,
    help="Approve the token now, or leave it for `kiosk approve` (an admin's second look).",
)
@click.option("--hub-url", help="The hub's HTTPS address the kiosk enrols at (needed for --bundle and --qr).")
@click.option(
    "--bundle",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write enrol.json into this folder (e.g. the Pi's boot partition).",
)
@click.option(
    "--qr",
    "qr_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write a printable QR code: FILE.png, FILE.pdf or FILE.svg.",
)
@click.option("--by", "created_by", default=None, help="Who creates the token [default: your login name].")
@_HUB_CONFIG
@_HUB_CA_DIR
def kiosk_enrol(
    kiosk_id, venue_id, ttl, auto_approve, hub_url, bundle, qr_file, created_by, hub_config, ca_dir
):
    """Create a single-use enrolment token for KIOSK_ID at a venue, as a bundle and/or a QR code."""
    import getpass
    import json

    from hub import devices
    from protocol.enrolment import BUNDLE_FILE, Bundle

    lifetime = _duration(ttl)
    if qr_file and qr_file.suffix.lower() not in (".png", ".pdf", ".svg"):
        raise click.UsageError("--qr must name a .png, .pdf or .svg file")
    if (bundle or qr_file) and not (hub_url and hub_url.startswith("https://")):
        raise click.ClickException("--bundle and --qr need --hub-url https://… (where the kiosk enrols)")
    hub = _Hub(hub_config, ca_dir)
    try:
        fingerprint = hub.ca().fingerprint.replace(":", "").lower()
        with hub.engine.begin() as conn:
            made = _device_call(
                lambda: devices.create_enrolment_token(
                    conn,
                    kiosk_id=kiosk_id,
                    venue_id=venue_id,
                    created_by=created_by or getpass.getuser(),
                    now=_now(),
                    ttl=lifetime,
                    auto_approve=auto_approve,
                )
            )
    finally:
        hub.close()
    state = "approved" if made.approved else "waiting for `antoan-provision kiosk approve`"
    click.echo(
        f"token for {kiosk_id} at {venue_id} ({state}), valid until {made.expires_at:%Y-%m-%d %H:%M} UTC"
    )
    payload = Bundle(hub_url or "", fingerprint, made.token, kiosk_id, venue_id)
    if bundle:
        bundle.mkdir(parents=True, exist_ok=True)
        from provisioning.pki import write_private

        # The token is a credential until it is spent: owner-only, like a key.
        write_private(bundle / BUNDLE_FILE, json.dumps(payload.to_json(), indent=1).encode())
        click.echo(f"wrote {bundle / BUNDLE_FILE}")
    if qr_file:
        import segno

        segno.make(payload.to_qr(), error="m").save(str(qr_file), scale=8, border=4)
        click.echo(f"wrote {qr_file} (print it; the kiosk scans it at first boot)")
    if not bundle and not qr_file:
        click.echo(f"token: {made.token}  (shown once)")
        click.echo(f"CA fingerprint: {fingerprint}")


@kiosk_group.command("approve")
@click.argument("kiosk_id")
@click.option("--by", "approved_by", default=None, help="Who approves [default: your login name].")
@_HUB_CONFIG
def kiosk_approve(kiosk_id, approved_by, hub_config) -> None:
    """Approve KIOSK_ID's waiting enrolment token(s)."""
    import getpass

    from hub import devices

    hub = _Hub(hub_config, None)
    try:
        with hub.engine.begin() as conn:
            count = _device_call(
                lambda: devices.approve(
                    conn, kiosk_id=kiosk_id, approved_by=approved_by or getpass.getuser(), now=_now()
                )
            )
    finally:
        hub.close()
    click.echo(f"approved {count} enrolment token(s) for {kiosk_id}")


@kiosk_group.command("revoke")
@click.argument("kiosk_id")
@click.option("--reason", default="revoked by district IT", show_default=True, help="Why (kept in the hub).")
@_broker_reload_options("Reload the broker with SIGHUP to this pid and drop the kiosk's live session.")
@_HUB_CONFIG
@_HUB_CA_DIR
def kiosk_revoke(
    kiosk_id, reason, broker_host, broker_port, broker_pid_file, reload_command, hub_config, ca_dir
) -> None:
    """Cut KIOSK_ID off: the hub refuses its events, its certificates go on the CRL and, with a
    broker reload option, its live connection is closed."""
    from hub import devices

    drop = None
    if broker_pid_file is not None or reload_command is not None:
        reload = _reloader(broker_pid_file, reload_command)

        def drop(ca, kiosk):
            click.echo(f"reloading the broker's CRL and closing {kiosk}'s session …")
            return revoke_kiosk(ca, kiosk, host=broker_host, port=broker_port, reload=reload)

    hub = _Hub(hub_config, ca_dir)
    try:
        ca = hub.ca()
        serials = _device_call(
            lambda: devices.revoke(
                hub.engine, kiosk_id=kiosk_id, reason=reason, ca=ca, now=_now(), drop_session=drop
            )
        )
    finally:
        hub.close()
    click.echo(f"revoked {kiosk_id}: {len(serials)} certificate(s) on the CRL; the hub refuses its events")
    if drop is None:
        click.echo(
            "warning: the broker was not reloaded; until it is, a connected kiosk stays connected "
            "(use --broker-pid-file or --reload-command)",
            err=True,
        )


@main.command("fleet")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@_HUB_CONFIG
def fleet(as_json: bool, hub_config) -> None:
    """Every kiosk: venue, online/offline, last seen, version, outbox, list ages, certificate expiry."""
    import json

    from hub import devices

    hub = _Hub(hub_config, None)
    try:
        with hub.engine.connect() as conn:
            rows = devices.fleet(conn)
    finally:
        hub.close()
    now = _now()
    if as_json:
        click.echo(
            json.dumps(
                [
                    {
                        "kiosk_id": r.kiosk_id,
                        "venue_id": r.venue_id,
                        "status": r.status,
                        "last_seen": r.last_seen.isoformat() if r.last_seen else None,
                        "version": r.version,
                        "outbox_depth": r.outbox_depth,
                        "oldest_unacked_age_s": r.oldest_unacked_age_s,
                        "list_ages": r.list_ages,
                        "cert_not_after": r.cert_not_after.isoformat() if r.cert_not_after else None,
                    }
                    for r in rows
                ]
            )
        )
        return
    header = ("KIOSK", "VENUE", "STATUS", "LAST SEEN", "VERSION", "OUTBOX", "OLDEST", "LISTS", "CERT DAYS")
    table = [header]
    for r in rows:
        lists = ",".join(f"{k}:{_age(v)}" for k, v in sorted(r.list_ages.items())) or "-"
        days = r.cert_days_left(now)
        table.append(
            (
                r.kiosk_id,
                r.venue_id or "-",
                r.status,
                f"{r.last_seen:%Y-%m-%d %H:%M}" if r.last_seen else "-",
                r.version or "-",
                "-" if r.outbox_depth is None else str(r.outbox_depth),
                _age(r.oldest_unacked_age_s),
                lists,
                "-" if days is None else f"{days:.0f}",
            )
        )
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    if len(table) == 1:
        click.echo("(no kiosks yet: `antoan-provision kiosk enrol`)")


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.0f}h"


main.add_command(local_stack, "local-stack")

if __name__ == "__main__":
    sys.exit(main())
