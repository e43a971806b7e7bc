"""Each hub connection to a certificate-checking broker has its own identity (no session takeovers)."""

from __future__ import annotations

import pytest

from hub.config import HubConfig, load
from hub.web.app import _probe_settings
from protocol.settings import ConfigError


def _config(**web) -> HubConfig:
    return HubConfig.model_validate(
        {
            "mqtt": {"tls": {"ca_file": "ca.pem", "cert_file": "bridge.pem", "key_file": "bridge.key"}},
            "bridge": {"lists_tls": {"ca_file": "ca.pem", "cert_file": "lists.pem", "key_file": "lists.key"}},
            "web": web,
        }
    )


def test_the_health_probe_uses_its_own_certificate_when_given():
    config = _config(broker_probe_tls={"ca_file": "ca.pem", "cert_file": "web.pem", "key_file": "web.key"})
    probe = _probe_settings(config)
    assert str(probe.tls.cert_file) == "web.pem"
    assert (probe.host, probe.port) == (config.mqtt.host, config.mqtt.port)
    assert str(config.mqtt.tls.cert_file) == "bridge.pem"  # the bridge's own settings are untouched


def test_without_a_probe_certificate_the_probe_uses_the_mqtt_settings():
    config = _config()
    assert _probe_settings(config) is config.mqtt
    assert str(config.bridge.lists_tls.cert_file) == "lists.pem"


def test_web_https_needs_certificate_and_key_together():
    with pytest.raises(ConfigError, match="tls_cert and tls_key must be given together"):
        load(None, environ={"ANTOAN_HUB__WEB__TLS_CERT": "web.pem"})
