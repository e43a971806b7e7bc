"""Flask app factory for the hub: the dashboard page, the stats API and the health check."""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from flask import Blueprint, Flask, current_app, jsonify, render_template
from sqlalchemy import Engine, text

from hub.config import HubConfig, load
from hub.db import make_engine, migrate
from hub.db.store import HubStore
from protocol.settings import MqttSettings, probe_broker

log = logging.getLogger(__name__)

#: How long a broker probe result is reused, so a busy health check does not flood the broker.
BROKER_PROBE_TTL_S = 5.0

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": (
        "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
}


class BrokerHealth:
    """Probes the MQTT broker at most once per ``ttl_s`` and remembers the answer."""

    def __init__(
        self,
        settings: MqttSettings,
        *,
        ttl_s: float = BROKER_PROBE_TTL_S,
        probe: Callable[..., str | None] = probe_broker,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._settings = settings
        self._ttl_s = ttl_s
        self._probe = probe
        self._clock = clock
        self._lock = threading.Lock()
        self._checked_at: float | None = None
        self._result: str | None = None

    def check(self) -> str | None:
        """None when the broker accepted a connection recently, else the reason it did not."""
        with self._lock:
            now = self._clock()
            if self._checked_at is None or now - self._checked_at >= self._ttl_s:
                try:
                    self._result = self._probe(self._settings, timeout_s=2)
                except Exception as exc:  # a probe failure is a health answer, not a server error
                    self._result = f"probe failed: {type(exc).__name__}: {exc}"
                self._checked_at = self._clock()
                if self._result is not None:
                    log.warning("broker health check failed: %s", self._result)
            return self._result


@dataclass(frozen=True, slots=True)
class HubWeb:
    """What the web app's views use, kept on ``app.extensions["antoan"]``."""

    config: HubConfig
    engine: Engine
    store: HubStore
    broker: BrokerHealth


def hub_web() -> HubWeb:
    """The :class:`HubWeb` of the current app."""
    return current_app.extensions["antoan"]


def _one_line(exc: BaseException) -> str:
    first = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {first}"[:300]


public = Blueprint("public", __name__)
api = Blueprint("api", __name__, url_prefix="/api")
health = Blueprint("health", __name__)


@public.get("/")
def dashboard():
    """The hub dashboard: events stored, dead letters and every kiosk's state (refreshes itself)."""
    return render_template("dashboard.html", stats=hub_web().store.stats())


@api.get("/stats")
def stats():
    """Ingest statistics as JSON."""
    return jsonify(hub_web().store.stats())


@health.get("/healthz")
def healthz():
    """Database and broker reachability: 200 when both answer, 503 with the reasons otherwise."""
    web = hub_web()
    try:
        with web.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        database = "ok"
    except Exception as exc:  # any failure is reported, not raised: this is the health endpoint
        database = _one_line(exc)
        log.warning("database health check failed: %s", database)
    broker = web.broker.check() or "ok"
    body = {"database": database, "broker": broker}
    return jsonify(body), 200 if database == broker == "ok" else 503


def _security_headers(response):
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def create_app(config: HubConfig | None = None, *, engine: Engine | None = None) -> Flask:
    """Build the hub web app.

    ``config`` defaults to :func:`hub.config.load` (environment only). Without ``engine`` one is made
    from ``config.database.url`` and migrated; a given engine is used as it is.
    """
    if config is None:
        config = load()
    if engine is None:
        engine = make_engine(config.database.url)
        migrate(engine)
    app = Flask(__name__)
    secret = config.web.secret_key
    app.config["SECRET_KEY"] = secret.get_secret_value() if secret is not None else secrets.token_hex(32)
    app.json.ensure_ascii = False
    app.extensions["antoan"] = HubWeb(
        config=config, engine=engine, store=HubStore(engine), broker=BrokerHealth(config.mqtt)
    )
    app.register_blueprint(public)
    app.register_blueprint(api)
    app.register_blueprint(health)
    app.after_request(_security_headers)
    return app
