"""Tests of the exact binomial sampler behind the quantizer."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from delsim.mechanism.sampling import TABLE_MAX_TRIALS, BinomialSampler, binomial_cdf_rows, invert_cdf


def chi_square_p_value(counts: np.ndarray, pmf: np.ndarray) -> float:
    """Goodness of fit of integer samples to a pmf, with bins of expected count >= 5 merged."""
    observed = np.bincount(counts, minlength=len(pmf)).astype(float)
    expected = pmf * len(counts)
    order = np.argsort(expected)
    small = order[np.cumsum(expected[order]) < 5.0]
    keep = np.setdiff1d(np.arange(len(pmf)), small)
    observed_bins = np.append(observed[keep], observed[small].sum())
    expected_bins = np.append(expected[keep], expected[small].sum())
    if expected_bins[-1] == 0:
        observed_bins, expected_bins = observed_bins[:-1], expected_bins[:-1]
    return float(stats.chisquare(observed_bins, expected_bins * observed_bins.sum() / expected_bins.sum()).pvalue)


def test_cdf_rows_match_scipy() -> None:
    probs = torch.tensor([0.0, 0.1, 0.5, 0.77, 1.0], dtype=torch.float64)
    for trials in (0, 1, 7, 40, 255):
        cdf = binomial_cdf_rows(trials, probs).numpy()
        expected = np.stack([stats.binom.cdf(np.arange(trials + 1), trials, q) for q in probs.numpy()])
        assert np.allclose(cdf, expected, rtol=1e-12, atol=1e-14)


def test_cdf_rows_varying_trials() -> None:
    trials = torch.tensor([0, 3, 9])
    probs = torch.tensor([0.3, 0.6, 0.2], dtype=torch.float64)
    cdf = binomial_cdf_rows(trials, probs, max_trials=9).numpy()
    for row, (count, prob) in enumerate(zip(trials.tolist(), probs.tolist())):
        assert np.allclose(cdf[row], stats.binom.cdf(np.arange(10), count, prob), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("trials", [1, 3, 15, 63, 255, 4095, 65535])
@pytest.mark.parametrize("prob", [0.0, 0.05, 0.5, 0.61, 1.0])
def test_sampler_matches_binomial(trials: int, prob: float) -> None:
    sampler = BinomialSampler(trials, 0.0, 1.0)
    counts = sampler.sample(torch.full((40000,), prob, dtype=torch.float64), generator=torch.Generator().manual_seed(trials))
    pmf = stats.binom.pmf(np.arange(trials + 1), trials, prob)
    if prob in (0.0, 1.0):
        assert torch.all(counts == round(prob * trials))
        return
    # 40,000 draws; a correct sampler fails with probability 1e-3 per case.
    assert chi_square_p_value(counts.numpy(), pmf) > 1e-3


@pytest.mark.parametrize("max_trials", [1, 15, 63, 255])
def test_varying_trials_match_binomial(max_trials: int) -> None:
    sampler = BinomialSampler(max_trials, 0.45, 0.55, varying_trials=True)
    generator = torch.Generator().manual_seed(max_trials)
    for trials in sorted({0, 1, max_trials // 2, max_trials}):
        counts = sampler.sample(
            torch.full((20000,), 0.53, dtype=torch.float64), torch.full((20000,), trials), generator=generator
        )
        assert int(counts.max()) <= trials
        if trials == 0:
            assert torch.all(counts == 0)
            continue
        pmf = stats.binom.pmf(np.arange(trials + 1), trials, 0.53)
        assert chi_square_p_value(counts.numpy(), pmf) > 1e-3, f"trials={trials}"


def test_table_agrees_with_full_cdf() -> None:
    # The table is only a shortcut: for the same uniforms it must return the inverse CDF itself.
    for trials, low, high, varying in ((15, 0.4, 0.6, False), (63, 0.0, 1.0, False), (31, 0.3, 0.7, True)):
        sampler = BinomialSampler(trials, low, high, varying_trials=varying)
        prob = torch.empty(50000, dtype=torch.float64).uniform_(low, high, generator=torch.Generator().manual_seed(1))
        counts_per_element = torch.randint(0, trials + 1, (50000,), generator=torch.Generator().manual_seed(2))
        trials_tensor = counts_per_element if varying else torch.full((50000,), trials)
        uniforms = torch.rand(50000, dtype=torch.float64, generator=torch.Generator().manual_seed(3))

        from_table = sampler._sample_with_table(trials_tensor if varying else None, prob, uniforms)
        from_cdf = invert_cdf(trials_tensor, prob, uniforms, trials)
        assert torch.equal(from_table, from_cdf), f"trials={trials} varying={varying}"


def test_sampler_rejects_out_of_range() -> None:
    sampler = BinomialSampler(15, 0.4, 0.6)
    with pytest.raises(ValueError, match=r"prob must lie in \[0\.4, 0\.6\]"):
        sampler.sample(torch.tensor([0.3], dtype=torch.float64))
    with pytest.raises(ValueError, match="needs trials="):
        BinomialSampler(15, 0.4, 0.6, varying_trials=True).sample(torch.tensor([0.5], dtype=torch.float64))
    with pytest.raises(ValueError, match="probability range"):
        BinomialSampler(15, 0.6, 0.4)


def test_sampler_seeded_and_shaped() -> None:
    for trials in (15, TABLE_MAX_TRIALS + 1):
        sampler = BinomialSampler(trials, 0.2, 0.8)
        prob = torch.full((3, 5, 7), 0.4, dtype=torch.float64)
        first = sampler.sample(prob, generator=torch.Generator().manual_seed(9))
        second = sampler.sample(prob, generator=torch.Generator().manual_seed(9))
        assert first.shape == (3, 5, 7)
        assert first.dtype == torch.int64
        assert torch.equal(first, second)
    assert sampler.sample(torch.empty(0, dtype=torch.float64)).shape == (0,)
