"""docs/configuration.md's table and queen.example.toml, written from the schema.

`python -m rbee_queen.config_docs` rewrites both; a test fails when either
differs from what this module writes, so neither drifts from the schema.
"""

from __future__ import annotations

import sys
from pathlib import Path

from rbee_queen.config_schema import SECTIONS, SETTINGS, Setting

TABLE_START = "<!-- settings: written by `python -m rbee_queen.config_docs` -->"
TABLE_END = "<!-- end of settings -->"


def toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, float):
        return f"{value:g}" if value != int(value) else f"{value:.1f}"
    return str(value)


def reload_word(setting: Setting) -> str:
    return "yes" if setting.reloadable else "restart"


def markdown_table() -> str:
    lines = [
        TABLE_START,
        "",
        "| key | type | default | allowed | reload | environment | flag | what it is |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for s in SETTINGS:
        kind = "path" if s.is_path else s.kind.__name__
        default = "-" if s.default is None else f"`{toml_value(s.default)}`"
        env = f"`{s.env}`" if s.env else "-"
        flag = f"`{s.flag}`" if s.flag else "-"
        lines.append(
            f"| `{s.path}` | {kind} | {default} | {s.allowed()} | {reload_word(s)} "
            f"| {env} | {flag} | {s.description} |"
        )
    return "\n".join([*lines, "", TABLE_END])


def example_toml() -> str:
    out = [
        "# The queen's settings: RBEE_HOME/queen.toml (or --config PATH, or $RBEE_CONFIG).",
        "# Written from rbee_queen/config_schema.py by `python -m rbee_queen.config_docs`.",
        "# Every line is commented out and shows the default; a flag or an environment",
        "# variable wins over the file. `reload`: a SIGHUP or POST /v2/admin/reload",
        "# applies it to the running queen; `restart`: it needs a restart.",
    ]
    for section in SECTIONS:
        out += ["", f"[{section}]"]
        for s in (s for s in SETTINGS if s.section == section):
            when = "reloadable" if s.reloadable else "needs a restart"
            out.append(f"# {s.description} ({s.allowed()}; {when})")
            value = '""' if s.default is None else toml_value(s.default)
            out.append(f"# {s.key} = {value}")
    return "\n".join(out) + "\n"


def with_table(doc: str) -> str:
    """`doc` with the part between the markers replaced by the table."""
    head, _, rest = doc.partition(TABLE_START)
    _, _, tail = rest.partition(TABLE_END)
    return head + markdown_table() + tail


def main(root: Path) -> None:
    doc = root / "docs" / "configuration.md"
    doc.write_text(with_table(doc.read_text()))
    (root / "queen.example.toml").write_text(example_toml())


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path.cwd())
