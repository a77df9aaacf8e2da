"""Run one service with uvicorn on its configured host and port, shutting down gracefully."""

from __future__ import annotations

import uvicorn
from fastapi import FastAPI


def serve(app: FastAPI) -> None:
    settings = app.state.settings
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        access_log=False,  # the metrics middleware counts requests; JSON logs carry events
        timeout_graceful_shutdown=int(settings.shutdown_grace_seconds),
    )
