"""Tests of the utility evaluation on the tiny GPT-2 with a PCA projection and a stored soft prompt."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
import torch

from delsim.llm.evaluate import UtilityOptions, evaluate_utility, format_summary, parse_targets
from delsim.llm.metrics import CoherenceScorer
from delsim.llm.model import LanguageModel
from delsim.llm.projection_info import write_projection_info
from delsim.llm.soft_prompt import PrivacyConfig, SoftPromptLibrary
from delsim.llm.training import load_split_paragraphs
from delsim.mechanism import Projection

LIBRARY_MU = 4.0


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, tiny_lm: LanguageModel) -> tuple[UtilityOptions, dict]:
    folder = tmp_path_factory.mktemp("utility")
    text = folder / "prompts.txt"
    text.write_text("\n".join(load_split_paragraphs("pydoc").validation), encoding="utf-8")

    projection_path = folder / "projection.safetensors"
    projection = Projection.from_pca(tiny_lm.embedding_table, 8)
    projection.save(projection_path)
    write_projection_info(projection_path, {"clip": 0.5, "dim": 8})

    # A soft prompt stored as if trained for target ASR 0.10 at mu 4: the evaluation must reuse that mu.
    library = SoftPromptLibrary(folder / "library")
    config = PrivacyConfig(dim=8, bits=4, mu=LIBRARY_MU, clip=0.5)
    soft_prompt = torch.randn(3, 32, generator=torch.Generator().manual_seed(0)) * 0.1
    library.save(config, soft_prompt, {"mu": {"source": "calibrated", "target_asr": 0.1}})

    options = UtilityOptions(
        out=str(folder / "out"),
        model=str(tiny_model_dir),
        projection=str(projection_path),
        soft_prompts=str(folder / "library"),
        dataset=f"file:{text}",
        prompt_words=10,
        min_words=30,
        limit=4,
        reference_tokens=16,
        max_new_tokens=8,
        target_asrs="0.02,0.1",
        calibration_tokens=500,
        calibration_dataset=f"file:{text}",
    )
    return options, evaluate_utility(options, lm=tiny_lm, scorer=CoherenceScorer())


def test_conditions_and_levels(report) -> None:
    _, result = report
    conditions = [(row["condition"], row["soft_prompt"]) for row in result["summary"]]
    assert conditions == [("no_privacy", False), ("projection", False), ("del", False), ("del", False), ("del", True)]
    low, high = result["levels"]
    assert low["mu_source"] == "calibrated"
    assert high == {**high, "mu": LIBRARY_MU, "mu_source": "library", "soft_prompt": True}


def test_calibrated_level_hits_target(report) -> None:
    low = report[1]["levels"][0]
    # Calibration and the ASR measurement attack the same 500 tokens with the same seed, so the
    # measured rate is within calibrate_mu's tolerance (0.005) plus the effect of rounding mu.
    assert low["asr"] == pytest.approx(0.02, abs=0.01)


def test_no_privacy_perplexity_matches_rows(report, tiny_lm: LanguageModel) -> None:
    options, result = report
    rows = pd.read_csv(Path(options.out) / "utility_rows.csv")
    clean = rows[rows["condition"] == "no_privacy"]
    expected = math.exp(clean["nll_sum"].sum() / clean["nll_tokens"].sum())
    assert result["summary"][0]["perplexity"] == pytest.approx(expected)
    assert (clean["nll_tokens"] == 16).all()
    assert (rows["generated_tokens"] <= 8).all()
    assert rows["coh"].between(-1.0, 1.0).all()


def test_soft_prompt_effect_is_paired(report) -> None:
    options, result = report
    rows = pd.read_csv(Path(options.out) / "utility_rows.csv")
    level = rows[(rows["condition"] == "del") & (rows["target_asr"] == 0.1)]
    with_prompt = level[level["soft_prompt"]].set_index("example")
    without = level[~level["soft_prompt"]].set_index("example")
    change = (with_prompt["nll_sum"] / with_prompt["nll_tokens"] - without["nll_sum"] / without["nll_tokens"]).mean()

    (effect,) = result["soft_prompt_effect"]
    assert effect["target_asr"] == 0.1
    assert effect["nll_per_token_change"] == pytest.approx(change)


def test_summary_files(report) -> None:
    options, result = report
    stored = json.loads((Path(options.out) / "utility_summary.json").read_text())
    assert len(stored["summary"]) == 5
    table = format_summary(result)
    assert table.count("\n") == 6
    assert "| del | 0.10 | 4 | yes |" in table


def test_parse_targets_rejects_bad_values() -> None:
    assert parse_targets("0.02, 0.1") == [0.02, 0.1]
    with pytest.raises(ValueError, match="outside"):
        parse_targets("0.5,1.5")
    with pytest.raises(ValueError, match="comma-separated"):
        parse_targets("low")
