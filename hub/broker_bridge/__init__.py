"""The broker bridge: MQTT ingest into the hub database and (later) the retained downlink publishers."""
