"""The transformers backend: runs anywhere torch does, and is the CPU path.

The only module that imports torch or transformers, and only inside methods, so
the package imports (and the server starts answering /health) without them.
Generation is an own token-by-token loop with a KV cache: faster than
`generate()` for small models, and it can stream and stop between tokens.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from pathlib import Path
from typing import Any

from rbee_worker.backends.base import (
    ChatTemplateMissing,
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
from rbee_worker.backends.sampling import Sampler
from rbee_worker.detokenize import IncrementalDecoder
from rbee_worker.errors import one_line
from rbee_worker.stops import StopMatcher

log = logging.getLogger(__name__)

_DEVICE = re.compile(r"^(cpu|cuda(:\d+)?|\d+)$")


def parse_device(spec: str) -> str:
    """'cpu', 'cuda', 'cuda:N' or a bare GPU ordinal 'N' -> a torch device string."""
    if not _DEVICE.match(spec):
        raise LoadError(f"unsupported device {spec!r}: use cpu, cuda, cuda:N or N")
    return f"cuda:{spec}" if spec.isdigit() else spec


def _read_config(model_dir: Path) -> dict[str, Any]:
    path = model_dir / "config.json"
    if not model_dir.is_dir():
        raise LoadError(f"model directory not found: {model_dir}")
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise LoadError(f"no config.json in {model_dir}") from None
    except (OSError, ValueError) as exc:
        raise LoadError(f"unreadable config.json in {model_dir}: {exc}") from None
    if not isinstance(data, dict):
        raise LoadError(f"config.json in {model_dir} is not a JSON object")
    return data


# Measured on a 2-core machine: below ~10 M parameters one thread is several times
# faster per token than two (synchronisation costs more than the matmuls); above
# it, more threads win, with little gain past four.
SMALL_MODEL_PARAMS = 10_000_000


def _cpu_threads(n_params: int) -> int:
    if n_params < SMALL_MODEL_PARAMS:
        return 1
    return max(1, min(4, os.cpu_count() or 1))


def _return_cuda_memory(torch: Any) -> None:
    """Hand the allocator's freed blocks back to the driver after an OOM, so the
    next request (or another process on the GPU) finds them free."""
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _eos_ids(model: Any, tokenizer: Any) -> frozenset[int]:
    ids: set[int] = set()
    for source in (getattr(model, "generation_config", None), model.config):
        value = getattr(source, "eos_token_id", None)
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, list | tuple):
            ids.update(v for v in value if isinstance(v, int))
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    return frozenset(ids)


class TorchBackend:
    def __init__(self, model_dir: Path, device: str = "cpu") -> None:
        self.model_dir = Path(model_dir)
        self.device_spec = device
        self._model: Any = None
        self._tokenizer: Any = None
        self._device: Any = None
        self._eos: frozenset[int] = frozenset()

    @property
    def model_name(self) -> str:
        return self.model_dir.name

    # --- loading ---------------------------------------------------------------

    def load(self, progress: ProgressCallback) -> None:
        device_name = parse_device(self.device_spec)
        layers = int(_read_config(self.model_dir).get("num_hidden_layers") or 0)
        progress(LoadProgress("starting", 0, layers))
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach a hub from a node
        import torch
        import transformers

        # Progress bars would write carriage-return soup into the log file.
        transformers.utils.logging.disable_progress_bar()
        device = self._resolve_device(torch, device_name)

        progress(LoadProgress("loading_tokenizer", 0, layers))
        self._tokenizer = transformers.AutoTokenizer.from_pretrained(
            self.model_dir, local_files_only=True
        )
        progress(LoadProgress("loading_weights", 0, layers))
        model = transformers.AutoModelForCausalLM.from_pretrained(
            self.model_dir, local_files_only=True, dtype=self._dtype(torch, device)
        )
        self._model = model.to(device).eval()
        if device.type == "cpu":
            torch.set_num_threads(_cpu_threads(sum(p.numel() for p in model.parameters())))
        self._device = device
        self._eos = _eos_ids(self._model, self._tokenizer)
        progress(LoadProgress("warming_up", layers, layers))
        self._warm_up(torch)
        progress(LoadProgress("ready", layers, layers))
        log.info("model %s loaded on %s, eos ids %s", self.model_name, device, sorted(self._eos))

    @staticmethod
    def _resolve_device(torch: Any, name: str) -> Any:
        device = torch.device(name)
        # GPU fail-fast: a worker asked for CUDA never falls back to the CPU.
        if device.type == "cuda":
            if not torch.cuda.is_available():
                raise LoadError(f"device {name} requested but torch sees no CUDA GPU")
            if (device.index or 0) >= torch.cuda.device_count():
                raise LoadError(
                    f"device {name} requested but only {torch.cuda.device_count()} GPU(s) exist"
                )
        return device

    @staticmethod
    def _dtype(torch: Any, device: Any) -> Any:
        if device.type == "cpu":
            return torch.float32  # half precision is slow or unsupported on most CPUs
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16

    def _warm_up(self, torch: Any) -> None:
        # The first forward pays one-off costs; take them before reporting ready.
        first = self._tokenizer.bos_token_id
        ids = torch.tensor([[first if first is not None else 0]], device=self._device)
        with torch.inference_mode():
            self._model(input_ids=ids, use_cache=True, logits_to_keep=1)

    # --- generation ------------------------------------------------------------

    def generate(
        self, prompt: str, params: GenerationParams, cancel: threading.Event
    ) -> Generation:
        """The generation; a CUDA out-of-memory anywhere in it is VramOom, raised
        once the request's tensors (its KV cache) are let go of and the
        allocator's free blocks handed back, so the next request finds the room."""
        try:
            return (yield from self._generate(prompt, params, cancel))
        except RuntimeError as exc:
            if not is_vram_oom(exc):
                raise
            message = one_line(exc)
        # Here, past the handler, the error and its frames (which held the
        # request's tensors) are gone.
        import torch

        _return_cuda_memory(torch)
        raise VramOom(f"the GPU ran out of memory for this request: {message}")

    def _generate(
        self, prompt: str, params: GenerationParams, cancel: threading.Event
    ) -> Generation:
        if self._model is None:
            raise RuntimeError("model not loaded")
        import torch

        ids = self._prompt_ids(prompt)
        context = getattr(self._model.config, "max_position_embeddings", None)
        if context and len(ids) + params.max_tokens > context:
            raise ValueError(
                f"prompt ({len(ids)} tokens) plus max_tokens ({params.max_tokens}) "
                f"exceeds the model's context of {context} tokens"
            )
        sampler = Sampler(torch, params, self._device, ids)
        decoder = IncrementalDecoder(
            lambda toks: self._tokenizer.decode(toks, skip_special_tokens=True)
        )
        stops = StopMatcher(params.stop)
        step_input = torch.tensor([ids], device=self._device)
        cache = None
        made = 0
        stop = StopReason.MAX_TOKENS
        matched: str | None = None
        while made < params.max_tokens:
            if cancel.is_set():
                stop = StopReason.CANCELLED
                break
            token, cache = self._step(torch, step_input, cache, sampler)
            if token in self._eos:
                stop = StopReason.EOS
                break
            made += 1
            piece, matched = stops.push(decoder.push(token))
            if piece:
                yield piece
            if matched is not None:
                stop = StopReason.STOP_SEQUENCE
                break
            step_input = torch.tensor([[token]], device=self._device)
        if matched is None:
            tail, matched = stops.push(decoder.flush())
            tail += "" if matched is not None else stops.flush()
            if matched is not None:
                stop = StopReason.STOP_SEQUENCE
            if tail:
                yield tail
        return GenerationResult(stop, made, prompt_tokens=len(ids), stop_sequence=matched)

    def _step(self, torch: Any, step_input: Any, cache: Any, sampler: Sampler) -> tuple[int, Any]:
        """One forward pass: the token sampled and the cache after it."""
        with torch.inference_mode():
            # `cache=` rather than `past_key_values=`, which transformers 5 deprecates.
            out = self._model(input_ids=step_input, cache=cache, use_cache=True, logits_to_keep=1)
            return sampler(out.logits[0, -1].float()), out.cache

    def render_chat(self, messages: list[dict[str, str]]) -> str:
        if self._tokenizer is None:
            raise RuntimeError("model not loaded")
        if not getattr(self._tokenizer, "chat_template", None):
            raise ChatTemplateMissing(
                f"model {self.model_name} has no chat template; send a prompt instead"
            )
        text = self._tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True
        )
        return str(text)

    def _prompt_ids(self, prompt: str) -> list[int]:
        # A chat template usually writes the BOS token itself; adding another one
        # would put two in front of the prompt, which degrades real models.
        bos_text = self._tokenizer.bos_token
        special = not (bos_text and prompt.startswith(bos_text))
        ids = list(self._tokenizer(prompt, add_special_tokens=special)["input_ids"])
        if not ids:  # a model needs at least one position to predict from
            bos = self._tokenizer.bos_token_id
            ids = [bos if bos is not None else 0]
        return ids
