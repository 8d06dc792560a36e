"""Tests of the exact accounting of the quantizer against dp_accounting and brute force."""

import itertools
import math
import time

import numpy as np
import pytest
from dp_accounting.pld import privacy_loss_distribution
from scipy.stats import binom

from delsim.mechanism import StochasticQuantizer
from delsim.privacy import QuantizerLoss, compare_with_gdp, exact_delta, exact_epsilon, gdp_epsilon

CASES = [
    {"bits": 2, "mu": 1.0, "clip": 0.05, "dim": 32},
    {"bits": 1, "mu": 2.0, "clip": 1.0, "dim": 8, "sparsity": 0.3, "releases": 2},
    {"bits": 4, "mu": 1.0, "clip": 0.05, "dim": 128, "sparsity": 0.5, "releases": 3},
    {"bits": 3, "mu": 4.0, "clip": 0.5, "dim": 16, "releases": 5},
]


def round_log_pmfs(loss: QuantizerLoss) -> tuple[dict[int, float], dict[int, float]]:
    """Per-round output log-probabilities under x = c and x' = -c, keyed by output sign."""
    p, q = loss.keep, loss.plus
    at_plus_c = {1: math.log(p * q), -1: math.log(p * (1.0 - q))}
    at_minus_c = {1: math.log(p * (1.0 - q)), -1: math.log(p * q)}
    if p < 1.0:
        at_plus_c[0] = at_minus_c[0] = math.log1p(-p)
    return at_plus_c, at_minus_c


def composed_pld(lower: dict, upper: dict, rounds: int):
    """dp_accounting PLD of ``rounds`` rounds, loss log(upper / lower) under upper.

    The discretization interval is the loss of a +1 output divided by 8, computed with
    the same subtraction dp_accounting does, so every loss is an exact multiple of it
    and the pessimistic rounding changes nothing.
    """
    interval = (upper[1] - lower[1]) / 8.0
    pld = privacy_loss_distribution.from_two_probability_mass_functions(
        lower, upper, value_discretization_interval=abs(interval), symmetric=True
    )
    return pld.self_compose(rounds)


@pytest.mark.parametrize("case", CASES)
def test_delta_matches_dp_accounting_both_directions(case):
    loss = QuantizerLoss.of(**case)
    at_plus_c, at_minus_c = round_log_pmfs(loss)
    forward = composed_pld(at_minus_c, at_plus_c, loss.rounds)  # loss of x = c against x' = -c
    backward = composed_pld(at_plus_c, at_minus_c, loss.rounds)  # loss of x' = -c against x = c

    for epsilon in (0.0, 0.5, 2.0, 4.0):
        ours = exact_delta(epsilon, **case)
        if ours < 1e-8:
            continue
        # dp_accounting truncates tails below 1e-15 in its FFT; above 1e-8 the two agree to 1e-9.
        assert forward.get_delta_for_epsilon(epsilon) == pytest.approx(ours, rel=1e-9)
        assert backward.get_delta_for_epsilon(epsilon) == pytest.approx(ours, rel=1e-9)


@pytest.mark.parametrize("case", CASES)
def test_epsilon_matches_dp_accounting(case):
    loss = QuantizerLoss.of(**case)
    at_plus_c, at_minus_c = round_log_pmfs(loss)
    forward = composed_pld(at_minus_c, at_plus_c, loss.rounds)

    assert exact_epsilon(1e-5, **case) == pytest.approx(forward.get_epsilon_for_delta(1e-5), abs=1e-7)


def test_explicit_count_pmfs_bracket_exact_epsilon():
    # PLD built from the composed output PMFs (counts of +B rounds), not by self-composition.
    case = {"bits": 3, "mu": 1.5, "clip": 0.1, "dim": 16, "releases": 4}
    loss = QuantizerLoss.of(**case)
    counts = np.arange(loss.rounds + 1)
    at_plus_c = dict(zip(counts.tolist(), binom.logpmf(counts, loss.rounds, loss.plus)))
    at_minus_c = dict(zip(counts.tolist(), binom.logpmf(counts, loss.rounds, 1.0 - loss.plus)))
    interval = loss.loss_step / 1000.0

    pessimistic = privacy_loss_distribution.from_two_probability_mass_functions(
        at_minus_c, at_plus_c, pessimistic_estimate=True, value_discretization_interval=interval
    )
    optimistic = privacy_loss_distribution.from_two_probability_mass_functions(
        at_minus_c, at_plus_c, pessimistic_estimate=False, value_discretization_interval=interval
    )
    epsilon = exact_epsilon(1e-5, **case)

    # Rounding each loss by at most one interval moves epsilon by at most one interval.
    assert optimistic.get_epsilon_for_delta(1e-5) - interval <= epsilon
    assert epsilon <= pessimistic.get_epsilon_for_delta(1e-5) + 1e-9
    assert pessimistic.get_epsilon_for_delta(1e-5) - optimistic.get_epsilon_for_delta(1e-5) <= 2 * interval


def output_distribution(x: float, quantizer: StochasticQuantizer) -> dict[tuple[int, int], float]:
    """Probability of each (plus count, minus count) of one coordinate's R rounds, by enumeration."""
    p, rounds = quantizer.sparsity, quantizer.rounds
    probabilities = {1: p * (0.5 + x / (2 * quantizer.A)), -1: p * (0.5 - x / (2 * quantizer.A)), 0: 1.0 - p}
    distribution: dict[tuple[int, int], float] = {}
    for outputs in itertools.product((1, 0, -1), repeat=rounds):
        key = (outputs.count(1), outputs.count(-1))
        distribution[key] = distribution.get(key, 0.0) + math.prod(probabilities[o] for o in outputs)
    return distribution


def hockey_stick(first: dict, second: dict, epsilon: float) -> float:
    """sum over outputs of (first - e^epsilon second)_+."""
    return sum(max(0.0, mass - math.exp(epsilon) * second.get(key, 0.0)) for key, mass in first.items())


@pytest.mark.parametrize("sparsity", [1.0, 0.6])
def test_brute_force_single_coordinate(sparsity):
    quantizer = StochasticQuantizer(2, 1.5, 1.0, 1, sparsity=sparsity)
    at_plus_c = output_distribution(1.0, quantizer)
    at_minus_c = output_distribution(-1.0, quantizer)

    for epsilon in (0.0, 0.3, 1.0, 2.0):
        forward = hockey_stick(at_plus_c, at_minus_c, epsilon)
        backward = hockey_stick(at_minus_c, at_plus_c, epsilon)
        expected = exact_delta(epsilon, bits=2, mu=1.5, clip=1.0, dim=1, sparsity=sparsity)
        assert forward == pytest.approx(expected, rel=1e-12, abs=1e-15)
        # The loss distribution is symmetric: both directions give the same delta.
        assert backward == pytest.approx(forward, rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("sparsity", [1.0, 0.6])
def test_opposite_clip_values_are_worst_pair(sparsity):
    quantizer = StochasticQuantizer(2, 1.5, 1.0, 1, sparsity=sparsity)
    grid = np.linspace(-1.0, 1.0, 9)
    distributions = {x: output_distribution(x, quantizer) for x in grid}

    for epsilon in (0.0, 0.5, 1.5):
        worst = hockey_stick(distributions[1.0], distributions[-1.0], epsilon)
        for x, x_prime in itertools.product(grid, grid):
            assert hockey_stick(distributions[x], distributions[x_prime], epsilon) <= worst + 1e-15


def test_delta_decreases_and_inverts():
    case = {"bits": 2, "mu": 2.0, "clip": 0.05, "dim": 32, "sparsity": 0.4, "releases": 2}
    deltas = [exact_delta(epsilon, **case) for epsilon in np.linspace(0.0, 20.0, 41)]
    assert all(later <= earlier for earlier, later in zip(deltas, deltas[1:]))

    for delta in (1e-2, 1e-5, 1e-9):
        epsilon = exact_epsilon(delta, **case)
        assert exact_delta(epsilon, **case) == pytest.approx(delta, rel=1e-6)


def test_sparse_path_approaches_dense_path():
    dense = exact_epsilon(1e-5, bits=4, mu=1.0, clip=0.05, dim=32)
    nearly_dense = exact_epsilon(1e-5, bits=4, mu=1.0, clip=0.05, dim=32, sparsity=1.0 - 1e-9)
    assert nearly_dense == pytest.approx(dense, rel=1e-6)


def test_exact_approaches_gdp_as_rounds_grow():
    # mu = 1 per token, delta = 1e-5. One round of one coordinate (n = 1, d = 1) is
    # randomized response with loss L = 0.96, so the exact epsilon stays below L while
    # GDP reports 4.38. As R * d grows, the per-round loss shrinks and the central limit
    # theorem makes the mechanism close to 1-GDP.
    settings = [(1, 1), (1, 8), (2, 32), (4, 128), (8, 128)]
    gaps = []
    for bits, dim in settings:
        comparison = compare_with_gdp(1e-5, bits=bits, mu=1.0, clip=0.05, dim=dim)
        gaps.append(abs(comparison.relative_gap))

    assert all(later < earlier for earlier, later in zip(gaps, gaps[1:]))
    assert gaps[0] > 0.5
    assert gaps[-1] < 1e-4


def test_gdp_overstates_dense_small_rounds():
    comparison = compare_with_gdp(1e-5, bits=1, mu=1.0, clip=1.0, dim=1)
    assert comparison.epsilon_exact < comparison.epsilon_gdp
    assert not comparison.gdp_understates
    assert comparison.epsilon_exact <= QuantizerLoss.of(bits=1, mu=1.0, clip=1.0, dim=1).loss_step


def test_gdp_understates_sparse_and_large_delta():
    # With sparsity 0.3 a nonzero round carries a larger loss than the CLT assigns.
    sparse = compare_with_gdp(1e-5, bits=1, mu=2.0, clip=1.0, dim=32, sparsity=0.3)
    assert sparse.gdp_understates
    assert sparse.epsilon_exact > sparse.epsilon_gdp

    # At delta = 0.3 even the dense single round is less private than 1-GDP claims.
    large_delta = compare_with_gdp(0.3, bits=1, mu=1.0, clip=1.0, dim=1)
    assert large_delta.gdp_understates


def test_composition_matches_single_token_with_more_rounds():
    # releases tokens compose like one token with releases times the coordinates.
    composed = exact_epsilon(1e-5, bits=2, mu=1.0, clip=0.05, dim=16, releases=4)
    loss = QuantizerLoss.of(bits=2, mu=1.0, clip=0.05, dim=16, releases=4)
    assert loss.rounds == 4 * 3 * 16
    assert composed > exact_epsilon(1e-5, bits=2, mu=1.0, clip=0.05, dim=16)
    assert composed == pytest.approx(gdp_epsilon(1e-5, 2.0), rel=0.05)


def test_fast_for_thousand_tokens():
    start = time.perf_counter()
    epsilon = exact_epsilon(1e-5, bits=8, mu=0.05, clip=0.05, dim=128, releases=1000)
    elapsed = time.perf_counter() - start

    assert epsilon == pytest.approx(gdp_epsilon(1e-5, 0.05 * math.sqrt(1000)), rel=1e-3)
    # Measured at about 10 ms on a shared 2-core CPU; the bound leaves room for load.
    assert elapsed < 5.0


def test_invalid_settings_raise():
    with pytest.raises(ValueError, match="below clip"):
        exact_epsilon(1e-5, bits=1, mu=4.0, clip=1.0, dim=32, sparsity=0.05)
    with pytest.raises(ValueError, match="releases"):
        exact_delta(1.0, bits=1, mu=1.0, clip=1.0, dim=1, releases=0)
    with pytest.raises(ValueError, match="delta"):
        exact_epsilon(0.0, bits=1, mu=1.0, clip=1.0, dim=1)
    with pytest.raises(ValueError, match="epsilon"):
        exact_delta(-1.0, bits=1, mu=1.0, clip=1.0, dim=1)
