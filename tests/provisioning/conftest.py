"""A CA made on the fly and a real mosquitto started with the generated TLS configuration."""

from __future__ import annotations

import getpass
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from provisioning.acl import render_acl
from provisioning.broker import MosquittoProcess, render_secure_conf
from provisioning.pki import BRIDGE_IDENTITY, HubCA, KeyPair
from tests.provisioning.clients import TlsClient


@dataclass
class Pki:
    ca: HubCA
    folder: Path

    def client_files(self, name: str, *, service: bool = False) -> tuple[Path, Path]:
        """Issue ``name`` a certificate and write it with its key (the test plays the kiosk)."""
        pair: KeyPair = self.ca.issue_client(name, service=service, days=1)
        cert, key = self.folder / f"{name}-{pair.cert.serial_number:x}.pem", self.folder / f"{name}.key"
        pair.write(cert, key)
        return cert, key


@pytest.fixture
def pki(tmp_path) -> Pki:
    folder = tmp_path / "certs"
    folder.mkdir()
    return Pki(HubCA.init(tmp_path / "ca"), folder)


@pytest.fixture
def secure_broker(tmp_path, pki) -> Iterator[MosquittoProcess]:
    """mosquitto with the TLS configuration of render_secure_conf on a free loopback port."""
    root = tmp_path / "broker"
    root.mkdir()
    pki.ca.issue_server_cert(dns_names=["localhost"], ip_addresses=["127.0.0.1"]).write(
        root / "server.pem", root / "server.key"
    )
    (root / "acl").write_text(render_acl())

    def conf(broker: MosquittoProcess) -> str:
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

    broker = MosquittoProcess(root, config=conf).start()
    yield broker
    broker.stop()


ClientFactory = Callable[..., TlsClient]


@pytest.fixture
def connect(secure_broker, pki) -> Iterator[ClientFactory]:
    """``connect(name)`` → a started TlsClient with a fresh certificate for ``name``; stopped at the end."""
    made: list[TlsClient] = []

    def factory(
        name: str | None, *, service: bool | None = None, files: tuple[Path, Path] | None = None, **kw
    ) -> TlsClient:
        if files is None and name is not None:
            files = pki.client_files(name, service=name == BRIDGE_IDENTITY if service is None else service)
        cert, key = files if files else (None, None)
        client = TlsClient(
            host=secure_broker.host,
            port=secure_broker.port,
            ca_file=pki.ca.layout.ca_cert,
            cert_file=cert,
            key_file=key,
            **kw,
        )
        made.append(client.start())
        return client

    yield factory
    for client in made:
        client.stop()
