"""The ``antoan-hub`` command line: validate the config, migrate, and run the web app or the bridge."""

from __future__ import annotations

import json
import logging
import sys
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
@click.pass_context
def web(ctx: click.Context) -> None:
    """Migrate the database, then serve the hub web app (development server; use gunicorn in production)."""
    from hub.web.app import create_app

    config = _config(ctx)
    engine = _migrated_engine(config)
    app = create_app(config, engine=engine)
    click.echo(f"hub web app on http://{config.web.host}:{config.web.port}/")
    try:
        run_simple(config.web.host, config.web.port, app, threaded=True)
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {config.web.host}:{config.web.port}: {exc}") from None
    finally:
        engine.dispose()


@main.command()
@click.pass_context
def bridge(ctx: click.Context) -> None:
    """Run the MQTT bridge: ingest kiosk events into the database and acknowledge them."""
    from hub.broker_bridge.bridge import run_bridge

    run_bridge(_config(ctx))


@main.command()
@click.pass_context
def stats(ctx: click.Context) -> None:
    """Print ingest statistics (events stored, dead letters, kiosks) as JSON."""
    from hub.db.store import HubStore

    engine = _migrated_engine(_config(ctx))
    try:
        result = HubStore(engine).stats()
    except SQLAlchemyError as exc:
        raise _database_error(exc) from None
    finally:
        engine.dispose()
    click.echo(json.dumps(result, ensure_ascii=False, indent=2))


if __name__ == "__main__":
    sys.exit(main())
