"""TLS test clients on the secured broker (``pki`` and ``secure_broker`` come from tests/tls_fixtures.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from provisioning.pki import BRIDGE_IDENTITY
from tests.provisioning.clients import TlsClient
from tests.tls_fixtures import Pki

ClientFactory = Callable[..., TlsClient]


@pytest.fixture
def connect(secure_broker, pki: Pki) -> Iterator[ClientFactory]:
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
