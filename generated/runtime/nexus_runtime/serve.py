"""Run one service with uvicorn on its configured host and port, shutting down gracefully."""

from __future__ import annotations

from typing import Any

import uvicorn
from fastapi import FastAPI

from .settings import ServiceSettings


def server_options(settings: ServiceSettings) -> dict[str, Any]:
    """uvicorn's options for a service: the same for `python -m <pkg>` and for `nexus up`'s
    embedded host, which runs many services in one process."""
    return {
        "access_log": False,  # the runtime writes its own JSON access line (metrics.py)
        "ws_max_size": settings.ws_max_message_bytes,  # WebSocket frames are refused past this (1009)
        "timeout_graceful_shutdown": int(settings.shutdown_grace_seconds),
    }


def serve(app: FastAPI) -> None:
    settings = app.state.settings
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=settings.log_level.lower(), **server_options(settings))
