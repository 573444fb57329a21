"""Hubbub: a real-time chat and pub/sub server on FastAPI WebSockets."""

from __future__ import annotations

from hubbub.app import create_app
from hubbub.config import Settings
from hubbub.embed import Hubbub

__all__ = ["Hubbub", "Settings", "create_app"]
__version__ = "0.1.0"
