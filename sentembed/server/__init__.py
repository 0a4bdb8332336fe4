"""The HTTP service: `create_app(encoder, index=None, config=ServerConfig())` and `sentembed serve`.

FastAPI and uvicorn are imported only when something here is used, so `sentembed --help`
stays fast and works without the server extra installed."""
from __future__ import annotations

from typing import Any

__all__ = ["create_app", "ServerConfig"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from sentembed.server.app import create_app

        return create_app
    if name == "ServerConfig":
        from sentembed.server.limits import ServerConfig

        return ServerConfig
    raise AttributeError(name)
