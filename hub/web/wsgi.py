"""WSGI entry point for gunicorn (``gunicorn hub.web.wsgi:app``); config path from ANTOAN_HUB_CONFIG."""

from __future__ import annotations

import os
from pathlib import Path

from hub.config import load
from hub.web.app import create_app

_config_path = os.environ.get("ANTOAN_HUB_CONFIG")

app = create_app(load(Path(_config_path) if _config_path else None))
