"""The ``antoan-hub`` command line: validate the config, migrate, and run the web app or the bridge."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.serving import run_simple

from hub.config import HubConfig, load
from protocol.settings import ConfigError

log = logging.getLogger(__name__)


def _configure_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not verbose:
        # Alembic announces every step at INFO; only its warnings matter in normal operation.
        logging.getLogger("alembic").setLevel(logging.WARNING)


def _config(ctx: click.Context) -> HubConfig:
    """Load the configuration once per invocation (lazily, so ``<command> --help`` never needs it)."""
    state = ctx.find_root().ensure_object(dict)
    if "config" not in state:
        try:
            state["config"] = load(state.get("config_path"))
        except ConfigError as exc:
            raise click.ClickException(str(exc)) from None
    return state["config"]


def _database_error(exc: SQLAlchemyError) -> click.ClickException:
    cause = getattr(exc, "orig", None) or exc
    first = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
    return click.ClickException(f"database error: {first} (check database.url and that the server is up)")


def _migrated_engine(config: HubConfig):
    from hub.db import make_engine, migrate

    engine = make_engine(config.database.url)
    try:
        migrate(engine)
    except SQLAlchemyError as exc:
        engine.dispose()
        raise _database_error(exc) from None
    return engine


@contextmanager
def _database(config: HubConfig, *refused: type[Exception]) -> Iterator:
    """A migrated engine for one command, disposed after; ``refused`` errors and database errors exit."""
    engine = _migrated_engine(config)
    try:
        yield engine
    except refused as exc:
        raise click.ClickException(str(exc)) from None
    except SQLAlchemyError as exc:
        raise _database_error(exc) from None
    finally:
        engine.dispose()


@click.group(invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="ANTOAN_HUB_CONFIG",
    help="Hub configuration file (TOML). Also ANTOAN_HUB_CONFIG; ANTOAN_HUB__SECTION__FIELD variables win.",
)
@click.option("--validate-config", is_flag=True, help="Check the configuration, print the result and exit.")
@click.option("-v", "--verbose", is_flag=True, help="Log debug messages.")
@click.pass_context
def main(ctx: click.Context, config_path: Path | None, validate_config: bool, verbose: bool) -> None:
    """AnToan Check-in hub: database migrations, the web app and the MQTT bridge."""
    _configure_logging(verbose)
    ctx.ensure_object(dict)["config_path"] = config_path
    if validate_config:
        try:
            ctx.obj["config"] = load(config_path)
        except ConfigError as exc:
            click.echo(str(exc), err=True)
            ctx.exit(2)
        click.echo("configuration OK")
        ctx.exit(0)
    if ctx.invoked_subcommand is None:
        click.echo(ctx.get_help())


@main.command()
@click.pass_context
def migrate(ctx: click.Context) -> None:
    """Upgrade the database to the newest schema and print its revision."""
    from hub.db import current_revision

    config = _config(ctx)
    engine = _migrated_engine(config)
    try:
        revision = current_revision(engine)
    finally:
        engine.dispose()
    click.echo(f"database {engine.url.render_as_string(hide_password=True)} is at revision {revision}")


@main.command()
@click.option(
    "--tls-cert",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Serve HTTPS with this certificate (PEM); default web.tls_cert.",
)
@click.option(
    "--tls-key",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="The certificate's private key (PEM); default web.tls_key.",
)
@click.pass_context
def web(ctx: click.Context, tls_cert: Path | None, tls_key: Path | None) -> None:
    """Migrate the database, then serve the hub web app (development server; use gunicorn in production)."""
    from hub.web.app import create_app

    config = _config(ctx)
    if (tls_cert is None) != (tls_key is None):
        raise click.UsageError("give --tls-cert and --tls-key together")
    cert, key = (tls_cert, tls_key) if tls_cert else (config.web.tls_cert, config.web.tls_key)
    ssl_context = None
    if cert is not None:
        import ssl

        ssl_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ssl_context.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            ssl_context.load_cert_chain(cert, key)
        except (OSError, ssl.SSLError) as exc:
            raise click.ClickException(f"cannot use {cert} with {key} for HTTPS: {exc}") from None
    engine = _migrated_engine(config)
    app = create_app(config, engine=engine)
    scheme = "https" if ssl_context else "http"
    click.echo(f"hub web app on {scheme}://{config.web.host}:{config.web.port}/")
    try:
        run_simple(config.web.host, config.web.port, app, threaded=True, ssl_context=ssl_context)
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {config.web.host}:{config.web.port}: {exc}") from None
    finally:
        engine.dispose()


@main.command()
@click.pass_context
def bridge(ctx: click.Context) -> None:
    """Run the MQTT bridge: ingest kiosk events into the database and acknowledge them."""
    from hub.broker_bridge.bridge import run_bridge
    from hub.keys import KeyRingError

    try:
        run_bridge(_config(ctx))
    except KeyRingError as exc:
        raise click.ClickException(str(exc)) from None


@main.command()
@click.pass_context
def stats(ctx: click.Context) -> None:
    """Print ingest statistics (events stored, dead letters, kiosks) as JSON."""
    from hub.db.store import HubStore

    with _database(_config(ctx)) as engine:
        result = HubStore(engine).stats()
    click.echo(json.dumps(result, ensure_ascii=False, indent=2))


@main.group()
def keys() -> None:
    """Health-pass signing keys: list them, rotate the active key."""


@keys.command("list")
@click.pass_context
def keys_list(ctx: click.Context) -> None:
    """Show every signing key: kid, algorithm, created, retired, trusted until, passes signed."""
    from hub.keys import KeyRing, format_time

    config = _config(ctx)
    with _database(config) as engine:
        found = KeyRing(engine, config.passes).list_keys()
    if not found:
        click.echo("no signing keys yet: the bridge creates one at start, or the first pass issued does")
        return
    click.echo(f"{'kid':<16}  {'alg':<5}  {'created':<17}  {'retired':<17}  {'trusted until':<17}  passes")
    for key in found:
        until = "while active" if key.active else format_time(key.trusted_until)
        click.echo(
            f"{key.kid:<16}  {key.alg:<5}  {format_time(key.created_at):<17}  "
            f"{format_time(key.retired_at):<17}  {until:<17}  {key.passes_signed}"
        )


@keys.command("rotate")
@click.pass_context
def keys_rotate(ctx: click.Context) -> None:
    """Make a new active signing key; the old one stays trusted until the passes it signed expire."""
    from datetime import UTC, datetime

    from hub.keys import KeyRing, KeyRingError, format_time

    config = _config(ctx)
    with _database(config, KeyRingError) as engine:
        ring = KeyRing(engine, config.passes)
        kid = ring.rotate(datetime.now(UTC))
        retired = [k for k in ring.list_keys() if not k.active and k.kid != kid]
    click.echo(f"new signing key {kid} is active; the bridge publishes the new trust list to the kiosks")
    for key in retired[-1:]:
        click.echo(f"key {key.kid} retired, trusted until {format_time(key.trusted_until)}")


@main.command()
@click.option("--dry-run", is_flag=True, help="Count what is past retention without deleting anything.")
@click.option(
    "--batch-size",
    type=click.IntRange(1, 100_000),
    default=500,
    show_default=True,
    help="Rows per transaction.",
)
@click.pass_context
def purge(ctx: click.Context, dry_run: bool, batch_size: int) -> None:
    """Delete declarations, passes and audit entries older than the [retention] settings allow."""
    from datetime import UTC, datetime

    from hub.retention import purge as run_purge

    config = _config(ctx)

    def progress(part: str, report) -> None:
        click.echo(
            f"batch {report.batches}: {report.declarations} declarations, {report.passes} passes, "
            f"{report.pass_status} status entries, {report.audit_entries} audit entries so far",
            err=True,
        )

    with _database(config) as engine:
        report = run_purge(
            engine,
            config.retention,
            datetime.now(UTC),
            dry_run=dry_run,
            batch_size=batch_size,
            progress=progress,
        )
    verb = "would remove" if dry_run else "removed"
    click.echo(
        f"{verb}: {report.declarations} declarations "
        f"(created before {report.declaration_cutoff:%Y-%m-%d %H:%M}Z), "
        f"{report.passes} passes, {report.pass_status} status entries, "
        f"{report.audit_entries} audit entries (before {report.audit_cutoff:%Y-%m-%d %H:%M}Z)"
    )


@main.command()
@click.option("--once", is_flag=True, help="Queue and send what is due now, print the counts and exit.")
@click.pass_context
def notify(ctx: click.Context, once: bool) -> None:
    """Notify the contacts of open cases through the webhook (notify.webhook_url), once each.

    Runs until SIGTERM or Ctrl-C (the bridge runs the same loop when notify.webhook_url is set; running
    both is safe: a notice is claimed by one sender only). Large batches wait for an official's release.
    """
    import signal
    import threading

    from hub.notify import Notifier, NotifyError

    config = _config(ctx)
    if config.notify.webhook_url is None:
        raise click.ClickException(
            "notifications are off: set notify.webhook_url and ANTOAN_HUB__NOTIFY__WEBHOOK_SECRET(_FILE)"
        )
    stop = threading.Event()
    with _database(config, NotifyError) as engine:
        notifier = Notifier(engine, config.notify, stop_event=stop)
        if once:
            queued, sent = notifier.run_once()
            click.echo(
                json.dumps(
                    {"queued": queued.total, "held": sum(queued.held.values()), **sent.as_dict()},
                    ensure_ascii=False,
                )
            )
            return
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        click.echo(f"notifier running every {config.notify.interval_s:g} s; Ctrl-C stops it", err=True)
        notifier.start()
        try:
            stop.wait()
        except KeyboardInterrupt:
            pass
        finally:
            notifier.stop()


# --------------------------------------------------------------------- staff accounts and API tokens

#: The values of hub.accounts.Role, spelled out so the CLI loads without argon2 (tests check they match).
ROLE_NAMES = ("admin", "health_official", "district_it", "venue_manager")


def _read_password(password_file: Path | None) -> str:
    """The new password: the first line of ``password_file`` (``-``: standard input), else asked twice."""
    if password_file is None:
        return click.prompt("Password", hide_input=True, confirmation_prompt=True)
    try:
        text = sys.stdin.read() if str(password_file) == "-" else password_file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise click.ClickException(f"cannot read the password file {password_file}: {exc}") from None
    lines = text.splitlines()
    return lines[0] if lines else ""


@main.command("create-admin")
@click.argument("username")
@click.option("--display-name", default="", help="Name shown on the staff pages (default: the username).")
@click.option(
    "--password-file",
    type=click.Path(dir_okay=False, allow_dash=True, path_type=Path),
    help="Read the password from the first line of this file ('-': standard input) instead of asking; "
    "for scripts and containers, e.g. --password-file /run/secrets/hub_admin_password.",
)
@click.pass_context
def create_admin(ctx: click.Context, username: str, display_name: str, password_file: Path | None) -> None:
    """Create an admin account; the password is asked twice, or read with --password-file.

    Non-interactive use: antoan-hub create-admin alice --password-file /run/secrets/hub_admin_password
    (or: printf '%s\\n' "$PASSWORD" | antoan-hub create-admin alice --password-file -).
    """
    from hub import accounts

    password = _read_password(password_file)
    try:
        accounts.check_password_policy(password)
    except accounts.AccountError as exc:
        raise click.ClickException(f"weak password refused: {exc}") from None
    with _database(_config(ctx), accounts.AccountError) as engine, engine.begin() as conn:
        user = accounts.create_user(
            conn,
            username=username,
            display_name=display_name,
            role=accounts.Role.ADMIN,
            password=password,
        )
    click.echo(f"admin {user.username} created (id {user.id}); log in at /login")


@main.group()
def users() -> None:
    """Staff accounts (the first admin comes from create-admin; manage the others on /admin/users)."""


@users.command("list")
@click.pass_context
def users_list(ctx: click.Context) -> None:
    """Show every staff account: id, username, role, active or not, last login, display name."""
    from hub import accounts

    with _database(_config(ctx)) as engine, engine.connect() as conn:
        found = accounts.list_users(conn)
    if not found:
        click.echo("no staff accounts yet: create the first with 'antoan-hub create-admin USERNAME'")
        return
    click.echo(
        f"{'id':>5}  {'username':<20}  {'role':<15}  {'active':<6}  {'last login (UTC)':<16}  display name"
    )
    for user in found:
        last = f"{user.last_login_at:%Y-%m-%d %H:%M}" if user.last_login_at else "never"
        click.echo(
            f"{user.id:>5}  {user.username:<20}  {user.role.value:<15}  {'yes' if user.active else 'no':<6}  "
            f"{last:<16}  {user.display_name}"
        )


@main.group("api-token")
def api_token() -> None:
    """Bearer tokens for the JSON API under /api (machines: provisioning, tracing, monitoring)."""


@api_token.command("create")
@click.option("--name", required=True, help="What uses the token, e.g. 'provisioning laptop, district 3'.")
@click.option("--role", type=click.Choice(ROLE_NAMES), required=True, help="The role the token acts with.")
@click.option(
    "--expires-days",
    type=click.IntRange(1, 3650),
    default=None,
    help="Expire after this many days (default: never).",
)
@click.pass_context
def api_token_create(ctx: click.Context, name: str, role: str, expires_days: int | None) -> None:
    """Create a token and print it once on standard output (only its SHA-256 is stored)."""
    from datetime import UTC, datetime, timedelta

    from hub import accounts

    expires_at = datetime.now(UTC) + timedelta(days=expires_days) if expires_days else None
    with _database(_config(ctx), accounts.AccountError) as engine, engine.begin() as conn:
        token_id, token = accounts.create_api_token(
            conn, name=name, role=role, created_by=None, expires_at=expires_at
        )
    until = f"until {expires_at:%Y-%m-%d %H:%M}Z" if expires_at else "without expiry"
    click.echo(
        f"API token {token_id} ({role}) valid {until}; it is shown only now, store it safely:", err=True
    )
    click.echo(token)


@api_token.command("revoke")
@click.argument("token_id", type=int)
@click.pass_context
def api_token_revoke(ctx: click.Context, token_id: int) -> None:
    """Revoke the token with this id at once (ids are shown by create and on /admin/tokens)."""
    from hub import accounts

    with _database(_config(ctx), accounts.AccountError) as engine, engine.begin() as conn:
        accounts.revoke_api_token(conn, token_id)
    click.echo(f"API token {token_id} revoked")


if __name__ == "__main__":
    sys.exit(main())
