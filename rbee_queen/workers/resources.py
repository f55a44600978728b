"""Will a model fit? Checked before a worker is spawned, from the helper's probe.

RAM for a CPU worker: the weights' size x 1.2 (the original rbee's rule: room
for activations and the runtime). VRAM for a CUDA worker is estimated from the
model's files and config.json: the weights, plus the KV cache its exllamav2
worker allocates when the card has room (fp16 keys and values of every layer
for the model's whole context, once per slot), plus a fixed overhead (CUDA's
own context and the reserve the worker keeps free). Once a worker of the model
has loaded on the node's GPU model, the most VRAM such a worker reported
holding, plus the same overhead, replaces the estimate. A failure names
required and available bytes. The same RAM estimate, plus the runtime's own,
is the default memory bound a worker runs under on its node (`memory_limit`).
Before that, `choose_device` settles which device a worker gets: `cuda` picks
the GPU with the most free VRAM, `cuda:N` pins one; a node without CUDA or
without that GPU is BACKEND_UNAVAILABLE (never a silent CPU fallback), and a
GPU above the temperature limit is GPU_TOO_HOT.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from peewee import fn

from rbee_queen.errors import BackendUnavailable, GpuTooHot, InsufficientRam, InsufficientVram
from rbee_queen.fleet.session import NodeSession
from rbee_queen.store.tables import Worker
from rbee_wire.helper_ops import GpuCard, ProbeResult

HEADROOM = 1.2
MIB = 1024 * 1024
MAX_GPU_TEMP_C = 85  # default limit; nvidia cards throttle from about 83-87 C
# What the exllamav2 worker does (remote/rbee_worker/backends/cache_budget.py):
KV_BYTES_PER_ELEMENT = 2  # its cache is fp16, whatever the weights' dtype
PAGE_TOKENS = 256  # it sizes the cache in pages of this many tokens
DEFAULT_CONTEXT = 2048  # exllamav2's context when config.json names none
CACHE_RESERVE_BYTES = 1024 * MIB  # left free for activations (--cache-reserve-mb default)
CUDA_CONTEXT_BYTES = 512 * MIB  # CUDA's own context and kernels, outside torch's allocator
VRAM_OVERHEAD = CACHE_RESERVE_BYTES + CUDA_CONTEXT_BYTES
# A worker's RAM beside its weights: python, torch and the tokenizer; a CUDA
# worker also maps the CUDA runtime and stages weights in host memory.
RUNTIME_RAM_BYTES = {"cpu": 1536 * MIB, "cuda": 4096 * MIB}
OOM_RAISE = 1.5  # after an OOM kill, the next bound is this much over what was seen


def choose_device(
    probe: ProbeResult, device: str, node: str, max_temp_c: float = MAX_GPU_TEMP_C
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
        found = next((g for g in cards if str(g["index"]) == wanted), None)
        if found is None:
            have = ", ".join(f"cuda:{g['index']}" for g in cards)
            raise BackendUnavailable(
                f"{node} has no {device} (it has {have})", node=node, device=device
            )
        card = found
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


def _free_bytes(card: GpuCard) -> int:
    total = card.get("memory_total_mib") or 0
    return int((total - (card.get("memory_used_mib") or 0)) * MIB)


@dataclass(frozen=True)
class Placement:
    """Where a worker will run: its device, and the GPU's model name on CUDA."""

    device: str
    gpu_name: str | None = None
    memory_limit_bytes: int = 0  # the worker's RAM bound on its node (0: none)


@dataclass(frozen=True)
class VramNeed:
    required_bytes: int
    measured: bool = False  # from an earlier load on this GPU model, not the estimate


# Tokens of context per slot the VRAM check insists on; more is a bonus the
# worker takes when the card has room.
CONTEXT_COUNTED = 8192


def kv_cache_bytes(config: Mapping[str, Any], slots: int) -> int:
    """The KV cache a CUDA worker needs at least: keys and values x layers x KV
    heads x head size x context x 2 bytes x slots, the context counted up to
    CONTEXT_COUNTED tokens. The worker sizes its cache from the VRAM left (up to
    the model's whole context per slot), so counting a long-context model's full
    131072 tokens would refuse a card it runs well on. 0 when config.json does
    not say enough to tell."""
    layers = int(config.get("num_hidden_layers") or 0)
    heads = int(config.get("num_attention_heads") or 0)
    if layers <= 0 or heads <= 0:
        return 0
    kv_heads = int(config.get("num_key_value_heads") or heads)
    head_dim = int(config.get("head_dim") or int(config.get("hidden_size") or 0) // heads)
    context = min(int(config.get("max_position_embeddings") or DEFAULT_CONTEXT), CONTEXT_COUNTED)
    context = -(-context // PAGE_TOKENS) * PAGE_TOKENS  # the worker sizes in whole pages
    return 2 * layers * kv_heads * head_dim * context * KV_BYTES_PER_ELEMENT * max(1, slots)


def vram_estimate(weights_bytes: int, config: Mapping[str, Any] | None, slots: int = 1) -> int:
    return weights_bytes + kv_cache_bytes(config or {}, slots) + VRAM_OVERHEAD


def recorded_vram(node: str, model_ref: str, gpu_name: str) -> int | None:
    """The most VRAM a worker of this model reported holding once loaded on this
    node's GPU model (any of its workers, stopped ones too); None before the
    first load."""
    largest = (
        Worker.select(fn.MAX(Worker.vram_bytes))
        .where(
            (Worker.node == node)
            & (Worker.model_ref == model_ref)
            & (Worker.gpu_name == gpu_name)
            & (Worker.vram_bytes > 0)
        )
        .scalar()
    )
    return int(largest) if largest else None


def vram_need(sized: Mapping[str, Any], slots: int, recorded_bytes: int | None = None) -> VramNeed:
    """What a CUDA worker needs free: the measurement of an earlier load when
    there is one, else the estimate from the model's files and config."""
    if recorded_bytes:
        return VramNeed(recorded_bytes + VRAM_OVERHEAD, measured=True)
    return VramNeed(vram_estimate(int(sized["weights_bytes"]), sized.get("config"), slots))


def check_fits(
    weights_bytes: int,
    probe: ProbeResult,
    device: str,
    node: str,
    vram: VramNeed | None = None,
) -> None:
    """Raise INSUFFICIENT_RAM / INSUFFICIENT_VRAM when the model cannot fit. Without
    `vram`, a CUDA worker needs the weights plus the fixed overhead (no config read)."""
    if device.startswith("cuda"):
        need = vram or VramNeed(vram_estimate(weights_bytes, None))
        index = int(device.partition(":")[2] or 0)
        card = next((g for g in probe.get("gpus") or [] if g.get("index") == index), None)
        if card is None or card.get("memory_total_mib") is None:
            return  # no reading: the backend check reports a missing device
        free = _free_bytes(card)
        if need.required_bytes > free:
            basis = "as measured at an earlier load" if need.measured else "estimated"
            raise InsufficientVram(
                f"the model needs about {_gib(need.required_bytes)} of VRAM ({basis}); "
                f"{device} on {node} has {_gib(free)} free",
                required_bytes=need.required_bytes,
                available_bytes=free,
                node=node,
                device=device,
            )
        return
    required = int(weights_bytes * HEADROOM)
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
    model_ref: str,
    slots: int = 1,
    max_temp_c: float = MAX_GPU_TEMP_C,
    memory_setting_mib: int = 0,
    raised_bytes: int | None = None,
) -> Placement:
    """Check the device and that the model fits on it; return where it will run."""
    sized = await session.ops.model_size(path=path)
    probe = await session.ops.probe(install_path=session.install_dir)
    chosen = choose_device(probe, device, node, max_temp_c)
    gpu_name = gpu_name_of(probe, chosen)
    vram = None
    if chosen.startswith("cuda"):
        recorded = recorded_vram(node, model_ref, gpu_name) if gpu_name else None
        vram = vram_need(sized, slots, recorded)
    weights = int(sized["weights_bytes"])
    check_fits(weights, probe, chosen, node, vram)
    limit = memory_limit(weights, chosen, memory_setting_mib, raised_bytes)
    return Placement(chosen, gpu_name, limit)


def memory_limit(
    weights_bytes: int, device: str, setting_mib: int = 0, raised_bytes: int | None = None
) -> int:
    """A worker's RAM bound: the setting where one is given (<0: none), else the
    RAM estimate plus the runtime's own; at least `raised_bytes`, the bound an
    earlier OOM kill of the model on the node set (OomBounds)."""
    if setting_mib < 0:
        return 0
    runtime = RUNTIME_RAM_BYTES["cuda" if device.startswith("cuda") else "cpu"]
    limit = setting_mib * MIB if setting_mib else int(weights_bytes * HEADROOM) + runtime
    return max(limit, raised_bytes or 0)


def gpu_name_of(probe: ProbeResult, device: str) -> str | None:
    """The model name of the GPU behind `cuda:N` (None for the CPU or no reading)."""
    if not device.startswith("cuda:"):
        return None
    index = int(device.partition(":")[2])
    card = next((g for g in probe.get("gpus") or [] if g.get("index") == index), None)
    name = card.get("name") if card else None
    return str(name) if name else None


def _gib(n: int) -> str:
    return f"{n / 1024**3:.2f} GiB ({n} bytes)"
