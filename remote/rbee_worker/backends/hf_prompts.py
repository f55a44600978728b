"""Prompts through the model's own Hugging Face tokenizer: ids and chat templates.

exllamav2 does no chat templating, and its tokenizer adds BOS by other rules
than transformers does; going through the same tokenizer as the torch backend
gives both backends the same prompt ids for the same request.
"""

from __future__ import annotations

from typing import Any

from rbee_worker.backends.base import ChatTemplateMissing


def prompt_ids(tokenizer: Any, prompt: str) -> list[int]:
    # A chat template usually writes the BOS token itself; adding another one
    # would put two in front of the prompt, which degrades real models.
    bos_text = tokenizer.bos_token
    special = not (bos_text and prompt.startswith(bos_text))
    ids = list(tokenizer(prompt, add_special_tokens=special)["input_ids"])
    if not ids:  # a model needs at least one position to predict from
        bos = tokenizer.bos_token_id
        ids = [bos if bos is not None else 0]
    return ids


def render_chat(tokenizer: Any, messages: list[dict[str, str]], model_name: str) -> str:
    if not getattr(tokenizer, "chat_template", None):
        raise ChatTemplateMissing(f"model {model_name} has no chat template; send a prompt instead")
    return str(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))
