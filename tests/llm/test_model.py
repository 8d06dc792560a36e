"""Tests of LanguageModel: loading, embeddings, continuation NLL, seeded generation."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch

from delsim.llm.metrics import corpus_perplexity, perplexity
from delsim.llm.model import LanguageModel, nucleus_sample, resolve_dtype


def test_load_exposes_shape(tiny_lm: LanguageModel) -> None:
    assert tiny_lm.hidden_size == 32
    assert tiny_lm.num_layers == 2
    assert tiny_lm.max_positions == 128
    assert tiny_lm.embedding_table.shape == (tiny_lm.vocab_size, 32)
    assert tiny_lm.num_parameters == sum(p.numel() for p in tiny_lm.model.parameters())


def test_model_is_frozen(tiny_lm: LanguageModel) -> None:
    assert not tiny_lm.model.training
    assert all(not p.requires_grad for p in tiny_lm.model.parameters())


def test_load_offline_from_local_path(tiny_model_dir: Path) -> None:
    # HF_HUB_OFFLINE is read when huggingface_hub is imported, so it is set in a fresh process.
    code = (
        "import sys; from delsim.llm import LanguageModel; "
        "lm = LanguageModel.load(sys.argv[1]); print(lm.hidden_size, lm.num_layers)"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-c", code, str(tiny_model_dir)], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["32", "2"]


def test_load_missing_path_names_it(tmp_path: Path) -> None:
    missing = tmp_path / "no_such_model"
    with pytest.raises(OSError, match="no_such_model"):
        LanguageModel.load(missing)


def test_dtype_settings() -> None:
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert resolve_dtype("bf16", torch.device("cpu")) == torch.bfloat16
    assert resolve_dtype(None, torch.device("cpu")) is None
    with pytest.raises(ValueError, match="dtype='int8'"):
        resolve_dtype("int8", torch.device("cpu"))


def test_embed_matches_table(tiny_lm: LanguageModel) -> None:
    ids = tiny_lm.tokenize("The quick brown fox")
    assert torch.equal(tiny_lm.embed(ids), tiny_lm.embedding_table[ids])


def test_embed_rejects_out_of_range(tiny_lm: LanguageModel) -> None:
    with pytest.raises(ValueError, match="token_ids must lie in"):
        tiny_lm.embed([0, tiny_lm.vocab_size])


def _manual_nll(logits: torch.Tensor, context_length: int, continuation: torch.Tensor) -> float:
    log_probs = torch.log_softmax(logits.double(), dim=-1)
    total = 0.0
    for j, token in enumerate(continuation.tolist()):
        total -= float(log_probs[context_length - 1 + j, token])
    return total


def test_continuation_nll_matches_manual(tiny_lm: LanguageModel) -> None:
    prompt = tiny_lm.tokenize("Split inference runs the first layers")
    continuation = tiny_lm.tokenize(" on a device and the rest")

    nll_sum, n_tokens = tiny_lm.continuation_nll(tiny_lm.embed(prompt), continuation)

    # Independent path: token ids through the model, then a per-token log-softmax.
    with torch.no_grad():
        logits = tiny_lm.model(input_ids=torch.cat([prompt, continuation]).unsqueeze(0)).logits[0]
    expected = _manual_nll(logits, len(prompt), continuation)
    assert n_tokens == len(continuation)
    assert nll_sum == pytest.approx(expected, rel=1e-5)
    assert perplexity(nll_sum, n_tokens) == pytest.approx(torch.exp(torch.tensor(expected / n_tokens)).item(), rel=1e-5)


def test_continuation_nll_with_soft_prompt(tiny_lm: LanguageModel) -> None:
    generator = torch.Generator().manual_seed(3)
    soft_prompt = torch.randn(4, tiny_lm.hidden_size, generator=generator) * 0.02
    prompt = tiny_lm.tokenize("A language model")
    continuation = tiny_lm.tokenize(" predicts the next token")

    nll_sum, n_tokens = tiny_lm.continuation_nll(tiny_lm.embed(prompt), continuation, soft_prompt=soft_prompt)

    inputs = torch.cat([soft_prompt, tiny_lm.embed(prompt), tiny_lm.embed(continuation)]).unsqueeze(0)
    with torch.no_grad():
        logits = tiny_lm.model(inputs_embeds=inputs).logits[0]
    assert n_tokens == len(continuation)
    assert nll_sum == pytest.approx(_manual_nll(logits, 4 + len(prompt), continuation), rel=1e-5)


def test_corpus_perplexity_weights_by_tokens() -> None:
    assert corpus_perplexity([(2.0, 1), (4.0, 3)]) == pytest.approx(torch.exp(torch.tensor(1.5)).item())
    with pytest.raises(ValueError, match="n_tokens"):
        perplexity(1.0, 0)


def test_continuation_nll_rejects_too_long(tiny_lm: LanguageModel) -> None:
    prompt = tiny_lm.embed(torch.zeros(100, dtype=torch.long))
    with pytest.raises(ValueError, match="exceeds the model's context of 128"):
        tiny_lm.continuation_nll(prompt, torch.zeros(40, dtype=torch.long))


def test_generate_is_seeded(tiny_lm: LanguageModel) -> None:
    prompt = tiny_lm.embed(tiny_lm.tokenize("The quick brown fox"))
    tiny_lm.eos_token_id = None
    try:
        first = tiny_lm.generate(prompt, max_new_tokens=20, seed=7)
        other = tiny_lm.generate(prompt, max_new_tokens=20, seed=8)
        again = tiny_lm.generate(prompt, max_new_tokens=20, seed=7)
    finally:
        tiny_lm.eos_token_id = tiny_lm.tokenizer.eos_token_id
    assert len(first) == 20
    assert first == again
    assert first != other


def test_generate_ignores_global_rng(tiny_lm: LanguageModel) -> None:
    prompt = tiny_lm.embed(tiny_lm.tokenize("Differential privacy bounds"))
    torch.manual_seed(0)
    first = tiny_lm.generate(prompt, max_new_tokens=10, seed=1, eos_token_id=-1)
    torch.manual_seed(12345)
    torch.rand(100)
    second = tiny_lm.generate(prompt, max_new_tokens=10, seed=1, eos_token_id=-1)
    assert first == second


def test_generate_stops_at_eos(tiny_lm: LanguageModel) -> None:
    prompt = tiny_lm.embed(tiny_lm.tokenize("Python lists keep"))
    free_run = tiny_lm.generate(prompt, max_new_tokens=30, seed=5, eos_token_id=-1)

    # Declare the token sampled at position 10 the end of sequence: the same seed must then
    # reproduce the run up to its first occurrence and stop there.
    stop_token = free_run[10]
    first_stop = free_run.index(stop_token)
    stopped = tiny_lm.generate(prompt, max_new_tokens=30, seed=5, eos_token_id=stop_token)
    assert stopped == free_run[:first_stop]


def test_greedy_matches_transformers_generate(tiny_lm: LanguageModel) -> None:
    ids = tiny_lm.tokenize("The quick brown fox jumps")
    ours = tiny_lm.generate(tiny_lm.embed(ids), max_new_tokens=12, temperature=0.0, eos_token_id=-1)
    with torch.no_grad():
        reference = tiny_lm.model.generate(
            ids.unsqueeze(0), max_new_tokens=12, min_new_tokens=12, do_sample=False, pad_token_id=0
        )
    assert ours == reference[0, len(ids) :].tolist()


def test_generate_with_soft_prompt_changes_output(tiny_lm: LanguageModel) -> None:
    prompt = tiny_lm.embed(tiny_lm.tokenize("The quick brown fox"))
    soft_prompt = torch.randn(6, tiny_lm.hidden_size, generator=torch.Generator().manual_seed(0))
    plain = tiny_lm.generate(prompt, max_new_tokens=15, temperature=0.0, eos_token_id=-1)
    prefixed = tiny_lm.generate(prompt, soft_prompt=soft_prompt, max_new_tokens=15, temperature=0.0, eos_token_id=-1)
    assert plain != prefixed


def test_generate_stops_at_context_end(tiny_lm: LanguageModel) -> None:
    prompt = tiny_lm.embed(torch.zeros(120, dtype=torch.long))
    generated = tiny_lm.generate(prompt, max_new_tokens=50, eos_token_id=-1)
    assert len(generated) == 8


def test_generate_rejects_bad_settings(tiny_lm: LanguageModel) -> None:
    prompt = tiny_lm.embed(tiny_lm.tokenize("fox"))
    with pytest.raises(ValueError, match="top_p"):
        tiny_lm.generate(prompt, top_p=0.0)
    with pytest.raises(ValueError, match="prompt_embeds must have shape"):
        tiny_lm.generate(prompt[:, :16])


def test_nucleus_sample_keeps_top_mass() -> None:
    # Probabilities 0.5, 0.3, 0.15, 0.05 at temperature 1: top_p = 0.7 keeps the first two
    # tokens, renormalized to 0.625 and 0.375.
    logits = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))
    generator = torch.Generator().manual_seed(0)
    draws = Counter(nucleus_sample(logits, top_p=0.7, temperature=1.0, generator=generator) for _ in range(4000))
    assert set(draws) == {0, 1}

    # Binomial standard error of the share at n = 4000 is about 0.0077; allow 4 of them.
    assert draws[0] / 4000 == pytest.approx(0.625, abs=0.031)


def test_nucleus_sample_temperature_zero_is_argmax() -> None:
    logits = torch.tensor([0.1, 2.0, 1.9])
    assert nucleus_sample(logits, top_p=0.9, temperature=0.0, generator=torch.Generator()) == 1


def test_default_name_loads_shipped_model() -> None:
    lm = LanguageModel.load("delsim-default")
    # The shipped weights are stored in float16; dtype=None must still give float32 on CPU.
    assert lm.dtype == torch.float32
    assert lm.hidden_size == 256
    assert lm.max_positions == 512
    assert lm.eos_token_id == lm.tokenizer.eos_token_id
