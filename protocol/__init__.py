"""The kiosk <-> hub wire contract: topics, versioned message schemas and shared connection settings.

Both sides import this package; neither imports the other.
"""
