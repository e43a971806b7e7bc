"""The hub's Flask web app: dashboard, JSON API and health check (see hub.web.app.create_app)."""

from hub.web.app import create_app

__all__ = ["create_app"]
