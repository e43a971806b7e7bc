"""The session key: configured, or made once and shared by every web worker and restart."""

from __future__ import annotations

import threading

from hub.config import HubConfig
from hub.db import make_engine, migrate
from hub.stored_secrets import hub_secret
from hub.web import create_app


def test_unconfigured_session_key_is_shared_by_every_app_on_the_database(db_url):
    config = HubConfig.model_validate({"database": {"url": db_url}})
    first, second = create_app(config), create_app(config)
    try:
        assert first.config["SECRET_KEY"] == second.config["SECRET_KEY"]
        assert len(first.config["SECRET_KEY"]) == 32
    finally:
        first.extensions["antoan"].engine.dispose()
        second.extensions["antoan"].engine.dispose()


def test_configured_session_key_wins(tmp_path):
    config = HubConfig.model_validate(
        {"database": {"url": f"sqlite:///{tmp_path / 'hub.db'}"}, "web": {"secret_key": "configured-key"}}
    )
    app = create_app(config)
    try:
        assert app.config["SECRET_KEY"] == "configured-key"
    finally:
        app.extensions["antoan"].engine.dispose()


def test_concurrent_first_use_makes_one_secret(db_url):
    engines = [make_engine(db_url) for _ in range(4)]
    migrate(engines[0])
    results: list[bytes] = []
    barrier = threading.Barrier(len(engines))

    def take(engine):
        barrier.wait()
        results.append(hub_secret(engine, "race"))

    threads = [threading.Thread(target=take, args=(e,)) for e in engines]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for engine in engines:
        engine.dispose()
    assert len(results) == 4 and len(set(results)) == 1
