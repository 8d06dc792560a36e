"""Recipe `delsim train projection`: learn the DEL encoder and decoder with the LM frozen.

The prompt embeddings e of each training window are replaced by ``W_dec W_enc e`` and the loss is
the language-modelling loss on the continuation, optionally plus a reconstruction term. Training
runs without the mechanism. Afterwards the recipe measures the clip value c as a percentile of
the absolute projected coordinates of training tokens and stores it in a JSON next to the
projection.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from delsim.llm.model import LanguageModel
from delsim.llm.projection_info import write_projection_info
from delsim.llm.training import (
    RecipeOptions,
    WindowSampler,
    add_dataclass_arguments,
    continuation_loss,
    dataclass_from_args,
    load_checkpoint,
    load_split_paragraphs,
    option,
    relative_reconstruction_error,
    save_checkpoint,
    token_ids_for_calibration,
    token_stream,
    validation_perplexity,
)
from delsim.mechanism import Projection

logger = logging.getLogger(__name__)

# Options whose change makes a checkpoint unusable for --resume.
_RESUME_KEYS = ("model", "dim", "init", "batch_size", "prompt_tokens", "continuation_tokens", "lr", "weight_decay", "recon_weight", "seed", "corpus")


@dataclass
class ProjectionTrainingOptions(RecipeOptions):
    """Options of the projection recipe; each becomes a command-line flag."""

    out: str = option("runs/projection/projection.safetensors", "output safetensors file of the projection; its clip value goes to the same path with .json")
    dim: int = option(32, "projected size d")
    init: str = option("pca", "initial encoder/decoder: PCA of the embedding table, or nn.Linear's random init", choices=("pca", "random"))
    steps: int = option(2000, "optimizer steps")
    weight_decay: float = option(0.0, "AdamW weight decay")
    recon_weight: float = option(0.0, "weight of the relative reconstruction error ||W_dec W_enc e - e||^2 / ||e||^2")
    clip_percentile: float = option(95.0, "percentile of |W_enc e| over training tokens that sets the clip value c")
    clip_tokens: int = option(50000, "training token occurrences used to measure the clip value")
    checkpoint_every: int = option(200, "steps between checkpoints; 0 writes none")

    def checkpoint_path(self) -> Path:
        """Return where checkpoints go."""
        return Path(self.checkpoint) if self.checkpoint else Path(self.out).with_suffix(".checkpoint.pt")


@dataclass
class ProjectionTrainingResult:
    """Outputs and measurements of a projection run."""

    projection: Projection
    clip: float
    steps: int
    losses: list[float]
    validation_perplexity_plain: float
    validation_perplexity_initial: float
    validation_perplexity_trained: float
    seconds: float
    info: dict[str, Any]


def measure_clip(projection: Projection, lm: LanguageModel, token_ids: torch.Tensor, percentile: float) -> float:
    """Return the ``percentile`` of the absolute projected coordinates of ``token_ids``."""
    if not 0.0 < percentile <= 100.0:
        raise ValueError(f"clip_percentile must lie in (0, 100], got {percentile}")
    with torch.no_grad():
        coordinates = projection.encode(lm.embed(token_ids).float())
    return float(torch.quantile(coordinates.abs().flatten(), percentile / 100.0))


def train_projection(
    options: ProjectionTrainingOptions,
    *,
    lm: LanguageModel | None = None,
    train_paragraphs: Sequence[str] | None = None,
    validation_paragraphs: Sequence[str] | None = None,
) -> ProjectionTrainingResult:
    """Train a DEL projection, measure its clip value and save both.

    Parameters
    ----------
    options
        Recipe options.
    lm
        An already loaded LM; by default ``options.model`` is loaded.
    train_paragraphs, validation_paragraphs
        Text to train and validate on; by default the train and validation splits of
        ``options.corpus``.

    Returns
    -------
    ProjectionTrainingResult
        The trained projection, its clip value and the measured perplexities.
    """
    started = time.perf_counter()
    options.apply_threads()
    torch.manual_seed(options.seed)
    lm = lm or LanguageModel.load(options.model, device=options.device, dtype=options.dtype)
    if train_paragraphs is None or validation_paragraphs is None:
        split = load_split_paragraphs(options.corpus)
        train_paragraphs, validation_paragraphs = split.train, split.validation

    windows = {"prompt_tokens": options.prompt_tokens, "continuation_tokens": options.continuation_tokens}
    train_stream = token_stream(lm, train_paragraphs)
    sampler = WindowSampler(train_stream, seed=options.seed, **windows)
    validation = WindowSampler(token_stream(lm, validation_paragraphs), seed=options.seed, **windows)
    validation_prompts, validation_continuations = validation.evenly_spaced(options.validation_windows)

    if options.init == "pca":
        projection = Projection.from_pca(lm.embedding_table.float(), options.dim)
    else:
        projection = Projection(lm.hidden_size, options.dim)
    projection.to(lm.device)
    optimizer = torch.optim.AdamW(projection.parameters(), lr=options.lr, weight_decay=options.weight_decay)

    def measure(transform: Any) -> float:
        return validation_perplexity(
            lm.model, lm, validation_prompts, validation_continuations, transform, batch_size=options.batch_size
        )

    checkpoint_path = options.checkpoint_path()
    expected = {key: getattr(options, key) for key in _RESUME_KEYS}
    start_step, losses = 0, []
    if options.resume:
        state = load_checkpoint(checkpoint_path, expected)
        projection.load_state_dict(state["projection"])
        optimizer.load_state_dict(state["optimizer"])
        sampler.generator.set_state(state["sampler"])
        start_step, losses = state["step"], state["losses"]
        plain, initial = state["validation_perplexity_plain"], state["validation_perplexity_initial"]
    else:
        plain = measure(lambda embeds: embeds)
        initial = measure(projection)
        logger.info("validation perplexity: plain LM %.3f, initial projection %.3f", plain, initial)

    progress = tqdm(range(start_step, options.steps), initial=start_step, total=options.steps, desc="projection")
    for step in progress:
        prompt_ids, continuation_ids = sampler.sample(options.batch_size)
        embeds = lm.embed(prompt_ids.reshape(-1)).float().reshape(*prompt_ids.shape, lm.hidden_size)
        reconstructed = projection(embeds)

        loss = continuation_loss(lm.model, lm, reconstructed, continuation_ids)
        if options.recon_weight:
            loss = loss + options.recon_weight * relative_reconstruction_error(reconstructed, embeds)

        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        progress.set_postfix(loss=f"{losses[-1]:.3f}")

        done = step + 1
        if options.checkpoint_every and (done % options.checkpoint_every == 0 or done == options.steps):
            state = {
                "step": done,
                "options": expected,
                "projection": projection.state_dict(),
                "optimizer": optimizer.state_dict(),
                "sampler": sampler.generator.get_state(),
                "losses": losses,
                "validation_perplexity_plain": plain,
                "validation_perplexity_initial": initial,
            }
            save_checkpoint(checkpoint_path, state)

    trained = measure(projection)
    projection.requires_grad_(False)
    calibration_ids = token_ids_for_calibration(train_stream, options.clip_tokens, options.seed)
    clip = measure_clip(projection, lm, calibration_ids, options.clip_percentile)
    seconds = time.perf_counter() - started

    out = Path(options.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    projection.cpu().save(out)
    info = {
        "clip": clip,
        "clip_percentile": options.clip_percentile,
        "clip_tokens": int(calibration_ids.numel()),
        "dim": options.dim,
        "hidden_size": lm.hidden_size,
        "model": options.model,
        "steps": options.steps,
        "options": dataclasses.asdict(options),
        "validation_windows": options.validation_windows,
        "validation_perplexity": {"plain": plain, "initial": initial, "trained": trained},
        "final_loss": sum(losses[-50:]) / max(1, len(losses[-50:])),
        "seconds": seconds,
    }
    write_projection_info(out, info)
    logger.info(
        "projection d=%d saved to %s: clip %.4g, validation perplexity plain %.3f, initial %.3f, trained %.3f (%.0f s)",
        options.dim, out, clip, plain, initial, trained, seconds,
    )
    return ProjectionTrainingResult(projection, clip, options.steps, losses, plain, initial, trained, seconds, info)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the recipe's options to ``parser``."""
    add_dataclass_arguments(parser, ProjectionTrainingOptions)


def main(args: argparse.Namespace) -> int:
    """Run the recipe from parsed arguments; return the exit status."""
    result = train_projection(dataclass_from_args(ProjectionTrainingOptions, args))
    perplexities = result.info["validation_perplexity"]
    print(
        f"projection d={result.projection.dim}: clip {result.clip:.4g}; validation perplexity "
        f"plain {perplexities['plain']:.3f}, initial {perplexities['initial']:.3f}, trained {perplexities['trained']:.3f}"
    )
    return 0
