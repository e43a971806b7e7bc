"""Flask app factory for the hub: a blueprint per audience (public, auth, admin, api) and the health check."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from flask import Blueprint, Flask, jsonify, render_template, request
from flask_babel import force_locale, get_locale
from flask_babel import lazy_gettext as _l
from sqlalchemy import Engine, text
from werkzeug.middleware.proxy_fix import ProxyFix

from hub.config import HubConfig, load
from hub.db import make_engine, migrate
from hub.db.store import HubStore
from hub.identity import HubIdentity
from hub.presence import Presence
from hub.stored_secrets import hub_secret
from hub.web.extensions import (
    DEFAULT_LOCALE,
    babel,
    csrf,
    hub_web,
    limiter,
    login_manager,
    select_locale,
)
from protocol.settings import MqttSettings, probe_broker

log = logging.getLogger(__name__)

#: How long a broker probe result is reused, so a busy health check does not flood the broker.
BROKER_PROBE_TTL_S = 5.0

TRANSLATIONS_DIR = Path(__file__).resolve().parent / "translations"
#: gettext domains, one per part of the web app (each part keeps its own catalog).
TRANSLATION_DOMAINS = ("hub", "public", "admin")

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; "
        "form-action 'self'"
    ),
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
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


def _probe_settings(config: HubConfig) -> MqttSettings:
    """The broker connection /healthz probes with: ``web.broker_probe_tls`` when set, so the probe has its
    own identity (a broker that takes the client id from the certificate would otherwise let it take
    over the bridge's session), else ``mqtt`` as it is."""
    if config.web.broker_probe_tls is None:
        return config.mqtt
    return config.mqtt.model_copy(update={"tls": config.web.broker_probe_tls})


class HubWeb:
    """What the web app's views use, kept on ``app.extensions["antoan"]``."""

    def __init__(
        self,
        *,
        config: HubConfig,
        engine: Engine,
        store: HubStore,
        broker: BrokerHealth,
        identity: HubIdentity,
    ):
        self.config = config
        self.engine = engine
        self.store = store
        self.broker = broker
        self.identity = identity
        self._keyring = None
        self._keyring_lock = threading.Lock()
        self._tracing_jobs = None
        self._jobs_lock = threading.Lock()

    @property
    def keyring(self):
        """The hub's health-pass :class:`hub.keys.KeyRing` (made on first use)."""
        with self._keyring_lock:
            if self._keyring is None:
                from hub.keys import KeyRing

                self._keyring = KeyRing(self.engine, self.config.passes)
            return self._keyring

    @property
    def tracing_jobs(self):
        """The F2 worker (:class:`hub.cases.TracingJobs`), started on first use.

        Not at app creation: tests make many apps, and a worker thread (with its in-memory visit index)
        belongs only to an app that traces. Starting resumes the cases a restart left pending.
        """
        with self._jobs_lock:
            if self._tracing_jobs is None:
                from hub.cases import TracingJobs

                jobs = TracingJobs(self.engine, self.config.tracing)
                self._tracing_jobs = jobs.start()
            return self._tracing_jobs

    def close(self) -> None:
        """Stop the background work this app started (the F2 worker finishes its current job first)."""
        with self._jobs_lock:
            jobs, self._tracing_jobs = self._tracing_jobs, None
        if jobs is not None:
            jobs.stop()


def _one_line(exc: BaseException) -> str:
    first = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {first}"[:300]


health = Blueprint("health", __name__)


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


healthz.auth_kind = "public"  # type: ignore[attr-defined]


def _security_headers(response):
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    if response.mimetype == "text/html":
        # Pages can carry personal data: never cache them on shared machines.
        response.headers.setdefault("Cache-Control", "no-store")
    return response


def _error_page(code: int, title, message):
    """An error handler: JSON under /api (English), else the page in the visitor's language."""

    def handler(exc):
        if request.path.startswith("/api/") or request.accept_mimetypes.best == "application/json":
            with force_locale("en"):
                return jsonify(error=str(title), message=str(message)), code
        return render_template("error.html", code=code, title=title, message=message), code

    return handler


def create_app(config: HubConfig | None = None, *, engine: Engine | None = None) -> Flask:
    """Build the hub web app.

    ``config`` defaults to :func:`hub.config.load` (environment only). Without ``engine`` one is made
    from ``config.database.url`` and migrated; a given engine is used as it is.
    """
    from hub.web import admin, api, api_cases, api_venues, auth, cases, public

    if config is None:
        config = load()
    if engine is None:
        engine = make_engine(config.database.url)
        migrate(engine)
    app = Flask(__name__)
    secret = config.web.secret_key
    app.config.update(
        SECRET_KEY=secret.get_secret_value() if secret is not None else hub_secret(engine, "session_key"),
        PERMANENT_SESSION_LIFETIME=timedelta(minutes=config.web.session_minutes),
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=config.web.cookie_secure,
        SESSION_COOKIE_NAME="antoan_session",
        REMEMBER_COOKIE_DURATION=timedelta(0),
        WTF_CSRF_TIME_LIMIT=config.web.session_minutes * 60,
        MAX_CONTENT_LENGTH=256 * 1024,
        BABEL_DEFAULT_LOCALE=DEFAULT_LOCALE,
        BABEL_DEFAULT_TIMEZONE="Asia/Ho_Chi_Minh",
        BABEL_TRANSLATION_DIRECTORIES=";".join([str(TRANSLATIONS_DIR)] * len(TRANSLATION_DOMAINS)),
        BABEL_DOMAIN=";".join(TRANSLATION_DOMAINS),
        RATELIMIT_STORAGE_URI=config.web.rate_limit_storage,
        RATELIMIT_HEADERS_ENABLED=True,
    )
    app.json.ensure_ascii = False
    if config.web.trust_proxy:
        n = config.web.trust_proxy
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=n, x_proto=n, x_host=n)  # type: ignore[method-assign]
    identity = HubIdentity(engine)
    app.extensions["antoan"] = HubWeb(
        config=config,
        engine=engine,
        store=HubStore(engine, presence=Presence(identity, config.tracing)),
        broker=BrokerHealth(_probe_settings(config)),
        identity=identity,
    )
    babel.init_app(app, locale_selector=select_locale)
    csrf.init_app(app)
    limiter.init_app(app)
    login_manager.init_app(app)
    login_manager.login_view = "auth.login"
    login_manager.session_protection = "strong"

    app.register_blueprint(public.bp)
    app.register_blueprint(auth.bp)
    app.register_blueprint(admin.bp)
    app.register_blueprint(cases.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(api_cases.bp)
    app.register_blueprint(api_venues.bp)
    app.register_blueprint(health)
    csrf.exempt(api.bp)  # bearer tokens only: no cookie, so no cross-site request forgery
    csrf.exempt(api_cases.bp)
    app.before_request(auth.end_stale_sessions)
    app.after_request(_security_headers)
    app.register_error_handler(
        400, _error_page(400, _l("Bad request"), _l("The request could not be understood."))
    )
    app.register_error_handler(
        403, _error_page(403, _l("Forbidden"), _l("Your role may not open this page."))
    )
    app.register_error_handler(404, _error_page(404, _l("Not found"), _l("There is no such page.")))
    app.register_error_handler(
        405, _error_page(405, _l("Method not allowed"), _l("This address does not accept that request."))
    )
    app.register_error_handler(
        413, _error_page(413, _l("Too large"), _l("What you sent is larger than the hub accepts."))
    )
    app.register_error_handler(
        429,
        _error_page(
            429, _l("Too many requests"), _l("Too many attempts from your address; try again later.")
        ),
    )
    app.register_error_handler(
        500,
        _error_page(500, _l("Server error"), _l("Something went wrong on the hub; it has been logged.")),
    )
    app.jinja_env.globals["nav_url"] = _nav_url
    app.jinja_env.globals["get_locale"] = get_locale
    return app


def _nav_url(endpoint: str, **values) -> str | None:
    """``url_for`` for navigation links, or None when that part of the app is not installed."""
    from flask import current_app, url_for

    if endpoint not in current_app.view_functions:
        return None
    return url_for(endpoint, **values)
