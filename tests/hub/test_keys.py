"""Signing keys: one key on concurrent first use, encrypted at rest, rotation, the trust list, the CLI."""

from __future__ import annotations

import os
import threading
from datetime import UTC, datetime, timedelta

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from hub.__main__ import main
from hub.config import PassSettings
from hub.db import make_engine, migrate
from hub.db.schema import list_versions, signing_keys
from hub.keys import (
    CLOCK_MARGIN,
    STATUS,
    TRUST,
    KeyRing,
    KeyRingError,
    bump_list_version,
    list_version,
    list_versions_now,
)
from hub.passes import issue_pass
from protocol.healthpass import SigningKey
from tests.helpers import write_toml

NOW = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)


def _key_count(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(signing_keys)).scalar_one()


def test_concurrent_first_calls_from_two_engines_create_exactly_one_key(db_url):
    engines = [make_engine(db_url), make_engine(db_url)]
    try:
        migrate(engines[0])
        settings = PassSettings()
        rings = [KeyRing(engines[i % 2], settings) for i in range(6)]
        barrier = threading.Barrier(len(rings))
        kids: list[str] = []
        errors: list[BaseException] = []

        def first_use(ring: KeyRing) -> None:
            try:
                barrier.wait(10)
                kids.append(ring.signing_key(NOW)[0])
            except BaseException as exc:  # reported below: a thread must not swallow the failure
                errors.append(exc)

        threads = [threading.Thread(target=first_use, args=(ring,)) for ring in rings]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert not errors, errors
        assert len(kids) == len(rings) and len(set(kids)) == 1
        assert _key_count(engines[0]) == 1
        with engines[1].connect() as conn:
            assert list_version(conn, TRUST) == 1  # the losers changed nothing
    finally:
        for engine in engines:
            engine.dispose()


def test_concurrent_version_bumps_are_all_counted(db_url):
    engines = [make_engine(db_url), make_engine(db_url)]
    try:
        migrate(engines[0])
        per_thread, threads_n = 10, 4
        barrier = threading.Barrier(threads_n)
        errors: list[BaseException] = []

        def bump(engine) -> None:
            try:
                barrier.wait(10)
                for _ in range(per_thread):
                    with engine.begin() as conn:
                        bump_list_version(conn, STATUS, NOW)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=bump, args=(engines[i % 2],)) for i in range(threads_n)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert not errors, errors
        with engines[0].connect() as conn:
            assert list_versions_now(conn)[STATUS] == per_thread * threads_n
            assert list_versions_now(conn)[TRUST] == 0
            rows = conn.execute(select(func.count()).select_from(list_versions)).scalar_one()
        assert rows == 1
    finally:
        for engine in engines:
            engine.dispose()


def test_keys_are_encrypted_at_rest_with_the_passphrase(hub_engine):
    ring = KeyRing(hub_engine, PassSettings(key_passphrase="correct horse battery"))
    kid, key = ring.signing_key(NOW)
    with hub_engine.connect() as conn:
        pem, encrypted = conn.execute(select(signing_keys.c.private_pem, signing_keys.c.encrypted)).one()
    assert encrypted is True or encrypted == 1
    assert pem.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    with pytest.raises(ValueError):
        SigningKey.from_pem(pem)  # useless without the passphrase
    # Another process with the same passphrase signs with the very same key.
    again_kid, again = KeyRing(hub_engine, PassSettings(key_passphrase="correct horse battery")).signing_key(
        NOW
    )
    assert (again_kid, again.public_pem()) == (kid, key.public_pem())


def test_a_wrong_or_missing_passphrase_is_a_clear_error(hub_engine):
    KeyRing(hub_engine, PassSettings(key_passphrase="right one")).signing_key(NOW)
    with pytest.raises(KeyRingError, match=r"wrong passes\.key_passphrase"):
        KeyRing(hub_engine, PassSettings(key_passphrase="wrong one")).signing_key(NOW)
    with pytest.raises(KeyRingError, match="no passphrase is configured"):
        KeyRing(hub_engine, PassSettings()).signing_key(NOW)


def test_without_a_passphrase_the_key_is_stored_plain(hub_engine):
    kid, _ = KeyRing(hub_engine, PassSettings()).signing_key(NOW)
    with hub_engine.connect() as conn:
        pem = conn.execute(select(signing_keys.c.private_pem)).scalar_one()
    assert SigningKey.from_pem(pem).kid.hex() == kid


@pytest.mark.parametrize("alg", ["ES256", "EdDSA"])
def test_new_keys_use_the_configured_algorithm(hub_engine, alg):
    _, key = KeyRing(hub_engine, PassSettings(key_alg=alg)).signing_key(NOW)
    assert key.alg == alg


def test_rotation_keeps_the_old_key_trusted_until_its_passes_expire(hub_engine):
    settings = PassSettings(validity_days=14)
    ring = KeyRing(hub_engine, settings)
    old_kid, _ = ring.signing_key(NOW)
    assert list(ring.trust_list(NOW).keys) == [bytes.fromhex(old_kid)]
    rotated_at = NOW + timedelta(days=3)
    new_kid = ring.rotate(rotated_at)
    assert new_kid != old_kid
    assert ring.signing_key(rotated_at)[0] == new_kid  # the old key signs nothing more

    trust = ring.trust_list(rotated_at)
    assert set(trust.keys) == {bytes.fromhex(old_kid), bytes.fromhex(new_kid)}
    assert trust.version == 2  # created, rotated
    old_entry = trust.get(bytes.fromhex(old_kid))
    assert old_entry.not_after == rotated_at + CLOCK_MARGIN
    assert old_entry.not_before <= NOW

    info = {k.kid: k for k in ring.list_keys()}
    assert info[old_kid].retired_at == rotated_at and not info[old_kid].active
    until = info[old_kid].trusted_until
    assert until == rotated_at + CLOCK_MARGIN + timedelta(days=14)
    assert info[new_kid].active and info[new_kid].trusted_until is None
    assert bytes.fromhex(old_kid) in ring.trust_list(until - timedelta(seconds=1)).keys
    assert set(ring.trust_list(until).keys) == {bytes.fromhex(new_kid)}


def test_a_retired_key_stays_trusted_as_long_as_its_longest_pass(hub_engine):
    settings = PassSettings(validity_days=14)
    ring = KeyRing(hub_engine, settings)
    with hub_engine.begin() as conn:
        long_pass = issue_pass(
            conn,
            declaration_id=1,
            kind="vhd",
            full_name="John Smith",
            birth_year=1980,
            colour="green",
            keyring=ring,
            settings=settings,
            now=NOW,
            validity=timedelta(days=60),
        )
    ring.rotate(NOW + timedelta(days=1))
    old = next(k for k in ring.list_keys() if not k.active)
    assert old.passes_signed == 1
    assert old.trusted_until == long_pass.expires_at


def test_a_key_cannot_sign_passes_dated_before_it_existed(hub_engine):
    ring = KeyRing(hub_engine, PassSettings())
    ring.signing_key(NOW)
    ring.signing_key(NOW - CLOCK_MARGIN)  # hub processes' clocks may differ a little
    with pytest.raises(KeyRingError, match="cannot be dated before its key"):
        ring.signing_key(NOW - timedelta(days=1))


# ------------------------------------------------------------------------------------------ CLI


@pytest.fixture
def runner(monkeypatch) -> CliRunner:
    for key in [k for k in os.environ if k.startswith("ANTOAN_HUB")]:
        monkeypatch.delenv(key)
    return CliRunner()


def _config(tmp_path, db_url: str, passphrase: str | None = None):
    passes = {"key_passphrase": passphrase} if passphrase else {}
    return write_toml(tmp_path / "hub.toml", {"database": {"url": db_url}, "passes": passes})


def test_keys_commands_have_help(runner):
    group = main.commands["keys"]
    assert group.help
    for name, command in group.commands.items():
        assert command.help and command.help.strip(), f"keys {name} has no help text"
        result = runner.invoke(main, ["keys", name, "--help"], catch_exceptions=False)
        assert result.exit_code == 0, result.output


def test_keys_list_and_rotate(runner, tmp_path, db_url):
    config = _config(tmp_path, db_url)
    empty = runner.invoke(main, ["--config", str(config), "keys", "list"], catch_exceptions=False)
    assert empty.exit_code == 0 and "no signing keys yet" in empty.output

    first = runner.invoke(main, ["--config", str(config), "keys", "rotate"], catch_exceptions=False)
    assert first.exit_code == 0, first.output
    second = runner.invoke(main, ["--config", str(config), "keys", "rotate"], catch_exceptions=False)
    assert second.exit_code == 0, second.output
    first_kid = first.output.split()[3]
    second_kid = second.output.split()[3]
    assert f"key {first_kid} retired, trusted until" in second.output

    listed = runner.invoke(main, ["--config", str(config), "keys", "list"], catch_exceptions=False)
    assert listed.exit_code == 0, listed.output
    lines = listed.output.strip().splitlines()
    assert lines[0].split()[:3] == ["kid", "alg", "created"]
    assert lines[1].startswith(first_kid) and lines[1].rstrip().endswith(" 0")
    assert lines[2].startswith(second_kid) and "while active" in lines[2]


def _store_key(db_url: str, passphrase: str) -> None:
    engine = make_engine(db_url)
    try:
        migrate(engine)
        KeyRing(engine, PassSettings(key_passphrase=passphrase)).signing_key(datetime.now(UTC))
    finally:
        engine.dispose()


@pytest.mark.parametrize("command", [["keys", "rotate"], ["bridge"]])
def test_a_wrong_passphrase_fails_with_one_clear_line(runner, tmp_path, db_url, command):
    _store_key(db_url, "the real one")
    config = _config(tmp_path, db_url, passphrase="a wrong one")
    # The bridge stops at start-up, before it connects to any broker.
    result = runner.invoke(main, ["--config", str(config), *command], catch_exceptions=False)
    assert result.exit_code != 0
    error = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(error) == 1 and "wrong passes.key_passphrase" in error[0]
    engine = make_engine(db_url)
    try:
        assert _key_count(engine) == 1  # nothing stored under the mistyped passphrase
    finally:
        engine.dispose()
