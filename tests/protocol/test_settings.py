"""Configuration loading: file, environment overrides, secret files, clear errors."""

from __future__ import annotations

import pytest

from hub.config import load as load_hub
from kiosk.config import load as load_kiosk
from protocol.settings import ConfigError


def test_environment_overrides_the_file(tmp_path):
    conf = tmp_path / "kiosk.toml"
    conf.write_text('kiosk_id = "kiosk-001"\nvenue_id = "v1"\n[mqtt]\nport = 1883\n')
    cfg = load_kiosk(
        conf, environ={"ANTOAN_KIOSK__MQTT__PORT": "8883", "ANTOAN_KIOSK__SYNC__BATCH_SIZE": "50"}
    )
    assert (cfg.mqtt.port, cfg.sync.batch_size) == (8883, 50)


def test_a_secret_comes_from_a_file_named_in_the_environment(tmp_path):
    secret = tmp_path / "web_key"
    secret.write_text("s3cr3t\n")
    cfg = load_hub(None, environ={"ANTOAN_HUB__WEB__SECRET_KEY_FILE": str(secret)})
    assert cfg.web.secret_key.get_secret_value() == "s3cr3t"
    assert "s3cr3t" not in repr(cfg)


def test_settings_named_file_are_set_directly_from_the_environment(tmp_path):
    environ = {
        "ANTOAN_HUB__MQTT__TLS__CA_FILE": "/etc/antoan/ca.pem",
        "ANTOAN_HUB__MQTT__TLS__CERT_FILE": "/etc/antoan/bridge.pem",
        "ANTOAN_HUB__MQTT__TLS__KEY_FILE": "/etc/antoan/bridge.key",
    }
    cfg = load_hub(None, environ=environ)
    assert str(cfg.mqtt.tls.ca_file) == "/etc/antoan/ca.pem"
    assert str(cfg.mqtt.tls.key_file) == "/etc/antoan/bridge.key"
    kiosk = load_kiosk(
        None,
        environ={
            "ANTOAN_KIOSK__KIOSK_ID": "kiosk-001",
            "ANTOAN_KIOSK__VENUE_ID": "v1",
            "ANTOAN_KIOSK__MQTT__TLS__CA_FILE": "/etc/antoan/ca.pem",
        },
    )
    assert str(kiosk.mqtt.tls.ca_file) == "/etc/antoan/ca.pem"


def test_a_missing_secret_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read the secret file"):
        load_hub(None, environ={"ANTOAN_HUB__WEB__SECRET_KEY_FILE": str(tmp_path / "nope")})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('kiosk_id = "kiosk-001"\nvenue_id = "v"\n[mqtt]\nprot = 1\n', "mqtt.prot: unknown setting"),
        ('kiosk_id = "Kiosk 1"\nvenue_id = "v"\n', "kiosk_id"),
        ('venue_id = "v"\n', "kiosk_id: Field required"),
        ('kiosk_id = "kiosk-001"\nvenue_id = "v"\n[sync]\nbatch_size = 0\n', "sync.batch_size"),
        ("kiosk_id = \n", "not valid TOML"),
    ],
)
def test_bad_kiosk_files_name_the_setting_at_fault(tmp_path, text, message):
    conf = tmp_path / "kiosk.toml"
    conf.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_kiosk(conf, environ={})


def test_a_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_kiosk(tmp_path / "nope.toml", environ={})


def test_hub_accepts_plain_postgresql_urls():
    cfg = load_hub(None, environ={"ANTOAN_HUB__DATABASE__URL": "postgresql://u@h/db"})
    assert cfg.database.url == "postgresql+psycopg://u@h/db"
