"""The wire contract: topics, batch assembly and parsing, ack ranges."""

from __future__ import annotations

import itertools
import json
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol import topics
from protocol.messages import (
    EventBatch,
    MessageError,
    batch_payload,
    event_json,
    parse_ack,
    parse_batch,
    ranges_cover,
    seq_ranges,
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


@given(body=st.dictionaries(st.text(max_size=12), json_values, max_size=6), seq=st.integers(1, 2**62))
def test_an_assembled_batch_parses_back_to_the_same_event(body, seq):
    uid = str(uuid.uuid4())
    wire = event_json(
        seq, uid, "check_in", "2026-11-26T10:00:00.000+07:00", json.dumps(body, ensure_ascii=False)
    )
    batch = parse_batch(batch_payload("kiosk-001", "ab" * 16, [wire]))
    assert isinstance(batch, EventBatch)
    (event,) = batch.events
    assert (event.seq, str(event.uuid), event.body) == (seq, uid, body)


@given(st.sets(st.integers(1, 500)))
def test_seq_ranges_cover_exactly_the_given_numbers(seqs):
    ranges = seq_ranges(seqs)
    expanded = {s for lo, hi in ranges for s in range(lo, hi + 1)}
    assert expanded == seqs
    assert all(b[0] > a[1] + 1 for a, b in itertools.pairwise(ranges))
    assert ranges_cover(ranges, ranges)


def test_ranges_cover_rejects_partial_overlap():
    assert ranges_cover([(1, 100)], [(5, 10), (90, 100)])
    assert not ranges_cover([(1, 50)], [(40, 60)])


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"{", "malformed JSON"),
        (b"\x00\xff", "malformed JSON"),
        (b"[]", "schema"),
        (json.dumps({"v": 1, "kiosk_id": "kiosk-001", "epoch": "zz", "events": []}).encode(), "epoch"),
        (b" " * 300_000, "exceeds the limit"),
    ],
)
def test_bad_batches_are_refused_with_a_reason(payload, reason):
    with pytest.raises(MessageError) as err:
        parse_batch(payload)
    assert reason in err.value.reason


def test_unknown_fields_are_refused_so_a_newer_contract_is_noticed():
    wire = event_json(1, str(uuid.uuid4()), "check_in", "2026-11-26T10:00:00+00:00", "{}")
    doc = json.loads(batch_payload("kiosk-001", "ab" * 16, [wire]))
    doc["extra"] = 1
    with pytest.raises(MessageError, match="extra"):
        parse_batch(json.dumps(doc).encode())


def test_naive_device_time_is_refused():
    wire = event_json(1, str(uuid.uuid4()), "check_in", "2026-11-26T10:00:00", "{}")
    with pytest.raises(MessageError, match="device_time"):
        parse_batch(batch_payload("kiosk-001", "ab" * 16, [wire]))


def test_ack_round_trip():
    ack = parse_ack(b'{"v":1,"epoch":"' + b"ab" * 16 + b'","ranges":[[1,5],[9,9]]}')
    assert ack.ranges == [(1, 5), (9, 9)]


def test_topics_build_and_parse():
    assert topics.events("kiosk-001") == "antoan/v1/kiosk/kiosk-001/events"
    parsed = topics.parse_kiosk_topic("antoan/v1/kiosk/kiosk-001/state")
    assert (parsed.kiosk_id, parsed.channel) == ("kiosk-001", "state")
    assert topics.shared(topics.EVENTS_ALL, "bridge") == "$share/bridge/antoan/v1/kiosk/+/events"


@pytest.mark.parametrize(
    "topic",
    ["antoan/v1/kiosk/K/events", "antoan/v2/kiosk/kiosk-001/events", "antoan/v1/kiosk/kiosk-001/x", "a/b"],
)
def test_foreign_topics_are_refused(topic):
    with pytest.raises(topics.TopicError):
        topics.parse_kiosk_topic(topic)


@pytest.mark.parametrize("bad", ["", "ab", "Kiosk-1", "kiosk/1", "kiosk+1", "kiosk#", "-kiosk", "k" * 65])
def test_kiosk_ids_that_could_break_topics_are_refused(bad):
    with pytest.raises(topics.TopicError):
        topics.events(bad)
