"""Tests of the antoan-hub command line (click CliRunner, real SQLite files)."""

from __future__ import annotations

import json
import os
import sys
import types

import pytest
from click.testing import CliRunner
from flask import Flask

import hub.__main__ as cli
from hub.__main__ import main
from provisioning.broker import free_port


@pytest.fixture
def runner(monkeypatch) -> CliRunner:
    # The process environment must not leak hub settings into these tests.
    for key in [k for k in os.environ if k.startswith("ANTOAN_HUB")]:
        monkeypatch.delenv(key)
    return CliRunner()


@pytest.fixture
def config_file(tmp_path):
    path = tmp_path / "hub.toml"
    path.write_text(f'[database]\nurl = "sqlite:///{tmp_path / "db" / "hub.db"}"\n', encoding="utf-8")
    return path


def test_every_command_has_help_text(runner):
    assert main.help
    assert main.commands
    for name, command in main.commands.items():
        assert command.help and command.help.strip(), f"{name} has no help text"
        # --help must work without loading any configuration.
        result = CliRunner().invoke(
            main, [name, "--help"], env={"ANTOAN_HUB_CONFIG": "/no/such/file.toml"}, catch_exceptions=False
        )
        assert result.exit_code == 0, result.output
        assert command.help.split()[0] in result.output


def test_group_without_a_command_prints_help(runner):
    result = runner.invoke(main, [], catch_exceptions=False)
    assert result.exit_code == 0
    assert "migrate" in result.output


def test_validate_config_accepts_a_good_file(runner, config_file):
    result = runner.invoke(main, ["--config", str(config_file), "--validate-config"], catch_exceptions=False)
    assert result.exit_code == 0
    assert "configuration OK" in result.output


@pytest.mark.parametrize(
    ("content", "setting"),
    [
        ("[mqtt]\nport = 0\n", "mqtt.port"),
        ('[database]\nurll = "sqlite:///x.db"\n', "database.urll"),
        ('[database]\nurl = "mysql://x"\n', "database.url"),
    ],
)
def test_validate_config_names_the_bad_setting_and_exits_2(runner, tmp_path, content, setting):
    path = tmp_path / "bad.toml"
    path.write_text(content, encoding="utf-8")
    result = runner.invoke(main, ["--config", str(path), "--validate-config"], catch_exceptions=False)
    assert result.exit_code == 2
    assert setting in result.output
    assert "configuration OK" not in result.output


def test_config_path_can_come_from_the_environment(runner, tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[web]\nport = 70000\n", encoding="utf-8")
    result = runner.invoke(main, ["--validate-config"], env={"ANTOAN_HUB_CONFIG": str(path)})
    assert result.exit_code == 2
    assert "web.port" in result.output


def test_migrate_creates_and_reports_the_revision(runner, config_file, tmp_path):
    result = runner.invoke(main, ["--config", str(config_file), "migrate"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "revision 0005" in result.output
    assert (tmp_path / "db" / "hub.db").exists()
    again = runner.invoke(main, ["--config", str(config_file), "migrate"], catch_exceptions=False)
    assert again.exit_code == 0
    assert "revision 0005" in again.output


def test_stats_prints_json(runner, config_file):
    result = runner.invoke(main, ["--config", str(config_file), "stats"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"events_stored": 0, "dead_letters": 0, "kiosks": []}


def test_missing_config_file_is_one_clear_error(runner, tmp_path):
    result = runner.invoke(main, ["--config", str(tmp_path / "none.toml"), "migrate"], catch_exceptions=False)
    assert result.exit_code != 0
    assert "none.toml not found" in result.output
    assert "Traceback" not in result.output


def test_unreachable_database_is_one_clear_error(runner):
    url = f"postgresql+psycopg://nobody@127.0.0.1:{free_port()}/none"
    result = runner.invoke(main, ["migrate"], env={"ANTOAN_HUB__DATABASE__URL": url}, catch_exceptions=False)
    assert result.exit_code == 1
    assert "database error" in result.output
    assert len(result.stderr.strip().splitlines()) == 1


def test_web_migrates_then_serves_the_app(runner, config_file, monkeypatch):
    served = {}

    def fake_run_simple(host, port, app, **options):
        served.update(host=host, port=port, app=app, **options)

    monkeypatch.setattr(cli, "run_simple", fake_run_simple)
    result = runner.invoke(main, ["--config", str(config_file), "web"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "http://127.0.0.1:8080/" in result.output
    assert (served["host"], served["port"], served["threaded"]) == ("127.0.0.1", 8080, True)
    assert isinstance(served["app"], Flask)


def test_bridge_runs_the_bridge_with_the_loaded_config(runner, config_file, monkeypatch):
    received = []
    fake = types.ModuleType("hub.broker_bridge.bridge")
    fake.run_bridge = received.append
    monkeypatch.setitem(sys.modules, "hub.broker_bridge.bridge", fake)
    result = runner.invoke(main, ["--config", str(config_file), "bridge"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    (config,) = received
    assert config.database.url.endswith("hub.db")
