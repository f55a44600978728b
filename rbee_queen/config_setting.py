"""One queen setting's definition: where it lives, its type, default and range."""

from __future__ import annotations

from dataclasses import dataclass

SettingValue = str | int | float | bool | None


@dataclass(frozen=True)
class Setting:
    section: str
    key: str
    field: str  # the QueenConfig attribute
    kind: type  # str, int, float, bool, or "path" as str with is_path
    default: SettingValue
    description: str
    env: str | None = None
    flag: str | None = None
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    reloadable: bool = False
    is_path: bool = False
    url_ok: bool = False  # a path, or a database URL (rbee_queen/database_url.py)
    secret: bool = False  # its value is printed as "<redacted>"
    secret_file: bool = False  # the file it names holds a secret: mode 0600

    @property
    def path(self) -> str:
        return f"{self.section}.{self.key}"

    def allowed(self) -> str:
        """What a valid value looks like, for error messages and the docs."""
        if self.choices:
            return "one of " + ", ".join(self.choices)
        if self.kind is bool:
            return "true or false"
        if self.is_path and self.url_ok:
            return "a path or a postgresql://user@host:port/dbname URL"
        if self.is_path:
            return "a path" + (" (empty: the default)" if self.default is None else "")
        name = "an integer" if self.kind is int else "a number" if self.kind is float else "text"
        if self.minimum is not None and self.maximum is not None:
            return f"{name} in {self.minimum:g}..{self.maximum:g}"
        if self.minimum is not None:
            return f"{name} >= {self.minimum:g}"
        return name


def setting(
    section: str, key: str, field: str, kind: type, default: SettingValue, doc: str, **kw: object
) -> Setting:
    return Setting(section, key, field, kind, default, doc, **kw)  # type: ignore[arg-type]
