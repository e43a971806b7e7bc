"""Mosquitto: render a configuration and run the broker as a child process (local stack and tests)."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


class BrokerError(RuntimeError):
    """The broker could not be configured or started."""


@dataclass(frozen=True, slots=True)
class BrokerLayout:
    """Where one broker instance keeps its files."""

    root: Path

    @property
    def conf(self) -> Path:
        return self.root / "mosquitto.conf"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def log(self) -> Path:
        return self.root / "mosquitto.log"


def render_plain_conf(*, port: int, data_dir: Path, bind: str = "127.0.0.1") -> str:
    """A broker on plain TCP without authentication, for a local trial or a test on loopback only.

    Persistence is on so the bridge's session and queued messages survive a broker restart.
    Kiosks in the field use the TLS configuration that enrolment generates.
    """
    return "\n".join(
        [
            "# AnToan Check-in: local broker WITHOUT authentication. Loopback use only.",
            "per_listener_settings false",
            f"listener {port} {bind}",
            "allow_anonymous true",
            "persistence true",
            f"persistence_location {data_dir}/",
            "autosave_interval 30",
            # The bridge's persistent session queues kiosk batches while it is down.
            "max_queued_messages 100000",
            "max_inflight_messages 100",
            "message_size_limit 1048576",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "",
        ]
    )


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def mosquitto_binary() -> str:
    for candidate in (shutil.which("mosquitto"), "/usr/sbin/mosquitto"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise BrokerError("mosquitto is not installed: run ./run (it installs it) or apt-get install mosquitto")


class MosquittoProcess:
    """A mosquitto child process on loopback with its own configuration and data folder."""

    def __init__(self, root: Path, *, port: int | None = None, host: str = "127.0.0.1"):
        self.layout = BrokerLayout(Path(root))
        self.host = host
        self.port = port or free_port(host)
        self.proc: subprocess.Popen | None = None

    def write_config(self) -> Path:
        self.layout.data.mkdir(parents=True, exist_ok=True)
        self.layout.conf.write_text(
            render_plain_conf(port=self.port, data_dir=self.layout.data, bind=self.host)
        )
        return self.layout.conf

    def start(self, *, timeout_s: float = 10.0) -> MosquittoProcess:
        """Start and wait until the port accepts connections."""
        if not self.layout.conf.exists():
            self.write_config()
        if port_open(self.host, self.port):
            raise BrokerError(f"port {self.host}:{self.port} is already in use")
        logfile = self.layout.log.open("ab")
        self.proc = subprocess.Popen(
            [mosquitto_binary(), "-c", str(self.layout.conf)],
            stdout=logfile,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        logfile.close()
        deadline = time.monotonic() + timeout_s
        while not port_open(self.host, self.port):
            if self.proc.poll() is not None:
                raise BrokerError(f"mosquitto exited with {self.proc.returncode}; see {self.layout.log}")
            if time.monotonic() > deadline:
                self.stop()
                raise BrokerError(f"mosquitto did not listen on {self.port} within {timeout_s:g} s")
            time.sleep(0.05)
        log.info("mosquitto listening on %s:%d (pid %d)", self.host, self.port, self.proc.pid)
        return self

    def kill(self) -> None:
        """SIGKILL: the broker gets no chance to save anything."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
        self.proc = None

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM and wait (mosquitto saves its persistence file on the way out)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
