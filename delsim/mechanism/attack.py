"""Embedding inversion attack: nearest vocabulary entry by cosine similarity, and its success rate."""

from __future__ import annotations

import logging
import math

import torch
import torch.nn.functional as F

from delsim.mechanism.validation import check_int_range

logger = logging.getLogger(__name__)

DEFAULT_VOCAB_BATCH = 8192
"""Vocabulary rows compared per step; 8192 x 4096 float32 rows are 128 MiB."""

DEFAULT_TOKEN_BATCH = 1024
"""Decoded embeddings compared per step."""


def inversion_attack(
    decoded_embeddings: torch.Tensor,
    embedding_table: torch.Tensor,
    *,
    batch_size: int = DEFAULT_VOCAB_BATCH,
    token_batch_size: int = DEFAULT_TOKEN_BATCH,
) -> torch.Tensor:
    """Recover token ids as the vocabulary entries of highest cosine similarity.

    The vocabulary is scanned in chunks of ``batch_size`` rows, so only a
    ``token_batch_size x batch_size`` similarity block is held at once. Ties go to the
    lowest id, as with an unbatched ``argmax``.

    Parameters
    ----------
    decoded_embeddings : torch.Tensor
        The server's view of each token, shape ``(..., D)``.
    embedding_table : torch.Tensor
        Input embedding table, shape ``(V, D)``.
    batch_size : int, default 8192
        Vocabulary rows per chunk.
    token_batch_size : int, default 1024
        Decoded embeddings per chunk.

    Returns
    -------
    torch.Tensor
        int64 ids with shape ``decoded_embeddings.shape[:-1]``.
    """
    check_int_range("batch_size", batch_size, 1)
    check_int_range("token_batch_size", token_batch_size, 1)
    if embedding_table.dim() != 2 or embedding_table.shape[0] == 0:
        raise ValueError(f"embedding_table must have shape (V, D) with V >= 1, got {tuple(embedding_table.shape)}")
    if decoded_embeddings.dim() == 0 or decoded_embeddings.shape[-1] != embedding_table.shape[1]:
        raise ValueError(
            f"decoded_embeddings last dimension must equal the table's D={embedding_table.shape[1]}, "
            f"got shape {tuple(decoded_embeddings.shape)}"
        )

    dtype = torch.promote_types(decoded_embeddings.dtype, torch.float32)
    queries = F.normalize(decoded_embeddings.detach().reshape(-1, embedding_table.shape[1]).to(dtype), dim=1)
    recovered = torch.empty(queries.shape[0], dtype=torch.int64, device=queries.device)
    for start in range(0, queries.shape[0], token_batch_size):
        recovered[start : start + token_batch_size] = _nearest(queries[start : start + token_batch_size], embedding_table, batch_size, dtype)
    return recovered.reshape(decoded_embeddings.shape[:-1])


def _nearest(queries: torch.Tensor, table: torch.Tensor, batch_size: int, dtype: torch.dtype) -> torch.Tensor:
    best_similarity = torch.full((queries.shape[0],), -math.inf, dtype=dtype, device=queries.device)
    best_index = torch.zeros(queries.shape[0], dtype=torch.int64, device=queries.device)
    for start in range(0, table.shape[0], batch_size):
        rows = F.normalize(table[start : start + batch_size].detach().to(queries.device, dtype), dim=1)
        similarity, index = (queries @ rows.T).max(dim=1)
        # Strictly greater keeps the earlier chunk on ties, so the lowest id wins as in argmax.
        better = similarity > best_similarity
        best_similarity = torch.where(better, similarity, best_similarity)
        best_index = torch.where(better, index + start, best_index)
    return best_index


def attack_success_rate(recovered: torch.Tensor, true_ids: torch.Tensor) -> float:
    """Return the fraction of tokens whose id the attack recovered exactly.

    Parameters
    ----------
    recovered : torch.Tensor
        Ids from :func:`inversion_attack`.
    true_ids : torch.Tensor
        True ids, same shape.

    Returns
    -------
    float
        ASR in [0, 1].
    """
    if recovered.shape != true_ids.shape:
        raise ValueError(f"recovered shape {tuple(recovered.shape)} must equal true_ids shape {tuple(true_ids.shape)}")
    if recovered.numel() == 0:
        raise ValueError("attack_success_rate needs at least one token, got empty tensors")
    return float((recovered == true_ids.to(recovered.device)).to(torch.float64).mean())


def wilson_interval(successes: int, trials: int, confidence_z: float = 1.959963984540054) -> tuple[float, float]:
    """Return the Wilson score interval for a binomial proportion.

    Parameters
    ----------
    successes : int
        Number of successes, 0..trials.
    trials : int
        Number of trials, >= 1.
    confidence_z : float, default 1.96
        Standard normal quantile; the default gives a 95% interval.

    Returns
    -------
    tuple of float
        Lower and upper bound.
    """
    check_int_range("trials", trials, 1)
    check_int_range("successes", successes, 0, trials)
    if successes == 0:
        return 0.0, _wilson_bounds(successes, trials, confidence_z)[1]
    if successes == trials:
        return _wilson_bounds(successes, trials, confidence_z)[0], 1.0
    return _wilson_bounds(successes, trials, confidence_z)


def _wilson_bounds(successes: int, trials: int, confidence_z: float) -> tuple[float, float]:
    rate = successes / trials
    z2 = confidence_z**2
    center = (rate + z2 / (2 * trials)) / (1 + z2 / trials)
    half_width = confidence_z * math.sqrt(rate * (1 - rate) / trials + z2 / (4 * trials**2)) / (1 + z2 / trials)
    return max(0.0, center - half_width), min(1.0, center + half_width)
