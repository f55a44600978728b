"""Bind policy: a queen reachable from the network must have a real token.

On loopback the queen makes its own token on first start (zero config). On
any other address it does not: a token somebody has to copy to their keepers
should be one they chose to provision, and it must be at least 16 characters.
"""

from __future__ import annotations

import ipaddress
import logging

from rbee_queen.config import QueenConfig
from rbee_queen.errors import InsecureBind
from rbee_queen.keys import MIN_NETWORK_TOKEN_CHARS, owner_token
from rbee_queen.secrets import fingerprint

log = logging.getLogger("rbee.queen")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(config: QueenConfig) -> None:
    """Load (or on loopback, create) the owner's token; refuse an unsafe bind."""
    loopback = is_loopback(config.host)
    token = owner_token(config.home, config.token_file, create=loopback)
    if loopback:
        assert token is not None
        log.info("API token from %s (%s)", token.source, fingerprint(token.value))
        return
    if token is None or len(token.value) < MIN_NETWORK_TOKEN_CHARS:
        raise InsecureBind(
            f"API token required for non-loopback bind: binding {config.host} needs a token of "
            f"at least {MIN_NETWORK_TOKEN_CHARS} characters (--token-file PATH, a systemd "
            "credential rbee-api-token, or $RBEE_HOME/api-token); see docs/security.md"
        )
    log.info("API token from %s (%s)", token.source, fingerprint(token.value))
