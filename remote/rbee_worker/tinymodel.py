"""Write a tiny random-weight Llama in Hugging Face format, for tests and demos.

`python -m rbee_worker.tinymodel OUT_DIR [--seed 0]`

The result loads through the same code paths as a real model (config.json,
model.safetensors, tokenizer.json), weighs about 600 KB and generates about a
thousand tokens a second on a CPU. Same seed, same bytes. Greedy decoding never
ends at EOS (see write_tiny_model), so greedy runs are exactly max_tokens long.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

BOS = "<s>"
EOS = "</s>"
VOCAB_SIZE = 512

# Training text for the tokenizer: enough varied English for a few hundred merges.
_CORPUS = """\
The quick brown fox jumps over the lazy dog. A bee visits the flowers in the garden
every morning, and the hive hums with work until the sun goes down. The queen rules
the hive, the workers gather nectar, and the keeper watches over all of them.
Once upon a time there was a small machine that wanted to think. It read every book
in the library, one word at a time, and wrote down what it learned in a notebook.
When the night came it counted the stars and the numbers: one, two, three, four,
five, six, seven, eight, nine, ten. It asked questions: what is the weather like
today? Where does the river go? Why is the sky blue and the grass green?
People talk about the weather, the news, their families and their friends. They
cook dinner, read stories to their children, and plan the next day of work.
The model generates text token by token, and each token is streamed to the user as
soon as it is ready. Hello world! This is a test of the tokenizer, with punctuation,
numbers like 42 and 2048, and some longer words such as inference, orchestration,
distributed, reliability and observability.
"""


def _train_tokenizer() -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=[BOS, EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    # Repeat the text so pair counts are stable; training is deterministic.
    tokenizer.train_from_iterator([_CORPUS] * 4, trainer=trainer)
    return tokenizer


def _llama_config(vocab_size: int, bos_id: int, eos_id: int) -> Any:
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=4096,
        bos_token_id=bos_id,
        eos_token_id=eos_id,
        tie_word_embeddings=False,
    )


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def write_tiny_model(out_dir: Path, seed: int = 0) -> Path:
    """Write the model into out_dir (created if needed) and return out_dir."""
    import torch
    from safetensors.torch import save_file
    from transformers import LlamaForCausalLM

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = _train_tokenizer()
    bos_id, eos_id = tokenizer.token_to_id(BOS), tokenizer.token_to_id(EOS)
    config = _llama_config(tokenizer.get_vocab_size(), bos_id, eos_id)

    # fork_rng keeps the caller's global RNG untouched while init draws from it.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    with torch.no_grad():
        # Zero logits for the special tokens: greedy decoding never picks them (some
        # random logit is always higher), so a greedy run makes exactly max_tokens
        # tokens, while sampling still meets EOS about once in VOCAB_SIZE tokens.
        model.lm_head.weight[[bos_id, eos_id]] = 0.0
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    # save_file instead of save_pretrained: fixed metadata, so same seed -> same bytes.
    save_file(state, str(out_dir / "model.safetensors"), metadata={"format": "pt"})

    config_dict = config.to_dict()
    config_dict["architectures"] = ["LlamaForCausalLM"]
    # exllamav2 reads only a top-level rope_theta; transformers 5 nests it.
    config_dict["rope_theta"] = float(config_dict.get("rope_parameters", {}).get("rope_theta", 1e4))
    config_dict["dtype"] = config_dict["torch_dtype"] = "float32"
    config_dict.pop("transformers_version", None)
    _write_json(out_dir / "config.json", config_dict)

    tokenizer.save(str(out_dir / "tokenizer.json"))
    _write_json(
        out_dir / "tokenizer_config.json",
        {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "bos_token": BOS,
            "eos_token": EOS,
            "add_bos_token": False,
            "model_max_length": 4096,
            "clean_up_tokenization_spaces": False,
        },
    )
    _write_json(
        out_dir / "generation_config.json",
        {"bos_token_id": bos_id, "eos_token_id": eos_id, "do_sample": True},
    )
    return out_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m rbee_worker.tinymodel", description="Write a tiny random Llama."
    )
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    path = write_tiny_model(args.out_dir, seed=args.seed)
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
