"""Shared fixtures: a real mosquitto per test on a free loopback port; hub databases (SQLite, PostgreSQL)."""

from __future__ import annotations

import pytest

from protocol.settings import MqttSettings
from provisioning.broker import MosquittoProcess
from tests.db_fixtures import *  # noqa: F403  (db_url, hub_engine, hub_store)


@pytest.fixture
def mosquitto(tmp_path):
    """A mosquitto of the test's own, with persistence, on a free loopback port."""
    broker = MosquittoProcess(tmp_path / "broker").start()
    yield broker
    broker.stop()


@pytest.fixture
def mqtt_settings(mosquitto) -> MqttSettings:
    return MqttSettings(host=mosquitto.host, port=mosquitto.port, keepalive_s=5)
