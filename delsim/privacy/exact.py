"""Exact privacy accounting of the DEL stochastic quantizer from its privacy-loss distribution.

Each round of each coordinate outputs +B, 0 or -B. For neighbouring inputs
x = c and x' = -c the three outputs have probabilities

    under x = c:   p q,        1 - p,  p (1 - q)
    under x' = -c: p (1 - q),  1 - p,  p q

with q = (A + c) / (2A), so their likelihood ratios are e^L, 1 and e^-L with
L = ln((A + c) / (A - c)). Over N = releases * R * d independent rounds the
privacy loss is L * (K+ - K-), where (K+, K-, K0) is multinomial. For p = 1,
K+ is Binomial(N, q) and K- = N - K+. For p < 1 the nonzero count M is
Binomial(N, p) and K+ given M = m is Binomial(m, q). Everything below is
computed from these binomial tails, with no normal approximation.

Worst pair. Every pair (x, x') in [-c, c] is a post-processing of (c, -c) by
one kernel: keep 0, map +B to +B with probability alpha (else -B) and -B to +B
with probability beta, where alpha - beta = (x - x') / (2c) and
alpha + beta = 1 + (x + x') / (2A). Both lie in [0, 1] whenever |x|, |x'| <= c
<= A. Applied independently to every round and coordinate it turns the
releases for (c, -c) into those for (x, x'), so (c, -c) on every coordinate
has the largest hockey-stick divergence of all neighbouring pairs. Swapping
the pair negates the loss and swaps the two distributions, which leaves the
loss distribution unchanged: the PLD is symmetric and delta(epsilon) is the
same in both directions (tests check both directions with dp_accounting).
"""

from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import brentq
from scipy.special import bdtrc
from scipy.stats import binom

from delsim.mechanism import StochasticQuantizer
from delsim.privacy.gdp import gdp_epsilon

logger = logging.getLogger(__name__)

# Probability mass of the nonzero-round count M left out on each side for p < 1.
# The left-out mass is added to delta, so the result stays an upper bound.
_TAIL_MASS = 1e-24


@dataclass(frozen=True)
class QuantizerLoss:
    """Parameters of the quantizer's privacy-loss distribution for the pair (c, -c).

    Attributes
    ----------
    loss_step
        L = ln((A + c) / (A - c)), the loss of one +B round; inf when A = c.
    rounds
        N = releases * R * d, the number of independent rounds.
    keep
        Sparsity p, the probability that a round is nonzero.
    plus
        q = (A + c) / (2A), the probability that a nonzero round is +B under x = c.
    """

    loss_step: float
    rounds: int
    keep: float
    plus: float

    @classmethod
    def of(cls, *, bits: int, mu: float, clip: float, dim: int, sparsity: float = 1.0, releases: int = 1) -> QuantizerLoss:
        """Build the loss parameters of ``releases`` tokens through ``StochasticQuantizer(bits, mu, clip, dim, sparsity)``.

        Raises
        ------
        ValueError
            If the quantizer settings are invalid (including A < clip) or ``releases < 1``.
        """
        if not isinstance(releases, (int, np.integer)) or releases < 1:
            raise ValueError(f"releases must be an integer >= 1, got {releases!r}; it counts the tokens that compose.")
        quantizer = StochasticQuantizer(bits, mu, clip, dim, sparsity=sparsity)
        ratio = quantizer.clip / quantizer.A
        loss_step = math.log1p(ratio) - math.log1p(-ratio) if ratio < 1.0 else math.inf
        return cls(
            loss_step=loss_step,
            rounds=int(releases) * quantizer.rounds * quantizer.dim,
            keep=quantizer.sparsity,
            plus=0.5 + 0.5 * ratio,
        )

    @property
    def max_loss(self) -> float:
        """Largest finite privacy loss, L * N."""
        return self.loss_step * self.rounds

    def delta(self, epsilon: float) -> float:
        """Compute delta(epsilon) = E_P[(1 - e^(epsilon - loss))_+] exactly."""
        if epsilon < 0.0 or math.isnan(epsilon):
            raise ValueError(f"epsilon must be a number >= 0, got {epsilon!r}.")
        if math.isinf(self.loss_step):
            # A = c: a nonzero round reveals the sign of x, so the loss is 0 or infinite.
            return -math.expm1(self.rounds * math.log1p(-self.keep)) if self.keep < 1.0 else 1.0
        if epsilon >= self.max_loss:
            return 0.0

        threshold = epsilon / self.loss_step
        if self.keep == 1.0:
            trials = np.array([self.rounds], dtype=np.int64)
            last_below = np.floor((trials + threshold) / 2.0)
            tail_p = bdtrc(last_below, trials, self.plus)
            tail_q = bdtrc(last_below, trials, 1.0 - self.plus)
            return float(_tail_difference(tail_p, tail_q, epsilon)[0])

        counts, weights, left_out = _nonzero_counts(self.rounds, self.keep)
        last_below = np.floor((counts + threshold) / 2.0)
        tail_p = _chained_tails(counts, last_below, self.plus)
        tail_q = _chained_tails(counts, last_below, 1.0 - self.plus)
        terms = _tail_difference(tail_p, tail_q, epsilon)
        return float(min(1.0, np.dot(weights, terms) + left_out))

    def epsilon(self, delta: float) -> float:
        """Compute the smallest epsilon with delta(epsilon) <= ``delta`` (Brent's method on ln delta)."""
        if not 0.0 < delta < 1.0:
            raise ValueError(f"delta must lie in (0, 1), got {delta!r}.")
        if self.delta(0.0) <= delta:
            return 0.0
        if math.isinf(self.loss_step):
            return math.inf

        log_target = math.log(delta)

        def excess(epsilon: float) -> float:
            value = self.delta(epsilon)
            return (math.log(value) if value > 0.0 else -800.0) - log_target

        # The loss has variance about N p L^2, so mu is about sqrt(N p) L in the
        # central limit. The search starts from twice that GDP epsilon and widens.
        approximate_mu = max(math.sqrt(self.rounds * self.keep) * self.loss_step, 1e-12)
        upper = min(self.max_loss, 2.0 * gdp_epsilon(delta, approximate_mu) + 1.0)
        while excess(upper) > 0.0 and upper < self.max_loss:
            upper = min(self.max_loss, 2.0 * upper)
        return float(brentq(excess, 0.0, upper, xtol=1e-10, rtol=1e-12, maxiter=200))


def _tail_difference(tail_p: np.ndarray, tail_q: np.ndarray, epsilon: float) -> np.ndarray:
    """Compute tail_p - e^epsilon tail_q, the part of delta that one tail pair contributes.

    ``tail_p`` and ``tail_q`` are P(K+ - K- > epsilon / L) under x = c and
    x' = -c. The difference is formed as tail_p * (1 - exp(epsilon + ln tail_q
    - ln tail_p)), which stays finite for epsilon above 709, is never
    negative and keeps its relative accuracy when the two terms are close.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        exponent = np.minimum(epsilon + np.log(tail_q) - np.log(tail_p), 0.0)
        result = tail_p * -np.expm1(exponent)
    # An empty tail under x = c contributes nothing; the logarithms above give nan there.
    return np.where(tail_p > 0.0, result, 0.0)


def _chained_tails(trials: np.ndarray, last_below: np.ndarray, success: float, block: int = 256) -> np.ndarray:
    """Compute P(Binomial(trials[i], success) > last_below[i]) for consecutive trials with thresholds rising by 1 per 2 trials.

    Along each parity class of ``trials`` (n, n + 2, n + 4, ...) the threshold
    k rises by one per step, and with B ~ Binomial(n, s)

        P(Binomial(n + 2, s) > k + 1) = P(B > k) + s^2 P(B = k) - (1 - s)^2 P(B = k + 1).

    The tail is computed exactly with ``bdtrc`` at every ``block``-th element and
    carried to the others by this recurrence, which costs two binomial pmfs per
    element instead of an incomplete beta function (about 20 times cheaper at
    n = 1.6e7). The sums restart at every exact value, so rounding error stays
    near machine precision relative to the pmfs.
    """
    tails = np.empty(len(trials), dtype=np.float64)
    for parity in (0, 1):
        chain_trials = trials[parity::2].astype(np.int64)
        chain_last = last_below[parity::2]
        size = len(chain_trials)
        if size == 0:
            continue

        steps = success**2 * binom.pmf(chain_last, chain_trials, success)
        steps -= (1.0 - success) ** 2 * binom.pmf(chain_last + 1.0, chain_trials, success)
        anchors = np.arange(0, size, block)
        # bdtrc returns nan instead of 0 when the threshold is at or above the trials.
        anchor_last, anchor_trials = chain_last[anchors], chain_trials[anchors]
        with np.errstate(invalid="ignore"):
            exact = np.where(anchor_last >= anchor_trials, 0.0, bdtrc(anchor_last, anchor_trials, success))

        padded = np.zeros(len(anchors) * block)
        padded[:size] = steps
        within = np.cumsum(padded.reshape(len(anchors), block), axis=1)
        carried = np.concatenate([np.zeros((len(anchors), 1)), within[:, :-1]], axis=1)
        chain_tails = (exact[:, None] + carried).reshape(-1)[:size]
        tails[parity::2] = np.clip(chain_tails, 0.0, 1.0)
    return tails


@functools.lru_cache(maxsize=64)
def _nonzero_counts(rounds: int, keep: float) -> tuple[np.ndarray, np.ndarray, float]:
    """Return the likely values of M ~ Binomial(rounds, keep), their probabilities and the mass left out."""
    # scipy 1.17's binom.isf returns n for tail masses this small, so the upper
    # end comes from the lower quantile of the complementary count N - M.
    low = int(binom.ppf(_TAIL_MASS, rounds, keep))
    high = rounds - int(binom.ppf(_TAIL_MASS, rounds, 1.0 - keep))
    counts = np.arange(low, high + 1)
    weights = binom.pmf(counts, rounds, keep)
    left_out = float(binom.cdf(low - 1, rounds, keep) + binom.sf(high, rounds, keep))
    return counts, weights, left_out


def exact_delta(
    epsilon: float, *, bits: int, mu: float, clip: float, dim: int, sparsity: float = 1.0, releases: int = 1
) -> float:
    """Compute the exact delta(epsilon) of ``releases`` tokens through the stochastic quantizer.

    Parameters
    ----------
    epsilon
        Privacy loss bound, >= 0.
    bits, mu, clip, dim, sparsity
        Settings of :class:`delsim.mechanism.StochasticQuantizer`; mu is the GDP
        parameter one token is calibrated to.
    releases
        Number of tokens whose releases compose (>= 1).

    Returns
    -------
    float
        delta in [0, 1] for the worst neighbouring pair. For sparsity < 1 it
        includes up to 2e-24 of left-out binomial mass, so it is an upper bound
        within that amount.
    """
    loss = QuantizerLoss.of(bits=bits, mu=mu, clip=clip, dim=dim, sparsity=sparsity, releases=releases)
    return loss.delta(float(epsilon))


def exact_epsilon(
    delta: float, *, bits: int, mu: float, clip: float, dim: int, sparsity: float = 1.0, releases: int = 1
) -> float:
    """Compute the exact epsilon at ``delta`` of ``releases`` tokens through the stochastic quantizer.

    Parameters are those of :func:`exact_delta`; ``delta`` lies in (0, 1).

    Returns
    -------
    float
        The smallest epsilon with ``exact_delta(epsilon) <= delta`` to about
        1e-10; inf when A = c and delta is below the chance of a nonzero round.
        Results are cached per argument set, because a run report requests the
        same (settings, releases) for many users.
    """
    return _cached_epsilon(float(delta), bits, mu, clip, dim, sparsity, releases)


@functools.lru_cache(maxsize=4096)
def _cached_epsilon(delta: float, bits: int, mu: float, clip: float, dim: int, sparsity: float, releases: int) -> float:
    loss = QuantizerLoss.of(bits=bits, mu=mu, clip=clip, dim=dim, sparsity=sparsity, releases=releases)
    return loss.epsilon(delta)


@dataclass(frozen=True)
class GdpComparison:
    """Epsilon of the quantizer by the GDP approximation and exactly, at one delta.

    Attributes
    ----------
    delta
        Target delta.
    mu_composed
        GDP parameter of the composition, mu * sqrt(releases).
    epsilon_gdp
        Closed-form epsilon of mu_composed-GDP.
    epsilon_exact
        Exact epsilon of the quantizer.
    gdp_understates
        True when epsilon_exact > epsilon_gdp: the GDP approximation reports
        less privacy loss than the mechanism has.
    """

    delta: float
    mu_composed: float
    epsilon_gdp: float
    epsilon_exact: float

    @property
    def gdp_understates(self) -> bool:
        """Whether the exact epsilon exceeds the GDP one."""
        return self.epsilon_exact > self.epsilon_gdp

    @property
    def relative_gap(self) -> float:
        """(epsilon_exact - epsilon_gdp) / epsilon_gdp; positive where GDP understates."""
        if self.epsilon_gdp == 0.0:
            return math.inf if self.epsilon_exact > 0.0 else 0.0
        return (self.epsilon_exact - self.epsilon_gdp) / self.epsilon_gdp


def compare_with_gdp(
    delta: float, *, bits: int, mu: float, clip: float, dim: int, sparsity: float = 1.0, releases: int = 1
) -> GdpComparison:
    """Report the GDP epsilon of ``releases`` tokens next to the exact epsilon of the quantizer.

    Parameters are those of :func:`exact_epsilon`.
    """
    mu_composed = float(mu) * math.sqrt(releases)
    return GdpComparison(
        delta=float(delta),
        mu_composed=mu_composed,
        epsilon_gdp=gdp_epsilon(delta, mu_composed),
        epsilon_exact=exact_epsilon(delta, bits=bits, mu=mu, clip=clip, dim=dim, sparsity=sparsity, releases=releases),
    )
