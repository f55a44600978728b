"""Every setting of the queen, defined once.

Each `Setting` names its place in `queen.toml` (section and key), the
`QueenConfig` field it fills, its environment variable and command-line flag
(if any), its type, default, allowed range, whether a reload may change it on
a running queen, and one line for people. The defaults, the validation,
`docs/configuration.md` and `queen.example.toml` all come from this list.
"""

from __future__ import annotations

from rbee_queen.config_schema_fleet import FLEET_SETTINGS
from rbee_queen.config_schema_service import LOG_LEVELS, SERVICE_SETTINGS
from rbee_queen.config_setting import Setting, SettingValue

__all__ = ["BY_PATH", "LOG_LEVELS", "SECTIONS", "SETTINGS", "Setting", "SettingValue"]

# In the order of queen.toml's sections.
SETTINGS: tuple[Setting, ...] = SERVICE_SETTINGS + FLEET_SETTINGS

BY_PATH: dict[str, Setting] = {s.path: s for s in SETTINGS}
SECTIONS: tuple[str, ...] = tuple(dict.fromkeys(s.section for s in SETTINGS))
