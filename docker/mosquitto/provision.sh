#!/bin/sh
# One-shot provisioning for docker/compose.yaml (its `provision` service), run at every `up` before the
# broker and the hub start: the hub CA (made once), a CRL with a month to go, the broker's TLS
# configuration (`antoan-provision broker-config --tls`) and the hub services' MQTT client
# certificates, all kept in named volumes. Safe to run again: a current CA, server certificate and
# service certificates are kept; only what is missing or close to expiry is issued.
set -eu

# The defaults are the compose file's mount points; the variables exist to try the script elsewhere.
CA="${CA:-/srv/antoan/ca}"                 # volume hub-ca: web (signs kiosk CSRs), bridge, mosquitto
CERTS="${CERTS:-/srv/antoan/certs}"        # volume hub-certs: hub services' client certificates, keys
BROKER="${BROKER:-/mosquitto/config}"      # volume broker-config: mosquitto.conf, acl, server.pem/.key
BROKER_DATA="${BROKER_DATA:-/mosquitto/data}"  # volume mosquitto-data (persistence)
HUB_UID="${HUB_UID:-10001}"                # the hub image's user (docker/Dockerfile.hub)
BROKER_UID="${BROKER_UID:-1883}"           # the eclipse-mosquitto image's user
KIOSK_NAME="${ANTOAN_BROKER_HOSTNAME:-localhost}"

if [ ! -f "$CA/ca.pem" ]; then
    antoan-provision ca init --ca-dir "$CA"   # key encrypted with $ANTOAN_CA_PASSPHRASE
fi
# The broker refuses every kiosk once its CRL is past its next update: re-sign it when due.
antoan-provision ca refresh-crl --ca-dir "$CA"

# The server certificate names the broker as the hub services (mosquitto) and the kiosks reach it.
set -- --hostname mosquitto --hostname localhost --ip 127.0.0.1
case "$KIOSK_NAME" in
    mosquitto | localhost) ;;
    *) set -- "$@" --hostname "$KIOSK_NAME" ;;
esac
antoan-provision broker-config --tls --ca-dir "$CA" --out-dir "$BROKER" --port 8883 \
    --data-dir "$BROKER_DATA" "$@"

# One identity per MQTT client: the broker takes the client id from the certificate, so clients
# sharing one would take each other's session over. antoan-web is the web's health probe (no rights).
for name in antoan-bridge antoan-bridge-lists antoan-web; do
    antoan-provision ca service-cert "$name" --ca-dir "$CA" --out-dir "$CERTS"
done

# The hub services run as HUB_UID and mosquitto as BROKER_UID; each reads its own key (0600).
chown -R "$HUB_UID:$HUB_UID" "$CA" "$CERTS"
chown -R "$BROKER_UID:$BROKER_UID" "$BROKER"
echo "provisioned: CA $CA, broker configuration $BROKER, service certificates $CERTS"
