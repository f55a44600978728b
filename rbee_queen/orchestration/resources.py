"""Will a model fit? Checked before a worker is spawned, from the helper's probe.

RAM for a CPU worker: the weights' size x 1.2 (the original rbee's rule: room
for activations and the runtime). VRAM for a CUDA worker: the same estimate
against the card's free memory. A failure names required and available bytes.
Before that, `choose_device` settles which device a worker gets: `cuda` picks
the GPU with the most free VRAM, `cuda:N` pins one; a node without CUDA or
without that GPU is BACKEND_UNAVAILABLE (never a silent CPU fallback), and a
GPU above the temperature limit is GPU_TOO_HOT.
"""

from __future__ import annotations

from typing import Any

from rbee_queen.errors import BackendUnavailable, GpuTooHot, InsufficientRam, InsufficientVram
from rbee_queen.fleet.session import NodeSession

HEADROOM = 1.2
MIB = 1024 * 1024
MAX_GPU_TEMP_C = 85  # default limit; nvidia cards throttle from about 83-87 C


def choose_device(
    probe: dict[str, Any], device: str, node: str, max_temp_c: float = MAX_GPU_TEMP_C
) -> str:
    """The device a worker gets: `cpu` as asked, `cuda` -> the GPU with the most
    free VRAM, `cuda:N` -> that GPU, checked to exist and to be cool enough."""
    if not device.startswith("cuda"):
        return device
    cards = [g for g in probe.get("gpus") or [] if isinstance(g.get("index"), int)]
    if not cards:
        raise BackendUnavailable(
            f"cuda was asked for on {node}, which has no usable NVIDIA GPU", node=node
        )
    if device == "cuda":
        card = max(cards, key=_free_bytes)
    else:
        wanted = device.partition(":")[2]
        card = next((g for g in cards if str(g["index"]) == wanted), None)
        if card is None:
            have = ", ".join(f"cuda:{g['index']}" for g in cards)
            raise BackendUnavailable(
                f"{node} has no {device} (it has {have})", node=node, device=device
            )
    chosen = f"cuda:{card['index']}"
    temperature = card.get("temperature_c")
    if temperature is not None and temperature > max_temp_c:
        raise GpuTooHot(
            f"{chosen} on {node} is at {temperature} C, above the limit of {max_temp_c:g} C",
            node=node,
            device=chosen,
            temperature_c=temperature,
            limit_c=max_temp_c,
        )
    return chosen


def _free_bytes(card: dict[str, Any]) -> int:
    total = card.get("memory_total_mib") or 0
    return int((total - (card.get("memory_used_mib") or 0)) * MIB)


def check_fits(weights_bytes: int, probe: dict[str, Any], device: str, node: str) -> None:
    """Raise INSUFFICIENT_RAM / INSUFFICIENT_VRAM when the model cannot fit."""
    required = int(weights_bytes * HEADROOM)
    if device.startswith("cuda"):
        index = int(device.partition(":")[2] or 0)
        card = next((g for g in probe.get("gpus") or [] if g.get("index") == index), None)
        if card is None or card.get("memory_total_mib") is None:
            return  # no reading: the backend check reports a missing device
        free = _free_bytes(card)
        if required > free:
            raise InsufficientVram(
                f"the model needs about {_gib(required)} of VRAM; {device} on {node} has "
                f"{_gib(free)} free",
                required_bytes=required,
                available_bytes=free,
                node=node,
                device=device,
            )
        return
    available = probe.get("ram_available_bytes")
    if available is not None and required > available:
        raise InsufficientRam(
            f"the model needs about {_gib(required)} of RAM; "
            f"{node} has {_gib(available)} available",
            required_bytes=required,
            available_bytes=available,
            node=node,
        )


async def preflight_worker(
    session: NodeSession,
    node: str,
    path: str,
    device: str,
    *,
    max_temp_c: float = MAX_GPU_TEMP_C,
) -> str:
    """Check the device and that the model fits on it; return the device chosen."""
    sized = await session.call("model_size", path=path)
    probe = await session.call("probe", install_path=session.install_dir)
    chosen = choose_device(probe, device, node, max_temp_c)
    check_fits(int(sized["weights_bytes"]), probe, chosen, node)
    return chosen


def _gib(n: int) -> str:
    return f"{n / 1024**3:.2f} GiB ({n} bytes)"
