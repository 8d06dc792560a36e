"""Tests of the default-LM recipe on a tiny config, and of the shipped default model."""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from delsim.llm import train_lm
from delsim.llm.corpus import load_corpus_paragraphs, load_heldout_paragraphs
from delsim.llm.defaults import DEFAULT_MODEL_DIR
from delsim.llm.train_lm import LMTrainConfig, evaluate_perplexity, learning_rate

TINY = LMTrainConfig(
    corpus="pydoc",
    vocab_size=400,
    n_embd=32,
    n_layer=2,
    n_head=2,
    n_positions=64,
    steps=40,
    batch_size=8,
    seq_len=32,
    lr=3e-3,
    warmup_steps=5,
    checkpoint_every=10,
    save_dtype="float32",
    eval_max_paragraphs=16,
)

SHIPPED_HELDOUT_PARAGRAPHS = 50

# The shipped model scores 102 on the first 50 held-out paragraphs, while a unigram model of its
# tokenizer, fitted on the train split, scores 719 (measured with `evaluate_perplexity` on CPU).
# The bound of 150 leaves room for rounding differences between CPUs but fails a broken model.
SHIPPED_HELDOUT_PERPLEXITY_BOUND = 150.0


@pytest.fixture(scope="module")
def pydoc_paragraphs() -> list[str]:
    return load_corpus_paragraphs("pydoc")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory, pydoc_paragraphs: list[str]) -> train_lm.LMTrainResult:
    out_dir = tmp_path_factory.mktemp("tiny_lm")
    return train_lm.train_lm(TINY, out_dir, progress=False, paragraphs=pydoc_paragraphs)


def test_tiny_run_loss_goes_down(tiny_run: train_lm.LMTrainResult) -> None:
    losses = tiny_run.losses

    assert len(losses) == TINY.steps
    assert losses[0] == pytest.approx(math.log(TINY.vocab_size), abs=0.5)
    # Batches of 256 tokens give a loss noise of about 0.1 nats, so a 0.5 drop is learning.
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.5


def test_tiny_run_writes_outputs(tiny_run: train_lm.LMTrainResult) -> None:
    out_dir = tiny_run.model_dir.parent
    metrics = json.loads((out_dir / train_lm.METRICS_FILENAME).read_text(encoding="utf-8"))

    assert metrics == tiny_run.metrics
    assert 1.0 < metrics["validation_perplexity"] < TINY.vocab_size
    assert 1.0 < metrics["heldout_perplexity"] < TINY.vocab_size
    assert metrics["validation_paragraphs"] == TINY.eval_max_paragraphs
    assert (out_dir / "corpus" / "heldout.txt").is_file()
    assert (out_dir / "corpus" / "provenance.json").is_file()
    assert (tiny_run.model_dir / "model.safetensors").is_file()
    assert (tiny_run.model_dir / "tokenizer.json").is_file()


def test_tiny_model_loads_with_auto_classes(tiny_run: train_lm.LMTrainResult) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_run.model_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_run.model_dir)

    assert model.config.n_embd == TINY.n_embd
    assert tokenizer.bos_token == train_lm.EOS_TOKEN
    assert tokenizer.pad_token == train_lm.PAD_TOKEN
    text = "The for statement iterates over the items of any sequence, in order."
    assert tokenizer.decode(tokenizer(text)["input_ids"]) == text


def test_resume_matches_uninterrupted_run(
    tmp_path: Path, tiny_run: train_lm.LMTrainResult, pydoc_paragraphs: list[str]
) -> None:
    stopped = train_lm.train_lm(TINY, tmp_path, stop_at=20, progress=False, paragraphs=pydoc_paragraphs)
    assert (stopped.start_step, stopped.end_step) == (0, 20)
    assert stopped.metrics == {}
    assert not (tmp_path / "model").exists()

    resumed = train_lm.train_lm(TINY, tmp_path, resume=True, progress=False, paragraphs=pydoc_paragraphs)
    assert (resumed.start_step, resumed.end_step) == (20, TINY.steps)
    assert stopped.losses + resumed.losses == tiny_run.losses
    _assert_same_weights(resumed.model_dir, tiny_run.model_dir)


def test_same_seed_same_weights(tmp_path: Path, tiny_run: train_lm.LMTrainResult, pydoc_paragraphs: list[str]) -> None:
    again = train_lm.train_lm(TINY, tmp_path, progress=False, paragraphs=pydoc_paragraphs)

    assert again.losses == tiny_run.losses
    _assert_same_weights(again.model_dir, tiny_run.model_dir)


def test_resume_rejects_changed_model(tmp_path: Path, pydoc_paragraphs: list[str]) -> None:
    train_lm.train_lm(replace(TINY, steps=10), tmp_path, progress=False, paragraphs=pydoc_paragraphs)

    with pytest.raises(ValueError, match="checkpoint has n_embd=32"):
        train_lm.train_lm(replace(TINY, n_embd=64), tmp_path, resume=True, progress=False, paragraphs=pydoc_paragraphs)


def test_resume_without_checkpoint(tmp_path: Path, pydoc_paragraphs: list[str]) -> None:
    with pytest.raises(FileNotFoundError, match="cannot resume"):
        train_lm.train_lm(TINY, tmp_path, resume=True, progress=False, paragraphs=pydoc_paragraphs)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"corpus": "wiki"}, "invalid corpus"),
        ({"n_head": 3}, "invalid n_head 3"),
        ({"seq_len": 128}, "invalid seq_len 128"),
        ({"vocab_size": 100}, "invalid vocab_size 100"),
        ({"lr": 0.0}, "invalid lr"),
        ({"steps": 0}, "invalid steps 0"),
        ({"save_dtype": "bfloat16"}, "invalid save_dtype"),
        ({"warmup_steps": -1}, "invalid warmup_steps"),
    ],
)
def test_config_validation(change: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        replace(TINY, **change).validate()


def test_learning_rate_schedule() -> None:
    config = replace(TINY, steps=100, warmup_steps=10, lr=1.0, min_lr_ratio=0.1)

    assert learning_rate(config, 0) == pytest.approx(0.1)
    assert learning_rate(config, 9) == pytest.approx(1.0)
    assert learning_rate(config, 10) == pytest.approx(1.0)
    assert learning_rate(config, 55) == pytest.approx(0.55)
    assert learning_rate(config, 100) == pytest.approx(0.1)


def test_parser_round_trip(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    train_lm.configure_parser(parser)

    args = parser.parse_args(["--out-dir", str(tmp_path), "--corpus", "pydoc", "--n-embd", "64", "--resume"])

    assert args.corpus == "pydoc"
    assert args.n_embd == 64
    assert args.resume is True
    assert args.eval_max_paragraphs is None
    assert args.save_dtype == "float16"


def test_shipped_model_loads_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = AutoModelForCausalLM.from_pretrained(DEFAULT_MODEL_DIR)
    tokenizer = AutoTokenizer.from_pretrained(DEFAULT_MODEL_DIR)

    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert model.config.n_positions >= 512
    assert model.get_input_embeddings().weight.shape[0] == len(tokenizer)
    assert tokenizer.eos_token_id is not None
    assert tokenizer.pad_token_id is not None
    size = sum(f.stat().st_size for f in DEFAULT_MODEL_DIR.iterdir() if f.is_file())
    assert size < 15_000_000


def test_shipped_model_heldout_perplexity(monkeypatch: pytest.MonkeyPatch) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = AutoModelForCausalLM.from_pretrained(DEFAULT_MODEL_DIR)
    tokenizer = AutoTokenizer.from_pretrained(DEFAULT_MODEL_DIR)
    paragraphs = load_heldout_paragraphs()[:SHIPPED_HELDOUT_PARAGRAPHS]

    perplexity = evaluate_perplexity(model, tokenizer, paragraphs)

    assert perplexity < SHIPPED_HELDOUT_PERPLEXITY_BOUND


def _assert_same_weights(first_dir: Path, second_dir: Path) -> None:
    first = load_file(first_dir / "model.safetensors")
    second = load_file(second_dir / "model.safetensors")
    assert first.keys() == second.keys()
    for name in first:
        assert torch.equal(first[name], second[name]), name
