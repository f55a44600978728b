"""The queen's own settings over HTTP (admin keys only).

GET /v2/admin/config: every setting in force, its source, whether a reload may
change it (what `rbee-queen --check-config` prints). POST /v2/admin/reload:
the same reload as SIGHUP; 400 CONFIG_INVALID, with every problem, when the
file fails validation (nothing changed then).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from rbee_queen.api.config_reload import reload_config
from rbee_queen.config import effective
from rbee_queen.errors import ConfigRejected
from rbee_queen.services import services


async def show_config(request: Request) -> JSONResponse:
    config = services(request).config
    origin = config.origin
    return JSONResponse(
        {
            "file": str(origin.file) if origin else None,
            "settings": effective(config),
        }
    )


async def reload(request: Request) -> JSONResponse:
    outcome = reload_config(services(request))
    if not outcome["ok"]:
        raise ConfigRejected(
            "the settings fail validation; nothing changed",
            problems=str(outcome["error"]).split("; "),
        )
    return JSONResponse(outcome)


routes = [
    Route("/v2/admin/config", show_config, methods=["GET"]),
    Route("/v2/admin/reload", reload, methods=["POST"]),
]
