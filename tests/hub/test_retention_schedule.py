"""The bridge process purges on ``retention.purge_interval_s`` (and not at all when it is 0)."""

from __future__ import annotations

import threading

from sqlalchemy import func, select

from hub.broker_bridge import bridge
from hub.config import HubConfig
from hub.db.schema import audit_log
from tests.helpers import wait_for


def _purges(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(
            select(func.count()).select_from(audit_log).where(audit_log.c.action.like("%purge%"))
        ).scalar_one()


def test_the_schedule_purges_repeatedly_until_stopped(hub_engine, monkeypatch):
    monkeypatch.setattr(bridge, "PURGE_FIRST_DELAY_S", 0.05)
    config = HubConfig.model_validate({"retention": {"purge_interval_s": 1}})
    stop = threading.Event()
    worker = threading.Thread(target=bridge._purge_on_schedule, args=(hub_engine, config, stop))
    worker.start()
    try:
        wait_for(lambda: _purges(hub_engine) >= 2, timeout_s=30, what="two scheduled purges")
    finally:
        stop.set()
        worker.join(timeout=30)
    assert not worker.is_alive()


def test_interval_zero_turns_the_schedule_off(hub_engine):
    config = HubConfig.model_validate({"retention": {"purge_interval_s": 0}})
    stop = threading.Event()
    bridge._purge_on_schedule(hub_engine, config, stop)  # returns at once: no loop
    assert _purges(hub_engine) == 0
