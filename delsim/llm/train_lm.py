"""Recipe `delsim train lm`: train the small causal LM that ships as the embedded default model.

The recipe loads a corpus (:mod:`delsim.llm.corpus`) and splits it by paragraph hash. It trains a
byte-level BPE tokenizer on the train split, then a GPT-2 model from scratch on random windows of
the tokenized train stream (AdamW, linear warmup then cosine decay). The saved Hugging Face
checkpoint loads offline with ``AutoModelForCausalLM.from_pretrained`` and
``AutoTokenizer.from_pretrained``. The run reports validation and held-out perplexity and writes
the held-out paragraphs next to the model.

Output folder layout::

    out_dir/
        tokenizer/           tokenizer trained at the start; reused by --resume
        checkpoint.pt        model, optimizer and step of the last checkpoint
        model/               final model and tokenizer (copy to delsim/llm/default/model)
        corpus/              held-out paragraphs and provenance (copy to delsim/llm/default/corpus)
        metrics.json         perplexities, parameter count, sizes and wall time
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from tqdm import tqdm
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

from delsim.llm.corpus import (
    CORPUS_SOURCES,
    CorpusSplit,
    count_words,
    load_corpus_paragraphs,
    split_paragraphs,
    write_heldout,
)

logger = logging.getLogger(__name__)

EOS_TOKEN = "<|endoftext|>"
"""End-of-text token, which is also the BOS token (as in GPT-2) and the separator between paragraphs."""

PAD_TOKEN = "<|pad|>"
"""Padding token, whose positions are masked out of losses."""

SAVE_DTYPES = ("float32", "float16")
"""Allowed weight dtypes of the saved model."""

CHECKPOINT_FILENAME = "checkpoint.pt"
METRICS_FILENAME = "metrics.json"


@dataclass
class LMTrainConfig:
    """Options of the default-LM recipe, each also a command-line flag.

    The defaults are the options of the shipped default model.

    Attributes
    ----------
    corpus : str
        Corpus source, one of :data:`delsim.llm.corpus.CORPUS_SOURCES`.
    vocab_size : int
        BPE vocabulary size including the 256 byte symbols and the two special tokens.
    n_embd, n_layer, n_head, n_positions : int
        GPT-2 hidden size, number of blocks, attention heads and maximum sequence length in tokens.
    steps : int
        Total optimizer steps.
    batch_size : int
        Sequences per step.
    seq_len : int
        Tokens per training sequence; at most ``n_positions``.
    lr : float
        Peak learning rate of AdamW.
    min_lr_ratio : float
        Final learning rate as a fraction of ``lr`` after cosine decay.
    warmup_steps : int
        Steps of linear warmup from 0 to ``lr``.
    weight_decay : float
        AdamW weight decay, applied to matrices only (not to biases or LayerNorm weights).
    grad_clip : float
        Maximum global gradient norm; 0 turns clipping off.
    seed : int
        Seed of the model initialization and of the window sampling.
    checkpoint_every : int
        Steps between checkpoints; 0 saves only at the end.
    save_dtype : str
        Weight dtype of the saved model, ``"float32"`` or ``"float16"``. Half-precision weights
        halve the file size; the saved config keeps ``float32`` so they load as float32 on CPU.
    eval_max_paragraphs : int or None
        Paragraphs per split scored for the final perplexities; ``None`` scores all.
    num_threads : int or None
        ``torch.set_num_threads`` value; ``None`` keeps the torch default.
    docs_dir : str or None
        HTML folder for the ``"python-docs"`` corpus; ``None`` uses the Debian location.
    """

    corpus: str = "python-docs"
    vocab_size: int = 4096
    n_embd: int = 256
    n_layer: int = 4
    n_head: int = 4
    n_positions: int = 512
    steps: int = 480
    batch_size: int = 8
    seq_len: int = 512
    lr: float = 2e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 30
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    seed: int = 0
    checkpoint_every: int = 60
    save_dtype: str = "float16"
    eval_max_paragraphs: int | None = None
    num_threads: int | None = None
    docs_dir: str | None = None

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first invalid field, its value and the allowed range."""
        if self.corpus not in CORPUS_SOURCES:
            raise ValueError(f"invalid corpus {self.corpus!r}: use one of {', '.join(CORPUS_SOURCES)}")
        if self.save_dtype not in SAVE_DTYPES:
            raise ValueError(f"invalid save_dtype {self.save_dtype!r}: use one of {', '.join(SAVE_DTYPES)}")

        positive = ("n_embd", "n_layer", "n_head", "n_positions", "steps", "batch_size", "seq_len")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"invalid {name} {getattr(self, name)}: must be at least 1")
        if self.vocab_size < 300:
            raise ValueError(f"invalid vocab_size {self.vocab_size}: must be at least 300 (256 bytes plus merges)")
        if self.n_embd % self.n_head != 0:
            raise ValueError(f"invalid n_head {self.n_head}: must divide n_embd ({self.n_embd})")
        if self.seq_len > self.n_positions:
            raise ValueError(f"invalid seq_len {self.seq_len}: must be at most n_positions ({self.n_positions})")
        if not self.lr > 0:
            raise ValueError(f"invalid lr {self.lr}: must be positive")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"invalid min_lr_ratio {self.min_lr_ratio}: must be in [0, 1]")

        non_negative = ("warmup_steps", "weight_decay", "grad_clip", "checkpoint_every")
        for name in non_negative:
            if getattr(self, name) < 0:
                raise ValueError(f"invalid {name} {getattr(self, name)}: must be at least 0")
        if self.eval_max_paragraphs is not None and self.eval_max_paragraphs < 1:
            raise ValueError(f"invalid eval_max_paragraphs {self.eval_max_paragraphs}: must be at least 1 or None")


@dataclass
class LMTrainResult:
    """Outcome of :func:`train_lm`.

    Attributes
    ----------
    model_dir : Path
        Folder of the saved model and tokenizer.
    losses : list of float
        Training loss (mean cross-entropy in nats per token) of every step run in this call.
    start_step, end_step : int
        Step the call started from (0, or the checkpoint's step with ``resume``) and ended at.
    metrics : dict
        Contents of ``metrics.json``.
    """

    model_dir: Path
    losses: list[float] = field(default_factory=list)
    start_step: int = 0
    end_step: int = 0
    metrics: dict[str, object] = field(default_factory=dict)


def train_tokenizer(paragraphs: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer and wrap it for transformers.

    The tokenizer adds no special tokens when encoding, as GPT-2's does; ``bos_token`` and
    ``eos_token`` are both :data:`EOS_TOKEN` and ``pad_token`` is :data:`PAD_TOKEN`.
    """
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS_TOKEN, PAD_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(paragraphs, trainer=trainer)

    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=EOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        model_max_length=None,
    )


def encode_stream(tokenizer: PreTrainedTokenizerFast, paragraphs: list[str]) -> torch.Tensor:
    """Tokenize paragraphs into one 1-D int64 tensor, each paragraph followed by the EOS token."""
    eos_id = tokenizer.eos_token_id
    ids: list[int] = []
    for encoded in tokenizer(paragraphs, add_special_tokens=False)["input_ids"]:
        ids.extend(encoded)
        ids.append(eos_id)
    return torch.tensor(ids, dtype=torch.long)


def build_model(config: LMTrainConfig, tokenizer: PreTrainedTokenizerFast) -> GPT2LMHeadModel:
    """Create a freshly initialized GPT-2 with tied input and output embeddings and no dropout.

    Dropout is off because a default run trains on each token of the train split about once or
    twice, and without it every step is a pure function of the weights and the batch.
    """
    torch.manual_seed(config.seed)
    model_config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=config.n_positions,
        n_embd=config.n_embd,
        n_layer=config.n_layer,
        n_head=config.n_head,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    return GPT2LMHeadModel(model_config)


def sample_batch(stream: torch.Tensor, *, seed: int, step: int, batch_size: int, seq_len: int) -> torch.Tensor:
    """Draw ``batch_size`` random windows of ``seq_len`` tokens from the stream.

    The windows depend only on ``(seed, step)``, so a resumed run draws the same batches as an
    uninterrupted one.
    """
    if stream.numel() <= seq_len:
        raise ValueError(
            f"training stream has {stream.numel()} tokens, fewer than seq_len + 1 ({seq_len + 1}): "
            "use a larger corpus or a smaller seq_len"
        )
    generator = torch.Generator().manual_seed(seed * 1_000_003 + step)
    starts = torch.randint(0, stream.numel() - seq_len, (batch_size,), generator=generator)
    return torch.stack([stream[start : start + seq_len] for start in starts.tolist()])


def learning_rate(config: LMTrainConfig, step: int) -> float:
    """Return the learning rate of a step: linear warmup, then cosine decay to ``min_lr_ratio * lr``."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps

    decay_steps = max(1, config.steps - config.warmup_steps)
    progress = min(1.0, (step - config.warmup_steps) / decay_steps)
    cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
    return config.lr * (config.min_lr_ratio + (1.0 - config.min_lr_ratio) * cosine)


@torch.no_grad()
def evaluate_perplexity(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerFast,
    paragraphs: list[str],
    *,
    batch_size: int = 16,
) -> float:
    """Compute the token-level perplexity of a model on paragraphs scored one by one.

    Each paragraph is prefixed with the BOS token and truncated to the model's
    ``n_positions``; every token after BOS is scored, so the result is
    ``exp(total negative log-likelihood / scored tokens)``.
    """
    if not paragraphs:
        raise ValueError("cannot compute perplexity of an empty list of paragraphs")

    was_training = model.training
    model.eval()
    max_length = model.config.n_positions
    total_nll = 0.0
    total_tokens = 0

    for first in range(0, len(paragraphs), batch_size):
        encoded = tokenizer(
            paragraphs[first : first + batch_size], add_special_tokens=False, truncation=True, max_length=max_length - 1
        )
        sequences = [[tokenizer.bos_token_id, *ids] for ids in encoded["input_ids"]]
        width = max(len(s) for s in sequences)
        input_ids = torch.full((len(sequences), width), tokenizer.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros_like(input_ids)
        for row, sequence in enumerate(sequences):
            input_ids[row, : len(sequence)] = torch.tensor(sequence)
            attention_mask[row, : len(sequence)] = 1

        logits = model(input_ids=input_ids, attention_mask=attention_mask).logits.float()
        targets = input_ids[:, 1:].masked_fill(attention_mask[:, 1:] == 0, -100)
        nll = torch.nn.functional.cross_entropy(
            logits[:, :-1].reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-100, reduction="sum"
        )
        total_nll += nll.item()
        total_tokens += int((targets != -100).sum())

    model.train(was_training)
    return math.exp(total_nll / total_tokens)


def train_lm(
    config: LMTrainConfig,
    out_dir: Path,
    *,
    resume: bool = False,
    progress: bool = True,
    paragraphs: list[str] | None = None,
    stop_at: int | None = None,
) -> LMTrainResult:
    """Run the recipe: tokenizer, training, checkpoints, final save and perplexities.

    Parameters
    ----------
    config : LMTrainConfig
        Recipe options; validated first.
    out_dir : Path
        Output folder (layout in the module docstring); created if missing.
    resume : bool
        Continue from ``out_dir/checkpoint.pt`` with the tokenizer in ``out_dir/tokenizer``. The
        checkpoint must come from the same model and tokenizer options.
    progress : bool
        Show a tqdm progress bar with the training loss.
    paragraphs : list of str or None
        Corpus paragraphs to use in place of loading ``config.corpus``; the recipe still records
        ``config.corpus`` as the source.
    stop_at : int or None
        Stop after this many steps, save a checkpoint and return without the final model, as an
        interrupted run would; the learning-rate schedule still spans ``config.steps``.

    Returns
    -------
    LMTrainResult
        Model folder, per-step losses of this call, step range and final metrics.
    """
    config.validate()
    if stop_at is not None and not 0 < stop_at <= config.steps:
        raise ValueError(f"invalid stop_at {stop_at}: must be in [1, steps={config.steps}] or None")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if config.num_threads is not None:
        torch.set_num_threads(config.num_threads)
    logger.info("training default LM into %s with %s", out_dir, asdict(config))

    if paragraphs is None:
        docs_dir = Path(config.docs_dir) if config.docs_dir else None
        paragraphs = load_corpus_paragraphs(config.corpus, docs_dir=docs_dir)
    split = split_paragraphs(paragraphs)
    if not split.train or not split.validation or not split.heldout:
        raise ValueError(
            f"corpus of {len(paragraphs)} paragraphs leaves an empty split "
            f"(train {len(split.train)}, validation {len(split.validation)}, held-out {len(split.heldout)}): "
            "use a larger corpus"
        )

    tokenizer = _load_or_train_tokenizer(config, out_dir / "tokenizer", split.train, resume=resume)
    stream = encode_stream(tokenizer, split.train)
    logger.info("train split: %d paragraphs, %d words, %d tokens", len(split.train), count_words(split.train), stream.numel())

    model = build_model(config, tokenizer)
    optimizer = _build_optimizer(model, config)
    start_step, previous_seconds = 0, 0.0
    if resume:
        start_step, previous_seconds = _load_checkpoint(out_dir / CHECKPOINT_FILENAME, model, optimizer, config)

    end_step = stop_at if stop_at is not None else config.steps
    if start_step > end_step:
        raise ValueError(f"invalid stop_at {stop_at}: the checkpoint is already at step {start_step}")
    losses, train_seconds = _run_steps(
        model, optimizer, stream, config, out_dir, steps=(start_step, end_step), previous_seconds=previous_seconds, progress=progress
    )
    if end_step < config.steps:
        logger.info("stopped at step %d of %d; continue with resume", end_step, config.steps)
        return LMTrainResult(model_dir=out_dir / "model", losses=losses, start_step=start_step, end_step=end_step)

    model_dir = out_dir / "model"
    _save_model(model, tokenizer, model_dir, config.save_dtype)
    write_heldout(
        split.heldout,
        out_dir / "corpus",
        source=config.corpus,
        extra={"train_paragraphs": len(split.train), "train_words": count_words(split.train), "train_tokens": stream.numel()},
    )

    metrics = _final_metrics(model_dir, tokenizer, split, config, stream.numel(), losses, train_seconds)
    (out_dir / METRICS_FILENAME).write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    (model_dir / "training_metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    logger.info(
        "finished at step %d: validation perplexity %.2f, held-out perplexity %.2f, wrote %s",
        config.steps,
        metrics["validation_perplexity"],
        metrics["heldout_perplexity"],
        model_dir,
    )
    return LMTrainResult(model_dir=model_dir, losses=losses, start_step=start_step, end_step=config.steps, metrics=metrics)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the recipe's options (one flag per :class:`LMTrainConfig` field) to a parser."""
    defaults = LMTrainConfig()
    help_texts = {
        "corpus": "corpus source",
        "vocab_size": "BPE vocabulary size in tokens",
        "n_embd": "hidden size",
        "n_layer": "number of transformer blocks",
        "n_head": "attention heads per block",
        "n_positions": "maximum sequence length of the model in tokens",
        "steps": "total optimizer steps",
        "batch_size": "sequences per step",
        "seq_len": "tokens per training sequence",
        "lr": "peak AdamW learning rate",
        "min_lr_ratio": "final learning rate as a fraction of --lr",
        "warmup_steps": "steps of linear learning-rate warmup",
        "weight_decay": "AdamW weight decay on matrices",
        "grad_clip": "maximum gradient norm, 0 for none",
        "seed": "seed of initialization and batch sampling",
        "checkpoint_every": "steps between checkpoints, 0 for only the end",
        "save_dtype": "dtype of the saved weights",
        "eval_max_paragraphs": "paragraphs per split scored for the final perplexities (default: all)",
        "num_threads": "torch CPU threads (default: torch's choice)",
        "docs_dir": "HTML folder of the python-docs corpus",
    }
    choices = {"corpus": CORPUS_SOURCES, "save_dtype": SAVE_DTYPES}
    types = {"eval_max_paragraphs": int, "num_threads": int, "docs_dir": str}

    for config_field in fields(LMTrainConfig):
        name = config_field.name
        default = getattr(defaults, name)
        parser.add_argument(
            f"--{name.replace('_', '-')}",
            type=types.get(name, type(default)),
            default=default,
            choices=choices.get(name),
            help=f"{help_texts[name]} (default: {default})",
        )
    parser.add_argument("--out-dir", type=Path, required=True, help="output folder of the run")
    parser.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out-dir")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def main(args: argparse.Namespace) -> int:
    """Run :func:`train_lm` from parsed command-line arguments; return the exit status."""
    config = LMTrainConfig(**{f.name: getattr(args, f.name) for f in fields(LMTrainConfig)})
    result = train_lm(config, args.out_dir, resume=args.resume, progress=not args.no_progress)
    print(
        f"validation perplexity {result.metrics['validation_perplexity']:.2f}, "
        f"held-out perplexity {result.metrics['heldout_perplexity']:.2f}, model in {result.model_dir}"
    )
    return 0


def _load_or_train_tokenizer(
    config: LMTrainConfig, tokenizer_dir: Path, train_paragraphs: list[str], *, resume: bool
) -> PreTrainedTokenizerFast:
    if resume:
        if not tokenizer_dir.is_dir():
            raise FileNotFoundError(f"cannot resume: tokenizer folder {tokenizer_dir} not found; run without --resume")
        return PreTrainedTokenizerFast.from_pretrained(tokenizer_dir)

    tokenizer = train_tokenizer(train_paragraphs, config.vocab_size)
    tokenizer.save_pretrained(tokenizer_dir)
    logger.info("trained tokenizer of %d tokens, saved to %s", len(tokenizer), tokenizer_dir)
    return tokenizer


def _build_optimizer(model: torch.nn.Module, config: LMTrainConfig) -> torch.optim.AdamW:
    decayed = [p for p in model.parameters() if p.dim() >= 2]
    not_decayed = [p for p in model.parameters() if p.dim() < 2]
    groups = [
        {"params": decayed, "weight_decay": config.weight_decay},
        {"params": not_decayed, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=config.lr, betas=(0.9, 0.95))


def _run_steps(
    model: GPT2LMHeadModel,
    optimizer: torch.optim.Optimizer,
    stream: torch.Tensor,
    config: LMTrainConfig,
    out_dir: Path,
    *,
    steps: tuple[int, int],
    previous_seconds: float,
    progress: bool,
) -> tuple[list[float], float]:
    # Returns the losses of the steps run here and the wall seconds of all steps since step 0.
    started = time.perf_counter()
    model.train()
    losses: list[float] = []
    first, end = steps
    bar = tqdm(range(first, end), initial=first, total=config.steps, disable=not progress, mininterval=5)

    for step in bar:
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(config, step)

        batch = sample_batch(stream, seed=config.seed, step=step, batch_size=config.batch_size, seq_len=config.seq_len)
        loss = model(input_ids=batch, labels=batch).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()

        losses.append(loss.item())
        bar.set_postfix(loss=f"{losses[-1]:.3f}", refresh=False)
        done = step + 1
        if config.checkpoint_every and done % config.checkpoint_every == 0 and done < end:
            seconds = previous_seconds + time.perf_counter() - started
            _save_checkpoint(out_dir / CHECKPOINT_FILENAME, model, optimizer, config, done, seconds)

    seconds = previous_seconds + time.perf_counter() - started
    _save_checkpoint(out_dir / CHECKPOINT_FILENAME, model, optimizer, config, end, seconds)
    return losses, seconds


def _save_checkpoint(
    path: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    config: LMTrainConfig,
    step: int,
    step_seconds: float,
) -> None:
    # Write to a temporary file first so an interrupted save leaves the previous checkpoint intact.
    temporary = path.with_suffix(".tmp")
    state = {
        "step": step,
        "step_seconds": step_seconds,
        "config": asdict(config),
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
    }
    torch.save(state, temporary)
    temporary.replace(path)
    logger.info("saved checkpoint at step %d to %s", step, path)


def _load_checkpoint(
    path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, config: LMTrainConfig
) -> tuple[int, float]:
    # Returns the checkpoint's step and the wall seconds its steps took.
    if not path.is_file():
        raise FileNotFoundError(f"cannot resume: checkpoint {path} not found; run without --resume")
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)

    # Options that change the weights' shapes or the batches must match, while steps and lr may change.
    fixed = ("corpus", "vocab_size", "n_embd", "n_layer", "n_head", "n_positions", "seed", "seq_len", "batch_size")
    for name in fixed:
        if checkpoint["config"][name] != getattr(config, name):
            raise ValueError(
                f"cannot resume: checkpoint has {name}={checkpoint['config'][name]!r} but the run has "
                f"{name}={getattr(config, name)!r}; use the checkpoint's value or start a new --out-dir"
            )
    if checkpoint["step"] > config.steps:
        raise ValueError(f"cannot resume: checkpoint is at step {checkpoint['step']}, beyond steps={config.steps}")

    model.load_state_dict(checkpoint["model"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    logger.info("resumed from %s at step %d", path, checkpoint["step"])
    return int(checkpoint["step"]), float(checkpoint.get("step_seconds", 0.0))


def _save_model(model: GPT2LMHeadModel, tokenizer: PreTrainedTokenizerFast, model_dir: Path, save_dtype: str) -> None:
    # Cast a copy, so save_pretrained still stores the tied input and output embedding once.
    saved = copy.deepcopy(model).to(torch.float16 if save_dtype == "float16" else torch.float32)
    saved.save_pretrained(model_dir)
    tokenizer.model_max_length = model.config.n_positions
    tokenizer.save_pretrained(model_dir)

    # The config states float32, so `from_pretrained` casts half-precision weights to float32.
    _update_json(model_dir / "config.json", {"dtype": "float32"})
    # transformers 5 writes its own class name (TokenizersBackend), which 4.x releases lack, while
    # both load PreTrainedTokenizerFast. Keys that only describe the loading call are dropped.
    _update_json(
        model_dir / "tokenizer_config.json",
        {"tokenizer_class": "PreTrainedTokenizerFast"},
        remove=("is_local", "local_files_only"),
    )
    logger.info("saved model (%s weights) and tokenizer to %s", save_dtype, model_dir)


def _update_json(path: Path, values: dict[str, object], remove: tuple[str, ...] = ()) -> None:
    content = json.loads(path.read_text(encoding="utf-8"))
    content.update(values)
    for key in remove:
        content.pop(key, None)
    path.write_text(json.dumps(content, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _final_metrics(
    model_dir: Path,
    tokenizer: PreTrainedTokenizerFast,
    split: CorpusSplit,
    config: LMTrainConfig,
    train_tokens: int,
    losses: list[float],
    train_seconds: float,
) -> dict[str, object]:
    # Score the saved model, so the numbers include any rounding to half precision.
    saved = GPT2LMHeadModel.from_pretrained(model_dir, dtype=torch.float32)
    limit = config.eval_max_paragraphs
    validation = split.validation[:limit] if limit else split.validation
    heldout = split.heldout[:limit] if limit else split.heldout

    return {
        "config": asdict(config),
        "parameters": sum(p.numel() for p in saved.parameters()),
        "checkpoint_bytes": sum(f.stat().st_size for f in model_dir.iterdir() if f.is_file()),
        "train_paragraphs": len(split.train),
        "train_words": count_words(split.train),
        "train_tokens": train_tokens,
        "tokens_seen": config.steps * config.batch_size * config.seq_len,
        "final_train_loss": losses[-1] if losses else None,
        "validation_paragraphs": len(validation),
        "validation_perplexity": evaluate_perplexity(saved, tokenizer, validation),
        "heldout_paragraphs": len(heldout),
        "heldout_perplexity": evaluate_perplexity(saved, tokenizer, heldout),
        "train_step_seconds": train_seconds,
        "torch_threads": torch.get_num_threads(),
    }


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    _parser = argparse.ArgumentParser(prog="python -m delsim.llm.train_lm", description=__doc__.splitlines()[0])
    configure_parser(_parser)
    raise SystemExit(main(_parser.parse_args()))
