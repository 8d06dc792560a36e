"""Exact, vectorized binomial sampling by inverse CDF from one uniform per element.

``torch.binomial`` on CPU runs a scalar sampler per element and is no faster than summing
the Bernoulli rounds one by one, so the quantizer samples its round counts here instead.
Each element draws one float64 uniform and inverts a table of the binomial CDF over a
window of counts around the mean.

The window is exact up to float64 precision. By Hoeffding's inequality the count lies more
than ``t`` away from its mean with probability at most ``2 * exp(-2 t^2 / trials)``. The window
half-width is chosen so that this bound is ``2**-64``, which is below the ``2**-53``
resolution of the uniform draw. The table is renormalized over the window, so rounding in
the log-factorials (relative error near ``1e-16 * log(trials!)``) shifts probabilities by a
relative ``1e-10`` at most for 65,535 trials.
"""

from __future__ import annotations

import logging
import math
from functools import lru_cache

import torch

logger = logging.getLogger(__name__)

TAIL_LOG_BOUND = 64 * math.log(2.0)
"""Negative log of the probability mass that the window may leave out on both sides."""

MAX_TABLE_ELEMENTS = 1 << 22
"""Upper bound on elements x window entries held at once (32 MiB of float64)."""


def window_width(max_trials: int) -> int:
    """Return how many consecutive counts the CDF table covers for up to ``max_trials`` trials.

    Parameters
    ----------
    max_trials : int
        Largest number of trials of any element.

    Returns
    -------
    int
        ``max_trials + 1`` when the full support is small enough, otherwise
        ``2 * ceil(t) + 2`` with ``t = sqrt(max_trials * TAIL_LOG_BOUND / 2)``.
    """
    half_width = math.ceil(math.sqrt(max_trials * TAIL_LOG_BOUND / 2.0))
    return min(max_trials + 1, 2 * half_width + 2)


@lru_cache(maxsize=32)
def _log_factorials(max_trials: int) -> torch.Tensor:
    counts = torch.arange(max_trials + 1, dtype=torch.float64)
    return torch.lgamma(counts + 1.0)


def binomial_cdf_table(trials: int, prob: float) -> torch.Tensor:
    """Return the CDF of Binomial(trials, prob) at counts ``0..trials`` as float64.

    Parameters
    ----------
    trials : int
        Number of trials, at least 0.
    prob : float
        Success probability in [0, 1].

    Returns
    -------
    torch.Tensor
        Shape ``(trials + 1,)``, nondecreasing, last entry exactly 1.
    """
    counts = torch.arange(trials + 1, dtype=torch.float64)
    log_factorials = _log_factorials(trials)
    prob_tensor = torch.tensor(prob, dtype=torch.float64)
    log_pmf = (
        log_factorials[trials]
        - log_factorials
        - log_factorials.flip(0)
        + torch.xlogy(counts, prob_tensor)
        + torch.xlogy(trials - counts, 1.0 - prob_tensor)
    )
    cdf = torch.exp(log_pmf).cumsum(0)
    return cdf / cdf[-1]


def sample_binomial(
    trials: int | torch.Tensor,
    prob: torch.Tensor,
    *,
    max_trials: int,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Draw one Binomial(trials, prob) count per element of ``prob``.

    Parameters
    ----------
    trials : int or torch.Tensor
        Number of trials: one int for all elements, or an integer tensor of the shape of
        ``prob`` with values in ``0..max_trials``.
    prob : torch.Tensor
        Success probability per element, in [0, 1].
    max_trials : int
        Upper bound on ``trials``; it sets the table size.
    generator : torch.Generator, optional
        Source of the uniforms; the same generator state gives the same counts.

    Returns
    -------
    torch.Tensor
        int64 counts with the shape of ``prob``.
    """
    prob_flat = prob.reshape(-1).to(torch.float64)
    if isinstance(trials, int):
        trials_flat = torch.full_like(prob_flat, float(trials))
    else:
        trials_flat = trials.reshape(-1).to(torch.float64)
    uniforms = torch.rand(prob_flat.shape, generator=generator, dtype=torch.float64, device=prob.device)

    width = window_width(max_trials)
    chunk = max(1, MAX_TABLE_ELEMENTS // width)
    counts = torch.empty(prob_flat.shape, dtype=torch.int64, device=prob.device)
    for start in range(0, prob_flat.numel(), chunk):
        stop = start + chunk
        counts[start:stop] = _invert_window(
            trials_flat[start:stop], prob_flat[start:stop], uniforms[start:stop], max_trials, width
        )
    return counts.reshape(prob.shape)


def _invert_window(
    trials: torch.Tensor, prob: torch.Tensor, uniforms: torch.Tensor, max_trials: int, width: int
) -> torch.Tensor:
    offsets = torch.arange(width, dtype=torch.float64, device=prob.device)
    if width == max_trials + 1:
        low = torch.zeros_like(prob)
    else:
        half_width = (width - 2) / 2
        low = torch.floor(trials * prob - half_width)
        low = torch.minimum(low, trials - (width - 1)).clamp_min(0.0)
    counts = low.unsqueeze(1) + offsets
    failures = trials.unsqueeze(1) - counts
    valid = failures >= 0

    log_factorials = _log_factorials(max_trials).to(prob.device)
    log_choose = (
        log_factorials[trials.long()].unsqueeze(1)
        - log_factorials[counts.long().clamp_max(max_trials)]
        - log_factorials[failures.long().clamp(0, max_trials)]
    )
    log_pmf = log_choose + torch.xlogy(counts, prob.unsqueeze(1)) + torch.xlogy(failures.clamp_min(0.0), 1.0 - prob.unsqueeze(1))
    pmf = torch.where(valid, torch.exp(log_pmf), 0.0)

    cdf = pmf.cumsum(1)
    targets = uniforms.unsqueeze(1) * cdf[:, -1:]
    # A uniform within 2**-53 of 1 can round ``targets`` up to the total, so the index is
    # clamped to the last count that has probability mass.
    index = torch.searchsorted(cdf, targets, right=True).squeeze(1).clamp_max(width - 1)
    return torch.minimum(low.long() + index, trials.long())
