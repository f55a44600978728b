"""The exllamav2 backend: CUDA only, continuous batching through the dynamic generator.

Imported only when `--backend exllamav2` is chosen, and even then torch and
exllamav2 are imported inside `load`, after the GPU fail-fast checks, so a
node without a usable GPU gets BACKEND_UNAVAILABLE with the reason instead of
an import traceback. Loads EXL2-quantised or unquantised fp16 safetensors.

Each request thread calls `generate`, which submits one ExLlamaV2DynamicJob to
the JobLoop and streams that job's results; the loop's single thread runs the
generator, so the jobs of all the worker's slots share every forward pass.

Written against exllamav2 0.3's documented API (doc/dynamic.md, the docstrings
of ExLlamaV2DynamicGenerator.iterate and ExLlamaV2DynamicJob); see
docs/gpu-verification.md for what has and has not been run on a GPU.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

from rbee_worker.backends import hf_prompts
from rbee_worker.backends.base import (
    Generation,
    GenerationParams,
    GenerationResult,
    LoadError,
    LoadProgress,
    ProgressCallback,
    StopReason,
    VramOom,
    is_vram_oom,
)
from rbee_worker.backends.cache_budget import (
    MIB,
    cache_tokens,
    kv_bytes_per_layer_token,
    round_to_pages,
)
from rbee_worker.backends.exllamav2_mapping import (
    apply_sampler_values,
    eos_token_ids,
    outcome_of,
    sampler_values,
    stop_conditions,
)
from rbee_worker.backends.gpu_check import (
    cuda_index,
    import_exllamav2,
    narrow_visible_devices,
    require_cuda,
    require_torch_sees,
)
from rbee_worker.backends.job_loop import JobLoop, Ticket
from rbee_worker.errors import one_line

log = logging.getLogger(__name__)

DEFAULT_CACHE_RESERVE_MB = 1024


def _read_json(path: Path, *, required: bool) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        if required:
            raise LoadError(f"no {path.name} in {path.parent}") from None
        return {}
    except (OSError, ValueError) as exc:
        raise LoadError(f"unreadable {path.name} in {path.parent}: {exc}") from None
    if not isinstance(data, dict):
        raise LoadError(f"{path.name} in {path.parent} is not a JSON object")
    return data


class ExLlamaV2Backend:
    def __init__(
        self,
        model_dir: Path,
        device: str = "cuda",
        *,
        slots: int = 1,
        gpu_split: list[float] | None = None,
        cache_reserve_mb: int = DEFAULT_CACHE_RESERVE_MB,
    ) -> None:
        self.model_dir = Path(model_dir)
        self.device_spec = device
        self.slots = slots
        self.gpu_split = gpu_split
        self.cache_reserve_mb = cache_reserve_mb
        self.vram_bytes: int | None = None  # reserved by this process after loading
        self.cache_tokens: int | None = None
        self._tokenizer: Any = None
        self._eos: list[int] = []
        self._max_seq_len = 0
        self._loop: JobLoop | None = None
        self._torch: Any = None
        self._job_class: Any = None
        self._settings_class: Any = None

    @property
    def model_name(self) -> str:
        return self.model_dir.name

    # --- loading ---------------------------------------------------------------

    def load(self, progress: ProgressCallback) -> None:
        if not self.model_dir.is_dir():
            raise LoadError(f"model directory not found: {self.model_dir}")
        config = _read_json(self.model_dir / "config.json", required=True)
        generation_config = _read_json(self.model_dir / "generation_config.json", required=False)
        progress(LoadProgress("starting"))
        index = require_cuda(self.device_spec, need_exllamav2=True)
        if self.gpu_split is None:
            narrow_visible_devices(index)  # before CUDA starts: exllamav2 uses the first GPU
        import torch

        require_torch_sees(torch, len(self.gpu_split) if self.gpu_split else 1)
        import_exllamav2()
        from exllamav2 import ExLlamaV2, ExLlamaV2Cache, ExLlamaV2Config, ExLlamaV2Tokenizer
        from exllamav2.generator import (
            ExLlamaV2DynamicGenerator,
            ExLlamaV2DynamicJob,
            ExLlamaV2Sampler,
        )

        progress(LoadProgress("loading_tokenizer"))
        self._tokenizer = self._hf_tokenizer()
        self._eos = eos_token_ids(config, generation_config, self._tokenizer.eos_token_id)

        exl_config = ExLlamaV2Config(str(self.model_dir))
        exl_config.arch_compat_overrides()
        model = ExLlamaV2(exl_config)
        self._load_weights(model, progress)

        paged = self._paged_attention()
        self._max_seq_len = int(exl_config.max_seq_len)
        tokens = self._size_cache(torch, model, config, paged)
        cache = ExLlamaV2Cache(model, max_seq_len=tokens)
        generator = ExLlamaV2DynamicGenerator(
            model=model,
            cache=cache,
            tokenizer=ExLlamaV2Tokenizer(exl_config),
            max_batch_size=self.slots if paged else 1,
            paged=paged,
        )
        progress(LoadProgress("warming_up"))
        generator.warmup()  # kernel autotuning happens here, not in the first request
        self._torch = torch
        self._job_class = ExLlamaV2DynamicJob
        self._settings_class = ExLlamaV2Sampler.Settings
        self._loop = JobLoop(generator)
        self.cache_tokens = tokens
        self.vram_bytes = self._vram_reserved(torch)
        progress(LoadProgress("ready"))
        self._log_loaded(index, tokens, paged)

    def _log_loaded(self, index: int, tokens: int, paged: bool) -> None:
        log.info(
            "model %s loaded by exllamav2 (%s): cache %d tokens, %s batching, "
            "%d MiB VRAM reserved, eos ids %s",
            self.model_name,
            "split " + ",".join(f"{g:g}" for g in self.gpu_split)
            if self.gpu_split
            else f"cuda:{index}",
            tokens,
            "paged" if paged else "unpaged (no flash-attn >= 2.5.7: one job at a time)",
            (self.vram_bytes or 0) // MIB,
            self._eos,
        )

    def _load_weights(self, model: Any, progress: ProgressCallback) -> None:
        def on_module(done: int, total: int) -> None:
            # exllamav2 loads module by module (embedding, each layer's attention
            # and MLP, norm, head); those are the units reported.
            progress(LoadProgress("loading_weights", done, total))

        model.load(gpu_split=self.gpu_split, callback=on_module)

    def _hf_tokenizer(self) -> Any:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach a hub from a node
        import transformers

        transformers.utils.logging.disable_progress_bar()
        return transformers.AutoTokenizer.from_pretrained(self.model_dir, local_files_only=True)

    @staticmethod
    def _paged_attention() -> bool:
        """Continuous batching needs flash-attn's paged attention (>= 2.5.7);
        without it the generator runs one job at a time."""
        from exllamav2.attn import has_flash_attn_with_paged

        if not has_flash_attn_with_paged:
            log.warning("flash-attn >= 2.5.7 not found: requests run one at a time")
        return bool(has_flash_attn_with_paged)

    def _size_cache(self, torch: Any, model: Any, config: dict[str, Any], paged: bool) -> int:
        layers_on: collections.Counter[int] = collections.Counter()
        for device in (getattr(model, "cache_map", None) or {}).values():
            layers_on[cuda_index(str(device)) or 0] += 1
        if not layers_on:
            layers_on[0] = int(config.get("num_hidden_layers") or 1)
        free = {d: int(torch.cuda.mem_get_info(d)[0]) for d in layers_on}
        per_sequence = round_to_pages(self._max_seq_len)
        # Unpaged, the cache holds one sequence; paged, one full-length sequence per slot.
        cap = per_sequence * (self.slots if paged else 1)
        return cache_tokens(
            free, layers_on, kv_bytes_per_layer_token(config), self.cache_reserve_mb * MIB, cap
        )

    @staticmethod
    def _vram_reserved(torch: Any) -> int:
        return sum(int(torch.cuda.memory_reserved(d)) for d in range(torch.cuda.device_count()))

    # --- generation ------------------------------------------------------------

    def generate(
        self, prompt: str, params: GenerationParams, cancel: threading.Event
    ) -> Generation:
        if self._loop is None:
            raise RuntimeError("model not loaded")
        ids = hf_prompts.prompt_ids(self._tokenizer, prompt)
        if len(ids) + params.max_tokens > self._max_seq_len:
            raise ValueError(
                f"prompt ({len(ids)} tokens) plus max_tokens ({params.max_tokens}) "
                f"exceeds the model's context of {self._max_seq_len} tokens"
            )
        settings = apply_sampler_values(self._settings_class(), sampler_values(params))
        input_ids = self._torch.tensor([ids], dtype=self._torch.long)
        stops = stop_conditions(self._eos, params.stop)

        def make_job(identifier: int) -> Any:
            return self._job_class(
                input_ids=input_ids,
                max_new_tokens=params.max_tokens,
                gen_settings=settings,
                seed=params.seed,
                stop_conditions=stops,
                identifier=identifier,
            )

        ticket = self._loop.submit(make_job)
        return (yield from self._stream(ticket, cancel, len(ids)))

    def _stream(self, ticket: Ticket, cancel: threading.Event, prompt_tokens: int) -> Generation:
        assert self._loop is not None
        made = 0
        cancelling = False
        while True:
            if cancel.is_set() and not cancelling:
                self._loop.cancel(ticket)  # the loop frees the job's pages between passes
                cancelling = True
            item = ticket.next()
            if item is None:
                return GenerationResult(StopReason.CANCELLED, made, prompt_tokens=prompt_tokens)
            if isinstance(item, BaseException):
                raise self._failure(item) from item
            if item.get("stage") != "streaming":
                continue  # "started", "prefill", or {} (nothing yet)
            token_ids = item.get("token_ids")
            if token_ids is not None:
                made += int(token_ids.shape[-1])
            text = item.get("text") or ""
            if text and not cancelling:
                yield text
            if item.get("eos"):
                outcome = outcome_of(item)
                if outcome.tail_text and not cancelling:
                    yield outcome.tail_text
                return GenerationResult(
                    outcome.stop_reason,
                    outcome.tokens_out,
                    prompt_tokens=prompt_tokens,
                    stop_sequence=outcome.stop_sequence,
                )

    def _failure(self, exc: BaseException) -> Exception:
        """A failed pass as this request's error. The loop has already cancelled
        the pass's jobs (their cache pages are free); an out-of-memory also hands
        torch's freed blocks back, and is VramOom: the worker goes on."""
        if not is_vram_oom(exc):
            return RuntimeError(f"exllamav2 generation failed: {one_line(exc)}")
        self._torch.cuda.empty_cache()
        return VramOom(f"the GPU ran out of memory for this request: {one_line(exc)}")

    def render_chat(self, messages: list[dict[str, str]]) -> str:
        if self._tokenizer is None:
            raise RuntimeError("model not loaded")
        return hf_prompts.render_chat(self._tokenizer, messages, self.model_name)
