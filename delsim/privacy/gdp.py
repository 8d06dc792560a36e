"""Closed forms of mu-Gaussian differential privacy (mu-GDP).

Formulas from Dong, Roth and Su (2019), "Gaussian Differential Privacy",
arXiv 1905.02383: composition of mu_i-GDP mechanisms is sqrt(sum mu_i^2)-GDP,
and a mu-GDP mechanism is (epsilon, delta(epsilon))-DP for every epsilon >= 0
with

    delta(epsilon) = Phi(-epsilon/mu + mu/2) - e^epsilon Phi(-epsilon/mu - mu/2).

Everything here works in log space with
``scipy.special.log_ndtr`` so that mu = 50, epsilon = 1000 or delta = 1e-300
stay finite and accurate.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping

import numpy as np
from scipy.optimize import brentq
from scipy.special import log_ndtr

logger = logging.getLogger(__name__)

# Relative tolerance of the root finders; brentq reaches it in well under 100 steps.
_ROOT_RTOL = 1e-12


def _check_mu(mu: float, name: str = "mu") -> float:
    mu = float(mu)
    if not (mu > 0.0 and math.isfinite(mu)):
        raise ValueError(f"{name} must be a finite number > 0, got {mu!r}; pass a positive GDP parameter.")
    return mu


def _check_epsilon(epsilon: float) -> float:
    epsilon = float(epsilon)
    if not (epsilon >= 0.0 and math.isfinite(epsilon)):
        raise ValueError(f"epsilon must be a finite number >= 0, got {epsilon!r}.")
    return epsilon


def _check_delta(delta: float) -> float:
    delta = float(delta)
    if not 0.0 < delta < 1.0:
        raise ValueError(f"delta must lie in (0, 1), got {delta!r}; typical values are 1e-5 to 1e-10.")
    return delta


def compose_mu(mus: Iterable[float]) -> float:
    """Compose GDP parameters: the result of running all mechanisms is sqrt(sum mu_i^2)-GDP.

    Parameters
    ----------
    mus
        GDP parameters of the composed mechanisms, each > 0.

    Returns
    -------
    float
        The GDP parameter of the composition; 0.0 for an empty input.
    """
    total = 0.0
    for mu in mus:
        total += _check_mu(mu) ** 2
    return math.sqrt(total)


def compose_mu_counts(counts: Mapping[float, int]) -> float:
    """Compose ``count`` releases at each GDP parameter: sqrt(sum count * mu^2).

    Parameters
    ----------
    counts
        Map from a GDP parameter (> 0) to the number of releases at it (>= 0).

    Returns
    -------
    float
        The GDP parameter of the composition; 0.0 when there are no releases.
    """
    total = 0.0
    for mu, count in counts.items():
        if count < 0:
            raise ValueError(f"release count for mu={mu!r} must be >= 0, got {count!r}.")
        total += count * _check_mu(mu) ** 2
    return math.sqrt(total)


def gdp_log_delta(epsilon: float, mu: float) -> float:
    """Compute ln delta(epsilon) of a mu-GDP mechanism.

    Both terms of delta(epsilon) are computed as logarithms,
    ``a = log Phi(-epsilon/mu + mu/2)`` and ``b = epsilon + log Phi(-epsilon/mu - mu/2)``,
    and combined as ``a + log(-expm1(b - a))``, so no term overflows or cancels
    to zero before the subtraction.

    Parameters
    ----------
    epsilon
        Privacy loss bound, >= 0.
    mu
        GDP parameter, > 0.

    Returns
    -------
    float
        ln delta; ``-inf`` when delta underflows even in log space.
    """
    epsilon = _check_epsilon(epsilon)
    mu = _check_mu(mu)
    log_first = float(log_ndtr(-epsilon / mu + mu / 2.0))
    log_second = epsilon + float(log_ndtr(-epsilon / mu - mu / 2.0))
    difference = log_second - log_first
    if difference >= 0.0:
        # delta(epsilon) > 0 for every finite epsilon; a non-negative difference is
        # rounding error at a delta far below anything representable.
        return -math.inf
    return log_first + math.log(-math.expm1(difference))


def gdp_delta(epsilon: float, mu: float) -> float:
    """Compute delta(epsilon) of a mu-GDP mechanism.

    delta(epsilon) = Phi(-epsilon/mu + mu/2) - e^epsilon Phi(-epsilon/mu - mu/2)
    (Dong, Roth and Su 2019). Arguments are those of :func:`gdp_log_delta`.
    The result underflows to 0.0 below about 1e-308, where
    :func:`gdp_log_delta` still returns a finite logarithm.
    """
    return math.exp(gdp_log_delta(epsilon, mu))


def gdp_epsilon(delta: float, mu: float) -> float:
    """Compute the smallest epsilon such that a mu-GDP mechanism is (epsilon, delta)-DP.

    Solves ``ln delta(epsilon) = ln delta`` for epsilon with Brent's method;
    ln delta(epsilon) is strictly decreasing in epsilon.

    Parameters
    ----------
    delta
        Target delta in (0, 1).
    mu
        GDP parameter, > 0.

    Returns
    -------
    float
        epsilon >= 0; 0.0 when delta(0) = 2 Phi(mu/2) - 1 is already <= delta.
    """
    delta = _check_delta(delta)
    mu = _check_mu(mu)
    log_target = math.log(delta)

    def excess(epsilon: float) -> float:
        return gdp_log_delta(epsilon, mu) - log_target

    if excess(0.0) <= 0.0:
        return 0.0

    # The loss of a mu-GDP mechanism is N(mu^2/2, mu^2), so epsilon stays below
    # mu^2/2 + mu * sqrt(2 ln(1/delta)) + 1; doubling covers any rounding slack.
    upper = mu * mu / 2.0 + mu * math.sqrt(2.0 * -log_target) + 1.0
    while excess(upper) > 0.0:
        upper *= 2.0
    return float(brentq(excess, 0.0, upper, xtol=1e-14, rtol=_ROOT_RTOL, maxiter=500))


def gdp_mu(epsilon: float, delta: float) -> float:
    """Compute the largest mu such that a mu-GDP mechanism is (epsilon, delta)-DP.

    Inverse of :func:`gdp_delta` in mu, which is strictly increasing in mu. The
    result is rounded down so that ``gdp_delta(epsilon, result) <= delta`` is
    true in floating point, so a budget check against it never lets a mechanism exceed
    (epsilon, delta).

    Parameters
    ----------
    epsilon
        Privacy loss bound, >= 0.
    delta
        Target delta in (0, 1).

    Returns
    -------
    float
        The GDP parameter mu > 0.
    """
    epsilon = _check_epsilon(epsilon)
    delta = _check_delta(delta)
    log_target = math.log(delta)

    def excess(log_mu: float) -> float:
        return gdp_log_delta(epsilon, math.exp(log_mu)) - log_target

    low, high = -1.0, 1.0
    while excess(low) > 0.0:
        low *= 2.0
    while excess(high) < 0.0:
        high *= 2.0
    mu = math.exp(brentq(excess, low, high, xtol=1e-15, rtol=_ROOT_RTOL, maxiter=500))

    while gdp_log_delta(epsilon, mu) > log_target:
        mu = float(np.nextafter(mu, 0.0)) * (1.0 - 1e-13)
    return mu
