"""The real hub web app over HTTPS on loopback (server certificate from the test's CA), in a thread:
what kiosks enrol and renew at."""

from __future__ import annotations

import dataclasses
import datetime as dt
import ssl
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from flask import Flask
from werkzeug.serving import make_server

from hub import devices
from hub.db import make_engine, migrate
from hub.db.store import HubStore
from hub.devices import EnrolmentSettings
from hub.web import create_app
from hub.web.api import ENROLMENT_EXTENSION
from provisioning.broker import MosquittoProcess
from tests.hub.staff_helpers import hub_config
from tests.tls_fixtures import Pki

#: The venues every test hub has.
VENUES = {"school-01": ("Trường THCS Lê Lợi", "school"), "market-02": ("Chợ Bến Thành", "market")}


@dataclass
class Hub:
    url: str
    db_url: str
    engine: object
    store: HubStore
    app: Flask

    @property
    def settings(self) -> EnrolmentSettings:
        return self.app.extensions[ENROLMENT_EXTENSION]

    def configure(self, **changes) -> None:
        """Change the hub's enrolment settings (``cert_days``, …) from the next request on."""
        self.app.extensions[ENROLMENT_EXTENSION] = dataclasses.replace(self.settings, **changes)

    def token(self, kiosk_id="kiosk-001", venue_id="school-01", **kw) -> str:
        with self.engine.begin() as conn:
            return devices.create_enrolment_token(
                conn,
                kiosk_id=kiosk_id,
                venue_id=venue_id,
                created_by="it",
                now=dt.datetime.now(dt.UTC),
                auto_approve=kw.pop("auto_approve", True),
                **kw,
            ).token

    def device(self, kiosk_id: str):
        """The kiosk's devices row (certificate serial, expiry, revocation)."""
        from sqlalchemy import select

        from hub.db.schema import devices as devices_table

        with self.engine.connect() as conn:
            return conn.execute(select(devices_table).where(devices_table.c.kiosk_id == kiosk_id)).first()


@contextmanager
def https_hub(
    folder: Path,
    pki: Pki,
    broker: MosquittoProcess,
    *,
    cert_days: int = devices.DEFAULT_CERT_DAYS,
    middleware: Callable | None = None,
) -> Iterator[Hub]:
    """Run the hub web app (SQLite in ``folder``) over HTTPS; ``middleware`` wraps its WSGI app."""
    url = f"sqlite:///{folder / 'hub.db'}"
    folder.mkdir(parents=True, exist_ok=True)
    engine = make_engine(url)
    migrate(engine)
    app = create_app(hub_config(url, secret_key="enrolment-test"), engine=engine)
    app.extensions[ENROLMENT_EXTENSION] = EnrolmentSettings(
        ca_dir=pki.ca.layout.root, broker_host=broker.host, broker_port=broker.port, cert_days=cert_days
    )
    if middleware is not None:
        app.wsgi_app = middleware(app.wsgi_app)
    with engine.begin() as conn:
        now = dt.datetime.now(dt.UTC)
        for venue_id, (name, kind) in VENUES.items():
            devices.add_venue(conn, venue_id=venue_id, name=name, venue_type=kind, now=now)
    pki.ca.issue_server_cert(dns_names=["localhost"], ip_addresses=["127.0.0.1"]).write(
        folder / "web.pem", folder / "web.key"
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(folder / "web.pem", folder / "web.key")
    server = make_server("127.0.0.1", 0, app, threaded=True, ssl_context=context)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Hub(f"https://127.0.0.1:{server.server_port}", url, engine, HubStore(engine), app)
    finally:
        server.shutdown()
        thread.join(10)
        engine.dispose()
