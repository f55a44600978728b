"""Will a model fit? Checked before a worker is spawned, from the helper's probe.

RAM for a CPU worker: the weights' size x 1.2 (the original rbee's rule: room
for activations and the runtime). VRAM for a CUDA worker: the same estimate
against the card's free memory. A failure names required and available bytes.
"""

from __future__ import annotations

from typing import Any

from rbee_queen.errors import InsufficientRam, InsufficientVram
from rbee_queen.fleet.session import NodeSession

HEADROOM = 1.2
MIB = 1024 * 1024


def check_fits(weights_bytes: int, probe: dict[str, Any], device: str, node: str) -> None:
    """Raise INSUFFICIENT_RAM / INSUFFICIENT_VRAM when the model cannot fit."""
    required = int(weights_bytes * HEADROOM)
    if device.startswith("cuda"):
        index = int(device.partition(":")[2] or 0)
        card = next((g for g in probe.get("gpus") or [] if g.get("index") == index), None)
        if card is None or card.get("memory_total_mib") is None:
            return  # no reading: the backend check reports a missing device
        free = int((card["memory_total_mib"] - (card.get("memory_used_mib") or 0)) * MIB)
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


async def preflight_worker(session: NodeSession, node: str, path: str, device: str) -> None:
    sized = await session.call("model_size", path=path)
    probe = await session.call("probe", install_path=session.install_dir)
    check_fits(int(sized["weights_bytes"]), probe, device, node)


def _gib(n: int) -> str:
    return f"{n / 1024**3:.2f} GiB ({n} bytes)"
