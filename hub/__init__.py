"""The AnToan hub: database, broker bridge, web (declarations, tracing, safety map to come)."""

__version__ = "0.1.0"
