"""The dashboard's widgets: each renders one part of the fleet picture."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import DataTable, Static

from rbee_keeper.tui.fleet import Fleet, WorkerRow

STATE_STYLES = {
    "reachable": "green",
    "unreachable": "bold red",
    "unknown": "yellow",
    "idle": "green",
    "busy": "bold cyan",
    "loading": "yellow",
    "spawning": "yellow",
    "draining": "magenta",
}


def styled(value: object) -> Text:
    text = str(value if value is not None else "-")
    return Text(text, style=STATE_STYLES.get(text, ""))


def vram_bar(used_mib: float | None, total_mib: float | None, width: int = 12) -> Text:
    if not used_mib or not total_mib:
        return Text("-")
    filled = round(width * min(1.0, used_mib / total_mib))
    style = "red" if used_mib / total_mib > 0.9 else "green"
    bar = Text("█" * filled, style=style) + Text("░" * (width - filled), style="dim")
    return bar + Text(f" {used_mib / 1024:.1f}/{total_mib / 1024:.0f} GiB")


def _unit(value: object, unit: str) -> str:
    return "-" if value is None else f"{value} {unit}"


class Totals(Static):
    """One line of fleet totals, and the link to the queen."""

    def show(self, fleet: Fleet, queen_url: str) -> None:
        # One run of text after the dot: words and separators never split across
        # styles, so a copy of the screen reads as it looks.
        if fleet.connected:
            dot, link = Text("●", style="green"), f" connected to {queen_url}"
        else:
            error = fleet.last_error or "no answer"
            dot, link = Text("●", style="red"), f" queen unreachable, retrying ({error})"
        reachable = sum(1 for n in fleet.nodes.values() if n.get("status") == "reachable")
        parts = [
            link,
            f"nodes {reachable}/{len(fleet.nodes)}",
            f"workers {len(fleet.workers)}",
            f"in flight {fleet.requests_in_flight}",
            f"fleet {fleet.tokens_per_second():.1f} tok/s",
        ]
        if fleet.queued:  # only while requests wait: the line fits 100 columns otherwise
            parts.insert(4, f"queued {fleet.queued}")
        line = dot + Text(" │ ".join(parts))
        for notice in fleet.notices.values():  # a banner line each, under the totals
            style = "bold red" if notice.get("level") == "error" else "bold yellow"
            line += Text(f"\n!! {notice.get('message')}", style=style)
        self.update(line)


def gpu_names(gpus: list[dict[str, object]]) -> str:
    """`2× NVIDIA GeForce RTX 3090, NVIDIA H100`: each model once, with its count."""
    counts: dict[str, int] = {}
    for gpu in gpus:
        counts[str(gpu.get("name"))] = counts.get(str(gpu.get("name")), 0) + 1
    named = [name if n == 1 else f"{n}× {name}" for name, n in counts.items()]
    return ", ".join(named) or "cpu only"


def describe_devices(devices: dict[str, object]) -> str:
    """`{'cpu': 1, 'cuda': 2}` as a person reads it: `1 CPU, 2 GPUs`."""
    names = {"cpu": ("CPU", "CPUs"), "cuda": ("GPU", "GPUs")}
    parts = []
    for kind, count in devices.items():
        if not isinstance(count, int) or count <= 0:
            continue
        one, many = names.get(kind, (kind, kind))
        parts.append(f"{count} {one if count == 1 else many}")
    return ", ".join(parts) or "none"


class SyncedTable(DataTable[object]):
    """A table redrawn in place: rows are updated, added and removed by key, so
    the cursor stays where the user put it however often the data changes."""

    COLUMNS: tuple[tuple[str, int], ...] = ()  # (label, width)

    def on_mount(self) -> None:
        self.cursor_type = "row"
        # Fixed widths: stable columns while rows come and go, long values cut.
        self.column_keys = [self.add_column(label, width=width) for label, width in self.COLUMNS]

    def sync(self, rows: dict[str, list[object]]) -> None:
        for row_key in [k for k in self.rows if k.value not in rows]:
            self.remove_row(row_key)
        for key, cells in rows.items():
            if key in self.rows:
                for column, value in zip(self.column_keys, cells, strict=True):
                    if self.get_cell(key, column) != value:
                        self.update_cell(key, column, value)
            else:
                self.add_row(*cells, key=key)


class NodesTable(SyncedTable):
    COLUMNS = (
        ("NODE", 16),
        ("STATUS", 12),
        ("LATENCY", 9),
        ("GPUS", 30),
        ("WORKERS", 8),
        ("LAST ERROR", 50),
    )

    def show(self, fleet: Fleet) -> None:
        rows: dict[str, list[object]] = {}
        for name, node in sorted(fleet.nodes.items()):
            latency = node.get("latency_ms")
            gpus = node.get("gpus") or []
            rows[name] = [
                name,
                styled(node.get("status", "unknown")),
                f"{latency:.1f} ms" if isinstance(latency, int | float) else "-",
                gpu_names(gpus),
                str(len(fleet.workers_on(name))),
                str(node.get("last_error") or ""),
            ]
        self.sync(rows)


class WorkersTable(SyncedTable):
    COLUMNS = (
        ("WORKER", 12),
        ("NODE", 16),
        ("STATE", 10),
        ("MODEL", 40),
        ("IN FLIGHT", 9),
        ("TOK/S", 7),
        ("TTFT", 8),
    )

    def show(self, workers: list[WorkerRow]) -> None:
        rows: dict[str, list[object]] = {}
        for worker in workers:
            rate = worker.rates[-1] if worker.rates else None
            rows[worker.worker_id] = [
                worker.worker_id,
                str(worker.data.get("node") or "-"),
                styled(worker.data.get("state")),
                str(worker.data.get("model_ref") or "-"),
                str(len(worker.in_flight)),
                f"{rate:.0f}" if rate is not None else "-",
                f"{worker.last_ttft_ms:.0f} ms" if worker.last_ttft_ms is not None else "-",
            ]
        self.sync(rows)


class GpusTable(SyncedTable):
    COLUMNS = (("GPU", 4), ("NAME", 28), ("VRAM", 30), ("TEMP", 8), ("UTIL", 6))

    def show(self, gpus: list[dict[str, object]]) -> None:
        rows: dict[str, list[object]] = {}
        for gpu in gpus:
            used, total = gpu.get("memory_used_mib"), gpu.get("memory_total_mib")
            rows[str(gpu.get("index"))] = [
                str(gpu.get("index")),
                str(gpu.get("name")),
                vram_bar(
                    float(used) if isinstance(used, int | float) else None,
                    float(total) if isinstance(total, int | float) else None,
                ),
                _unit(gpu.get("temperature_c"), "°C"),
                _unit(gpu.get("utilization_pct"), "%"),
            ]
        self.sync(rows)
