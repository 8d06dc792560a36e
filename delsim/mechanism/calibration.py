"""Calibration of the quantizer's mu to a target attack success rate by seeded bisection."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import torch

from delsim.mechanism.attack import attack_success_rate, inversion_attack, wilson_interval
from delsim.mechanism.projection import Projection
from delsim.mechanism.quantizer import StochasticQuantizer
from delsim.mechanism.validation import check_int_range, check_positive

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CalibrationResult:
    """Outcome of :func:`calibrate_mu`.

    Attributes
    ----------
    mu : float
        Calibrated GDP parameter of one token.
    asr : float
        Attack success rate measured at ``mu``.
    ci_low, ci_high : float
        95% Wilson interval of that rate over ``num_tokens`` tokens.
    iterations : int
        Bisection steps taken after evaluating both bounds.
    num_tokens : int
        Tokens attacked per evaluation.
    converged : bool
        Whether ``|asr - target| <= tol`` was reached within ``max_iter`` steps.
    history : list of tuple
        Every evaluated ``(mu, asr)``, in order.
    """

    mu: float
    asr: float
    ci_low: float
    ci_high: float
    iterations: int
    num_tokens: int
    converged: bool
    history: list[tuple[float, float]] = field(default_factory=list)


def calibrate_mu(
    target_asr: float,
    *,
    projection: Projection,
    embedding_table: torch.Tensor,
    token_ids: torch.Tensor,
    bits: int,
    clip: float,
    sparsity: float = 1.0,
    seed: int = 0,
    low: float = 1e-2,
    high: float = 1e4,
    tol: float = 0.005,
    max_iter: int = 40,
) -> CalibrationResult:
    """Find the mu at which the inversion attack recovers ``target_asr`` of the tokens.

    The attack input is ``W_dec(privatize(clip(W_enc e)))`` for each token embedding ``e``. The
    rate grows with mu, so the search bisects ``log(mu)`` between ``low`` and ``high``.
    Every evaluation draws the mechanism noise from a generator seeded with ``seed``, so
    evaluations share their random numbers and the rate moves with mu only.

    Parameters
    ----------
    target_asr : float
        Target attack success rate in (0, 1).
    projection : Projection
        Encoder and decoder.
    embedding_table : torch.Tensor
        Input embedding table ``(V, D)``; the attack searches all of it.
    token_ids : torch.Tensor
        Ids of the tokens to privatize and attack.
    bits : int
        Quantizer bits n.
    clip : float
        Clipping bound c.
    sparsity : float, default 1.0
        Quantizer sparsity p.
    seed : int, default 0
        Seed of the mechanism noise.
    low, high : float
        Bracket of mu; ``high`` is lowered to the largest valid mu when sparsity < 1.
    tol : float, default 0.005
        Accepted absolute distance between the measured and the target rate.
    max_iter : int, default 40
        Maximum bisection steps.

    Returns
    -------
    CalibrationResult
        The evaluated mu closest to the target, with its rate and interval.

    Raises
    ------
    ValueError
        If the arguments are invalid or the bracket does not contain the target.
    """
    _check_target(target_asr, tol)
    low, high = check_positive("low", low), _highest_valid_mu(check_positive("high", high), bits, projection.dim, sparsity)
    if not low < high:
        raise ValueError(f"low={low} must be below high={high} (high is capped at the largest valid mu for this sparsity)")
    check_int_range("max_iter", max_iter, 0)

    ids = token_ids.reshape(-1).long()
    with torch.no_grad():
        coordinates = projection.encode(embedding_table[ids]).clamp(-clip, clip)
    history: list[tuple[float, float]] = []

    def evaluate(mu: float) -> float:
        quantizer = StochasticQuantizer(bits, mu, clip, projection.dim, sparsity)
        generator = torch.Generator(device=coordinates.device).manual_seed(seed)
        with torch.no_grad():
            decoded = projection.decode(quantizer.privatize(coordinates, generator=generator))
        asr = attack_success_rate(inversion_attack(decoded, embedding_table), ids)
        history.append((mu, asr))
        logger.debug("calibration mu=%.6g asr=%.4f", mu, asr)
        return asr

    asr_low, asr_high = evaluate(low), evaluate(high)
    if target_asr < asr_low - tol or target_asr > asr_high + tol:
        raise ValueError(
            f"target_asr={target_asr} is outside the rates reached in the bracket: "
            f"{asr_low:.4f} at low={low:.6g} and {asr_high:.4f} at high={high:.6g}; widen low/high"
        )

    iterations = 0
    while iterations < max_iter and min(abs(asr - target_asr) for _, asr in history) > tol:
        middle = math.sqrt(low * high)
        if evaluate(middle) < target_asr:
            low = middle
        else:
            high = middle
        iterations += 1

    mu, asr = min(history, key=lambda entry: abs(entry[1] - target_asr))
    successes = round(asr * ids.numel())
    ci_low, ci_high = wilson_interval(successes, ids.numel())
    converged = abs(asr - target_asr) <= tol
    logger.info("calibrated mu=%.6g asr=%.4f target=%.4f after %d steps (converged=%s)", mu, asr, target_asr, iterations, converged)
    return CalibrationResult(mu, asr, ci_low, ci_high, iterations, ids.numel(), converged, history)


def _check_target(target_asr: float, tol: float) -> None:
    if not 0.0 < target_asr < 1.0:
        raise ValueError(f"target_asr must be in (0, 1), got {target_asr}")
    check_positive("tol", tol)


def _highest_valid_mu(high: float, bits: int, dim: int, sparsity: float) -> float:
    """Cap ``high`` where ``A >= clip`` still holds; it fails above ``2 sqrt(R d) / sqrt(1/p - 1)``."""
    if sparsity >= 1.0:
        return high
    rounds = (1 << bits) - 1
    limit = 2.0 * math.sqrt(rounds * dim) / math.sqrt(1.0 / sparsity - 1.0)
    return min(high, limit * (1.0 - 1e-9))
