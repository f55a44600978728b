"""`ping`: the health loop's call, kept in a module that imports nothing heavy
so a fresh helper can answer it as soon as it starts."""

from __future__ import annotations

import os
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def ping() -> dict[str, Any]:
    # cwd: the helper runs in install/hive/<digest>, which tells the queen the
    # install path's absolute form without an SFTP round trip.
    return {"pong": True, "pid": os.getpid(), "time": time.time(), "cwd": os.getcwd()}
