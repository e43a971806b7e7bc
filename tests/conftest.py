"""Shared fixtures: real mosquitto per test on a free loopback port (the secured TLS broker, and a plain
one where a test needs it); hub databases (SQLite, PostgreSQL)."""

from __future__ import annotations

import pytest

from protocol.settings import MqttSettings
from provisioning.broker import MosquittoProcess
from tests.db_fixtures import *  # noqa: F403  (db_url, hub_engine, hub_store)
from tests.tls_fixtures import identities, pki, secure_broker  # noqa: F401  (fixtures)


@pytest.fixture(autouse=True, scope="session")
def _cheap_password_hashes():
    """argon2id at its lowest cost for the whole session: the production profile (64 MiB, 3 passes) is
    meant to be slow, and the tests create and log in staff hundreds of times (it took two minutes of
    tests/hub). The hashes are still real argon2id, verified by the same code; processes the tests
    start (the demo, gunicorn) keep the production profile."""
    from argon2 import PasswordHasher

    import hub.accounts as accounts

    saved = accounts._HASHER, accounts._DUMMY_HASH
    accounts._HASHER = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
    accounts._DUMMY_HASH = accounts._HASHER.hash("not a password")
    yield
    accounts._HASHER, accounts._DUMMY_HASH = saved


# A plain broker (no TLS, anonymous) is kept for tests of hub parts that are not about the broker's
# security and that still connect without certificates: tests/hub/test_downlink.py (the retained list
# publisher). Every integration and provisioning test runs the secured broker (`secure_broker`,
# `identities`).
@pytest.fixture
def mosquitto(tmp_path):
    """A plain mosquitto of the test's own, with persistence, on a free loopback port."""
    broker = MosquittoProcess(tmp_path / "broker").start()
    yield broker
    broker.stop()


@pytest.fixture
def mqtt_settings(mosquitto) -> MqttSettings:
    """Plain-TCP settings for :func:`mosquitto` (see the comment above: not for integration tests)."""
    return MqttSettings(host=mosquitto.host, port=mosquitto.port, keepalive_s=5)
