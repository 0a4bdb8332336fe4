"""The HTTP service: `create_app(encoder, index=None, config=ServerConfig())` and `sentembed serve`.

FastAPI and uvicorn are imported only when something here is used, so `sentembed --help`
stays fast and works without the server extra installed."""
from __future__ import annotations

from sentembed.model.lazy import lazy_names

__all__ = ["create_app", "ServerConfig"]
__getattr__ = lazy_names(__name__, {"create_app": "app", "ServerConfig": "limits"})
