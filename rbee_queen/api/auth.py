"""Bearer auth for every route but /health, and the rights a key carries.

Parsing is strict (RFC 6750 `Bearer <b64token>`, exactly one space, the
scheme spelled `Bearer`): a header that is almost right is a client bug
worth surfacing, not guessing at. Failures answer 401 with
`WWW-Authenticate: Bearer` and `MISSING_API_KEY` or `INVALID_API_KEY`; logs
and the audit log name a token only by its fingerprint.

Rights: any valid key may read (GET) and run inference; everything else
(nodes, workers, keys) needs an admin key. New routes are admin-only unless
listed here, so a route nobody thought about is never open by accident.
"""

from __future__ import annotations

import logging
import re

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Scope

from rbee_queen.api import config_reload
from rbee_queen.api.errors import error_response
from rbee_queen.audit import AuditLog
from rbee_queen.errors import (
    Forbidden,
    InvalidApiKey,
    MissingApiKey,
    ModelNotAllowed,
    RbeeError,
    Unauthorized,
)
from rbee_queen.keys import KeyRing, Principal
from rbee_queen.secrets import fingerprint
from rbee_queen.services import Services
from rbee_queen.validation import shown

log = logging.getLogger("rbee.queen.auth")

PUBLIC_PATHS = frozenset({"/health"})
# Inference is not management: these need a valid key, not an admin one.
INFERENCE_ROUTES = frozenset({("POST", "/v2/tasks")})
INFERENCE_PREFIXES = ("/v1/",)
BEARER = re.compile(r"Bearer ([A-Za-z0-9\-._~+/]+=*)")


def parse_bearer(values: list[str]) -> str:
    """The token of exactly one well-formed `Authorization: Bearer <token>` header."""
    if not values:
        raise MissingApiKey("this route needs 'Authorization: Bearer <token>'")
    if len(values) > 1:
        raise InvalidApiKey("send one Authorization header, not several")
    match = BEARER.fullmatch(values[0])
    if match is None:
        raise InvalidApiKey("malformed Authorization header: use exactly 'Bearer <token>'")
    return match.group(1)


def needs_admin(method: str, path: str) -> bool:
    if method in ("GET", "HEAD"):
        return path.startswith(("/v2/keys", "/v2/admin"))
    if (method, path) in INFERENCE_ROUTES:
        return False
    return not path.startswith(INFERENCE_PREFIXES)


def principal_of(request: Request) -> Principal:
    principal: Principal = request.state.principal
    return principal


def require_model(request: Request, model_ref: str) -> None:
    """Refuse a model outside the caller's allow-list (403 MODEL_NOT_ALLOWED)."""
    principal = principal_of(request)
    if not principal.may_use(model_ref):
        raise ModelNotAllowed(f"key {shown(principal.name)} may not use this model")


def admit(scope: Scope) -> None:
    """Authenticates a request (every route but /health) and keeps who it
    comes from in its scope's state; RbeeError when it may not pass. Called
    by the queen's front (front.py), for every request: nothing is buffered,
    so token streams pass straight through."""
    if scope["path"] in PUBLIC_PATHS:
        return
    svc: Services = scope["app"].state.services
    scope.setdefault("state", {})["principal"] = authenticate(scope, svc.keys, svc.audit)


def refusal(scope: Scope, exc: RbeeError) -> Response:
    """The answer to a request `admit` refused: the envelope, and for a missing
    or invalid key `WWW-Authenticate: Bearer`."""
    response = error_response(Request(scope), exc)
    if isinstance(exc, Unauthorized):
        response.headers["www-authenticate"] = "Bearer"
    return response


def authenticate(scope: Scope, keys: KeyRing, audit: AuditLog) -> Principal:
    # From the scope as it is: this runs before every request, and building
    # a Request (its URL object above all) cost more than the checks.
    method, path = scope["method"], scope["path"]
    client = scope.get("client")
    where = {"method": method, "path": path, "client": client[0] if client else "-"}
    token: str | None = None
    try:
        token = parse_bearer(
            [v.decode("latin-1") for k, v in scope["headers"] if k == b"authorization"]
        )
        principal = keys.authenticate(token)
        if principal is None:
            raise InvalidApiKey("the token is not valid (revoked, rotated or mistyped)")
    except Unauthorized as exc:
        fp = fingerprint(token) if token else None
        log.warning(
            "auth failure %s %s from %s: %s %s", method, path, where["client"], exc.code, fp
        )
        audit.record("auth.failure", reason=exc.code, fingerprint=fp, **where)
        raise
    if needs_admin(method, path) and not principal.admin:
        audit.record("auth.forbidden", key=principal.name, **where)
        raise Forbidden(
            f"key {shown(principal.name)} is not an admin key: {method} {shown(path)} needs one"
        )
    audit.record_soon("auth.success", key=principal.name, **where)
    return principal


# SIGHUP reloads every setting, the token and keys included (config_reload.py).
install = config_reload.install
