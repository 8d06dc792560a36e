"""Tests of the mu-GDP closed forms against high-precision references and dp_accounting."""

import math

import numpy as np
import pytest
from dp_accounting.pld import privacy_loss_distribution
from scipy.stats import norm

from delsim.privacy import compose_mu, compose_mu_counts, gdp_delta, gdp_epsilon, gdp_log_delta, gdp_mu

mpmath = pytest.importorskip("mpmath")
mpmath.mp.dps = 60


def reference_delta(epsilon: float, mu: float) -> "mpmath.mpf":
    """delta(epsilon) of mu-GDP at 60 significant digits."""
    epsilon, mu = mpmath.mpf(epsilon), mpmath.mpf(mu)
    return mpmath.ncdf(-epsilon / mu + mu / 2) - mpmath.exp(epsilon) * mpmath.ncdf(-epsilon / mu - mu / 2)


@pytest.mark.parametrize(
    ("epsilon", "mu"),
    [(0.0, 0.5), (0.5, 0.5), (1.0, 1.0), (4.0, 1.0), (10.0, 2.0), (20.0, 0.3), (1000.0, 50.0), (2000.0, 50.0), (30.0, 0.05)],
)
def test_delta_matches_high_precision(epsilon, mu):
    expected = reference_delta(epsilon, mu)
    log_expected = float(mpmath.log(expected))

    # Relative accuracy of ln delta is limited by log_ndtr and one expm1, about 1e-12.
    assert gdp_log_delta(epsilon, mu) == pytest.approx(log_expected, rel=1e-10, abs=1e-12)
    if expected > mpmath.mpf("1e-300"):
        assert gdp_delta(epsilon, mu) == pytest.approx(float(expected), rel=1e-9)


def test_delta_large_mu_and_epsilon_stays_finite():
    # mu = 50, epsilon = 1000: e^epsilon overflows float64, the log-space form does not.
    delta = gdp_delta(1000.0, 50.0)
    assert math.isfinite(delta)
    assert 0.0 < delta < 1.0
    assert delta == pytest.approx(float(reference_delta(1000.0, 50.0)), rel=1e-12)


def test_delta_tiny_values_keep_their_logarithm():
    # delta(40, 1) is about 1e-350, below the smallest float64; its log is still exact.
    log_delta = gdp_log_delta(40.0, 1.0)
    assert math.isfinite(log_delta)
    assert log_delta == pytest.approx(float(mpmath.log(reference_delta(40.0, 1.0))), rel=1e-10)
    assert gdp_delta(40.0, 1.0) == 0.0


def test_delta_agrees_with_plain_formula():
    for mu in (0.2, 1.0, 3.0):
        for epsilon in (0.0, 0.5, 2.0, 5.0):
            plain = norm.cdf(-epsilon / mu + mu / 2) - math.exp(epsilon) * norm.cdf(-epsilon / mu - mu / 2)
            assert gdp_delta(epsilon, mu) == pytest.approx(plain, rel=1e-9, abs=1e-15)


def test_delta_at_zero_epsilon():
    for mu in (0.1, 1.0, 5.0):
        assert gdp_delta(0.0, mu) == pytest.approx(2.0 * norm.cdf(mu / 2) - 1.0, rel=1e-12)


def test_delta_decreases_in_epsilon_increases_in_mu():
    epsilons = np.linspace(0.0, 30.0, 61)
    deltas = [gdp_log_delta(epsilon, 2.0) for epsilon in epsilons]
    assert all(later < earlier for earlier, later in zip(deltas, deltas[1:]))

    mus = np.linspace(0.1, 10.0, 50)
    deltas = [gdp_log_delta(3.0, mu) for mu in mus]
    assert all(later > earlier for earlier, later in zip(deltas, deltas[1:]))


@pytest.mark.parametrize("mu", [0.1, 0.5, 1.0, 2.0, 8.0, 50.0])
@pytest.mark.parametrize("delta", [1e-3, 1e-5, 1e-10, 1e-50, 1e-300])
def test_epsilon_round_trip(mu, delta):
    epsilon = gdp_epsilon(delta, mu)
    if epsilon == 0.0:
        assert gdp_delta(0.0, mu) <= delta
        return
    assert gdp_log_delta(epsilon, mu) == pytest.approx(math.log(delta), rel=1e-9)


@pytest.mark.parametrize("epsilon", [0.1, 1.0, 4.0, 50.0, 1000.0])
@pytest.mark.parametrize("delta", [1e-5, 1e-12, 1e-300])
def test_mu_inverts_epsilon(epsilon, delta):
    mu = gdp_mu(epsilon, delta)

    assert gdp_epsilon(delta, mu) == pytest.approx(epsilon, rel=1e-8)
    # Rounded down: the budget mu never gives more than delta at epsilon.
    assert gdp_log_delta(epsilon, mu) <= math.log(delta)


def test_epsilon_zero_when_delta_is_large():
    mu = 0.01
    assert gdp_epsilon(0.5, mu) == 0.0
    assert gdp_delta(0.0, mu) < 0.5


def test_epsilon_matches_dp_accounting_gaussian():
    # A mu-GDP release is the Gaussian mechanism with sensitivity 1 and sigma 1/mu.
    # dp_accounting 0.6's pessimistic PLD at interval 1e-3 overstates epsilon by about 4e-7 here.
    for mu in (0.5, 1.0, 2.0, 4.0):
        pld = privacy_loss_distribution.from_gaussian_mechanism(1.0 / mu, value_discretization_interval=1e-3)
        reference = pld.get_epsilon_for_delta(1e-5)
        assert gdp_epsilon(1e-5, mu) == pytest.approx(reference, abs=1e-5)
        assert gdp_epsilon(1e-5, mu) <= reference + 1e-9


def test_known_value_mu_one():
    # 1-GDP at delta = 1e-5, computed here with mpmath at 60 digits: epsilon = 4.377178...
    target = mpmath.findroot(lambda e: reference_delta(e, 1.0) - mpmath.mpf("1e-5"), 4.4)
    assert gdp_epsilon(1e-5, 1.0) == pytest.approx(float(target), rel=1e-10)


def test_composition():
    assert compose_mu([3.0, 4.0]) == pytest.approx(5.0)
    assert compose_mu([]) == 0.0
    assert compose_mu_counts({0.1: 100}) == pytest.approx(1.0)
    assert compose_mu_counts({0.5: 4, 1.0: 1}) == pytest.approx(math.sqrt(2.0))


@pytest.mark.parametrize(
    ("call", "fragment"),
    [
        (lambda: gdp_delta(-1.0, 1.0), "epsilon"),
        (lambda: gdp_delta(1.0, 0.0), "mu"),
        (lambda: gdp_epsilon(0.0, 1.0), "delta"),
        (lambda: gdp_epsilon(1.0, 1.0), "delta"),
        (lambda: gdp_mu(1.0, 2.0), "delta"),
        (lambda: gdp_mu(math.inf, 1e-5), "epsilon"),
        (lambda: compose_mu([1.0, -1.0]), "mu"),
        (lambda: compose_mu_counts({1.0: -1}), "count"),
    ],
)
def test_invalid_arguments_name_the_field(call, fragment):
    with pytest.raises(ValueError, match=fragment):
        call()
