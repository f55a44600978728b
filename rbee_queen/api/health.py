from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from rbee_queen import __version__


async def health(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok", "version": __version__})


routes = [Route("/health", health, methods=["GET"])]
