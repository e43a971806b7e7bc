"""Downlink lists on the kiosk: newest wins, cached across restarts, malformed ones ignored."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from kiosk.lists import DownlinkLists
from protocol import topics
from protocol.healthpass import Colour, SigningKey, StatusList, TrustList

NOW = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)


def _trust(version: int) -> bytes:
    key = SigningKey.generate("EdDSA")
    return TrustList(
        keys={key.kid: key.trusted(NOW, NOW + timedelta(days=1))}, version=version, issued_at=NOW
    ).to_json()


def test_a_newer_list_replaces_an_older_one_and_an_older_is_ignored(tmp_path):
    lists = DownlinkLists(tmp_path)
    assert lists.handle(topics.BROADCAST_TRUST, _trust(2))
    assert not lists.handle(topics.BROADCAST_TRUST, _trust(1))
    assert lists.trust.version == 2


def test_lists_survive_a_restart_through_the_cache(tmp_path):
    first = DownlinkLists(tmp_path)
    first.handle(topics.BROADCAST_TRUST, _trust(3))
    first.handle(
        topics.BROADCAST_STATUS, StatusList(version=7, issued_at=NOW, colours={"P-1": Colour.RED}).to_json()
    )
    again = DownlinkLists(tmp_path)
    again.load_cached()
    assert (again.trust.version, again.status.version) == (3, 7)
    assert again.status.colour_for("P-1") == Colour.RED


def test_malformed_lists_and_other_topics_change_nothing(tmp_path):
    lists = DownlinkLists(tmp_path)
    assert not lists.handle(topics.BROADCAST_TRUST, b"{broken")
    assert not lists.handle(topics.BROADCAST_STATUS, b"")
    assert not lists.handle("antoan/v1/kiosk/kiosk-001/config", _trust(1))
    assert lists.trust is None
    (tmp_path / "trust.json").write_bytes(b"garbage")
    lists.load_cached()  # a damaged cache is skipped, not fatal
    assert lists.trust is None


def test_ages_count_from_the_hub_issue_time(tmp_path):
    lists = DownlinkLists(tmp_path, clock=lambda: (NOW + timedelta(minutes=10)).timestamp())
    assert lists.ages_s() == {"trust": None, "status": None}
    lists.handle(topics.BROADCAST_TRUST, _trust(1))
    assert lists.ages_s()["trust"] == 600
