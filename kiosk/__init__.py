"""The AnToan venue kiosk: records check-ins durably and syncs them to the hub over MQTT."""

__version__ = "0.1.0"
