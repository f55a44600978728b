"""The Starlette app factory. State is built in the lifespan, never at import."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from peewee import DatabaseError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware

from rbee_queen.api import (
    admin,
    auth,
    beehives,
    health,
    keys,
    logs,
    node_models,
    node_preflight,
    nodes,
    observe,
    openai,
    openapi,
    tasks,
    workers,
)
from rbee_queen.api import models as model_catalog
from rbee_queen.api.errors import (
    RedactQuery,
    http_error_handler,
    rbee_error_handler,
    store_error_handler,
    unexpected_error_handler,
)
from rbee_queen.api.front import Front
from rbee_queen.config import QueenConfig
from rbee_queen.errors import RbeeError
from rbee_queen.services import Services

log = logging.getLogger("rbee.queen")


# How an exception becomes an answer: Starlette's router and middleware use
# these, and so does the front for the routes it serves itself.
HANDLERS: dict[Any, Any] = {
    RbeeError: rbee_error_handler,
    HTTPException: http_error_handler,
    DatabaseError: store_error_handler,
    Exception: unexpected_error_handler,
}


def create_app(config: QueenConfig) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        svc = Services.build(config)
        app.state.services = svc
        uninstall_auth = auth.install(svc)
        redact = RedactQuery()  # installed after uvicorn configured its loggers
        logging.getLogger("uvicorn.access").addFilter(redact)
        await svc.start_background()
        log.info("queen ready: home=%s", config.home)
        try:
            yield
        finally:
            uninstall_auth()
            logging.getLogger("uvicorn.access").removeFilter(redact)
            await svc.aclose()
            log.info("queen stopped")

    return Starlette(
        routes=[
            # The inference routes are served by the front (front.py) before the
            # router; here too, for a wrong method's 405.
            *tasks.routes,
            *openai.routes,
            *health.routes,
            *beehives.routes,
            *nodes.routes,
            *node_preflight.routes,
            *workers.routes,
            *model_catalog.routes,
            *node_models.routes,
            *observe.routes,
            *logs.routes,
            *keys.routes,
            *admin.routes,
            *openapi.routes,
        ],
        middleware=[
            # Timing, correlation id, deadline and auth for every request, in
            # one layer; the inference routes served from it straight.
            Middleware(
                Front,
                control_timeout_s=config.control_timeout_s,
                direct=[*tasks.routes, *openai.inference_routes],
                handlers=HANDLERS,
            ),
        ],
        exception_handlers=HANDLERS,
        lifespan=lifespan,
    )
