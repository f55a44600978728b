"""How many tokens of KV cache fit: free VRAM after the weights, minus a reserve.

exllamav2's paged cache is one pool of 256-token pages shared by every job, so
its size decides how many requests run at once and how long they may be. The
pool is sized once, after the weights are on the GPU(s); a cache split over
several GPUs holds each layer's keys and values on that layer's GPU, so the
GPU that runs out first decides. Pure arithmetic, tested without a GPU.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rbee_worker.backends.base import LoadError

PAGE_TOKENS = 256  # exllamav2's page size; a cache length is a multiple of it
FP16_BYTES = 2
MIB = 1024 * 1024


class InsufficientVram(LoadError):
    code = "INSUFFICIENT_VRAM"


def kv_bytes_per_layer_token(config: Mapping[str, Any]) -> int:
    """Keys and values of one token in one layer, fp16, from config.json."""
    heads = int(config["num_attention_heads"])
    kv_heads = int(config.get("num_key_value_heads") or heads)
    head_dim = int(config.get("head_dim") or int(config["hidden_size"]) // heads)
    return 2 * kv_heads * head_dim * FP16_BYTES


def round_to_pages(tokens: int) -> int:
    return -(-tokens // PAGE_TOKENS) * PAGE_TOKENS


def cache_tokens(
    free_bytes: Mapping[int, int],
    layers_on: Mapping[int, int],
    per_layer_token: int,
    reserve_bytes: int,
    cap_tokens: int,
) -> int:
    """Cache length in tokens: what the tightest GPU can hold after `reserve_bytes`
    (for activations and the CUDA context's growth), at most `cap_tokens`,
    rounded down to whole pages."""
    fits = cap_tokens
    for device, layers in layers_on.items():
        if layers <= 0:
            continue
        room = free_bytes.get(device, 0) - reserve_bytes
        fits = min(fits, max(0, room) // (layers * per_layer_token))
    tokens = (fits // PAGE_TOKENS) * PAGE_TOKENS
    if tokens < PAGE_TOKENS:
        tightest = min(
            (d for d, n in layers_on.items() if n > 0), key=lambda d: free_bytes.get(d, 0)
        )
        raise InsufficientVram(
            f"no room for a KV cache: cuda:{tightest} has "
            f"{free_bytes.get(tightest, 0) // MIB} MiB free after the weights and "
            f"{reserve_bytes // MIB} MiB are reserved; one {PAGE_TOKENS}-token page needs "
            f"{layers_on[tightest] * per_layer_token * PAGE_TOKENS // MIB + 1} MiB "
            "(lower --cache-reserve-mb or free the GPU)"
        )
    return tokens
