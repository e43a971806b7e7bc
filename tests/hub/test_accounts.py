"""Staff accounts and API tokens (hub.accounts) and their command line: create-admin, users, api-token."""

from __future__ import annotations

import os
import unicodedata
from datetime import UTC, datetime, timedelta

import click
import pytest
from click.testing import CliRunner
from sqlalchemy import select

from hub import accounts
from hub.__main__ import ROLE_NAMES, main
from hub.accounts import AccountError, Role
from hub.db import make_engine, migrate
from hub.db.schema import api_tokens, users

PASSWORD = "mật-khẩu-đủ-dài-1"


# ------------------------------------------------------------------------------------------ users


def test_usernames_are_normalised_and_unique_case_insensitively(hub_engine):
    decomposed = unicodedata.normalize("NFD", "  Thảo.Nguyễn ")
    with hub_engine.begin() as conn:
        user = accounts.create_user(
            conn, username=decomposed, display_name=" Nguyễn Thảo ", role="health_official", password=PASSWORD
        )
    assert user.username == unicodedata.normalize("NFC", "thảo.nguyễn")
    assert user.display_name == "Nguyễn Thảo" and user.role is Role.HEALTH_OFFICIAL and user.active
    with hub_engine.begin() as conn, pytest.raises(AccountError, match="already taken"):
        accounts.create_user(conn, username="THẢO.NGUYỄN", display_name="", role="admin", password=PASSWORD)
    with hub_engine.connect() as conn:
        assert [u.username for u in accounts.list_users(conn)] == [user.username]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"username": "ab"}, "username must be 3 to 64"),
        ({"username": "có dấu cách"}, "username must be 3 to 64"),
        ({"role": "root"}, "role must be one of"),
        ({"password": "ngắn"}, "at least 10 characters"),
        ({"password": "x" * 257}, "at most 256 characters"),
        ({"display_name": "T" * 201}, "at most 200 characters"),
    ],
)
def test_create_user_refuses_bad_input(hub_engine, fields, message):
    values = {
        "username": "nguoi.dung",
        "display_name": "Người Dùng",
        "role": "venue_manager",
        "password": PASSWORD,
    }
    with hub_engine.begin() as conn, pytest.raises(AccountError, match=message):
        accounts.create_user(conn, **{**values, **fields})
    with hub_engine.connect() as conn:
        assert accounts.list_users(conn) == []


def test_authenticate_checks_password_activity_and_records_the_login(hub_engine):
    with hub_engine.begin() as conn:
        user = accounts.create_user(
            conn, username="an.toan", display_name="", role="admin", password=PASSWORD
        )
    assert user.last_login_at is None
    assert accounts.authenticate(hub_engine, "an.toan", "sai-mật-khẩu") is None
    assert accounts.authenticate(hub_engine, "khong-co", PASSWORD) is None
    logged = accounts.authenticate(hub_engine, "AN.Toan", PASSWORD)
    assert logged is not None and logged.id == user.id and logged.last_login_at is not None
    with hub_engine.begin() as conn:
        accounts.set_active(conn, user.id, False)
    assert accounts.authenticate(hub_engine, "an.toan", PASSWORD) is None


def test_password_role_and_activity_changes_bump_the_session_version(hub_engine):
    with hub_engine.begin() as conn:
        user = accounts.create_user(conn, username="binh", display_name="", role="admin", password=PASSWORD)
        accounts.set_password(conn, user.id, "mật-khẩu-mới-12345")
        accounts.set_role(conn, user.id, Role.DISTRICT_IT)
        accounts.set_active(conn, user.id, False)
        accounts.set_active(conn, user.id, True)
        after = accounts.get_user(conn, user.id)
    assert after.session_version == user.session_version + 4
    assert after.role is Role.DISTRICT_IT
    assert accounts.authenticate(hub_engine, "binh", PASSWORD) is None
    assert accounts.authenticate(hub_engine, "binh", "mật-khẩu-mới-12345") is not None
    with hub_engine.begin() as conn:
        with pytest.raises(AccountError, match="at least 10"):
            accounts.set_password(conn, user.id, "ngắn")
        with pytest.raises(AccountError, match="role must be one of"):
            accounts.set_role(conn, user.id, "chief")
        with pytest.raises(AccountError, match="no user with id"):
            accounts.set_active(conn, 424242, False)


# ------------------------------------------------------------------------------------------ tokens


def test_api_tokens_store_only_a_digest_and_expire_and_revoke(hub_engine):
    now = datetime(2021, 8, 1, tzinfo=UTC)
    with hub_engine.begin() as conn:
        forever_id, forever = accounts.create_api_token(
            conn, name="giám sát", role="district_it", created_by=None
        )
        _short_id, short = accounts.create_api_token(
            conn, name="tạm", role="admin", created_by=None, expires_at=now + timedelta(days=1)
        )
        stored = conn.execute(select(api_tokens.c.token_sha256)).scalars().all()
    assert forever.startswith(accounts.TOKEN_PREFIX) and len(forever) > 40 and forever != short
    assert forever not in stored and short not in stored and all(len(d) == 64 for d in stored)
    with hub_engine.connect() as conn:
        principal = accounts.api_principal(conn, forever, now)
        assert (principal.token_id, principal.name, principal.role) == (
            forever_id,
            "giám sát",
            Role.DISTRICT_IT,
        )
        assert accounts.api_principal(conn, short, now + timedelta(hours=23)).role is Role.ADMIN
        assert accounts.api_principal(conn, short, now + timedelta(days=1)) is None  # expired
        for bad in ("", "at_", "at_" + "x" * 300, forever[3:], forever + "x", forever.upper()):
            assert accounts.api_principal(conn, bad, now) is None
    with hub_engine.begin() as conn:
        accounts.revoke_api_token(conn, forever_id)
    with hub_engine.connect() as conn:
        assert accounts.api_principal(conn, forever, now) is None
    with hub_engine.begin() as conn, pytest.raises(AccountError, match="no active API token"):
        accounts.revoke_api_token(conn, forever_id)


@pytest.mark.parametrize(
    ("name", "role", "message"), [("", "admin", "1 to 200"), ("x", "root", "role must be")]
)
def test_create_api_token_refuses_bad_input(hub_engine, name, role, message):
    with hub_engine.begin() as conn, pytest.raises(AccountError, match=message):
        accounts.create_api_token(conn, name=name, role=role, created_by=None)


# ---------------------------------------------------------------------------------------------- CLI


@pytest.fixture
def runner(monkeypatch) -> CliRunner:
    for key in [k for k in os.environ if k.startswith("ANTOAN_HUB")]:
        monkeypatch.delenv(key)
    return CliRunner()


def _invoke(runner: CliRunner, db_url: str, *args: str, input: str | None = None):
    return runner.invoke(
        main, list(args), input=input, env={"ANTOAN_HUB__DATABASE__URL": db_url}, catch_exceptions=False
    )


def _users(db_url: str) -> list[accounts.User]:
    engine = make_engine(db_url)
    try:
        migrate(engine)  # the CLI may have refused before it touched the database
        with engine.connect() as conn:
            return accounts.list_users(conn)
    finally:
        engine.dispose()


def test_role_names_of_the_cli_are_the_roles():
    assert tuple(role.value for role in Role) == ROLE_NAMES


def test_every_cli_subcommand_has_help(runner):
    def walk(group: click.Group, path: list[str]):
        for name, command in group.commands.items():
            assert command.help and command.help.strip(), f"{' '.join([*path, name])} has no help"
            result = runner.invoke(main, [*path, name, "--help"], catch_exceptions=False)
            assert result.exit_code == 0, result.output
            if isinstance(command, click.Group):
                walk(command, [*path, name])

    walk(main, [])


def test_create_admin_from_a_password_file_then_users_list(runner, db_url, tmp_path):
    secret = tmp_path / "admin_password"
    secret.write_text(PASSWORD + "\n", encoding="utf-8")
    result = _invoke(
        runner,
        db_url,
        "create-admin",
        "Quan.Tri",
        "--display-name",
        "Lê Quản Trị",
        "--password-file",
        str(secret),
    )
    assert result.exit_code == 0, result.output
    assert "admin quan.tri created" in result.output
    (user,) = _users(db_url)
    assert (user.username, user.display_name, user.role) == ("quan.tri", "Lê Quản Trị", Role.ADMIN)
    engine = make_engine(db_url)
    try:
        assert accounts.authenticate(engine, "quan.tri", PASSWORD) is not None
    finally:
        engine.dispose()

    listing = _invoke(runner, db_url, "users", "list")
    assert listing.exit_code == 0
    lines = listing.output.splitlines()
    assert lines[0].split()[:4] == ["id", "username", "role", "active"]
    assert "quan.tri" in lines[1] and "admin" in lines[1] and "yes" in lines[1] and "Lê Quản Trị" in lines[1]

    again = _invoke(runner, db_url, "create-admin", "quan.tri", "--password-file", str(secret))
    assert again.exit_code == 1
    assert again.stderr.strip().splitlines() == ["Error: username 'quan.tri' is already taken"]


def test_create_admin_asks_twice_and_reads_stdin(runner, db_url):
    asked = _invoke(runner, db_url, "create-admin", "hoi", input=f"{PASSWORD}\n{PASSWORD}\n")
    assert asked.exit_code == 0, asked.output
    piped = _invoke(runner, db_url, "create-admin", "ong", "--password-file", "-", input=f"{PASSWORD}\n")
    assert piped.exit_code == 0, piped.output
    assert sorted(u.username for u in _users(db_url)) == ["hoi", "ong"]


@pytest.mark.parametrize("password", ["ngắn", ""])
def test_create_admin_refuses_a_weak_password_in_one_line(runner, db_url, tmp_path, password):
    secret = tmp_path / "weak"
    secret.write_text(password + "\n", encoding="utf-8")
    result = _invoke(runner, db_url, "create-admin", "yeu", "--password-file", str(secret))
    assert result.exit_code == 1
    (line,) = result.stderr.strip().splitlines()
    assert line == "Error: weak password refused: password must have at least 10 characters"
    assert _users(db_url) == []


def test_create_admin_with_a_missing_password_file_is_one_line(runner, db_url, tmp_path):
    result = _invoke(runner, db_url, "create-admin", "quantri", "--password-file", str(tmp_path / "none"))
    assert result.exit_code == 1
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("Error: cannot read the password file")


def test_users_list_on_an_empty_hub_says_how_to_start(runner, db_url):
    result = _invoke(runner, db_url, "users", "list")
    assert result.exit_code == 0
    assert "antoan-hub create-admin" in result.output


def test_api_token_create_prints_the_token_once_and_revoke_stops_it(runner, db_url):
    created = _invoke(
        runner,
        db_url,
        "api-token",
        "create",
        "--name",
        "cấp phát quận 3",
        "--role",
        "district_it",
        "--expires-days",
        "30",
    )
    assert created.exit_code == 0, created.output
    token = created.stdout.strip()
    assert token.startswith("at_") and "\n" not in token
    assert "shown only now" in created.stderr and token not in created.stderr
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            principal = accounts.api_principal(conn, token)
            expires = conn.execute(select(api_tokens.c.expires_at)).scalar_one()
        assert principal.role is Role.DISTRICT_IT and principal.name == "cấp phát quận 3"
        expires = expires if expires.tzinfo else expires.replace(tzinfo=UTC)
        assert timedelta(days=29) < expires - datetime.now(UTC) <= timedelta(days=30)

        revoked = _invoke(runner, db_url, "api-token", "revoke", str(principal.token_id))
        assert revoked.exit_code == 0 and f"API token {principal.token_id} revoked" in revoked.output
        with engine.connect() as conn:
            assert accounts.api_principal(conn, token) is None
    finally:
        engine.dispose()
    twice = _invoke(runner, db_url, "api-token", "revoke", str(principal.token_id))
    assert twice.exit_code == 1
    assert twice.stderr.strip().splitlines() == [f"Error: no active API token with id {principal.token_id}"]


@pytest.mark.parametrize(
    "args",
    [
        ["api-token", "create", "--name", "x", "--role", "root"],
        ["api-token", "create", "--role", "admin"],
        ["api-token", "create", "--name", "x", "--role", "admin", "--expires-days", "0"],
        ["api-token", "revoke", "abc"],
    ],
)
def test_api_token_usage_errors_exit_2(runner, args):
    result = runner.invoke(main, args, env={"ANTOAN_HUB__DATABASE__URL": "sqlite://"})
    assert result.exit_code == 2


def test_cli_never_stores_a_clear_password(runner, db_url, tmp_path):
    secret = tmp_path / "pw"
    secret.write_text(PASSWORD, encoding="utf-8")
    assert _invoke(runner, db_url, "create-admin", "an.toan", "--password-file", str(secret)).exit_code == 0
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            stored = conn.execute(select(users.c.password_hash)).scalar_one()
    finally:
        engine.dispose()
    assert stored.startswith("$argon2id$") and PASSWORD not in stored
