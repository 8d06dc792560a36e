"""Recipe `delsim evaluate utility`: perplexity and COH with and without DEL privacy.

Conditions, each on the same prompts:

- ``no_privacy``: the LM reads the clean prompt embeddings.
- ``projection``: the prompt embeddings pass through ``W_dec W_enc`` only (no clipping, no noise).
- ``del``: DEL at each privacy level, through the real payload (encode, pack, unpack, decode),
  without and, where the library has one, with the soft prompt of that configuration.

A privacy level is a target attack success rate. Its mu is taken from the soft-prompt library
when an entry was trained for that target with the same dim, bits, clip and sparsity, and is
calibrated on held-out tokens otherwise. Perplexity is token-weighted over the reference
continuations. COH compares each generated continuation with its reference.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from tqdm import tqdm

from delsim.llm.corpus import PromptExample
from delsim.llm.datasets import load_paragraphs, load_prompt_dataset
from delsim.llm.defaults import DEFAULT_PROJECTION_PATH, DEFAULT_SOFT_PROMPT_DIR
from delsim.llm.metrics import CoherenceScorer, corpus_perplexity
from delsim.llm.model import LanguageModel
from delsim.llm.projection_info import read_projection_clip
from delsim.llm.soft_prompt import PrivacyConfig, SoftPromptLibrary, round_significant
from delsim.llm.training import add_dataclass_arguments, dataclass_from_args, option, token_ids_for_calibration, token_stream
from delsim.mechanism import (
    Projection,
    StochasticQuantizer,
    attack_success_rate,
    calibrate_mu,
    decode_from_payload,
    encode_to_payload,
    inversion_attack,
    wilson_interval,
)

logger = logging.getLogger(__name__)


@dataclass
class UtilityOptions:
    """Options of the utility evaluation; each becomes a command-line flag."""

    out: str = option("runs/utility", "output folder for utility_rows.csv and utility_summary.json")
    model: str = option("delsim-default", "causal LM: 'delsim-default', a hub name or a local folder")
    projection: str = option(str(DEFAULT_PROJECTION_PATH), "trained projection (safetensors) with its .json clip value")
    soft_prompts: str = option(str(DEFAULT_SOFT_PROMPT_DIR), "soft-prompt library folder; an empty string disables soft prompts")
    dataset: str = option("default", "prompt dataset of delsim.llm.datasets (default, wikitext2, ptb, cnn_dailymail, file:PATH)")
    split: str = option("test", "dataset split")
    prompt_words: int = option(50, "words per prompt")
    min_words: int = option(100, "minimum words of a paragraph that gives a prompt")
    limit: int = option(100, "number of prompts")
    reference_tokens: int = option(128, "reference continuation tokens scored for perplexity and compared for COH")
    max_new_tokens: int = option(128, "maximum generated tokens")
    top_p: float = option(0.9, "nucleus sampling mass")
    temperature: float = option(0.7, "sampling temperature")
    bits: int = option(4, "quantizer bit width n")
    sparsity: float = option(1.0, "quantizer sparsity p")
    clip: float | None = option(None, "clip value c (default: the value stored next to the projection)")
    target_asrs: str = option("0.02,0.10,0.15", "comma-separated target attack success rates, one privacy level each")
    mu_digits: int = option(3, "significant digits a calibrated mu is rounded to")
    calibration_tokens: int = option(4000, "held-out token occurrences attacked for calibration and ASR")
    calibration_dataset: str = option("default", "text whose tokens are attacked for calibration and ASR (a dataset name of delsim.llm.datasets; 'default' is the shipped held-out corpus)")
    coherence_model: str | None = option(None, "sentence-transformers model for COH (default: the shipped all-MiniLM-L6-v2)")
    seed: int = option(0, "seed of generation, mechanism noise and calibration")
    device: str = option("cpu", "device of the LM")
    dtype: str = option("auto", "LM weight dtype: auto (float32 on CPU, bfloat16 on a GPU that supports it), float32, bfloat16, float16")
    threads: int | None = option(None, "torch intra-op threads (default: torch's own choice)")


@dataclass(frozen=True)
class Condition:
    """One way of feeding prompts to the LM."""

    name: str
    target_asr: float | None = None
    mu: float | None = None
    soft_prompt: bool = False


def parse_targets(text: str) -> list[float]:
    """Parse ``"0.02,0.10"`` into target attack success rates in (0, 1)."""
    try:
        targets = [float(part) for part in text.split(",") if part.strip()]
    except ValueError as error:
        raise ValueError(f"target_asrs={text!r} must be comma-separated numbers such as '0.02,0.10,0.15'") from error
    for target in targets:
        if not 0.0 < target < 1.0:
            raise ValueError(f"target_asrs: {target} is outside (0, 1)")
    return targets


def library_mu(library: SoftPromptLibrary | None, target: float, config: dict[str, Any]) -> float | None:
    """Return the mu of a library soft prompt trained for ``target`` with the same dim, bits, clip and sparsity."""
    if library is None:
        return None
    for key in library.keys():
        entry = library.entry(key) or {}
        stored = entry.get("config", {})
        trained_for = entry.get("metadata", {}).get("mu", {}).get("target_asr")
        same_mechanism = all(
            name in stored and math.isclose(stored[name], value, rel_tol=1e-3) for name, value in config.items()
        )
        if same_mechanism and trained_for is not None and math.isclose(trained_for, target, rel_tol=1e-6):
            return float(stored["mu"])
    return None


def measure_asr(projection: Projection, lm: LanguageModel, token_ids: torch.Tensor, quantizer: StochasticQuantizer, seed: int) -> tuple[float, float, float]:
    """Return the inversion attack's success rate on ``token_ids`` and its 95% Wilson interval."""
    generator = torch.Generator().manual_seed(seed)
    table = lm.embedding_table.float().cpu()
    with torch.no_grad():
        decoded = projection.decode(quantizer.privatize(projection.encode(table[token_ids]), generator=generator))
    asr = attack_success_rate(inversion_attack(decoded, table), token_ids)
    low, high = wilson_interval(round(asr * token_ids.numel()), token_ids.numel())
    return asr, low, high


def prompt_transform(condition: Condition, projection: Projection, quantizer: StochasticQuantizer | None) -> Callable[[torch.Tensor, int], torch.Tensor]:
    """Return the function that turns clean prompt embeddings into what the server receives under ``condition``."""
    if condition.name == "no_privacy":
        return lambda embeds, seed: embeds
    if condition.name == "projection":
        return lambda embeds, seed: projection(embeds.float())

    def through_payload(embeds: torch.Tensor, seed: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(seed)
        data = encode_to_payload(embeds.float().cpu(), projection, quantizer, generator)
        return decode_from_payload(data, projection)

    return through_payload


def evaluate_condition(
    lm: LanguageModel,
    examples: Sequence[PromptExample],
    transform: Callable[[torch.Tensor, int], torch.Tensor],
    soft_prompt: torch.Tensor | None,
    options: UtilityOptions,
) -> list[dict[str, Any]]:
    """Score and generate every example under one condition; return one row per example.

    Mechanism noise and sampling are seeded per example, so conditions that differ only in the
    soft prompt see the same privatized prompts and the same sampler streams.
    """
    rows = []
    for index, example in enumerate(tqdm(examples, desc="prompts", leave=False)):
        prompt_ids = lm.tokenize(example.prompt)
        reference_ids = lm.tokenize(" " + example.reference)[: options.reference_tokens]
        embeds = transform(lm.embed(prompt_ids), options.seed + index).to(lm.device, lm.dtype)

        nll_sum, n_tokens = lm.continuation_nll(embeds, reference_ids, soft_prompt=soft_prompt)
        generated = lm.generate(
            embeds,
            soft_prompt=soft_prompt,
            max_new_tokens=options.max_new_tokens,
            top_p=options.top_p,
            temperature=options.temperature,
            seed=options.seed + index,
        )
        rows.append({
            "example": index,
            "paragraph_id": example.paragraph_id,
            "prompt_tokens": len(prompt_ids),
            "nll_sum": nll_sum,
            "nll_tokens": n_tokens,
            "generated_tokens": len(generated),
            "generated": lm.detokenize(generated),
            "reference": lm.detokenize(reference_ids),
        })
    return rows


def summarize(rows: pd.DataFrame) -> pd.DataFrame:
    """Aggregate per condition: perplexity, mean COH with its standard error, mean generated length."""
    summaries = []
    for (condition, target, mu, soft), group in rows.groupby(["condition", "target_asr", "mu", "soft_prompt"], dropna=False, sort=False):
        coherence = group["coh"]
        summaries.append({
            "condition": condition,
            "target_asr": target,
            "mu": mu,
            "soft_prompt": soft,
            "prompts": len(group),
            "perplexity": corpus_perplexity(zip(group["nll_sum"], group["nll_tokens"])),
            "coh": coherence.mean(),
            "coh_se": coherence.std(ddof=1) / math.sqrt(len(group)) if len(group) > 1 else float("nan"),
            "generated_tokens": group["generated_tokens"].mean(),
        })
    return pd.DataFrame(summaries)


def paired_soft_prompt_effect(rows: pd.DataFrame) -> list[dict[str, Any]]:
    """Compare each DEL level with and without its soft prompt on the same prompts.

    Returns per level the mean per-token NLL change and the mean COH change, each with the
    standard error of the paired differences. A negative NLL change and a positive COH change
    mean the soft prompt recovers utility.
    """
    effects = []
    private = rows[rows["condition"] == "del"]
    for target, group in private.groupby("target_asr"):
        with_prompt = group[group["soft_prompt"]].set_index("example")
        without = group[~group["soft_prompt"]].set_index("example")
        if with_prompt.empty:
            continue
        nll = with_prompt["nll_sum"] / with_prompt["nll_tokens"] - without["nll_sum"] / without["nll_tokens"]
        coh = with_prompt["coh"] - without["coh"]
        count = len(nll)
        effects.append({
            "target_asr": target,
            "prompts": count,
            "nll_per_token_change": nll.mean(),
            "nll_per_token_change_se": nll.std(ddof=1) / math.sqrt(count),
            "coh_change": coh.mean(),
            "coh_change_se": coh.std(ddof=1) / math.sqrt(count),
        })
    return effects


def privacy_levels(
    options: UtilityOptions,
    lm: LanguageModel,
    projection: Projection,
    library: SoftPromptLibrary | None,
    mechanism: dict[str, Any],
    calibration_ids: torch.Tensor,
) -> tuple[list[Condition], list[dict[str, Any]]]:
    """Choose mu for each target ASR (library entry first, calibration otherwise) and list the conditions."""
    conditions = [Condition("no_privacy"), Condition("projection")]
    levels = []
    for target in parse_targets(options.target_asrs):
        mu = library_mu(library, target, mechanism)
        source = "library"
        if mu is None:
            result = calibrate_mu(
                target,
                projection=projection,
                embedding_table=lm.embedding_table.float().cpu(),
                token_ids=calibration_ids,
                bits=options.bits,
                clip=mechanism["clip"],
                sparsity=options.sparsity,
                seed=options.seed,
            )
            mu, source = round_significant(result.mu, options.mu_digits), "calibrated"

        quantizer = StochasticQuantizer(options.bits, mu, mechanism["clip"], projection.dim, options.sparsity)
        asr, low, high = measure_asr(projection, lm, calibration_ids, quantizer, options.seed)
        has_prompt = library is not None and library.get(PrivacyConfig(mu=mu, **mechanism)) is not None
        levels.append({"target_asr": target, "mu": mu, "mu_source": source, "asr": asr, "asr_ci95": [low, high], "soft_prompt": has_prompt})
        logger.info("privacy level ASR %.3f: mu %s (%s), measured ASR %.4f [%.4f, %.4f]", target, mu, source, asr, low, high)

        conditions.append(Condition("del", target, mu, False))
        if has_prompt:
            conditions.append(Condition("del", target, mu, True))
    return conditions, levels


def evaluate_utility(options: UtilityOptions, *, lm: LanguageModel | None = None, scorer: CoherenceScorer | None = None) -> dict[str, Any]:
    """Run the utility evaluation and write ``utility_rows.csv`` and ``utility_summary.json``.

    Parameters
    ----------
    options
        Evaluation options.
    lm, scorer
        Already loaded LM and COH scorer; loaded from ``options`` when omitted.

    Returns
    -------
    dict
        The summary table, the soft-prompt effects, the privacy levels with their measured ASR,
        and the options.
    """
    started = time.perf_counter()
    if options.threads is not None:
        torch.set_num_threads(options.threads)
    lm = lm or LanguageModel.load(options.model, device=options.device, dtype=options.dtype)
    scorer = scorer or CoherenceScorer(options.coherence_model)
    projection = Projection.load(options.projection).float().eval()
    projection.requires_grad_(False)
    clip = options.clip if options.clip is not None else read_projection_clip(options.projection)
    library = SoftPromptLibrary(options.soft_prompts) if options.soft_prompts else None
    examples = load_prompt_dataset(options.dataset, split=options.split, prompt_words=options.prompt_words, min_words=options.min_words, limit=options.limit)
    if not examples:
        raise ValueError(f"dataset {options.dataset!r} gave no prompts of at least {options.min_words} words; lower --min-words")

    calibration_text = load_paragraphs(options.calibration_dataset, split="test")
    calibration_ids = token_ids_for_calibration(token_stream(lm, calibration_text), options.calibration_tokens, options.seed)
    mechanism = {"dim": projection.dim, "bits": options.bits, "clip": clip, "sparsity": options.sparsity}
    conditions, levels = privacy_levels(options, lm, projection, library, mechanism, calibration_ids)

    frames = []
    for condition in conditions:
        quantizer = None if condition.mu is None else StochasticQuantizer(options.bits, condition.mu, clip, projection.dim, options.sparsity)
        soft_prompt = None
        if condition.soft_prompt:
            soft_prompt = library.get(PrivacyConfig(mu=condition.mu, **mechanism)).to(lm.device, lm.dtype)
        logger.info("evaluating %s", condition)
        rows = evaluate_condition(lm, examples, prompt_transform(condition, projection, quantizer), soft_prompt, options)
        frame = pd.DataFrame(rows).assign(**asdict(condition))
        frame = frame.rename(columns={"name": "condition"})
        frame["coh"] = scorer.score(list(frame["generated"]), list(frame["reference"]))
        frames.append(frame)

    table = pd.concat(frames, ignore_index=True)
    summary = summarize(table)
    effects = paired_soft_prompt_effect(table)
    out = Path(options.out)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "utility_rows.csv", index=False)
    report = {
        "summary": summary.to_dict(orient="records"),
        "soft_prompt_effect": effects,
        "levels": levels,
        "model": lm.describe(),
        "options": asdict(options),
        "seconds": time.perf_counter() - started,
    }
    (out / "utility_summary.json").write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
    logger.info("wrote utility results for %d prompts and %d conditions to %s", len(examples), len(conditions), out)
    return report


def format_summary(report: dict[str, Any]) -> str:
    """Render the summary as a Markdown table."""
    lines = ["| condition | target ASR | mu | soft prompt | perplexity | COH (± s.e.) | generated tokens |", "|---|---|---|---|---|---|---|"]
    for row in report["summary"]:
        target = "-" if pd.isna(row["target_asr"]) else f"{row['target_asr']:.2f}"
        mu = "-" if pd.isna(row["mu"]) else f"{row['mu']:g}"
        lines.append(
            f"| {row['condition']} | {target} | {mu} | {'yes' if row['soft_prompt'] else 'no'} | {row['perplexity']:.2f} | "
            f"{row['coh']:.3f} ± {row['coh_se']:.3f} | {row['generated_tokens']:.1f} |"
        )
    return "\n".join(lines)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the evaluation's options to ``parser``."""
    add_dataclass_arguments(parser, UtilityOptions)


def main(args: argparse.Namespace) -> int:
    """Run the evaluation from parsed arguments, print the summary table and return the exit status."""
    report = evaluate_utility(dataclass_from_args(UtilityOptions, args))
    print(format_summary(report))
    for effect in report["soft_prompt_effect"]:
        print(
            f"soft prompt at target ASR {effect['target_asr']:.2f}: NLL/token change {effect['nll_per_token_change']:+.4f} "
            f"± {effect['nll_per_token_change_se']:.4f}, COH change {effect['coh_change']:+.4f} ± {effect['coh_change_se']:.4f}"
        )
    return 0
