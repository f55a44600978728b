"""The worker's /metrics in Prometheus' text format: slots, load state and VRAM.

Written by hand (a few gauges), so the worker needs no metrics package.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from rbee_worker.jobs import Slots
from rbee_worker.loading import BackendHolder, LoadState

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _gauge(name: str, help_text: str, value: float | None) -> str:
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} gauge"]
    if value is not None:
        lines.append(f"{name} {value:g}")
    return "\n".join(lines)


def render(holder: BackendHolder, slots: Slots) -> str:
    vram = holder.vram_bytes
    gauges = [
        _gauge("rbee_worker_ready", "1 once the model is loaded", holder.state is LoadState.READY),
        _gauge("rbee_worker_slots_total", "requests served at once", slots.total),
        _gauge("rbee_worker_slots_busy", "requests being served", slots.busy),
        # No sample where the backend holds no VRAM (torch on CPU) or is still loading.
        _gauge("rbee_worker_vram_bytes", "GPU memory reserved after loading", vram),
    ]
    return "\n".join(gauges) + "\n"


async def worker_metrics(request: Request) -> Response:
    text = render(request.app.state.holder, request.app.state.slots)
    return Response(text, media_type=CONTENT_TYPE)
