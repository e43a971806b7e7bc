"""Mosquitto: render its configuration (plain trial or TLS with per-kiosk certificates), run it as a
child process (local stack and tests), and revoke a kiosk including its live session.

Revocation, measured on mosquitto 2.0.11: a SIGHUP reloads the CRL, so new connections with a revoked
certificate fail the TLS handshake, but the live session of that kiosk stays connected and its
publishes keep arriving. The broker drops it only when another client connects with the same client
id (a takeover). Because the TLS listener forces the client id to the certificate CN
(``use_username_as_clientid``), :func:`revoke_kiosk` makes a short-lived certificate for the kiosk id,
connects with it once with a clean start (the broker closes the old connection and discards its stored
session), disconnects and revokes that certificate too. No broker plugin is needed.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from protocol import topics
from provisioning.acl import render_acl
from provisioning.pki import (
    DEFAULT_SERVICES,
    HubCA,
    PkiError,
    validate_kiosk_id,
)

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


def _persistence_and_log_lines(data_dir: Path) -> list[str]:
    """Persistence, queue limits and logging: the same for the plain and the TLS broker."""
    return [
        "persistence true",
        f"persistence_location {data_dir}/",
        "autosave_interval 30",
        # The bridge's persistent session queues kiosk batches while it is down.
        "max_queued_messages 100000",
        "max_inflight_messages 100",
        f"message_size_limit {topics.MAX_MESSAGE_BYTES}",
        "log_dest stderr",
        "log_type error",
        "log_type warning",
        "log_type notice",
    ]


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
            *_persistence_and_log_lines(data_dir),
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
    """A mosquitto child process on loopback with its own configuration and data folder.

    ``config`` renders the configuration text from the instance (its port and layout); the default is
    the plain trial broker. Tests of the secured broker pass a function around :func:`render_secure_conf`.
    """

    def __init__(
        self,
        root: Path,
        *,
        port: int | None = None,
        host: str = "127.0.0.1",
        config: Callable[[MosquittoProcess], str] | None = None,
    ):
        self.layout = BrokerLayout(Path(root))
        self.host = host
        self.port = port or free_port(host)
        self.proc: subprocess.Popen | None = None
        self._config = config

    def write_config(self) -> Path:
        self.layout.data.mkdir(parents=True, exist_ok=True)
        if self._config is not None:
            text = self._config(self)
        else:
            text = render_plain_conf(port=self.port, data_dir=self.layout.data, bind=self.host)
        self.layout.conf.write_text(text)
        return self.layout.conf

    def reload(self) -> None:
        """SIGHUP: mosquitto re-reads its configuration, ACL file, certificates and CRL."""
        if self.proc is None or self.proc.poll() is not None:
            raise BrokerError("mosquitto is not running; start it before asking it to reload")
        self.proc.send_signal(signal.SIGHUP)

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


# --- the secured broker ------------------------------------------------------------------------------


def render_secure_conf(
    *,
    port: int,
    data_dir: Path,
    ca_file: Path,
    cert_file: Path,
    key_file: Path,
    crl_file: Path,
    acl_file: Path,
    bind: str = "0.0.0.0",
    insecure_listener_port: int | None = None,
    user: str | None = None,
) -> str:
    """A broker whose only listener (unless asked) is TLS with a client certificate for every client.

    The certificate CN becomes the user name and the client id, so the ACL's ``%u`` is the kiosk id
    and no client can take over another's session. ``insecure_listener_port`` adds a plain listener on
    127.0.0.1 without authentication (a local trial's hub processes); leave it out in the field.
    ``user`` is the account mosquitto drops to when started as root (it must read ``key_file``).
    """
    if insecure_listener_port is not None and insecure_listener_port == port:
        raise BrokerError("the insecure listener needs a port of its own")
    lines = [
        "# AnToan Check-in broker: TLS, one client certificate per kiosk (antoan-provision broker-config).",
        # Each listener carries its own authentication and ACL, so the optional plain listener can
        # never loosen the TLS one.
        "per_listener_settings true",
    ]
    if user:
        lines.append(f"user {user}")
    lines += [
        *_persistence_and_log_lines(data_dir),
        "connection_messages true",
        "",
        "# Kiosks and hub services: mutual TLS.",
        f"listener {port} {bind}",
        f"cafile {ca_file}",
        f"certfile {cert_file}",
        f"keyfile {key_file}",
        # Reloaded on SIGHUP; blocks new connections only (revoke_kiosk drops live ones).
        f"crlfile {crl_file}",
        "tls_version tlsv1.2",
        "require_certificate true",
        "use_identity_as_username true",
        "use_username_as_clientid true",
        "allow_anonymous false",
        f"acl_file {acl_file}",
        "",
    ]
    if insecure_listener_port is not None:
        lines += [
            "# Requested explicitly: plain TCP, no authentication, loopback only.",
            f"listener {insecure_listener_port} 127.0.0.1",
            "allow_anonymous true",
            "",
        ]
    return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class SecureBrokerFiles:
    """What :func:`write_secure_broker` wrote (or reused)."""

    conf: Path
    acl: Path
    server_cert: Path
    server_key: Path
    server_cert_issued: bool


def write_secure_broker(
    out_dir: Path,
    ca: HubCA,
    *,
    port: int = 8883,
    bind: str = "0.0.0.0",
    data_dir: Path = Path("/var/lib/mosquitto"),
    dns_names: Iterable[str] = ("localhost",),
    ip_addresses: Iterable[str] = ("127.0.0.1",),
    services: Iterable[str] = DEFAULT_SERVICES,
    insecure_listener_port: int | None = None,
    user: str | None = None,
) -> SecureBrokerFiles:
    """Write ``mosquitto.conf``, ``acl`` and (if missing) the broker's certificate into ``out_dir``.

    The configuration points at the CA folder's ``ca.pem`` and ``crl.pem`` directly, so a revocation
    written by the CA is what the broker reads on its next reload.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    server_cert, server_key = out / "server.pem", out / "server.key"
    issued = not (server_cert.exists() and server_key.exists())
    if issued:
        ca.issue_server_cert(dns_names=dns_names, ip_addresses=ip_addresses).write(server_cert, server_key)
    acl = out / "acl"
    acl.write_text(render_acl(services=services))
    conf = out / "mosquitto.conf"
    conf.write_text(
        render_secure_conf(
            port=port,
            bind=bind,
            data_dir=Path(data_dir),
            ca_file=ca.layout.ca_cert.resolve(),
            cert_file=server_cert.resolve(),
            key_file=server_key.resolve(),
            crl_file=ca.layout.crl.resolve(),
            acl_file=acl.resolve(),
            insecure_listener_port=insecure_listener_port,
            user=user,
        )
    )
    return SecureBrokerFiles(conf, acl, server_cert, server_key, issued)


# --- revocation -------------------------------------------------------------------------------------

#: CN of the throwaway certificate that proves the broker has loaded the new CRL.
CRL_CHECK_IDENTITY = "antoan-crl-check"
#: Lifetime of the throwaway certificates revoke_kiosk makes (they are revoked right after use anyway).
_THROWAWAY_DAYS = 10 / (24 * 60)


def _read_exact(sock, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("the broker closed the connection")
        data += chunk
    return data


def connect_once(
    *, host: str, port: int, ca_file: Path, cert_file: Path, key_file: Path, timeout_s: float
) -> int | None:
    """Open a TLS connection with this certificate, send an MQTT v5 CONNECT with a clean start and no
    session expiry, and return the CONNACK reason code; ``None`` when the broker refused the TLS
    handshake (with TLS 1.3 the refusal may only show as a closed connection after the handshake).
    A clean DISCONNECT follows an accepted connection, so no will and no session are left behind."""
    ctx = ssl.create_default_context(cafile=str(ca_file))
    ctx.load_cert_chain(str(cert_file), str(key_file))
    # CONNECT: protocol "MQTT" v5, flags clean start, keep-alive 10 s, no properties, empty client id
    # (the broker replaces it with the certificate CN).
    body = b"\x00\x04MQTT\x05\x02\x00\x0a\x00" + b"\x00\x00"
    packet = bytes([0x10, len(body)]) + body
    try:
        raw = socket.create_connection((host, port), timeout=timeout_s)
    except OSError as exc:
        raise BrokerError(f"cannot reach the broker at {host}:{port}: {exc}") from None
    try:
        with raw, ctx.wrap_socket(raw, server_hostname=host) as tls:
            tls.sendall(packet)
            if _read_exact(tls, 1)[0] != 0x20:  # not a CONNACK
                return None
            for _ in range(4):  # remaining length: a variable byte integer
                if not _read_exact(tls, 1)[0] & 0x80:
                    break
            _flags, reason = _read_exact(tls, 2)
            if reason < 0x80:
                tls.sendall(b"\xe0\x00")  # DISCONNECT, normal
            return reason
    except ssl.SSLCertVerificationError as exc:
        # Our side refused the broker: not a revocation answer, so never read it as one.
        raise BrokerError(
            f"the broker at {host}:{port} did not prove its identity ({exc.verify_message}); "
            "use a host name or address from its certificate, signed by this CA"
        ) from None
    except (ssl.SSLError, ConnectionError, TimeoutError, OSError):
        return None


def revoke_kiosk(
    ca: HubCA,
    kiosk_id: str,
    *,
    host: str,
    port: int,
    reload: Callable[[], None],
    reason: str = "unspecified",
    timeout_s: float = 10.0,
) -> list[int]:
    """Revoke every certificate of ``kiosk_id`` and drop its live session; return the serials revoked.

    Steps: revoke in the CRL; ``reload`` the broker (for a child process, :meth:`MosquittoProcess.reload`;
    for a system broker, a SIGHUP to its pid); wait until a certificate revoked in the same CRL is
    refused, which proves the broker runs with the new CRL (the kiosk can no longer come back); then
    take over the kiosk's client id once with a throwaway certificate, which closes the live
    connection and discards its session; finally revoke the throwaway certificate too. Safe to run
    again for the same kiosk (for example after a timeout).
    """
    validate_kiosk_id(kiosk_id)
    had_certs = bool(ca.issued(name=kiosk_id))
    if not had_certs:
        raise PkiError(f"this CA never issued a certificate to {kiosk_id!r}; check the kiosk id")
    serials = ca.revoke_name(kiosk_id, reason=reason)
    with tempfile.TemporaryDirectory(prefix="antoan-revoke-") as tmp:
        folder = Path(tmp)

        def throwaway(name: str, *, service: bool):
            pair = ca.issue_client(name, days=_THROWAWAY_DAYS, service=service)
            cert, key = folder / f"{name}.pem", folder / f"{name}.key"
            pair.write(cert, key)
            return pair, cert, key

        def connect(cert: Path, key: Path) -> int | None:
            return connect_once(
                host=host, port=port, ca_file=ca.layout.ca_cert, cert_file=cert, key_file=key, timeout_s=2.0
            )

        check, check_cert, check_key = throwaway(CRL_CHECK_IDENTITY, service=True)
        ca.revoke(check.cert.serial_number, reason="cessation_of_operation")
        reload()
        deadline = time.monotonic() + timeout_s
        while connect(check_cert, check_key) is not None:
            if time.monotonic() > deadline:
                raise BrokerError(
                    f"the broker at {host}:{port} still accepts revoked certificates after {timeout_s:g} s: "
                    "is the reload reaching it, and does its crlfile point at this CA's crl.pem?"
                )
            time.sleep(0.1)
        kicker, kick_cert, kick_key = throwaway(kiosk_id, service=False)
        try:
            answer = connect(kick_cert, kick_key)
        finally:
            ca.revoke(kicker.cert.serial_number, reason="cessation_of_operation")
            reload()
        if answer is None or answer >= 0x80:
            raise BrokerError(
                f"could not take over {kiosk_id}'s session at {host}:{port} (answer {answer}); "
                "its certificate is revoked but a live connection may remain: run the revocation again"
            )
    log.info("revoked %s (%d certificate(s)); its live session was closed", kiosk_id, len(serials))
    return serials
