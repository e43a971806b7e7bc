"""The secured broker for tests: a CA made on the fly, mosquitto with the generated TLS configuration
and ACL, and a client certificate for every identity (kiosk id or hub service) that connects.

The broker takes each client's id from its certificate's CN (``use_username_as_clientid``), so two
connections with one identity take each other over: every MQTT client of a test (each kiosk, each
bridge worker, the list publisher) gets an identity of its own from :class:`Identities`.
"""

from __future__ import annotations

import getpass
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from protocol.settings import MqttSettings, TlsSettings
from provisioning.acl import render_acl
from provisioning.broker import MosquittoProcess, render_secure_conf
from provisioning.pki import DEFAULT_SERVICES, SERVICE_PREFIX, HubCA, KeyPair

#: A second bridge worker on the shared subscription (the scale path): a service identity of its own.
SECOND_BRIDGE = "antoan-bridge-2"
#: Hub services with the bridge's rights in the tests' broker ACL.
TEST_SERVICES = (*DEFAULT_SERVICES, SECOND_BRIDGE)


@dataclass
class Pki:
    ca: HubCA
    folder: Path

    def client_files(self, name: str, *, service: bool = False, days: float = 1) -> tuple[Path, Path]:
        """Issue ``name`` a certificate and write it with its key (the test plays the kiosk)."""
        pair: KeyPair = self.ca.issue_client(name, service=service, days=days)
        cert, key = self.folder / f"{name}-{pair.cert.serial_number:x}.pem", self.folder / f"{name}.key"
        pair.write(cert, key)
        return cert, key


def make_pki(root: Path) -> Pki:
    """A new CA under ``root/ca`` and a folder for the certificates issued from it."""
    folder = root / "certs"
    folder.mkdir(parents=True, exist_ok=True)
    return Pki(HubCA.init(root / "ca"), folder)


def secure_mosquitto(root: Path, pki: Pki, *, port: int | None = None) -> MosquittoProcess:
    """mosquitto (not started) with the configuration of :func:`render_secure_conf` on loopback.

    The server certificate, ACL and configuration are written on the first start only, so starting
    the same instance again after :meth:`MosquittoProcess.kill` reuses the same TLS files and port.
    """
    root.mkdir(parents=True, exist_ok=True)

    def conf(broker: MosquittoProcess) -> str:
        pki.ca.issue_server_cert(dns_names=["localhost"], ip_addresses=["127.0.0.1"]).write(
            root / "server.pem", root / "server.key"
        )
        (root / "acl").write_text(render_acl(services=TEST_SERVICES))
        return render_secure_conf(
            port=broker.port,
            bind=broker.host,
            data_dir=broker.layout.data,
            ca_file=pki.ca.layout.ca_cert,
            cert_file=root / "server.pem",
            key_file=root / "server.key",
            crl_file=pki.ca.layout.crl,
            acl_file=root / "acl",
            # As root, mosquitto would drop to its own user, which cannot read the test's 0600 key.
            user=getpass.getuser(),
        )

    return MosquittoProcess(root, port=port, config=conf)


@dataclass
class Identities:
    """MQTT settings for each identity on one secured broker; a certificate is issued per name, once."""

    pki: Pki
    host: str
    port: int
    keepalive_s: int = 5
    _files: dict[str, tuple[Path, Path]] = field(default_factory=dict)

    def files(self, name: str) -> tuple[Path, Path]:
        """Certificate and key of ``name`` (a kiosk id, or a hub service ``antoan-…``)."""
        if name not in self._files:
            self._files[name] = self.pki.client_files(name, service=name.startswith(SERVICE_PREFIX))
        return self._files[name]

    def tls(self, name: str) -> TlsSettings:
        cert, key = self.files(name)
        return TlsSettings(ca_file=self.pki.ca.layout.ca_cert, cert_file=cert, key_file=key)

    def __call__(self, name: str) -> MqttSettings:
        """The settings ``name`` connects with."""
        return MqttSettings(host=self.host, port=self.port, keepalive_s=self.keepalive_s, tls=self.tls(name))

    def toml(self, name: str) -> dict:
        """The same as a configuration file's ``[mqtt]`` table (with ``[mqtt.tls]``)."""
        return self(name).model_dump(mode="json", exclude_none=True)


@pytest.fixture
def pki(tmp_path) -> Pki:
    return make_pki(tmp_path)


@pytest.fixture
def secure_broker(tmp_path, pki) -> Iterator[MosquittoProcess]:
    """mosquitto with the TLS configuration of render_secure_conf on a free loopback port."""
    broker = secure_mosquitto(tmp_path / "broker", pki).start()
    yield broker
    broker.stop()


@pytest.fixture
def identities(secure_broker, pki) -> Identities:
    """``identities(name)`` → MqttSettings with a certificate for ``name`` on ``secure_broker``."""
    return Identities(pki, secure_broker.host, secure_broker.port)
