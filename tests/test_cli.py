"""Kiosk and provisioning command lines: help everywhere, one clear line on errors."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from kiosk.__main__ import main as kiosk_main
from provisioning.__main__ import main as provision_main


def _commands(group: click.Group):
    yield group
    for command in group.commands.values():
        yield from _commands(command) if isinstance(command, click.Group) else [command]


@pytest.mark.parametrize("group", [kiosk_main, provision_main], ids=["kiosk", "provision"])
def test_every_command_has_help_text(group):
    for command in _commands(group):
        assert command.help and command.help.strip(), f"{command.name} has no help"
        for param in command.params:
            if isinstance(param, click.Option):
                assert param.help, f"{command.name} {param.opts} has no help"


def test_kiosk_validate_config_names_the_bad_setting(tmp_path):
    conf = tmp_path / "kiosk.toml"
    conf.write_text('kiosk_id = "kiosk-001"\nvenue_id = "v"\n[sync]\nbatch_sise = 5\n')
    result = CliRunner().invoke(kiosk_main, ["--config", str(conf), "--validate-config"])
    assert result.exit_code == 2
    assert "sync.batch_sise: unknown setting" in result.output


def test_kiosk_validate_config_accepts_a_good_file(tmp_path):
    conf = tmp_path / "kiosk.toml"
    conf.write_text('kiosk_id = "kiosk-001"\nvenue_id = "v"\n')
    result = CliRunner().invoke(
        kiosk_main, ["--config", str(conf), "--validate-config"], catch_exceptions=False
    )
    assert result.exit_code == 0
    assert "configuration OK" in result.output


def test_kiosk_status_reports_the_outbox(tmp_path):
    from kiosk.outbox import Outbox

    box = Outbox(tmp_path / "o.db")
    box.append("check_in", {})
    box.close()
    conf = tmp_path / "kiosk.toml"
    conf.write_text(f'kiosk_id = "kiosk-001"\nvenue_id = "v"\n[outbox]\npath = "{tmp_path / "o.db"}"\n')
    result = CliRunner().invoke(
        kiosk_main, ["--config", str(conf), "status", "--json"], catch_exceptions=False
    )
    assert '"unacked": 1' in result.output


def test_kiosk_status_without_an_outbox_is_a_clear_error(tmp_path):
    conf = tmp_path / "kiosk.toml"
    conf.write_text(f'kiosk_id = "kiosk-001"\nvenue_id = "v"\n[outbox]\npath = "{tmp_path / "none.db"}"\n')
    result = CliRunner().invoke(kiosk_main, ["--config", str(conf), "status"])
    assert result.exit_code == 1
    assert "no outbox" in result.output


def test_broker_config_refuses_without_insecure_and_renders_with_it(tmp_path):
    refused = CliRunner().invoke(provision_main, ["broker-config"])
    assert refused.exit_code != 0
    assert "--insecure" in refused.output
    out = tmp_path / "m.conf"
    ok = CliRunner().invoke(
        provision_main,
        ["broker-config", "--insecure", "--port", "1999", "-o", str(out)],
        catch_exceptions=False,
    )
    assert ok.exit_code == 0
    text = out.read_text()
    assert "listener 1999 127.0.0.1" in text
    assert "persistence true" in text
