"""Recipe `delsim train soft-prompt`: tune a soft prompt for one DEL privacy configuration.

The LM, encoder and decoder stay frozen. Each training prompt goes through the mechanism at the
configured (mu, bits), is decoded, and is fed as ``inputs_embeds`` after the virtual tokens of a
PEFT prompt-tuning model initialised from the embeddings of a short instruction text. The loss is
the language-modelling loss on the clean continuation. The learned (m, D) prompt is stored in a
:class:`~delsim.llm.soft_prompt.SoftPromptLibrary` under the privacy configuration's key.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from peft import PeftModel, PromptTuningConfig, PromptTuningInit, TaskType, get_peft_model
from tqdm import tqdm

from delsim.llm.defaults import DEFAULT_PROJECTION_PATH
from delsim.llm.model import LanguageModel
from delsim.llm.projection_info import read_projection_clip
from delsim.llm.soft_prompt import PrivacyConfig, SoftPromptLibrary, round_significant
from delsim.llm.training import (
    RecipeOptions,
    WindowSampler,
    add_dataclass_arguments,
    continuation_loss,
    dataclass_from_args,
    load_checkpoint,
    load_split_paragraphs,
    option,
    save_checkpoint,
    token_ids_for_calibration,
    token_stream,
    validation_perplexity,
)
from delsim.mechanism import Projection, StochasticQuantizer, calibrate_mu

logger = logging.getLogger(__name__)

ADAPTER = "default"
"""Name PEFT gives the single adapter of ``get_peft_model``."""

# Options whose change makes a checkpoint unusable for --resume.
_RESUME_KEYS = (
    "model", "projection", "bits", "mu", "target_asr", "sparsity", "num_virtual_tokens", "init_text", "batch_size",
    "prompt_tokens", "continuation_tokens", "lr", "seed", "corpus",
)


@dataclass
class SoftPromptTrainingOptions(RecipeOptions):
    """Options of the soft-prompt recipe; each becomes a command-line flag.

    Training uses the train split of ``corpus`` and calibration its held-out split.
    """

    library: str = option("runs/soft_prompts", "soft-prompt library folder to store the result in")
    projection: str = option(str(DEFAULT_PROJECTION_PATH), "trained projection (safetensors) with its .json clip value")
    bits: int = option(4, "quantizer bit width n")
    mu: float | None = option(None, "GDP parameter of one token; give this or --target-asr")
    target_asr: float | None = option(None, "calibrate mu to this attack success rate on held-out tokens; give this or --mu")
    mu_digits: int = option(3, "significant digits a calibrated mu is rounded to")
    clip: float | None = option(None, "clip value c (default: the value stored next to the projection)")
    sparsity: float = option(1.0, "quantizer sparsity p")
    calibration_tokens: int = option(4000, "held-out token occurrences attacked during calibration")
    num_virtual_tokens: int = option(20, "soft-prompt length m in virtual tokens")
    init_text: str = option("Continue the text:", "instruction text whose embeddings initialise the soft prompt")
    steps: int = option(500, "optimizer steps")

    def __post_init__(self) -> None:
        if (self.mu is None) == (self.target_asr is None):
            raise ValueError(f"give exactly one of mu and target_asr, got mu={self.mu} and target_asr={self.target_asr}")


@dataclass
class SoftPromptTrainingResult:
    """Outputs and measurements of a soft-prompt run."""

    key: str
    config: PrivacyConfig
    soft_prompt: torch.Tensor
    losses: list[float]
    validation_perplexity: dict[str, float]
    seconds: float
    metadata: dict[str, Any]


def private_prompt_transform(projection: Projection, quantizer: StochasticQuantizer, seed: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """Return a function that privatizes prompt embeddings with noise drawn from a fresh generator of ``seed``.

    Every call of the returned function restarts the generator, so two validation passes see the
    same mechanism noise and differ only in the soft prompt.
    """

    def transform(embeds: torch.Tensor) -> torch.Tensor:
        generator = torch.Generator().manual_seed(seed)
        return privatize_embeddings(embeds, projection, quantizer, generator)

    return transform


@torch.no_grad()
def privatize_embeddings(embeds: torch.Tensor, projection: Projection, quantizer: StochasticQuantizer, generator: torch.Generator) -> torch.Tensor:
    """Return ``W_dec privatize(clip(W_enc e))`` for embeddings of shape (..., D), on their device."""
    coordinates = projection.encode(embeds.float().cpu())
    released = quantizer.privatize(coordinates, generator=generator)
    return projection.decode(released).to(embeds.device)


def resolve_mu(
    options: SoftPromptTrainingOptions,
    lm: LanguageModel,
    projection: Projection,
    clip: float,
    heldout_stream: torch.Tensor,
) -> tuple[float, dict[str, Any]]:
    """Return the mu to train at and a record of how it was chosen (given, or calibrated and rounded)."""
    if options.mu is not None:
        return options.mu, {"source": "given"}

    token_ids = token_ids_for_calibration(heldout_stream, options.calibration_tokens, options.seed)
    result = calibrate_mu(
        options.target_asr,
        projection=projection,
        embedding_table=lm.embedding_table.float().cpu(),
        token_ids=token_ids,
        bits=options.bits,
        clip=clip,
        sparsity=options.sparsity,
        seed=options.seed,
    )
    mu = round_significant(result.mu, options.mu_digits)
    record = {
        "source": "calibrated",
        "target_asr": options.target_asr,
        "calibrated_mu": result.mu,
        "asr": result.asr,
        "asr_ci95": [result.ci_low, result.ci_high],
        "tokens": result.num_tokens,
        "converged": result.converged,
    }
    logger.info("calibrated mu %.6g (ASR %.4f) for target ASR %.3f; training at mu %s", result.mu, result.asr, options.target_asr, mu)
    return mu, record


def build_prompt_tuning_model(lm: LanguageModel, options: SoftPromptTrainingOptions) -> PeftModel:
    """Wrap the frozen LM in a PEFT prompt-tuning model initialised from ``options.init_text``."""
    peft_config = PromptTuningConfig(
        task_type=TaskType.CAUSAL_LM,
        prompt_tuning_init=PromptTuningInit.TEXT,
        prompt_tuning_init_text=options.init_text,
        num_virtual_tokens=options.num_virtual_tokens,
        tokenizer_name_or_path=str(lm.model.name_or_path),
    )
    return get_peft_model(lm.model, peft_config)


def train_soft_prompt(
    options: SoftPromptTrainingOptions,
    *,
    lm: LanguageModel | None = None,
    paragraphs: tuple[Sequence[str], Sequence[str], Sequence[str]] | None = None,
) -> SoftPromptTrainingResult:
    """Tune a soft prompt with the mechanism switched on and store it in the library.

    Parameters
    ----------
    options
        Recipe options.
    lm
        An already loaded LM; by default ``options.model`` is loaded. PEFT wraps its model, so
        pass a model that nothing else uses at the same time.
    paragraphs
        (train, validation, held-out) text; by default the splits of ``options.corpus``.

    Returns
    -------
    SoftPromptTrainingResult
        The key, the learned (m, D) prompt and the validation perplexities.
    """
    started = time.perf_counter()
    options.apply_threads()
    torch.manual_seed(options.seed)
    lm = lm or LanguageModel.load(options.model, device=options.device, dtype=options.dtype)
    if paragraphs is None:
        split = load_split_paragraphs(options.corpus)
        paragraphs = (split.train, split.validation, split.heldout)
    train_paragraphs, validation_paragraphs, heldout_paragraphs = paragraphs

    projection = Projection.load(options.projection).float()
    projection.requires_grad_(False)
    if projection.hidden_size != lm.hidden_size:
        raise ValueError(
            f"projection {options.projection} has hidden size {projection.hidden_size} but the model has {lm.hidden_size}; "
            "train a projection for this model first"
        )
    clip = options.clip if options.clip is not None else read_projection_clip(options.projection)

    windows = {"prompt_tokens": options.prompt_tokens, "continuation_tokens": options.continuation_tokens}
    sampler = WindowSampler(token_stream(lm, train_paragraphs), seed=options.seed, **windows)
    validation = WindowSampler(token_stream(lm, validation_paragraphs), seed=options.seed, **windows)
    validation_prompts, validation_continuations = validation.evenly_spaced(options.validation_windows)

    library = SoftPromptLibrary(options.library)
    checkpoint_path = Path(options.checkpoint) if options.checkpoint else Path(options.library) / "training.checkpoint.pt"
    expected = {key: getattr(options, key) for key in _RESUME_KEYS}
    state = None
    if options.resume:
        state = load_checkpoint(checkpoint_path, expected)
        mu, mu_record = state["mu"], state["mu_record"]
    else:
        mu, mu_record = resolve_mu(options, lm, projection, clip, token_stream(lm, heldout_paragraphs))

    config = PrivacyConfig(dim=projection.dim, bits=options.bits, mu=mu, clip=clip, sparsity=options.sparsity)
    quantizer = StochasticQuantizer(options.bits, mu, clip, projection.dim, options.sparsity)
    noise = torch.Generator().manual_seed(options.seed + 1)
    private = private_prompt_transform(projection, quantizer, options.seed + 2)

    def measure(model: Any, transform: Callable[[torch.Tensor], torch.Tensor]) -> float:
        return validation_perplexity(
            model, lm, validation_prompts, validation_continuations, transform, batch_size=options.batch_size
        )

    plain = measure(lm.model, lambda embeds: embeds)
    without_prompt = measure(lm.model, private)
    peft_model = build_prompt_tuning_model(lm, options)
    prompt_weight = peft_model.prompt_encoder[ADAPTER].embedding.weight
    optimizer = torch.optim.AdamW([prompt_weight], lr=options.lr, weight_decay=0.0)

    start_step, losses = 0, []
    if state is not None:
        with torch.no_grad():
            prompt_weight.copy_(state["soft_prompt"])
        optimizer.load_state_dict(state["optimizer"])
        sampler.generator.set_state(state["sampler"])
        noise.set_state(state["noise"])
        start_step, losses, initial = state["step"], state["losses"], state["initial"]
    else:
        initial = measure(peft_model, private)
    logger.info(
        "validation perplexity: no privacy %.3f, DEL without soft prompt %.3f, DEL with initial soft prompt %.3f",
        plain, without_prompt, initial,
    )

    progress = tqdm(range(start_step, options.steps), initial=start_step, total=options.steps, desc="soft prompt")
    for step in progress:
        prompt_ids, continuation_ids = sampler.sample(options.batch_size)
        embeds = lm.embed(prompt_ids.reshape(-1))
        decoded = privatize_embeddings(embeds, projection, quantizer, noise).reshape(*prompt_ids.shape, lm.hidden_size)

        loss = continuation_loss(peft_model, lm, decoded, continuation_ids)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        progress.set_postfix(loss=f"{losses[-1]:.3f}")

        done = step + 1
        if options.checkpoint_every and (done % options.checkpoint_every == 0 or done == options.steps):
            save_checkpoint(checkpoint_path, {
                "step": done,
                "options": expected,
                "mu": mu,
                "mu_record": mu_record,
                "soft_prompt": prompt_weight.detach().cpu().clone(),
                "optimizer": optimizer.state_dict(),
                "sampler": sampler.generator.get_state(),
                "noise": noise.get_state(),
                "losses": losses,
                "initial": initial,
            })

    trained = measure(peft_model, private)
    soft_prompt = peft_model.get_prompt_embedding_to_save(adapter_name=ADAPTER)
    perplexities = {"no_privacy": plain, "del_without_soft_prompt": without_prompt, "del_initial_soft_prompt": initial, "del_trained_soft_prompt": trained}
    seconds = time.perf_counter() - started
    metadata = {
        "model": options.model,
        "projection": options.projection,
        "mu": mu_record,
        "options": dataclasses.asdict(options),
        "validation_windows": options.validation_windows,
        "validation_perplexity": perplexities,
        "final_loss": sum(losses[-50:]) / max(1, len(losses[-50:])),
        "seconds": seconds,
    }
    key = library.save(config, soft_prompt, metadata)
    logger.info(
        "soft prompt %s (m=%d) saved to %s: validation perplexity DEL %.3f -> %.3f with soft prompt (%.0f s)",
        key, soft_prompt.shape[0], options.library, without_prompt, trained, seconds,
    )
    return SoftPromptTrainingResult(key, config, soft_prompt, losses, perplexities, seconds, metadata)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the recipe's options to ``parser``."""
    add_dataclass_arguments(parser, SoftPromptTrainingOptions)


def main(args: argparse.Namespace) -> int:
    """Run the recipe from parsed arguments; return the exit status."""
    result = train_soft_prompt(dataclass_from_args(SoftPromptTrainingOptions, args))
    perplexities = result.validation_perplexity
    print(
        f"soft prompt {result.key} (m={result.soft_prompt.shape[0]}): validation perplexity "
        f"no privacy {perplexities['no_privacy']:.3f}, DEL {perplexities['del_without_soft_prompt']:.3f}, "
        f"DEL + soft prompt {perplexities['del_trained_soft_prompt']:.3f}"
    )
    return 0
