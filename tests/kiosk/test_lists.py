"""Downlink lists on the kiosk: newest wins, status shards in any order, cached across restarts, malformed
ones ignored."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from kiosk.lists import DownlinkLists
from protocol import topics
from protocol.healthpass import CROCKFORD, Colour, SigningKey, StatusList, TrustList

NOW = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
#: One pass per shard, so every shard carries an entry.
LISTED = {f"{c}00000000{c}": Colour.RED if i % 2 else Colour.YELLOW for i, c in enumerate(CROCKFORD)}


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


def _shards(version: int, colours=LISTED, issued_at: datetime = NOW) -> list[tuple[str, bytes]]:
    """The (topic, payload) messages the hub's bridge publishes for one status list version."""
    listed = StatusList(version=version, issued_at=issued_at, colours=colours)
    return [(topics.status_shard(shard.shard), shard.to_json()) for shard in listed.shards()]


def test_status_shards_in_any_order_make_the_list_and_an_older_shard_is_ignored(tmp_path):
    lists = DownlinkLists(tmp_path)
    messages = _shards(5)
    for topic, payload in reversed(messages[1:]):
        assert lists.handle(topic, payload)
    assert (lists.status.held, lists.status.complete, lists.status.version) == (31, False, 5)
    assert lists.status.colour_for("0000000000") is None  # shard 0 not received yet: no listed colour
    assert lists.handle(*messages[0])
    assert lists.status.complete and len(lists.status) == 32
    assert all(lists.status.colour_for(pid) == colour for pid, colour in LISTED.items())

    topic, older = _shards(4, colours={})[7]
    assert not lists.handle(topic, older)
    assert lists.status.colour_for("7000000007") == Colour.RED
    # A newer version takes over shard by shard; the list is as new as its oldest shard.
    assert lists.handle(*_shards(6, colours={})[7])
    assert (lists.status.colour_for("7000000007"), lists.status.version) == (None, 5)


def test_a_shard_on_another_shards_topic_is_ignored(tmp_path):
    lists = DownlinkLists(tmp_path)
    payload = dict(_shards(3))[topics.status_shard("A")]
    assert not lists.handle(topics.status_shard("B"), payload)
    assert lists.status.held == 0 and not (tmp_path / "status-B.json").exists()


def test_lists_survive_a_restart_through_the_cache(tmp_path):
    first = DownlinkLists(tmp_path)
    first.handle(topics.BROADCAST_TRUST, _trust(3))
    for topic, payload in _shards(7)[:20]:
        first.handle(topic, payload)
    assert sorted(p.name for p in tmp_path.glob("status-*.json")) == sorted(
        f"status-{c}.json" for c in CROCKFORD[:20]
    )
    again = DownlinkLists(tmp_path)
    again.load_cached()
    assert (again.trust.version, again.status.version, again.status.held) == (3, 7, 20)
    assert again.status.colour_for("1000000001") == Colour.RED
    assert again.status.colour_for("Z00000000Z") is None  # never received before the restart


def test_malformed_lists_and_other_topics_change_nothing(tmp_path):
    lists = DownlinkLists(tmp_path)
    assert not lists.handle(topics.BROADCAST_TRUST, b"{broken")
    assert not lists.handle(topics.status_shard("0"), b"")
    assert not lists.handle(topics.status_shard("0"), b'{"v":1}')
    assert not lists.handle("antoan/v1/broadcast/status", _shards(1)[0][1])  # not a shard topic
    assert not lists.handle("antoan/v1/kiosk/kiosk-001/config", _trust(1))
    assert lists.trust is None and lists.status.held == 0
    (tmp_path / "trust.json").write_bytes(b"garbage")
    (tmp_path / "status-0.json").write_bytes(b"garbage")
    (tmp_path / "status-1.json").write_bytes(_shards(1)[2][1])  # shard 2 in shard 1's file
    lists.load_cached()  # a damaged cache is skipped, not fatal
    assert lists.trust is None and lists.status.held == 0


def test_ages_count_from_the_hub_issue_time(tmp_path):
    lists = DownlinkLists(tmp_path, clock=lambda: (NOW + timedelta(minutes=10)).timestamp())
    assert lists.ages_s() == {"trust": None, "status": None}
    lists.handle(topics.BROADCAST_TRUST, _trust(1))
    assert lists.ages_s()["trust"] == 600
    for topic, payload in _shards(2, issued_at=NOW + timedelta(minutes=8)):
        lists.handle(topic, payload)
    lists.handle(*_shards(3, issued_at=NOW + timedelta(minutes=9))[4])
    assert lists.ages_s()["status"] == 120  # the oldest shard's age
