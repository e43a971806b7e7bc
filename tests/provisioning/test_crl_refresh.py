"""The CRL expires (next update 30 days after signing) and then the broker refuses every kiosk:
`antoan-provision ca refresh-crl`, its daily systemd timer, and the bridge's warning (issue 5)."""

from __future__ import annotations

import configparser
import datetime as dt
import logging
import os
import shlex
import signal
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner

from hub.broker_bridge.bridge import _watch_crl
from hub.config import HubConfig
from provisioning.__main__ import main
from provisioning.broker import connect_once
from provisioning.pki import CRL_WARN_DAYS, HubCA, crl_expiry_warning, crl_next_update
from tests.helpers import ROOT, wait_for

pytestmark = pytest.mark.timeout(60)

SYSTEMD = ROOT / "provisioning" / "systemd"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _sign_crl_at(pki, when: dt.datetime) -> None:
    """Re-sign the CA's CRL as if it were ``when`` (its next update is then ``when`` + 30 days)."""
    HubCA.open(pki.ca.layout.root, clock=lambda: when).write_crl()


def _answer(broker, pki, files: tuple[Path, Path]) -> int | None:
    """The broker's CONNACK reason for this certificate; None when it refused the TLS handshake."""
    cert, key = files
    return connect_once(
        host=broker.host,
        port=broker.port,
        ca_file=pki.ca.layout.ca_cert,
        cert_file=cert,
        key_file=key,
        timeout_s=2,
    )


def _refresh(*args: str):
    return CliRunner().invoke(main, ["ca", "refresh-crl", *args], catch_exceptions=False)


def _days_left(pki) -> float:
    return (crl_next_update(pki.ca.layout.crl) - _now()).total_seconds() / 86400


def test_an_expired_crl_locks_every_kiosk_out_until_refresh_crl_reloads_the_broker(
    pki, secure_broker, tmp_path
):
    valid, revoked = pki.client_files("kiosk-a"), pki.client_files("kiosk-b")
    pki.ca.revoke_name("kiosk-b", reason="key_compromise")
    _sign_crl_at(pki, _now() - dt.timedelta(days=31))  # next update: yesterday
    secure_broker.reload()
    wait_for(
        lambda: _answer(secure_broker, pki, valid) is None,
        timeout_s=10,
        what="the broker with an expired CRL to refuse even a valid kiosk",
    )
    pid_file = tmp_path / "mosquitto.pid"
    pid_file.write_text(f"{secure_broker.proc.pid}\n")

    result = _refresh("--ca-dir", str(pki.ca.layout.root), "--broker-pid-file", str(pid_file))

    assert result.exit_code == 0
    assert len(result.output.splitlines()) == 1
    assert result.output.startswith("CRL re-signed, valid until ") and "broker reloaded" in result.output
    assert 29.9 < _days_left(pki) <= 30
    wait_for(
        lambda: _answer(secure_broker, pki, valid) == 0,
        timeout_s=10,
        what="the reloaded broker to accept the valid kiosk again",
    )
    assert _answer(secure_broker, pki, revoked) is None  # the revocation survived the re-signing


def test_refresh_crl_re_signs_only_within_the_window_unless_forced(pki, secure_broker):
    valid, revoked = pki.client_files("kiosk-a"), pki.client_files("kiosk-b")
    pki.ca.revoke_name("kiosk-b")
    ca_dir = ["--ca-dir", str(pki.ca.layout.root)]
    fresh = pki.ca.layout.crl.read_bytes()

    nothing = _refresh(*ca_dir)
    assert nothing.exit_code == 0 and nothing.output.strip().endswith("days left): nothing to do")
    assert pki.ca.layout.crl.read_bytes() == fresh

    _sign_crl_at(pki, _now() - dt.timedelta(days=25))  # 5 days left: inside the default 10-day window
    assert 4.9 < _days_left(pki) < 5.1
    assert "nothing to do" in _refresh(*ca_dir, "--within-days", "3").output
    due = _refresh(*ca_dir, "--reload-command", f"kill -HUP {secure_broker.proc.pid}")
    assert due.exit_code == 0 and due.output.strip().endswith("; broker reloaded"), due.output
    assert _days_left(pki) > 29.9

    forced = _refresh(*ca_dir, "--force", "--days", "7")
    assert forced.exit_code == 0
    assert forced.output.strip().endswith("reload the broker (SIGHUP) so it reads the new one")
    assert 6.9 < _days_left(pki) <= 7
    # After the re-signing and a reload, a valid kiosk still connects and a revoked one is still refused.
    secure_broker.reload()
    wait_for(lambda: _answer(secure_broker, pki, valid) == 0, timeout_s=10, what="the valid kiosk")
    assert _answer(secure_broker, pki, revoked) is None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--broker-pid-file", "{pid}", "--reload-command", "true"], "not both"),
        (["--reload-command", "false"], "CRL re-signed, valid until"),
        (["--broker-pid-file", "{garbage}"], "cannot signal the broker from"),
    ],
)
def test_refresh_crl_errors_are_one_clear_line(pki, tmp_path, args, message):
    (tmp_path / "pid").write_text("1\n")
    (tmp_path / "garbage").write_text("not a pid\n")
    args = [a.format(pid=tmp_path / "pid", garbage=tmp_path / "garbage") for a in args]
    result = CliRunner().invoke(
        main, ["ca", "refresh-crl", "--ca-dir", str(pki.ca.layout.root), "--force", *args]
    )
    assert result.exit_code != 0
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert message in lines[-1], result.output
    assert "Traceback" not in result.output


def test_refresh_crl_without_a_ca_says_what_to_run(tmp_path):
    result = CliRunner().invoke(main, ["ca", "refresh-crl", "--ca-dir", str(tmp_path / "none")])
    assert result.exit_code == 1
    (line,) = result.output.strip().splitlines()
    assert (
        line.startswith(f"Error: no CA in {tmp_path / 'none'}") and "run `antoan-provision ca init`" in line
    )


# ------------------------------------------------------------------------------ the systemd timer


def _unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.optionxform = str  # systemd keys are case-sensitive
    parser.read(SYSTEMD / name)
    return parser


def test_the_systemd_timer_runs_the_refresh_service_daily_and_catches_up_missed_days():
    timer = _unit("antoan-crl-refresh.timer")
    assert timer["Timer"]["OnCalendar"] == "daily"
    assert timer["Timer"]["Persistent"] == "true"
    assert timer["Install"]["WantedBy"] == "timers.target"
    service = _unit("antoan-crl-refresh.service")
    assert service["Service"]["Type"] == "oneshot"


def test_the_systemd_service_command_is_one_the_cli_accepts(pki, tmp_path):
    command = shlex.split(_unit("antoan-crl-refresh.service")["Service"]["ExecStart"])
    assert command[0].endswith("/antoan-provision") and command[1:3] == ["ca", "refresh-crl"]
    args = command[3:]
    # Exactly those options, pointed at this test's CA and at this test process as "the broker".
    args[args.index("--ca-dir") + 1] = str(pki.ca.layout.root)
    pid_file = tmp_path / "mosquitto.pid"
    pid_file.write_text(f"{os.getpid()}\n")
    args[args.index("--broker-pid-file") + 1] = str(pid_file)
    _sign_crl_at(pki, _now() - dt.timedelta(days=25))
    hup = threading.Event()
    previous = signal.signal(signal.SIGHUP, lambda *_: hup.set())
    try:
        result = CliRunner().invoke(main, ["ca", "refresh-crl", *args], catch_exceptions=False)
        assert result.exit_code == 0 and "broker reloaded" in result.output
        wait_for(hup.is_set, timeout_s=10, what="the SIGHUP")
    finally:
        signal.signal(signal.SIGHUP, previous)


# ------------------------------------------------------------------------------ the bridge's warning


def test_the_crl_warning_starts_within_seven_days_of_the_next_update(pki):
    root = pki.ca.layout.root
    now = _now()
    assert crl_expiry_warning(root, now) is None  # 30 days left
    assert crl_expiry_warning(root, now + dt.timedelta(days=30 - CRL_WARN_DAYS - 0.1)) is None
    soon = crl_expiry_warning(root, now + dt.timedelta(days=24))
    assert soon is not None and "expires at" in soon and "refresh-crl" in soon
    past = crl_expiry_warning(root, now + dt.timedelta(days=31))
    assert past is not None and "expired at" in past and "refuses every kiosk" in past


def test_without_a_ca_on_this_host_there_is_no_crl_warning(tmp_path):
    assert crl_expiry_warning(tmp_path / "no-ca", _now()) is None


def test_the_bridge_process_warns_in_its_log_when_the_crl_is_close_to_expiry(pki, caplog):
    config = HubConfig.model_validate({"enrolment": {"ca_dir": str(pki.ca.layout.root)}})
    stop = threading.Event()
    stop.set()  # one check, as at the bridge's start
    with caplog.at_level(logging.WARNING, logger="hub.broker_bridge.bridge"):
        _watch_crl(config, stop)
    assert caplog.records == []
    _sign_crl_at(pki, _now() - dt.timedelta(days=25))
    with caplog.at_level(logging.WARNING, logger="hub.broker_bridge.bridge"):
        _watch_crl(config, stop)
    (record,) = caplog.records
    assert record.levelname == "WARNING" and "expires at" in record.getMessage()
