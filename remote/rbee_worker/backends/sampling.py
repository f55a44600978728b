"""Choosing the next token from logits: repetition penalty, temperature, top-k,
top-p, min-p, in the order llama.cpp and transformers apply them.

torch is handed in by the caller (the torch backend), so this module imports no
heavy package and the worker starts without it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rbee_worker.backends.base import GenerationParams


class Sampler:
    def __init__(
        self, torch: Any, params: GenerationParams, device: Any, prompt_ids: Sequence[int]
    ) -> None:
        self._torch = torch
        self._p = params
        self._device = device
        self._prompt_ids = list(prompt_ids)
        self._seen: Any = None  # bool mask over the vocabulary, made on first use
        self._generator: Any = None
        if params.temperature > 0:
            self._generator = torch.Generator(device=device)
            if params.seed is None:
                self._generator.seed()
            else:
                self._generator.manual_seed(params.seed)

    def __call__(self, logits: Any) -> int:
        if self._p.repetition_penalty != 1.0:
            logits = self._penalise(logits)
        if self._p.temperature == 0:
            token = int(self._torch.argmax(logits).item())
        else:
            token = self._sample(logits / self._p.temperature)
        if self._seen is not None:
            self._seen[token] = True
        return token

    def _penalise(self, logits: Any) -> Any:
        # As in the CTRL paper and transformers: a seen token's positive logit is
        # divided by the penalty, a negative one multiplied, so both move down.
        torch = self._torch
        if self._seen is None:
            self._seen = torch.zeros(logits.shape[-1], dtype=torch.bool, device=self._device)
            self._seen[torch.tensor(self._prompt_ids, device=self._device)] = True
        chosen = logits[self._seen]
        penalty = self._p.repetition_penalty
        logits = logits.clone()
        logits[self._seen] = torch.where(chosen > 0, chosen / penalty, chosen * penalty)
        return logits

    def _sample(self, logits: Any) -> int:
        torch = self._torch
        top_k = self._p.top_k
        if 0 < top_k < logits.shape[-1]:
            kth = torch.topk(logits, top_k).values[-1]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        probs = torch.softmax(logits, dim=-1)
        if self._p.top_p < 1.0:
            ordered, order = torch.sort(probs, descending=True)
            # Drop a token once the tokens before it already hold top_p of the mass;
            # the most likely token always stays.
            drop = (torch.cumsum(ordered, dim=-1) - ordered) >= self._p.top_p
            drop[0] = False
            probs = probs.clone()
            probs[order[drop]] = 0.0
        if self._p.min_p > 0.0:
            probs = probs.masked_fill(probs < self._p.min_p * probs.max(), 0.0)
        return int(torch.multinomial(probs, 1, generator=self._generator).item())
