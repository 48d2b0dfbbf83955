"""``godel serve``: run the API and the control plane in this process until SIGINT/SIGTERM.

uvicorn owns the signals; on either it stops accepting requests and runs the app's lifespan shutdown, which
stops the control plane's loops in order and leaves or terminates running agents per ``on_shutdown``.
"""

from __future__ import annotations

import logging
import signal

import structlog
import uvicorn

from godel.api.app import create_app
from godel.settings import Settings


def configure_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(message)s")
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso"),
            structlog.processors.KeyValueRenderer(key_order=["timestamp", "level", "event"]),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
    )


def serve(settings: Settings) -> None:
    configure_logging(settings.log_level)
    settings.home.mkdir(parents=True, exist_ok=True)
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        lifespan="on",
        ws="websockets",
        # Compression cost a third of the server's time fanning events out to 100 sockets; events are small.
        ws_per_message_deflate=False,
        timeout_graceful_shutdown=5,
        ssl_certfile=str(settings.tls_cert) if settings.tls_cert else None,
        ssl_keyfile=str(settings.tls_key) if settings.tls_key else None,
    )
    # uvicorn handles SIGINT/SIGTERM (graceful shutdown, lifespan) and then re-raises the signal through the
    # handler that was installed before it. A no-op handler here makes a clean stop exit with status 0.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: None)
    uvicorn.Server(config).run()
