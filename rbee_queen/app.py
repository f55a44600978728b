"""The Starlette app factory. State is built in the lifespan, never at import."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.exceptions import HTTPException

from rbee_queen.api import beehives, health, observe, tasks, workers
from rbee_queen.api.errors import http_error_handler, rbee_error_handler, unexpected_error_handler
from rbee_queen.config import QueenConfig
from rbee_queen.errors import RbeeError
from rbee_queen.services import Services

log = logging.getLogger("rbee.queen")


def create_app(config: QueenConfig) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        svc = Services.build(config)
        app.state.services = svc
        log.info("queen ready: home=%s", config.home)
        try:
            yield
        finally:
            await svc.aclose()
            log.info("queen stopped")

    return Starlette(
        routes=[*health.routes, *beehives.routes, *workers.routes, *tasks.routes, *observe.routes],
        exception_handlers={
            RbeeError: rbee_error_handler,
            HTTPException: http_error_handler,
            Exception: unexpected_error_handler,
        },
        lifespan=lifespan,
    )
