"""Train the demo's small model on sentences of rbee's own documentation.

`python -m rbee_worker.demomodel OUT_DIR [--text PATH ...] [--steps N]`

A byte-level BPE tokenizer and a small Llama are trained from scratch, on the CPU,
with a fixed seed, in seconds. By default the text is `demotext.PASSAGES` (plain
sentences quoted from the README and docs/), which the model learns by heart, so
it answers a prompt that opens a passage with that passage; `--text` trains on the
prose of other Markdown files instead (code blocks and tables left out). Each
passage is a training sequence from its first token, as a prompt is at inference.
Nothing is downloaded. The result is a Hugging Face folder like any other model's,
which the worker loads through its usual path. A stamp file records what it was
trained from: the same text and settings find it already there and it is reused.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rbee_worker.demotext import CORPUS

BOS = "<s>"
EOS = "</s>"
STAMP = "rbee-demo.json"

_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")
_MARKUP = re.compile(r"[`*_#>]+")


@dataclass(frozen=True)
class TrainSettings:
    """What shapes the model; part of the stamp, so a change retrains."""

    steps: int = 150
    vocab_size: int = 1024
    hidden: int = 96
    layers: int = 2
    context: int = 128  # the longest passage is 93 tokens: each is learnt whole
    batch: int = 16
    learning_rate: float = 5e-3
    seed: int = 0


def prose(markdown: str) -> str:
    """The sentences of a Markdown text: no code blocks, tables, links' targets or markup."""
    lines, in_code = [], False
    for line in markdown.splitlines():
        if line.lstrip().startswith("```"):
            in_code = not in_code
            continue
        if in_code or line.lstrip().startswith("|"):
            continue
        line = _MARKUP.sub("", _LINK.sub(r"\1", line)).strip()
        lines.append(line)
    paragraphs = " ".join(lines).split("  ")
    return "\n".join(p.strip() for p in paragraphs if len(p.split()) > 3)


def read_corpus(sources: Iterable[Path]) -> str:
    """The prose of every .md file among sources (files, or folders read in name order)."""
    files: list[Path] = []
    for source in sources:
        files += sorted(source.glob("*.md")) if source.is_dir() else [source]
    return "\n".join(prose(f.read_text(encoding="utf-8")) for f in files)


def fingerprint(corpus: str, settings: TrainSettings) -> str:
    blob = json.dumps({"corpus": corpus, "settings": asdict(settings)}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def is_current(out_dir: Path, corpus: str, settings: TrainSettings) -> bool:
    """True when out_dir holds a model trained from this corpus with these settings."""
    try:
        stamp = json.loads((out_dir / STAMP).read_text())
    except (OSError, ValueError):
        return False
    return stamp.get("fingerprint") == fingerprint(corpus, settings)


def _train_tokenizer(corpus: str, vocab_size: int) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[BOS, EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus.splitlines(), trainer=trainer)
    return tokenizer


def _build_model(tokenizer: Any, settings: TrainSettings) -> Any:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=tokenizer.get_vocab_size(),
        hidden_size=settings.hidden,
        intermediate_size=settings.hidden * 2,
        num_hidden_layers=settings.layers,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=1024,
        bos_token_id=tokenizer.token_to_id(BOS),
        eos_token_id=tokenizer.token_to_id(EOS),
        tie_word_embeddings=True,
    )
    return LlamaForCausalLM(config)


def _sequences(tokenizer: Any, corpus: str, context: int) -> list[list[int]]:
    """Each line's tokens and an end token, cut into pieces of at most context tokens."""
    eos = tokenizer.token_to_id(EOS)
    out = []
    for line in corpus.splitlines():
        ids = [*tokenizer.encode(line).ids, eos]
        out += [ids[i : i + context] for i in range(0, len(ids), context)]
    return out


def _fit(model: Any, sequences: list[list[int]], pad: int, settings: TrainSettings) -> float:
    """Next-token training on batches of whole sequences; returns the last loss."""
    import torch

    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.learning_rate)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=settings.learning_rate, total_steps=settings.steps, pct_start=0.1
    )
    loss = torch.tensor(0.0)
    model.train()
    for _ in range(settings.steps):
        if len(sequences) <= settings.batch:
            picked = sequences  # the demo's passages: every one, every step
        else:
            picked = [sequences[int(i)] for i in torch.randint(len(sequences), (settings.batch,))]
        inputs, labels, mask = _padded(torch, picked, pad)
        # transformers shifts the labels by one itself; -100 marks padding it skips.
        loss = model(input_ids=inputs, attention_mask=mask, labels=labels).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
    model.eval()
    return float(loss.detach())


def _padded(torch: Any, sequences: list[list[int]], pad: int) -> tuple[Any, Any, Any]:
    width = max(len(seq) for seq in sequences)
    inputs = torch.full((len(sequences), width), pad)
    labels = torch.full((len(sequences), width), -100)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        inputs[row, : len(seq)] = labels[row, : len(seq)] = torch.tensor(seq)
        mask[row, : len(seq)] = 1
    return inputs, labels, mask


def _save(model: Any, tokenizer: Any, out_dir: Path) -> None:
    from safetensors.torch import save_file

    # Tied embeddings share one tensor; safetensors stores it once, under its own name.
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    state.pop("lm_head.weight", None)
    save_file(state, str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    config = model.config.to_dict()
    config["architectures"] = ["LlamaForCausalLM"]
    config["dtype"] = config["torch_dtype"] = "float32"
    config.pop("transformers_version", None)
    _write_json(out_dir / "config.json", config)
    tokenizer.save(str(out_dir / "tokenizer.json"))
    _write_json(
        out_dir / "tokenizer_config.json",
        {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "bos_token": BOS,
            "eos_token": EOS,
            "add_bos_token": False,
            "model_max_length": 1024,
            "clean_up_tokenization_spaces": False,
        },
    )
    eos_id = tokenizer.token_to_id(EOS)
    _write_json(out_dir / "generation_config.json", {"eos_token_id": eos_id})


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def train_demo_model(out_dir: Path, corpus: str, settings: TrainSettings) -> dict[str, Any]:
    """Train on corpus and write the model into out_dir; returns the stamp written."""
    import torch

    started = time.monotonic()
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / STAMP).unlink(missing_ok=True)  # a cut-off run must not look finished
    tokenizer = _train_tokenizer(corpus, settings.vocab_size)
    sequences = _sequences(tokenizer, corpus, settings.context)
    threads = torch.get_num_threads()
    # One thread: these matrices are too small to share, and a second thread's
    # spinning costs more than it gives (measured: half the CPU for the same steps).
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(settings.seed)
            model = _build_model(tokenizer, settings)
            loss = _fit(model, sequences, tokenizer.token_to_id(EOS), settings)
    finally:
        torch.set_num_threads(threads)
    _save(model, tokenizer, out_dir)
    stamp = {
        "fingerprint": fingerprint(corpus, settings),
        "corpus_tokens": sum(len(seq) for seq in sequences),
        "final_loss": round(loss, 3),
        "seconds": round(time.monotonic() - started, 1),
    }
    _write_json(out_dir / STAMP, stamp)
    return stamp


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m rbee_worker.demomodel",
        description="Train the demo's small model (reused when current).",
    )
    parser.add_argument("out_dir", type=Path)
    parser.add_argument(
        "--text",
        type=Path,
        action="append",
        metavar="PATH",
        help="train on the prose of these Markdown files or folders instead of the demo's text",
    )
    parser.add_argument("--steps", type=int, default=TrainSettings.steps)
    args = parser.parse_args(argv)
    corpus = read_corpus(args.text) if args.text else CORPUS
    settings = TrainSettings(steps=args.steps)
    if is_current(args.out_dir, corpus, settings):
        print(f"reused {args.out_dir} (trained on the same text)")
        return 0
    stamp = train_demo_model(args.out_dir, corpus, settings)
    print(
        f"trained {args.out_dir}: {stamp['corpus_tokens']} tokens of documentation, "
        f"loss {stamp['final_loss']}, {stamp['seconds']} s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
