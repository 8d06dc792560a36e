"""A frozen Hugging Face causal LM driven by input embeddings, as a DEL server runs it.

The server never receives prompt token ids, so every entry point here takes the decoded prompt
embeddings (T, D) and optionally a soft prompt (m, D) that is prepended to them.
"""

from __future__ import annotations

import inspect
import logging
import math
import os
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from delsim.llm.defaults import DEFAULT_MODEL_DIR, DEFAULT_MODEL_NAME

logger = logging.getLogger(__name__)

_DTYPE_NAMES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}


def resolve_model_path(name_or_path: str | os.PathLike[str]) -> str:
    """Map the default model's name to its shipped folder; pass anything else through.

    Parameters
    ----------
    name_or_path
        ``"delsim-default"``, a Hugging Face hub name, or a local folder.

    Returns
    -------
    str
        What ``from_pretrained`` should receive.
    """
    if str(name_or_path) == DEFAULT_MODEL_NAME:
        return str(DEFAULT_MODEL_DIR)
    return str(name_or_path)


def resolve_device(device: str | torch.device) -> torch.device:
    """Return a torch device, raising if an accelerator is requested but missing."""
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={str(device)!r} requested but CUDA is not available; use device='cpu'")
    return resolved


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype | None:
    """Turn a dtype setting into a torch dtype.

    ``None`` leaves the choice to transformers, ``"auto"`` picks bfloat16 on a CUDA device that
    supports it and float32 everywhere else.
    """
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    if dtype not in _DTYPE_NAMES:
        allowed = ", ".join(["auto", *_DTYPE_NAMES])
        raise ValueError(f"dtype={dtype!r} is not supported; use one of: {allowed}")
    return _DTYPE_NAMES[dtype]


def nucleus_sample(logits: torch.Tensor, *, top_p: float, temperature: float, generator: torch.Generator) -> int:
    """Draw one token id from a logit vector with temperature and top-p (nucleus) filtering.

    Parameters
    ----------
    logits
        Float tensor of shape (V,).
    top_p
        Keep the smallest set of most likely tokens whose probability mass reaches ``top_p``.
    temperature
        Divides the logits; 0 means greedy decoding (argmax).
    generator
        CPU generator that supplies the randomness, so a draw depends on it alone.

    Returns
    -------
    int
        The sampled token id.
    """
    logits = logits.detach().float().cpu()
    if temperature == 0.0:
        return int(torch.argmax(logits))

    probs = torch.softmax(logits / temperature, dim=-1)
    sorted_probs, sorted_ids = torch.sort(probs, descending=True)

    # A token stays when the mass of the tokens ranked above it is still below top_p, so the
    # most likely token always stays.
    mass_above = torch.cumsum(sorted_probs, dim=-1) - sorted_probs
    sorted_probs = torch.where(mass_above < top_p, sorted_probs, torch.zeros_like(sorted_probs))

    choice = torch.multinomial(sorted_probs, num_samples=1, generator=generator)
    return int(sorted_ids[choice])


class LanguageModel:
    """A frozen causal LM with the embedding-level interface a DEL server replica needs.

    Parameters
    ----------
    model
        A Hugging Face causal LM. It is switched to eval mode and its parameters are frozen.
    tokenizer
        The model's tokenizer.
    device
        Where the model runs.
    """

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, device: torch.device) -> None:
        model.requires_grad_(False)
        model.eval()
        self.model = model
        self.tokenizer = tokenizer
        self.device = device

        self.eos_token_id: int | None = tokenizer.eos_token_id
        """Token id that ends generation; ``None`` generates until ``max_new_tokens``."""

    @classmethod
    def load(
        cls,
        name_or_path: str | os.PathLike[str],
        *,
        device: str | torch.device = "cpu",
        dtype: str | torch.dtype | None = None,
    ) -> LanguageModel:
        """Load a causal LM and its tokenizer by hub name or local folder.

        Parameters
        ----------
        name_or_path
            ``"delsim-default"`` for the shipped model, a hub name, or a local folder. With
            ``HF_HUB_OFFLINE=1`` only local folders and the local cache are used.
        device
            ``"cpu"`` (default), ``"cuda"`` or ``"cuda:N"``.
        dtype
            ``None`` uses the transformers default (float32 for the shipped model),
            ``"auto"`` picks bfloat16 on a CUDA device that supports it and float32 elsewhere,
            or one of float32, bfloat16, float16.

        Returns
        -------
        LanguageModel
            The loaded, frozen model.
        """
        path = resolve_model_path(name_or_path)
        resolved_device = resolve_device(device)
        torch_dtype = resolve_dtype(dtype, resolved_device)

        try:
            tokenizer = AutoTokenizer.from_pretrained(path)
            # transformers 5 reads an explicit dtype=None as the stored weight dtype (float16 for
            # the shipped model), so the argument is left out to get its float32 default.
            dtype_argument = {} if torch_dtype is None else {"dtype": torch_dtype}
            model = AutoModelForCausalLM.from_pretrained(path, **dtype_argument)
        except OSError as error:
            raise OSError(
                f"failed to load causal LM {path!r}: {error}. Pass an existing local folder, "
                f"{DEFAULT_MODEL_NAME!r}, or a hub name with network access (HF_HUB_OFFLINE unset)"
            ) from error

        model.to(resolved_device)
        logger.info("loaded %s on %s (%d parameters, dtype %s)", path, resolved_device, model.num_parameters(), model.dtype)
        return cls(model, tokenizer, resolved_device)

    @property
    def hidden_size(self) -> int:
        """Width D of the input embeddings."""
        return int(self.embedding_table.shape[1])

    @property
    def vocab_size(self) -> int:
        """Number of rows V of the input embedding table."""
        return int(self.embedding_table.shape[0])

    @property
    def num_layers(self) -> int:
        """Number of transformer blocks."""
        config = self.model.config
        for name in ("num_hidden_layers", "n_layer", "num_layers"):
            if getattr(config, name, None) is not None:
                return int(getattr(config, name))
        raise AttributeError(f"model config {type(config).__name__} states no layer count")

    @property
    def num_parameters(self) -> int:
        """Number of model parameters, tied weights counted once."""
        return int(self.model.num_parameters())

    @property
    def max_positions(self) -> int | None:
        """Maximum sequence length (soft prompt, prompt and continuation) the model accepts, if bounded."""
        config = self.model.config
        for name in ("n_positions", "max_position_embeddings"):
            if getattr(config, name, None) is not None:
                return int(getattr(config, name))
        return None

    @property
    def dtype(self) -> torch.dtype:
        """Dtype of the model weights."""
        return self.model.dtype

    @property
    def embedding_table(self) -> torch.Tensor:
        """Input embedding weights of shape (V, D), the table a DEL client holds."""
        return self.model.get_input_embeddings().weight.detach()

    def tokenize(self, text: str) -> torch.Tensor:
        """Return the token ids of ``text`` as a LongTensor of shape (T,), with no special tokens."""
        ids = self.tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
        return torch.tensor(ids, dtype=torch.long)

    def detokenize(self, token_ids: Sequence[int] | torch.Tensor) -> str:
        """Return the text of ``token_ids``, skipping special tokens."""
        return self.tokenizer.decode(list(map(int, token_ids)), skip_special_tokens=True)

    def embed(self, token_ids: Sequence[int] | torch.Tensor) -> torch.Tensor:
        """Look up input embeddings.

        Parameters
        ----------
        token_ids
            Ids of shape (T,).

        Returns
        -------
        torch.Tensor
            Embeddings of shape (T, D) on the model's device, in the model's dtype.
        """
        ids = torch.as_tensor(token_ids, dtype=torch.long)
        if ids.dim() != 1:
            raise ValueError(f"token_ids must have shape (T,), got {tuple(ids.shape)}")
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.vocab_size):
            raise ValueError(
                f"token_ids must lie in [0, {self.vocab_size}), got range "
                f"[{int(ids.min())}, {int(ids.max())}]; tokenize with this model's tokenizer"
            )
        return self.model.get_input_embeddings()(ids.to(self.device))

    def build_inputs(self, prompt_embeds: torch.Tensor, soft_prompt: torch.Tensor | None = None) -> torch.Tensor:
        """Concatenate the soft prompt and the prompt embeddings into one (1, m + T, D) batch."""
        parts = [self._check_embeds(soft_prompt, "soft_prompt")] if soft_prompt is not None else []
        parts.append(self._check_embeds(prompt_embeds, "prompt_embeds"))
        return torch.cat(parts, dim=0).unsqueeze(0)

    def _check_embeds(self, embeds: torch.Tensor, name: str) -> torch.Tensor:
        if embeds.dim() != 2 or embeds.shape[1] != self.hidden_size:
            raise ValueError(f"{name} must have shape (n, {self.hidden_size}), got {tuple(embeds.shape)}")
        return embeds.to(device=self.device, dtype=self.dtype)

    def _check_length(self, length: int) -> None:
        limit = self.max_positions
        if limit is not None and length > limit:
            raise ValueError(
                f"sequence of {length} positions (soft prompt + prompt + continuation) exceeds the "
                f"model's context of {limit}; shorten the prompt, soft prompt or continuation"
            )

    @torch.no_grad()
    def generate(
        self,
        prompt_embeds: torch.Tensor,
        *,
        soft_prompt: torch.Tensor | None = None,
        max_new_tokens: int = 200,
        top_p: float = 0.9,
        temperature: float = 0.7,
        seed: int = 0,
        eos_token_id: int | None = None,
    ) -> list[int]:
        """Sample a continuation of prompt embeddings with top-p sampling and a KV cache.

        The sampler draws from a CPU ``torch.Generator`` seeded with ``seed`` and owned by this
        call, so the output depends only on the inputs and the seed, never on other requests.

        Parameters
        ----------
        prompt_embeds
            Server-side decoded prompt embeddings of shape (T, D).
        soft_prompt
            Optional soft prompt of shape (m, D), prepended to the prompt.
        max_new_tokens
            Maximum number of generated tokens. Generation also stops when the sequence fills
            the model's context.
        top_p
            Nucleus sampling mass, in (0, 1].
        temperature
            Softmax temperature; 0 selects greedy decoding.
        seed
            Seed of this request's sampler.
        eos_token_id
            Token that ends generation; defaults to ``self.eos_token_id``.

        Returns
        -------
        list[int]
            Generated token ids. The end-of-sequence token is not included.
        """
        if max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
        if not 0.0 < top_p <= 1.0:
            raise ValueError(f"top_p must lie in (0, 1], got {top_p}")
        if temperature < 0.0 or not math.isfinite(temperature):
            raise ValueError(f"temperature must be a finite value >= 0, got {temperature}")
        stop_id = self.eos_token_id if eos_token_id is None else eos_token_id

        inputs = self.build_inputs(prompt_embeds, soft_prompt)
        if inputs.shape[1] == 0:
            raise ValueError("prompt_embeds and soft_prompt are both empty; generation needs at least one position")
        self._check_length(inputs.shape[1])
        limit = self.max_positions
        budget = max_new_tokens if limit is None else min(max_new_tokens, limit - inputs.shape[1])

        generator = torch.Generator(device="cpu")
        generator.manual_seed(seed)
        embedding = self.model.get_input_embeddings()

        # transformers 5 renamed the KV-cache argument and output field from past_key_values to cache.
        cache_name = "cache" if "cache" in inspect.signature(self.model.forward).parameters else "past_key_values"

        generated: list[int] = []
        output = self.model(inputs_embeds=inputs, use_cache=True)
        for _ in range(budget):
            token_id = nucleus_sample(output.logits[0, -1], top_p=top_p, temperature=temperature, generator=generator)
            if stop_id is not None and token_id == stop_id:
                break
            generated.append(token_id)
            if len(generated) == budget:
                break
            next_embeds = embedding(torch.tensor([[token_id]], device=self.device))
            cache = {cache_name: getattr(output, cache_name)}
            output = self.model(inputs_embeds=next_embeds, use_cache=True, **cache)
        return generated

    @torch.no_grad()
    def continuation_nll(
        self,
        prompt_embeds: torch.Tensor,
        continuation_ids: Sequence[int] | torch.Tensor,
        *,
        soft_prompt: torch.Tensor | None = None,
    ) -> tuple[float, int]:
        """Sum the negative log-likelihood of a continuation given prompt embeddings.

        Only continuation tokens are scored: token j of the continuation is predicted from the
        soft prompt, the prompt and continuation tokens 0..j-1. Perplexity is
        ``exp(nll_sum / n_tokens)``.

        Parameters
        ----------
        prompt_embeds
            Prompt embeddings of shape (T, D).
        continuation_ids
            Reference continuation ids of shape (N,).
        soft_prompt
            Optional soft prompt of shape (m, D).

        Returns
        -------
        tuple[float, int]
            The NLL sum in nats and the number of scored tokens N.
        """
        ids = torch.as_tensor(continuation_ids, dtype=torch.long)
        context = self.build_inputs(prompt_embeds, soft_prompt)
        if context.shape[1] == 0:
            raise ValueError("prompt_embeds and soft_prompt are both empty; the first continuation token has no context")
        if ids.numel() == 0:
            return 0.0, 0

        inputs = torch.cat([context, self.embed(ids).unsqueeze(0)], dim=1)
        self._check_length(inputs.shape[1])
        logits = self.model(inputs_embeds=inputs).logits[0]

        # Position i predicts token i + 1, so the continuation is scored by the N positions
        # that end just before its last token.
        start = context.shape[1] - 1
        predicting = logits[start : start + ids.numel()].float()
        nll = F.cross_entropy(predicting, ids.to(self.device), reduction="sum")
        return float(nll), int(ids.numel())

    def describe(self) -> dict[str, Any]:
        """Return a small dict of the model's shape, for logs and run manifests."""
        return {
            "hidden_size": self.hidden_size,
            "vocab_size": self.vocab_size,
            "num_layers": self.num_layers,
            "num_parameters": self.num_parameters,
            "max_positions": self.max_positions,
            "dtype": str(self.dtype).removeprefix("torch."),
            "device": str(self.device),
            "name_or_path": str(getattr(self.model, "name_or_path", "")),
        }

