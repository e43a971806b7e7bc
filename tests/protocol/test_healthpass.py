"""Health pass codec: issue, verify offline, refuse tampered, truncated, foreign and oversized codes."""

from __future__ import annotations

import json
import random
import tracemalloc
import zlib
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import topics
from protocol.healthpass import (
    BASE45_ALPHABET,
    CROCKFORD,
    MAX_TEXT_CHARS,
    PREFIX,
    Colour,
    PassClaims,
    PassError,
    PassKind,
    Reason,
    SigningKey,
    StatusList,
    StatusShards,
    TrustedKey,
    TrustList,
    Verification,
    b45decode,
    b45encode,
    decode_unverified,
    encode_pass,
    kid_for,
    looks_like_pass,
    verify_pass,
)

QR_ALPHANUMERIC = set("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:")
NOW = datetime(2026, 11, 26, 3, 0, tzinfo=UTC)
DAY = timedelta(days=1)
ALGS = ("ES256", "EdDSA")
COSE_ALG = {"ES256": -7, "EdDSA": -8}
# A tampered code may fail at any layer; what it must never do is verify.
TAMPER_REASONS = {Reason.BAD_SIGNATURE, Reason.MALFORMED, Reason.TRUNCATED, Reason.UNKNOWN_KEY}


def signing_key(alg: str = "ES256", n: int = 0) -> SigningKey:
    """Keys are made once per (alg, n) so hypothesis examples do not pay for key generation."""
    return _cached_key(alg, n)


@cache
def _cached_key(alg: str, n: int) -> SigningKey:
    return SigningKey.generate(alg)  # type: ignore[arg-type]


def claims(**overrides: Any) -> PassClaims:
    fields: dict[str, Any] = {
        "pass_id": "P-2026-000123",
        "colour": Colour.GREEN,
        "kind": PassKind.NCOVI,
        "initials": "NTA",
        "birth_year": 1990,
        "issuer": "antoan-hub-hcm",
        "issued_at": NOW - DAY,
        "expires_at": NOW + 13 * DAY,
    }
    fields.update(overrides)
    return PassClaims(**fields)


def trusted(key: SigningKey, not_before: datetime = NOW - 365 * DAY, not_after: datetime = NOW + 365 * DAY):
    return key.trusted(not_before, not_after)


def trust_of(*keys: SigningKey | TrustedKey, version: int = 1) -> TrustList:
    entries = [k if isinstance(k, TrustedKey) else trusted(k) for k in keys]
    return TrustList(entries, version, NOW - DAY)


def valid_text(alg: str = "ES256") -> str:
    return _cached_text(alg)


@cache
def _cached_text(alg: str) -> str:
    return encode_pass(claims(), signing_key(alg))


def unwrap(text: str) -> bytes:
    """The COSE bytes inside a pass text."""
    return zlib.decompress(b45decode(text[len(PREFIX) :]))


def wrap(cose: bytes) -> str:
    return PREFIX + b45encode(zlib.compress(cose, 9))


def sign1(
    key: SigningKey,
    payload: dict[int, Any] | bytes,
    *,
    protected: bytes | None = None,
    unprotected: Any = None,
    tag: int | None = 18,
) -> bytes:
    """A COSE_Sign1 built by hand (validly signed), to reach the checks behind the signature."""
    if protected is None:
        protected = cbor2.dumps({1: COSE_ALG[key.alg]})
    body = payload if isinstance(payload, bytes) else cbor2.dumps(payload)
    signature = key.sign(cbor2.dumps(["Signature1", protected, b"", body]))
    items = [protected, {4: key.kid} if unprotected is None else unprotected, body, signature]
    return cbor2.dumps(cbor2.CBORTag(tag, items) if tag is not None else items)


def reason_of(text: str | bytes, trust: TrustList | None = None, **kwargs: Any) -> Reason:
    kwargs.setdefault("now", NOW)
    with pytest.raises(PassError) as info:
        verify_pass(text, trust=trust or trust_of(signing_key()), **kwargs)
    assert info.value.detail and "\n" not in info.value.detail
    return info.value.reason


# ------------------------------------------------------------------------------------------ round trips


@pytest.mark.parametrize("alg", ALGS)
def test_a_pass_round_trips_and_uses_only_qr_alphanumeric_characters(alg):
    key = signing_key(alg)
    original = claims(colour=Colour.YELLOW, kind=PassKind.VHD, initials="ĐVB")
    text = encode_pass(original, key)

    assert set(text) <= QR_ALPHANUMERIC
    assert text.startswith(PREFIX) and looks_like_pass(text) and looks_like_pass(text.encode())
    result = verify_pass(text, trust=trust_of(key), now=NOW)
    assert result == Verification(claims=original, kid=key.kid, colour=Colour.YELLOW, flagged=False)
    assert result.reason is None
    assert verify_pass(text.encode("ascii"), trust=trust_of(key), now=NOW) == result
    assert decode_unverified(text) == (original, key.kid)


pass_claims = st.builds(
    claims,
    pass_id=st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=40),
    colour=st.sampled_from(Colour),
    kind=st.sampled_from(PassKind),
    initials=st.text(st.sampled_from("ABCDĐEGHIKLMNOPQRSTUVXYÂĂÊÔƠƯ"), min_size=1, max_size=8),
    birth_year=st.integers(1900, 2026),
    issued_at=st.integers(-30 * 86400, 0).map(lambda s: NOW + timedelta(seconds=s)),
    expires_at=st.integers(1, 60 * 86400).map(lambda s: NOW + timedelta(seconds=s)),
)


@settings(deadline=None, max_examples=60)
@given(original=pass_claims, alg=st.sampled_from(ALGS))
def test_any_valid_claims_round_trip(original, alg):
    key = signing_key(alg)
    text = encode_pass(original, key)
    assert set(text) <= QR_ALPHANUMERIC
    assert verify_pass(text, trust=trust_of(key), now=NOW).claims == original


def test_claim_times_are_whole_utc_seconds():
    local = datetime(2026, 11, 26, 10, 0, 0, 987654).astimezone()
    pass_claims = claims(issued_at=local, expires_at=local + DAY)
    assert pass_claims.issued_at.tzinfo is UTC and pass_claims.issued_at.microsecond == 0


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"issued_at": datetime(2026, 11, 26)}, "timezone-aware"),
        ({"initials": "Nguyen Thi An"}, "initials"),
        ({"initials": ""}, "initials"),
        ({"birth_year": True}, "birth_year"),
        ({"birth_year": 2030}, "birth_year"),
        ({"colour": "blue"}, "colour"),
        ({"kind": "passport"}, "kind"),
        ({"pass_id": ""}, "pass_id"),
    ],
)
def test_invalid_claims_are_refused_when_issuing(overrides, needle):
    with pytest.raises(ValueError, match=needle):
        claims(**overrides)


# ------------------------------------------------------------------------------------------ Base45


@pytest.mark.parametrize(
    ("raw", "encoded"),
    [
        (b"AB", "BB8"),
        (b"Hello!!", "%69 VD92EX0"),
        (b"base-45", "UJCLQE7W581"),
        (b"ietf!", "QED8WEX0"),
        (b"", ""),
    ],
)
def test_base45_matches_rfc_9285(raw, encoded):
    assert b45encode(raw) == encoded
    assert b45decode(encoded) == raw


@given(st.binary(max_size=300))
def test_base45_round_trips_any_bytes(raw):
    encoded = b45encode(raw)
    assert set(encoded) <= set(BASE45_ALPHABET)
    assert len(encoded) == len(raw) // 2 * 3 + len(raw) % 2 * 2
    assert b45decode(encoded) == raw


@pytest.mark.parametrize(
    ("encoded", "reason"),
    [
        ("BB8B", Reason.TRUNCATED),  # 3n+1 characters cannot come from any input
        ("GGW", Reason.MALFORMED),  # 65536 does not fit two bytes
        ("ZZ", Reason.MALFORMED),  # 35 + 35 * 45 does not fit one byte
        ("bb8", Reason.MALFORMED),  # lower case is not Base45
        ("BB=", Reason.MALFORMED),
    ],
)
def test_base45_rejects_invalid_input(encoded, reason):
    with pytest.raises(PassError) as info:
        b45decode(encoded)
    assert info.value.reason is reason


# ------------------------------------------------------------------------------------------ tampering


@settings(deadline=None, max_examples=300)
@given(alg=st.sampled_from(ALGS), data=st.data())
def test_flipping_any_byte_of_the_cose_structure_is_refused(alg, data):
    cose = bytearray(unwrap(valid_text(alg)))
    index = data.draw(st.integers(0, len(cose) - 1), label="index")
    cose[index] ^= data.draw(st.integers(1, 255), label="xor")

    reason = reason_of(wrap(bytes(cose)), trust_of(signing_key(alg)))
    assert reason in TAMPER_REASONS


@pytest.mark.parametrize("alg", ALGS)
def test_every_single_bit_flip_of_the_cose_structure_is_refused(alg):
    cose = unwrap(valid_text(alg))
    trust = trust_of(signing_key(alg))
    for index in range(len(cose)):
        for bit in range(8):
            tampered = bytearray(cose)
            tampered[index] ^= 1 << bit
            assert reason_of(wrap(bytes(tampered)), trust) in TAMPER_REASONS, (index, bit)


def test_a_changed_payload_or_signature_is_a_bad_signature():
    key = signing_key()
    good = unwrap(valid_text())
    payload_at = good.index(b"NTA")
    for index in (payload_at, len(good) - 1):  # a payload byte, then the signature's last byte
        tampered = bytearray(good)
        tampered[index] ^= 0x01
        assert reason_of(wrap(bytes(tampered)), trust_of(key)) is Reason.BAD_SIGNATURE


def test_changing_the_claims_and_keeping_the_signature_is_a_bad_signature():
    key = signing_key()
    protected, unprotected, payload, signature = cbor2.loads(unwrap(valid_text())).value
    forged = cbor2.loads(payload)
    forged[-70001] = "green"
    forged[4] += 365 * 86400
    cose = cbor2.dumps(cbor2.CBORTag(18, [protected, unprotected, cbor2.dumps(forged), signature]))
    assert reason_of(wrap(cose), trust_of(key)) is Reason.BAD_SIGNATURE


@pytest.mark.parametrize("alg", ALGS)
def test_changing_any_character_of_the_text_never_yields_different_verified_content(alg):
    """Exhaustive: every position, every other Base45 character.

    A few changes land only in the padding bits after the last deflate block, which zlib ignores: the
    code then decompresses to the very same signed bytes, so it verifies as the original pass did.
    Anything else must be refused.
    """
    text = valid_text(alg)
    original = unwrap(text)
    trust = trust_of(signing_key(alg))
    for index in range(len(text)):
        for ch in BASE45_ALPHABET:
            if ch == text[index]:
                continue
            changed = text[:index] + ch + text[index + 1 :]
            try:
                verify_pass(changed, trust=trust, now=NOW)
            except PassError as exc:
                expected = {Reason.NOT_OURS} if index < len(PREFIX) else {Reason.MALFORMED, Reason.TRUNCATED}
                assert exc.reason in expected, (index, ch, exc)
            else:
                assert index >= len(text) - 12 and unwrap(changed) == original, (index, ch)


@settings(deadline=None, max_examples=200)
@given(alg=st.sampled_from(ALGS), data=st.data())
def test_changing_a_character_to_anything_is_refused_or_changes_nothing(alg, data):
    text = valid_text(alg)
    index = data.draw(st.integers(0, len(text) - 1), label="index")
    ch = data.draw(st.characters(codec="utf-8").filter(lambda c: c != text[index]), label="char")
    changed = text[:index] + ch + text[index + 1 :]
    try:
        verify_pass(changed, trust=trust_of(signing_key(alg)), now=NOW)
    except PassError:
        return
    assert unwrap(changed) == unwrap(text)


@pytest.mark.parametrize("alg", ALGS)
@pytest.mark.parametrize("as_bytes", [False, True])
def test_every_truncation_of_a_valid_text_is_refused(alg, as_bytes):
    text = valid_text(alg)
    trust = trust_of(signing_key(alg))
    for length in range(1, len(text)):
        cut = text[:length].encode() if as_bytes else text[:length]
        assert reason_of(cut, trust) in {Reason.TRUNCATED, Reason.MALFORMED}, length
    # Cut inside the zlib stream at a Base45 group boundary: recognisably incomplete.
    assert reason_of(text[: len(PREFIX) + 60], trust) is Reason.TRUNCATED
    assert reason_of(text[: len(PREFIX) + 61], trust) is Reason.TRUNCATED
    assert reason_of(PREFIX, trust) is Reason.TRUNCATED


def test_a_cose_structure_cut_short_inside_an_intact_zlib_stream_is_truncated():
    assert reason_of(wrap(unwrap(valid_text())[:-10])) is Reason.TRUNCATED


# ------------------------------------------------------------------------------------------ keys and time


def test_an_unknown_kid_is_refused():
    assert reason_of(valid_text(), trust_of(signing_key("ES256", 1))) is Reason.UNKNOWN_KEY


def test_an_expired_pass_is_refused_from_its_expiry_second_on():
    key = signing_key()
    text = encode_pass(claims(expires_at=NOW), key)
    assert reason_of(text, trust_of(key)) is Reason.EXPIRED
    assert reason_of(text, trust_of(key), now=NOW + 30 * DAY) is Reason.EXPIRED
    assert verify_pass(text, trust=trust_of(key), now=NOW - timedelta(seconds=1)).claims.expires_at == NOW


def test_a_pass_that_expires_before_it_is_issued_is_expired():
    key = signing_key()
    text = encode_pass(claims(issued_at=NOW - timedelta(hours=1), expires_at=NOW - DAY), key)
    assert reason_of(text, trust_of(key)) is Reason.EXPIRED
    assert reason_of(text, trust_of(key), now=NOW - 2 * DAY) is Reason.NOT_YET_VALID


def test_a_pass_from_the_future_is_refused_beyond_the_clock_skew():
    key = signing_key()
    within = encode_pass(claims(issued_at=NOW + timedelta(minutes=4)), key)
    beyond = encode_pass(claims(issued_at=NOW + timedelta(hours=2)), key)
    verify_pass(within, trust=trust_of(key), now=NOW)
    assert reason_of(beyond, trust_of(key)) is Reason.NOT_YET_VALID
    assert reason_of(within, trust_of(key), clock_skew=timedelta(0)) is Reason.NOT_YET_VALID


def test_a_pass_issued_outside_its_keys_window_is_refused():
    key = signing_key()
    text = encode_pass(claims(issued_at=NOW - 10 * DAY), key)
    later_window = trust_of(trusted(key, NOW - 5 * DAY, NOW + DAY))
    earlier_window = trust_of(trusted(key, NOW - 30 * DAY, NOW - 20 * DAY))
    assert reason_of(text, later_window) is Reason.KEY_NOT_VALID
    assert reason_of(text, earlier_window) is Reason.KEY_NOT_VALID


def test_a_pass_issued_inside_the_window_stays_valid_after_the_window_closes():
    key = signing_key()
    text = encode_pass(claims(issued_at=NOW - 10 * DAY, expires_at=NOW + DAY), key)
    assert verify_pass(text, trust=trust_of(trusted(key, NOW - 20 * DAY, NOW - 5 * DAY)), now=NOW)


@pytest.mark.parametrize("impostor_alg", ALGS)
def test_a_pass_signed_by_another_key_claiming_a_trusted_kid_is_a_bad_signature(impostor_alg):
    real, impostor = signing_key("ES256"), signing_key(impostor_alg, 1)
    cose = cbor2.loads(unwrap(encode_pass(claims(colour=Colour.GREEN), impostor)))
    protected, _unprotected, payload, signature = cose.value
    forged = cbor2.dumps(cbor2.CBORTag(18, [protected, {4: real.kid}, payload, signature]))
    assert reason_of(wrap(forged), trust_of(real)) is Reason.BAD_SIGNATURE


def test_key_rotation_passes_from_the_old_and_the_new_key_both_verify():
    old, new = signing_key("ES256", 2), signing_key("EdDSA", 2)
    handover = NOW - 30 * DAY
    trust = TrustList(
        [old.trusted(NOW - 400 * DAY, handover), new.trusted(handover, NOW + 400 * DAY)], 7, NOW - DAY
    )
    from_old = encode_pass(claims(pass_id="old", issued_at=handover - DAY, expires_at=NOW + DAY), old)
    from_new = encode_pass(claims(pass_id="new", issued_at=NOW - DAY), new)
    late_old = encode_pass(claims(pass_id="late", issued_at=NOW - DAY), old)  # old key after handover

    for trust_list in (trust, TrustList.from_json(trust.to_json())):
        assert verify_pass(from_old, trust=trust_list, now=NOW).kid == old.kid
        assert verify_pass(from_new, trust=trust_list, now=NOW).kid == new.kid
        assert reason_of(late_old, trust_list) is Reason.KEY_NOT_VALID


def test_verify_needs_an_aware_now():
    with pytest.raises(ValueError, match="timezone-aware"):
        verify_pass(valid_text(), trust=trust_of(signing_key()), now=datetime(2026, 11, 26))


# ------------------------------------------------------------------------------------------ foreign input


@pytest.mark.parametrize(
    "text",
    [
        "HC1:6BFOXN*TS0BI$ZD4N9:9S6RCVN5+O30K3/XIV0W23NTDEXWK G2EP4J0BGJLFX3R3VHXK.PJ:2DPF6R:5SVBHABVCNN95",
        "https://antoan.example/v/123",
        "079203001234|123456789|Nguyễn Thị An|01011990|Nữ|Hà Nội|01012021",
        "at1:NCFOXN",
        "",
    ],
)
def test_foreign_codes_are_not_ours(text):
    assert not looks_like_pass(text)
    assert reason_of(text) is Reason.NOT_OURS
    assert reason_of(text.encode()) is Reason.NOT_OURS


@given(st.text().filter(lambda t: not t.startswith(PREFIX) and not PREFIX.startswith(t[:4])))
def test_random_text_is_not_ours(text):
    assert reason_of(text) is Reason.NOT_OURS


@given(st.text(BASE45_ALPHABET + "abc\n\x00é", max_size=200))
def test_random_text_after_our_prefix_is_refused(body):
    assert reason_of(PREFIX + body) in {Reason.MALFORMED, Reason.TRUNCATED}


def test_non_ascii_bytes_are_refused():
    assert reason_of(b"\xff\xd8\xff\xe0 jpeg") is Reason.NOT_OURS
    assert reason_of(PREFIX.encode() + "NCFÔ".encode()) is Reason.MALFORMED


@pytest.mark.parametrize("as_bytes", [False, True])
def test_huge_input_is_refused_before_decoding(as_bytes):
    text = PREFIX + "0" * (MAX_TEXT_CHARS * 100)
    assert reason_of(text.encode() if as_bytes else text) is Reason.MALFORMED


def test_a_zip_bomb_is_refused_without_inflating_it():
    bomb = zlib.compress(b"\0" * 2_500_000, 9)
    text = PREFIX + b45encode(bomb)
    assert len(text) <= MAX_TEXT_CHARS  # small enough to reach the decompressor

    tracemalloc.start()
    try:
        with pytest.raises(PassError) as info:
            verify_pass(text, trust=trust_of(signing_key()), now=NOW)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert info.value.reason is Reason.MALFORMED and "more than" in info.value.detail
    assert peak < 512 * 1024


@pytest.mark.parametrize("as_bytes", [False, True])
def test_trailing_bytes_after_the_zlib_stream_are_malformed(as_bytes):
    text = PREFIX + b45encode(b45decode(valid_text()[len(PREFIX) :]) + b"\0")
    assert reason_of(text.encode() if as_bytes else text) is Reason.MALFORMED


# ------------------------------------------------------------------------------------------ structure


def payload_map(**changes: Any) -> dict[int, Any]:
    cwt = claims().to_cbor_map()
    for key, value in changes.items():
        claim = {"iss": 1, "sub": 2, "exp": 4, "iat": 6, "colour": -70001, "kind": -70002}.get(key)
        claim = claim or {"initials": -70003, "birth_year": -70004}[key]
        if value is ...:
            del cwt[claim]
        else:
            cwt[claim] = value
    return cwt


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"iat": "2026-11-25"}, "claim 6 (iat) must be int"),
        ({"exp": 1.5e9}, "claim 4 (exp) must be int"),
        ({"exp": 2**63}, "claim 4 (exp) is out of range"),
        ({"exp": -1}, "claim 4 (exp) is out of range"),
        ({"exp": 2**70}, "invalid CBOR (error decoding semantic tag 2)"),  # bignums are not allowed
        ({"sub": ...}, "claim 2 (sub, pass id) is missing"),
        ({"sub": b"P-1"}, "claim 2 (sub, pass id) must be str"),
        ({"iss": 7}, "claim 1 (iss) must be str"),
        ({"colour": "blue"}, "colour must be one of"),
        ({"kind": 1}, "claim -70002 (kind) must be str"),
        ({"initials": ["N", "T", "A"]}, "claim -70003 (initials) must be str"),
        ({"birth_year": True}, "claim -70004 (birth year) must be int"),
        ({"birth_year": "1990"}, "claim -70004 (birth year) must be int"),
    ],
)
def test_wrong_claim_types_are_malformed_and_name_the_claim(changes, needle):
    text = wrap(sign1(signing_key(), payload_map(**changes)))
    with pytest.raises(PassError) as info:
        verify_pass(text, trust=trust_of(signing_key()), now=NOW)
    assert info.value.reason is Reason.MALFORMED
    assert needle in info.value.detail
    with pytest.raises(PassError, match="malformed"):
        decode_unverified(text)


def test_unknown_claims_are_ignored():
    text = wrap(sign1(signing_key(), {**claims().to_cbor_map(), -70099: "future", 7: b"cti"}))
    assert verify_pass(text, trust=trust_of(signing_key()), now=NOW).claims == claims()


KEY = signing_key()
GOOD_PAYLOAD = cbor2.dumps(claims().to_cbor_map())


@pytest.mark.parametrize(
    ("cose", "needle"),
    [
        (sign1(KEY, GOOD_PAYLOAD, tag=None), "tag 18"),
        (sign1(KEY, GOOD_PAYLOAD, tag=98), "tag 98"),
        (sign1(KEY, GOOD_PAYLOAD, protected=cbor2.dumps({1: -35})), "unsupported alg -35"),
        (sign1(KEY, GOOD_PAYLOAD, protected=cbor2.dumps({1: "ES256"})), "unsupported alg 'ES256'"),
        (sign1(KEY, GOOD_PAYLOAD, protected=cbor2.dumps({})), "no alg"),
        (sign1(KEY, GOOD_PAYLOAD, protected=cbor2.dumps([1, -7])), "protected header must encode a map"),
        (sign1(KEY, GOOD_PAYLOAD, unprotected={}), "no kid"),
        (sign1(KEY, GOOD_PAYLOAD, unprotected={4: "kid"}), "kid must be a byte string"),
        (sign1(KEY, GOOD_PAYLOAD, unprotected=[4, KEY.kid]), "unprotected header must be a map"),
        (sign1(KEY, GOOD_PAYLOAD, unprotected={1: -7, 4: KEY.kid}), "alg must be in the protected"),
        (sign1(KEY, GOOD_PAYLOAD, protected=cbor2.dumps({1: -7, 2: [99]})), "critical"),
        (sign1(KEY, cbor2.dumps([1, 2])), "CWT claims must be a map"),
        (sign1(KEY, GOOD_PAYLOAD + b"\0"), "unexpected bytes after the CBOR"),
        (sign1(KEY, b"\xa2\x01\x61a\x01\x61b"), "Duplicate map key"),
        (sign1(KEY, cbor2.dumps(cbor2.CBORTag(1, 1700000000))), "invalid CBOR"),
        (cbor2.dumps(cbor2.CBORTag(18, ["protected", {}, b"", b""])), "protected header must be a byte"),
        (cbor2.dumps(cbor2.CBORTag(18, [cbor2.dumps({1: -7}), {4: KEY.kid}, None, b""])), "payload"),
        (cbor2.dumps(cbor2.CBORTag(18, [cbor2.dumps({1: -7}), {4: KEY.kid}, b"", "sig"])), "signature"),
        (cbor2.dumps(cbor2.CBORTag(18, [b"", {}, b""])), "array of 4"),
        (sign1(KEY, GOOD_PAYLOAD) + b"\0", "unexpected bytes after the CBOR"),
    ],
)
def test_wrong_cose_structure_is_malformed_and_says_what(cose, needle):
    with pytest.raises(PassError) as info:
        decode_unverified(wrap(cose))
    assert info.value.reason is Reason.MALFORMED
    assert needle in info.value.detail


def test_kid_may_sit_in_the_protected_header_but_not_in_both():
    in_protected = sign1(KEY, GOOD_PAYLOAD, protected=cbor2.dumps({1: -7, 4: KEY.kid}), unprotected={})
    assert verify_pass(wrap(in_protected), trust=trust_of(KEY), now=NOW).kid == KEY.kid
    in_both = sign1(KEY, GOOD_PAYLOAD, protected=cbor2.dumps({1: -7, 4: KEY.kid}))
    assert reason_of(wrap(in_both), trust_of(KEY)) is Reason.MALFORMED


def test_a_signature_of_the_wrong_length_is_a_bad_signature():
    protected, unprotected, payload, signature = cbor2.loads(unwrap(valid_text())).value
    for bad in (signature[:-1], signature + b"\0", b""):
        cose = cbor2.dumps(cbor2.CBORTag(18, [protected, unprotected, payload, bad]))
        assert reason_of(wrap(cose)) is Reason.BAD_SIGNATURE


# ------------------------------------------------------------------------------------------ status list


def test_a_pass_listed_worse_is_shown_worse_and_flagged():
    key = signing_key()
    text = encode_pass(claims(pass_id="P-1", colour=Colour.GREEN), key)
    status = StatusList(3, NOW - DAY, {"P-1": Colour.YELLOW, "P-2": "red"})
    result = verify_pass(text, trust=trust_of(key), status=status, now=NOW)
    assert (result.colour, result.flagged, result.reason) == (Colour.YELLOW, True, Reason.FLAGGED)
    assert result.claims.colour is Colour.GREEN


def test_the_worst_colour_wins_over_a_better_listing():
    key = signing_key()
    text = encode_pass(claims(pass_id="P-1", colour=Colour.RED), key)
    status = StatusList(3, NOW - DAY, {"P-1": Colour.GREEN})
    result = verify_pass(text, trust=trust_of(key), status=status, now=NOW)
    assert (result.colour, result.flagged) == (Colour.RED, False)


def test_an_unlisted_pass_keeps_its_colour():
    result = verify_pass(valid_text(), trust=trust_of(signing_key()), status=StatusList(1, NOW), now=NOW)
    assert (result.colour, result.flagged) == (Colour.GREEN, False)


def test_colour_worst():
    assert Colour.worst(Colour.GREEN, Colour.YELLOW) is Colour.YELLOW
    assert Colour.worst(Colour.RED, Colour.YELLOW) is Colour.RED
    assert Colour.worst("green", "green") is Colour.GREEN
    assert [c.severity for c in Colour] == [0, 1, 2]


# ------------------------------------------------------------------------------------------ lists as JSON


def test_trust_list_json_round_trip():
    es, ed = signing_key("ES256"), signing_key("EdDSA")
    trust = TrustList(
        [
            es.trusted(NOW - DAY, NOW + DAY),
            ed.trusted(NOW - 2 * DAY, NOW + timedelta(days=3, microseconds=5)),
        ],
        12,
        NOW,
    )
    doc = json.loads(trust.to_json())
    assert doc["keys"][0]["kid"] == es.kid.hex() and doc["issued_at"] == "2026-11-26T03:00:00Z"

    again = TrustList.from_json(trust.to_json())
    assert again == trust and again.get(ed.kid) == trust.get(ed.kid) and again.get(b"\0" * 8) is None
    assert (again.version, again.issued_at, len(again)) == (12, NOW, 2)


def test_status_list_json_round_trip():
    status = StatusList(5, NOW, {"P-1": Colour.YELLOW, "Mã-2": Colour.RED})
    again = StatusList.from_json(status.to_json())
    assert again == status and again.colour_for("Mã-2") is Colour.RED and again.colour_for("P-3") is None


def _trust_doc(**changes: Any) -> bytes:
    doc = json.loads(TrustList([trusted(signing_key())], 1, NOW).to_json())
    for path, value in changes.items():
        target, name = (doc["keys"][0], path[4:]) if path.startswith("key_") else (doc, path)
        if value is ...:
            del target[name]
        else:
            target[name] = value
    return json.dumps(doc).encode()


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        (b"", "not valid JSON"),
        (b'{"v":1,', "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (b"[]", "expected a JSON object"),
        (_trust_doc(v=2), "unsupported format version"),
        (_trust_doc(version=True), "'version' must be int"),
        (_trust_doc(version=-1), "must not be negative"),
        (_trust_doc(issued_at="yesterday"), "not an ISO 8601 time"),
        (_trust_doc(issued_at="2026-11-26T03:00:00"), "must carry a UTC offset"),
        (_trust_doc(keys={}), "'keys' must be list"),
        (_trust_doc(keys=["abc"]), "keys[0]: expected an object"),
        (_trust_doc(key_kid="zz"), "kid is not hex"),
        (_trust_doc(key_kid="00" * 8), "does not match the key"),
        (_trust_doc(key_alg="RS256"), "alg must be 'ES256' or 'EdDSA'"),
        (_trust_doc(key_alg="EdDSA"), "does not match the key"),
        (_trust_doc(key_public_key="not base64!"), "not base64"),
        (_trust_doc(key_public_key="AAAA"), "not a SubjectPublicKeyInfo"),
        (_trust_doc(key_not_after="2000-01-01T00:00:00Z"), "is before not_before"),
        (_trust_doc(key_not_before=...), "'not_before' is missing"),
    ],
)
def test_malformed_trust_list_is_refused(data, needle):
    with pytest.raises(PassError) as info:
        TrustList.from_json(data)
    assert info.value.reason is Reason.MALFORMED
    assert needle in info.value.detail


def test_a_trust_list_with_a_kid_twice_is_refused():
    doc = json.loads(TrustList([trusted(signing_key())], 1, NOW).to_json())
    doc["keys"].append(doc["keys"][0])
    with pytest.raises(PassError, match="appears twice"):
        TrustList.from_json(json.dumps(doc))


@pytest.mark.parametrize(
    ("doc", "needle"),
    [
        (
            {"v": 1, "version": 1, "issued_at": "2026-11-26T03:00:00Z", "colours": []},
            "'colours' must be dict",
        ),
        ({"v": 1, "version": 1, "issued_at": "2026-11-26T03:00:00Z", "colours": {"P": "blue"}}, "one of"),
        ({"v": 1, "version": 1, "issued_at": "2026-11-26T03:00:00Z", "colours": {"": "red"}}, "pass id"),
        ({"v": 1, "version": "1", "issued_at": "2026-11-26T03:00:00Z", "colours": {}}, "'version' must be"),
        ({"v": 1, "version": 1, "colours": {}}, "'issued_at' is missing"),
    ],
)
def test_malformed_status_list_is_refused(doc, needle):
    with pytest.raises(PassError) as info:
        StatusList.from_json(json.dumps(doc).encode())
    assert info.value.reason is Reason.MALFORMED
    assert needle in info.value.detail


# ------------------------------------------------------------------------------------------ status shards


def _pass_ids(count: int, seed: int = 1) -> list[str]:
    """Random canonical pass ids, as the hub draws them (10 Crockford symbols)."""
    rng = random.Random(seed)
    return ["".join(rng.choices(CROCKFORD, k=10)) for _ in range(count)]


def _listed(count: int, version: int = 4) -> StatusList:
    ids = _pass_ids(count)
    return StatusList(
        version, NOW, {pid: Colour.RED if i % 3 == 0 else Colour.YELLOW for i, pid in enumerate(ids)}
    )


def test_every_listed_pass_is_in_exactly_one_shard_and_the_shards_make_the_list():
    status = _listed(2000)
    shards = status.shards()
    assert [s.shard for s in shards] == list(CROCKFORD)
    assert all((s.version, s.issued_at) == (status.version, status.issued_at) for s in shards)
    for shard in shards:
        assert all(pid[0] == shard.shard for pid in shard.colours)
    union: dict[str, Colour] = {}
    for shard in shards:
        assert union.keys().isdisjoint(shard.colours)
        union.update(shard.colours)
    assert union == status.colours


def test_empty_shards_are_kept_so_a_removed_entry_is_republished_away():
    shards = StatusList(7, NOW, {"A0000000000": Colour.RED}).shards()
    assert len(shards) == 32 and [len(s) for s in shards if s.shard != "A"] == [0] * 31
    assert StatusList(8, NOW).shards()[CROCKFORD.index("A")].colours == {}


def test_a_shard_round_trips_through_json_with_its_symbol():
    shard = _listed(500).shards()[CROCKFORD.index("K")]
    doc = json.loads(shard.to_json())
    assert doc["shard"] == "K" and len(doc["colours"]) == len(shard) > 0
    assert StatusList.from_json(shard.to_json()) == shard
    assert "shard" not in json.loads(_listed(5).to_json())  # the whole list has none


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"colours": {"B123456789": "red"}}, "does not belong in shard 'A'"),  # a foreign id
        ({"shard": "I"}, "one Crockford base32 symbol"),  # I is read as 1, never in a canonical id
        ({"shard": "a"}, "one Crockford base32 symbol"),
        ({"shard": "AB"}, "one Crockford base32 symbol"),
        ({"shard": ""}, "one Crockford base32 symbol"),
        ({"shard": 7}, "'shard' must be str"),
    ],
)
def test_a_tampered_shard_is_malformed(changes, needle):
    doc = json.loads(StatusList(3, NOW, {"A123456789": "yellow"}, shard="A").to_json())
    doc.update(changes)
    with pytest.raises(PassError) as info:
        StatusList.from_json(json.dumps(doc))
    assert info.value.reason is Reason.MALFORMED
    assert needle in info.value.detail


def test_only_a_whole_list_of_canonical_ids_can_be_split():
    with pytest.raises(ValueError, match="belongs in no shard"):
        StatusList(1, NOW, {"p-1": "red"}).shards()
    with pytest.raises(ValueError, match="already one shard"):
        StatusList(1, NOW, shard="0").shards()


def test_shards_held_answer_like_the_whole_list():
    status = _listed(3000)
    held = StatusShards(reversed(status.shards()))  # any order
    assert held.complete and held.held == 32
    assert (held.version, held.issued_at, len(held)) == (4, NOW, len(status))
    for pid in list(status.colours)[:200] + _pass_ids(200, seed=2):
        assert held.colour_for(pid) == status.colour_for(pid)
    assert held.colour_for("") is None


def test_shards_held_in_part_an_older_shard_ignored_and_the_oldest_counts():
    old, new = _listed(1000, version=4), _listed(1000, version=5)
    held = StatusShards()
    assert (held.version, held.issued_at, len(held), held.complete) == (None, None, 0, False)
    assert held.add(new.shards()[0])
    assert not held.add(old.shards()[0])  # older than the one held
    assert held.get("0") == new.shards()[0]
    later = StatusList(5, NOW + DAY, new.shards()[1].colours, shard="1")
    assert held.add(later)
    assert (held.held, held.version, held.issued_at) == (2, 5, NOW)
    assert held.add(old.shards()[2])  # a symbol not held yet takes any version
    assert (held.version, held.complete) == (4, False)
    missing = next(pid for pid in new.colours if pid[0] not in "012")
    assert held.colour_for(missing) is None  # its shard has not arrived: no listed colour
    with pytest.raises(ValueError, match="not a shard"):
        held.add(new)


def test_verification_reads_the_pass_shard():
    key = signing_key()
    pass_id = "R0000000AB"
    text = encode_pass(claims(pass_id=pass_id, colour=Colour.GREEN), key)
    listed = StatusList(3, NOW - DAY, {pass_id: Colour.YELLOW})
    without_r = StatusShards(s for s in listed.shards() if s.shard != "R")
    assert verify_pass(text, trust=trust_of(key), status=without_r, now=NOW).colour is Colour.GREEN
    with_r = StatusShards(listed.shards())
    result = verify_pass(text, trust=trust_of(key), status=with_r, now=NOW)
    assert (result.colour, result.flagged) == (Colour.YELLOW, True)


def test_shard_topics():
    assert topics.status_shard("Q") == "antoan/v1/broadcast/status/Q"
    assert topics.BROADCAST_STATUS_SHARDS == "antoan/v1/broadcast/status/+"
    assert [topics.parse_status_shard(topics.status_shard(c)) for c in CROCKFORD] == list(CROCKFORD)
    for topic in ("antoan/v1/broadcast/status", "antoan/v1/broadcast/status/U", "antoan/v1/broadcast/trust"):
        assert topics.parse_status_shard(topic) is None
    with pytest.raises(topics.TopicError):
        topics.status_shard("O")


def test_a_large_f2_fits_in_shards_but_not_in_one_message():
    """250,000 flagged passes (a p95 F2): one message is over the broker's limit, every shard far under it."""
    status = StatusList(9, NOW, dict.fromkeys(_pass_ids(250_000), Colour.YELLOW))
    assert len(status.to_json()) > topics.MAX_MESSAGE_BYTES
    sizes = [len(shard.to_json()) for shard in status.shards()]
    assert max(sizes) < topics.MAX_MESSAGE_BYTES / 3
    assert sum(len(s) for s in status.shards()) == 250_000


# ------------------------------------------------------------------------------------------ key files


@pytest.mark.parametrize("alg", ALGS)
@pytest.mark.parametrize("passphrase", [None, "mật khẩu dài", b"bytes-passphrase"])
def test_signing_key_pem_round_trip(alg, passphrase):
    key = signing_key(alg)
    pem = key.to_pem(passphrase)
    encrypted = b"ENCRYPTED PRIVATE KEY" in pem
    assert encrypted == (passphrase is not None) and (encrypted or b"BEGIN PRIVATE KEY" in pem)

    loaded = SigningKey.from_pem(pem, passphrase)
    assert (loaded.alg, loaded.kid) == (alg, key.kid)
    text = encode_pass(claims(), loaded)
    assert verify_pass(text, trust=trust_of(key), now=NOW).kid == key.kid
    assert b"BEGIN PUBLIC KEY" in key.public_pem()


def test_an_encrypted_pem_needs_the_right_passphrase():
    pem = signing_key().to_pem("right")
    with pytest.raises(ValueError, match="wrong passphrase"):
        SigningKey.from_pem(pem, "wrong")
    with pytest.raises(ValueError, match="cannot load"):
        SigningKey.from_pem(pem)
    with pytest.raises(ValueError, match="cannot load"):
        SigningKey.from_pem(signing_key().to_pem(), "unexpected")


def test_kids_are_derived_from_the_public_key_and_checked():
    key = signing_key()
    assert len(key.kid) == 8 and key.kid == kid_for(key.public_key)
    assert signing_key("ES256", 1).kid != key.kid
    with pytest.raises(ValueError, match="does not match the key"):
        SigningKey(key.private_key, "ES256", b"\0" * 8)
    with pytest.raises(ValueError, match="does not match the key"):
        TrustedKey(b"\0" * 8, "ES256", key.public_key, NOW, NOW + DAY)
    with pytest.raises(ValueError, match="EdDSA key"):
        SigningKey(signing_key("EdDSA").private_key, "ES256")
    with pytest.raises(ValueError, match="alg must be"):
        SigningKey.generate("RS256")  # type: ignore[arg-type]


def test_a_trust_list_is_a_dict_by_kid():
    es, ed = trusted(signing_key("ES256")), trusted(signing_key("EdDSA"))
    trust = TrustList({es.kid: es, ed.kid: ed}, 1, NOW)
    assert isinstance(trust.keys, dict) and trust.get(ed.kid) is ed and es.kid in trust
    with pytest.raises(ValueError, match="holds the key of kid"):
        TrustList({es.kid: ed}, 1, NOW)
    with pytest.raises(ValueError, match="appears twice"):
        TrustList([es, es], 1, NOW)
