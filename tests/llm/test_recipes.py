"""Tests of the projection and soft-prompt recipes on the tiny GPT-2 and the pydoc corpus."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch

from delsim.llm.corpus import CorpusSplit
from delsim.llm.model import LanguageModel
from delsim.llm.projection_info import read_projection_clip, read_projection_info
from delsim.llm.soft_prompt import SoftPromptLibrary
from delsim.llm.train_projection import ProjectionTrainingOptions, measure_clip, train_projection
from delsim.llm.train_soft_prompt import SoftPromptTrainingOptions, train_soft_prompt
from delsim.llm.training import load_split_paragraphs, token_ids_for_calibration, token_stream
from delsim.llm import train_projection as projection_recipe
from delsim.llm import train_soft_prompt as soft_prompt_recipe
from delsim.mechanism import Projection

WINDOWS = {"batch_size": 8, "prompt_tokens": 16, "continuation_tokens": 16, "validation_windows": 16}


@pytest.fixture(scope="module")
def split() -> CorpusSplit:
    return load_split_paragraphs("pydoc")


def _projection_options(tmp_path: Path, model_dir: Path, **overrides: object) -> ProjectionTrainingOptions:
    values = {
        "out": str(tmp_path / "projection.safetensors"),
        "model": str(model_dir),
        "corpus": "pydoc",
        "dim": 8,
        "init": "random",
        "steps": 60,
        "lr": 1e-2,
        "checkpoint_every": 0,
        **WINDOWS,
        **overrides,
    }
    return ProjectionTrainingOptions(**values)


def _train_projection(options: ProjectionTrainingOptions, lm: LanguageModel, split: CorpusSplit):
    return train_projection(options, lm=lm, train_paragraphs=split.train, validation_paragraphs=split.validation)


@pytest.fixture(scope="module")
def trained_projection(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, tiny_lm: LanguageModel, split: CorpusSplit):
    options = _projection_options(tmp_path_factory.mktemp("projection"), tiny_model_dir)
    return options, _train_projection(options, tiny_lm, split)


def test_projection_lowers_validation_perplexity(trained_projection) -> None:
    _, result = trained_projection
    assert len(result.losses) == 60

    # The training loss of single batches is too noisy to compare, so the check uses the
    # loss on fixed validation windows. Measured here: 27.0 at the random init, 24.9 after 60 steps.
    assert result.validation_perplexity_trained < 0.95 * result.validation_perplexity_initial
    assert result.validation_perplexity_plain < result.validation_perplexity_initial


def test_projection_file_and_clip(trained_projection, tiny_lm: LanguageModel, split: CorpusSplit) -> None:
    options, result = trained_projection
    loaded = Projection.load(options.out)
    assert (loaded.hidden_size, loaded.dim) == (32, 8)
    assert torch.equal(loaded.encoder.weight, result.projection.encoder.weight)

    # The stored clip is the 95th percentile of |W_enc e| over the sampled training tokens.
    token_ids = token_ids_for_calibration(token_stream(tiny_lm, split.train), options.clip_tokens, options.seed)
    expected = measure_clip(loaded, tiny_lm, token_ids, 95.0)
    assert read_projection_clip(options.out) == pytest.approx(expected, rel=1e-6)
    with torch.no_grad():
        coordinates = loaded.encode(tiny_lm.embed(token_ids)).abs()

    # Repeated tokens tie, so 95% lies between the shares strictly below and at most the clip.
    assert float((coordinates < expected).float().mean()) <= 0.95
    assert float((coordinates <= expected).float().mean()) >= 0.95

    info = read_projection_info(options.out)
    assert info["dim"] == 8
    assert info["validation_perplexity"]["trained"] == pytest.approx(result.validation_perplexity_trained)


def test_projection_resume_matches_full_run(tmp_path: Path, tiny_model_dir: Path, tiny_lm: LanguageModel, split: CorpusSplit) -> None:
    full = _train_projection(_projection_options(tmp_path / "full", tiny_model_dir, steps=12), tiny_lm, split)

    partial_options = _projection_options(tmp_path / "resumed", tiny_model_dir, steps=8, checkpoint_every=4)
    _train_projection(partial_options, tiny_lm, split)
    resumed_options = _projection_options(tmp_path / "resumed", tiny_model_dir, steps=12, checkpoint_every=4, resume=True)
    resumed = _train_projection(resumed_options, tiny_lm, split)

    assert len(resumed.losses) == 12
    assert resumed.losses == pytest.approx(full.losses, rel=1e-5)
    assert torch.allclose(resumed.projection.encoder.weight, full.projection.encoder.weight, atol=1e-6)


def test_resume_rejects_changed_options(tmp_path: Path, tiny_model_dir: Path, tiny_lm: LanguageModel, split: CorpusSplit) -> None:
    _train_projection(_projection_options(tmp_path, tiny_model_dir, steps=2, checkpoint_every=2), tiny_lm, split)
    changed = _projection_options(tmp_path, tiny_model_dir, steps=4, lr=5e-3, resume=True)
    with pytest.raises(ValueError, match="lr: checkpoint 0.01, now 0.005"):
        _train_projection(changed, tiny_lm, split)


def _soft_prompt_options(tmp_path: Path, model_dir: Path, projection_path: str, **overrides: object) -> SoftPromptTrainingOptions:
    values = {
        "library": str(tmp_path / "library"),
        "model": str(model_dir),
        "projection": projection_path,
        "corpus": "pydoc",
        "target_asr": 0.1,
        "calibration_tokens": 1000,
        "num_virtual_tokens": 4,
        "steps": 60,
        "lr": 1e-2,
        "checkpoint_every": 0,
        **WINDOWS,
        **overrides,
    }
    return SoftPromptTrainingOptions(**values)


@pytest.fixture(scope="module")
def trained_soft_prompt(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, split: CorpusSplit, trained_projection):
    projection_options, _ = trained_projection
    options = _soft_prompt_options(tmp_path_factory.mktemp("soft_prompt"), tiny_model_dir, projection_options.out)
    lm = LanguageModel.load(tiny_model_dir)
    return options, train_soft_prompt(options, lm=lm, paragraphs=(split.train, split.validation, split.heldout))


def test_soft_prompt_calibrates_and_rounds_mu(trained_soft_prompt) -> None:
    _, result = trained_soft_prompt
    record = result.metadata["mu"]
    assert record["source"] == "calibrated"
    assert record["converged"]

    # calibrate_mu stops within 0.005 of the target; mu is then rounded to 3 significant digits.
    assert record["asr"] == pytest.approx(0.1, abs=0.005)
    assert result.config.mu == float(f"{record['calibrated_mu']:.3g}")


def test_soft_prompt_stored_in_library(trained_soft_prompt, trained_projection) -> None:
    options, result = trained_soft_prompt
    library = SoftPromptLibrary(options.library)
    assert library.keys() == [result.key]

    stored = library.get(result.config)
    assert stored.shape == (4, 32)
    assert torch.equal(stored, result.soft_prompt)
    assert result.config.clip == read_projection_clip(trained_projection[0].out)
    assert library.entry(result.key)["metadata"]["validation_perplexity"] == result.validation_perplexity


def test_soft_prompt_lowers_validation_perplexity(trained_soft_prompt) -> None:
    _, result = trained_soft_prompt
    perplexities = result.validation_perplexity
    assert perplexities["del_trained_soft_prompt"] < perplexities["del_initial_soft_prompt"]
    assert perplexities["no_privacy"] < perplexities["del_without_soft_prompt"]


def test_soft_prompt_is_used_by_generation(trained_soft_prompt, tiny_lm: LanguageModel) -> None:
    # The stored prompt must be what PEFT prepended: feeding it to LanguageModel.continuation_nll
    # has to change the NLL of a continuation.
    _, result = trained_soft_prompt
    prompt = tiny_lm.embed(tiny_lm.tokenize("The name of the module"))
    continuation = tiny_lm.tokenize(" is set when it is imported")
    plain, _ = tiny_lm.continuation_nll(prompt, continuation)
    prefixed, _ = tiny_lm.continuation_nll(prompt, continuation, soft_prompt=result.soft_prompt)
    assert plain != pytest.approx(prefixed, rel=1e-3)


def test_soft_prompt_resume_matches_full_run(tmp_path: Path, tiny_model_dir: Path, split: CorpusSplit, trained_projection) -> None:
    projection_path = trained_projection[0].out
    paragraphs = (split.train, split.validation, split.heldout)
    fixed = {"mu": 5.0, "target_asr": None}

    full = train_soft_prompt(
        _soft_prompt_options(tmp_path / "full", tiny_model_dir, projection_path, steps=10, **fixed),
        lm=LanguageModel.load(tiny_model_dir),
        paragraphs=paragraphs,
    )
    checkpoint = str(tmp_path / "soft_prompt.checkpoint.pt")
    partial = _soft_prompt_options(tmp_path / "resumed", tiny_model_dir, projection_path, steps=6, checkpoint=checkpoint, checkpoint_every=3, **fixed)
    train_soft_prompt(partial, lm=LanguageModel.load(tiny_model_dir), paragraphs=paragraphs)
    resumed_options = _soft_prompt_options(
        tmp_path / "resumed", tiny_model_dir, projection_path, steps=10, checkpoint=checkpoint, resume=True, **fixed
    )
    resumed = train_soft_prompt(resumed_options, lm=LanguageModel.load(tiny_model_dir), paragraphs=paragraphs)

    assert len(resumed.losses) == 10
    assert resumed.losses == pytest.approx(full.losses, rel=1e-5)
    assert torch.allclose(resumed.soft_prompt, full.soft_prompt, atol=1e-6)


def test_soft_prompt_needs_one_of_mu_and_target() -> None:
    with pytest.raises(ValueError, match="exactly one of mu and target_asr"):
        SoftPromptTrainingOptions(mu=1.0, target_asr=0.1)
    with pytest.raises(ValueError, match="exactly one of mu and target_asr"):
        SoftPromptTrainingOptions()


def test_recipe_command_lines(tmp_path: Path, tiny_model_dir: Path) -> None:
    projection_parser = argparse.ArgumentParser()
    projection_recipe.configure_parser(projection_parser)
    out = tmp_path / "projection.safetensors"
    args = projection_parser.parse_args(
        ["--model", str(tiny_model_dir), "--corpus", "pydoc", "--out", str(out), "--dim", "4", "--steps", "2",
         "--batch-size", "4", "--prompt-tokens", "8", "--continuation-tokens", "8", "--validation-windows", "4"]
    )
    assert projection_recipe.main(args) == 0
    assert json.loads(out.with_suffix(".json").read_text())["dim"] == 4

    soft_prompt_parser = argparse.ArgumentParser()
    soft_prompt_recipe.configure_parser(soft_prompt_parser)
    args = soft_prompt_parser.parse_args(
        ["--model", str(tiny_model_dir), "--corpus", "pydoc", "--projection", str(out), "--library", str(tmp_path / "lib"),
         "--mu", "3", "--steps", "2", "--num-virtual-tokens", "2", "--batch-size", "4", "--prompt-tokens", "8",
         "--continuation-tokens", "8", "--validation-windows", "4"]
    )
    assert args.mu == 3.0
    assert args.target_asr is None
    assert soft_prompt_recipe.main(args) == 0
    assert len(SoftPromptLibrary(tmp_path / "lib").keys()) == 1
