"""Pieces shared by the projection and soft-prompt recipes: options, token windows, loss, checkpoints.

Both recipes train on windows of the corpus token stream. The first ``prompt_tokens`` tokens of a
window play the prompt (the part that goes through DEL), the rest is the continuation on which
the language-modelling loss is taken.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import os
import types
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from delsim.llm.corpus import CorpusSplit, load_corpus_paragraphs, split_paragraphs
from delsim.llm.model import LanguageModel

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100
"""Label value that Hugging Face causal LMs leave out of the loss."""


def option(default: Any, help: str, **kwargs: Any) -> Any:  # noqa: A002 (argparse's own keyword)
    """Declare a recipe option: a dataclass field with its command-line help text."""
    return dataclasses.field(default=default, metadata={"help": help, **kwargs})


def _scalar_type(config_class: type, name: str) -> type:
    """Return the type of an option, with ``X | None`` reduced to ``X``."""
    annotation = typing.get_type_hints(config_class)[name]
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and type(None) in args:
        return next(arg for arg in args if arg is not type(None))
    return annotation


@dataclasses.dataclass
class RecipeOptions:
    """Options shared by the training recipes; a recipe subclass adds its own and may change defaults."""

    model: str = option("delsim-default", "causal LM: 'delsim-default', a hub name or a local folder")
    corpus: str = option("python-docs", "corpus source of delsim.llm.corpus", choices=("python-docs", "pydoc"))
    steps: int = option(1000, "optimizer steps")
    batch_size: int = option(16, "windows per step")
    prompt_tokens: int = option(64, "tokens per window that pass through DEL")
    continuation_tokens: int = option(64, "tokens per window that carry the language-modelling loss")
    lr: float = option(1e-3, "AdamW learning rate")
    validation_windows: int = option(64, "fixed validation windows for the reported perplexities")
    checkpoint: str | None = option(None, "checkpoint file (default: next to the output)")
    checkpoint_every: int = option(100, "steps between checkpoints; 0 writes none")
    resume: bool = option(False, "continue from the checkpoint")
    seed: int = option(0, "seed of the window sampler and of torch")
    device: str = option("cpu", "device of the LM")
    dtype: str = option("auto", "LM weight dtype: auto (float32 on CPU, bfloat16 on a GPU that supports it), float32, bfloat16, float16")
    threads: int | None = option(None, "torch intra-op threads (default: torch's own choice)")

    def apply_threads(self) -> None:
        """Set torch's intra-op thread count if ``threads`` is given."""
        if self.threads is not None:
            if self.threads < 1:
                raise ValueError(f"threads must be >= 1, got {self.threads}")
            torch.set_num_threads(self.threads)


def add_dataclass_arguments(parser: argparse.ArgumentParser, config_class: type) -> None:
    """Add one ``--flag`` per field of an option dataclass (underscores become dashes)."""
    for field in dataclasses.fields(config_class):
        flag = "--" + field.name.replace("_", "-")
        scalar = _scalar_type(config_class, field.name)
        help_text = field.metadata.get("help", "")
        if scalar is bool:
            parser.add_argument(flag, dest=field.name, action=argparse.BooleanOptionalAction, default=field.default, help=help_text)
            continue
        if "(default:" not in help_text:
            help_text = f"{help_text} (default: {field.default})"
        parser.add_argument(
            flag, dest=field.name, type=scalar, default=field.default, choices=field.metadata.get("choices"), help=help_text
        )


def dataclass_from_args(config_class: type, args: argparse.Namespace) -> Any:
    """Build an option dataclass from parsed arguments."""
    names = {field.name for field in dataclasses.fields(config_class)}
    return config_class(**{name: getattr(args, name) for name in names if hasattr(args, name)})


def load_split_paragraphs(source: str) -> CorpusSplit:
    """Return the train, validation and held-out paragraphs of a corpus source ("python-docs" or "pydoc")."""
    return split_paragraphs(load_corpus_paragraphs(source))


def token_stream(lm: LanguageModel, paragraphs: Sequence[str]) -> torch.Tensor:
    """Tokenize paragraphs into one LongTensor, each paragraph followed by the eos token."""
    eos = [] if lm.tokenizer.eos_token_id is None else [lm.tokenizer.eos_token_id]
    encoded = lm.tokenizer(list(paragraphs), add_special_tokens=False, verbose=False)["input_ids"]
    ids = [token for paragraph in encoded for token in (*paragraph, *eos)]
    return torch.tensor(ids, dtype=torch.long)


class WindowSampler:
    """Random windows of ``prompt_tokens + continuation_tokens`` ids from a token stream.

    Parameters
    ----------
    stream
        Token ids of shape (N,).
    prompt_tokens, continuation_tokens
        Split of each window into prompt and continuation.
    seed
        Seed of the sampler's own generator; its state is saved in checkpoints.
    """

    def __init__(self, stream: torch.Tensor, *, prompt_tokens: int, continuation_tokens: int, seed: int) -> None:
        if prompt_tokens < 1 or continuation_tokens < 1:
            raise ValueError(
                f"prompt_tokens and continuation_tokens must be >= 1, got {prompt_tokens} and {continuation_tokens}"
            )
        self.window = prompt_tokens + continuation_tokens
        if stream.numel() <= self.window:
            raise ValueError(
                f"token stream of {stream.numel()} tokens is too short for windows of {self.window} tokens; "
                "use a larger corpus or shorter prompt_tokens/continuation_tokens"
            )
        self.stream = stream
        self.prompt_tokens = prompt_tokens
        self.generator = torch.Generator().manual_seed(seed)

    def sample(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (prompt ids (B, P), continuation ids (B, C)) of ``batch_size`` random windows."""
        starts = torch.randint(0, self.stream.numel() - self.window, (batch_size,), generator=self.generator)
        return self._cut(starts)

    def evenly_spaced(self, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``count`` windows at evenly spaced offsets, a fixed validation set."""
        last = self.stream.numel() - self.window
        starts = torch.linspace(0, last, steps=count).long()
        return self._cut(starts)

    def _cut(self, starts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        windows = torch.stack([self.stream[start : start + self.window] for start in starts.tolist()])
        return windows[:, : self.prompt_tokens], windows[:, self.prompt_tokens :]


def continuation_loss(
    model: Callable[..., Any],
    lm: LanguageModel,
    prompt_embeds: torch.Tensor,
    continuation_ids: torch.Tensor,
) -> torch.Tensor:
    """Return the mean next-token cross-entropy over the continuation tokens of a batch.

    Parameters
    ----------
    model
        The causal LM, or a PEFT wrapper that prepends its soft prompt (and its ignored labels).
    lm
        The wrapped LM, for the input embedding table.
    prompt_embeds
        Prompt embeddings of shape (B, P, D), already passed through whatever DEL step applies.
    continuation_ids
        Continuation ids of shape (B, C).
    """
    continuation_embeds = lm.model.get_input_embeddings()(continuation_ids.to(lm.device))
    inputs = torch.cat([prompt_embeds.to(continuation_embeds.dtype), continuation_embeds], dim=1)

    prompt_labels = torch.full(prompt_embeds.shape[:2], IGNORE_INDEX, dtype=torch.long, device=lm.device)
    labels = torch.cat([prompt_labels, continuation_ids.to(lm.device)], dim=1)
    return model(inputs_embeds=inputs, labels=labels).loss


def relative_reconstruction_error(reconstructed: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
    """Return ``mean ||e_hat - e||^2 / mean ||e||^2`` over the tokens of a batch."""
    error = (reconstructed - embeddings).pow(2).sum(-1).mean()
    return error / embeddings.pow(2).sum(-1).mean()


@torch.no_grad()
def validation_perplexity(
    model: Callable[..., Any],
    lm: LanguageModel,
    prompt_ids: torch.Tensor,
    continuation_ids: torch.Tensor,
    prompt_transform: Callable[[torch.Tensor], torch.Tensor],
    *,
    batch_size: int,
) -> float:
    """Return the perplexity of fixed validation continuations given transformed prompts.

    Every window has the same continuation length, so the mean of the per-batch mean losses
    weighted by batch size is the per-token mean.
    """
    total = 0.0
    for start in range(0, prompt_ids.shape[0], batch_size):
        prompts = prompt_transform(lm.embed(prompt_ids[start : start + batch_size].reshape(-1)))
        prompts = prompts.reshape(-1, prompt_ids.shape[1], lm.hidden_size)
        loss = continuation_loss(model, lm, prompts, continuation_ids[start : start + batch_size])
        total += float(loss) * prompts.shape[0]
    return math.exp(total / prompt_ids.shape[0])


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write a training checkpoint atomically (temporary file, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = path.with_name(path.name + ".tmp")
    torch.save(state, tmp_path)
    os.replace(tmp_path, path)
    logger.info("saved checkpoint at step %d to %s", state["step"], path)


def load_checkpoint(path: Path, expected: dict[str, Any]) -> dict[str, Any]:
    """Read a checkpoint and check that the options that shape training match ``expected``."""
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}; run without --resume to start from step 0")
    state = torch.load(path, map_location="cpu", weights_only=False)
    stored = state.get("options", {})
    mismatched = {name: (stored.get(name), value) for name, value in expected.items() if stored.get(name) != value}
    if mismatched:
        details = ", ".join(f"{name}: checkpoint {old!r}, now {new!r}" for name, (old, new) in mismatched.items())
        raise ValueError(f"checkpoint {path} was written with other options ({details}); rerun with the checkpoint's options")
    logger.info("resuming from %s at step %d", path, state["step"])
    return state


def token_ids_for_calibration(stream: torch.Tensor, count: int, seed: int) -> torch.Tensor:
    """Return ``count`` token occurrences drawn from a stream, so frequent tokens weigh more."""
    generator = torch.Generator().manual_seed(seed)
    positions = torch.randint(0, stream.numel(), (min(count, stream.numel()),), generator=generator)
    return stream[positions]

