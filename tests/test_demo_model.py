"""The demo's model: trained here, from Markdown prose, into a folder the worker loads."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from rbee_worker.backends.base import GenerationParams
from rbee_worker.backends.torch_backend import TorchBackend
from rbee_worker.demomodel import (
    STAMP,
    TrainSettings,
    is_current,
    main,
    prose,
    read_corpus,
    train_demo_model,
)
from rbee_worker.demotext import PASSAGES

ROOT = Path(__file__).resolve().parents[1]

SENTENCE = "the queen starts one worker per model and device on each node."
# Small enough to train in a few seconds, large enough to learn one sentence by heart.
TINY = TrainSettings(steps=60, vocab_size=300, hidden=32, context=16, batch=8, learning_rate=1e-2)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo") / "model"
    train_demo_model(out, "\n".join([SENTENCE] * 40), TINY)
    return out


def test_prose_keeps_sentences_and_drops_code_tables_and_markup() -> None:
    markdown = (
        "# Title\n\nrbee runs **inference** on [your machines](docs/x.md), over `ssh`.\n\n"
        "```\nbash scripts/demo\n```\n\n| a | b |\n| --- | --- |\n\nshort\n"
    )
    assert prose(markdown) == "rbee runs inference on your machines, over ssh."


def test_the_corpus_is_every_markdown_file_of_a_folder(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "b.md").write_text("second file has four words\n")
    (tmp_path / "docs" / "a.md").write_text("first file has four words\n")
    (tmp_path / "docs" / "skip.txt").write_text("not markdown at all here\n")
    (tmp_path / "README.md").write_text("the readme comes first here\n")
    corpus = read_corpus([tmp_path / "README.md", tmp_path / "docs"])
    assert corpus.splitlines() == [
        "the readme comes first here",
        "first file has four words",
        "second file has four words",
    ]


def test_the_demo_passages_are_sentences_of_the_docs_word_for_word() -> None:
    docs = " ".join(read_corpus([ROOT / "README.md", ROOT / "docs"]).split())
    missing = [passage for passage in PASSAGES if " ".join(passage.split()) not in docs]
    assert not missing, f"reworded in the docs? update rbee_worker/demotext.py: {missing}"


def test_the_trained_model_loads_in_the_worker_and_learned_its_text(trained: Path) -> None:
    backend = TorchBackend(trained, "cpu")
    backend.load(lambda progress: None)
    params = GenerationParams(max_tokens=8, temperature=0.0)
    answer = "".join(backend.generate("the queen starts", params, threading.Event()))
    assert answer.startswith(" one worker per model")
    stamp = json.loads((trained / STAMP).read_text())
    assert stamp["final_loss"] < 1.0  # a random model's loss here is about ln(300) = 5.7


def test_the_same_text_and_settings_reuse_the_model(trained: Path) -> None:
    corpus = "\n".join([SENTENCE] * 40)
    assert is_current(trained, corpus, TINY)
    assert not is_current(trained, corpus + "\nmore text arrives later", TINY)
    assert not is_current(trained, corpus, TrainSettings())


def test_the_command_line_says_it_reused_a_current_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = tmp_path / "notes.md"
    text.write_text("\n\n".join([SENTENCE] * 30))
    out = tmp_path / "model"
    assert main([str(out), "--text", str(text), "--steps", "2"]) == 0
    assert capsys.readouterr().out.startswith(f"trained {out}:")
    assert main([str(out), "--text", str(text), "--steps", "2"]) == 0
    assert capsys.readouterr().out == f"reused {out} (trained on the same text)\n"
