"""Tests of the exact binomial sampler behind the quantizer (pure torch path)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from delsim.mechanism import sampling
from delsim.mechanism.sampling import (
    PREFIX_BITS,
    TABLE_MAX_TRIALS,
    TABLE_MIN_ELEMENTS,
    BinomialSampler,
    binomial_cdf_rows,
    binomial_keys,
    complete_uniforms,
    draw_words,
    invert_cdf,
    split_words,
)

EXTREME_PROBS = [0.0, 1e-300, 1e-12, 0.1, 0.5, 0.5 + 2**-40, 0.77, 1.0 - 1e-12, 1.0]


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


@pytest.mark.parametrize("trials", [1, 2, 7, 15, 40, 63])
def test_keys_match_scipy(trials: int) -> None:
    probs = torch.tensor(EXTREME_PROBS, dtype=torch.float64)
    keys, upper = binomial_keys(trials, probs, TABLE_MAX_TRIALS)
    counts = np.arange(trials)
    for row, prob in enumerate(EXTREME_PROBS):
        # Upper rows hold the CDF of the failure count, Binomial(t, 1 - q).
        expected = stats.binom.cdf(counts, trials, 1.0 - prob if prob > 0.5 else prob)
        assert bool(upper[row]) == (prob > 0.5)
        assert np.allclose(keys[row, :trials].numpy(), expected, rtol=1e-13, atol=1e-15), f"q={prob}"
        assert torch.all(torch.isinf(keys[row, trials:]))
        assert torch.all(keys[row, 1:trials] >= keys[row, : trials - 1])


def test_keys_with_varying_trials_match_fixed_rows() -> None:
    probs = torch.tensor([0.3, 0.6, 0.2, 0.9, 0.5], dtype=torch.float64)
    trials = torch.tensor([0, 3, 9, 15, 1])
    keys, upper = binomial_keys(trials, probs, 15)
    for row in range(len(probs)):
        fixed_keys, fixed_upper = binomial_keys(int(trials[row]), probs[row : row + 1], 15)
        assert torch.equal(keys[row], fixed_keys[0])
        assert bool(upper[row]) == bool(fixed_upper[0])


def test_invert_cdf_matches_scipy() -> None:
    generator = torch.Generator().manual_seed(0)
    for trials in (1, 15, 63):
        probs = torch.tensor(EXTREME_PROBS, dtype=torch.float64).repeat_interleave(20000)
        uniforms = torch.randint(0, 2**53, probs.shape, generator=generator).to(torch.float64) * 2.0**-53
        counts = invert_cdf(trials, probs, uniforms, TABLE_MAX_TRIALS).numpy()
        # scipy's ppf is the smallest k with CDF(k) >= u; a u equal to a CDF value has probability ~1e-16.
        expected = stats.binom.ppf(uniforms.numpy(), trials, probs.numpy())
        assert np.array_equal(counts, expected), f"trials={trials}"


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


@pytest.mark.parametrize(("trials", "low", "high", "varying"), [(15, 0.4, 0.6, False), (63, 0.0, 1.0, False), (31, 0.3, 0.7, True)])
def test_table_agrees_with_walk(trials: int, low: float, high: float, varying: bool) -> None:
    # The table is only a shortcut: for the same prefixes it must give what the per-element CDF gives.
    sampler = BinomialSampler(trials, low, high, varying_trials=varying)
    table = sampler.prepare(TABLE_MIN_ELEMENTS)
    assert table is not None
    size = 50000
    prob = torch.empty(size, dtype=torch.float64).uniform_(low, high, generator=torch.Generator().manual_seed(1))
    trial_counts = torch.randint(0, trials + 1, (size,), generator=torch.Generator().manual_seed(2)) if varying else None
    prefixes = split_words(draw_words(size, torch.Generator().manual_seed(3), torch.device("cpu")), size)

    with_table = sampler.first_pass(prob, trial_counts, prefixes, table)
    without_table = sampler.first_pass(prob, trial_counts, prefixes, None)
    assert torch.equal(with_table, without_table)
    # The table must decide most elements itself (about 2 percent of its cells are open at 15 trials).
    assert float((sampler._table_counts(table, prob, trial_counts, prefixes) < 0).double().mean()) < 0.2


def test_first_pass_decides_counts_at_both_interval_ends() -> None:
    sampler = BinomialSampler(15, 0.0, 1.0)
    size = 100000
    prob = torch.rand(size, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    prefixes = split_words(draw_words(size, torch.Generator().manual_seed(5), torch.device("cpu")), size)
    counts = sampler.first_pass(prob, None, prefixes, None)

    lowest = invert_cdf(15, prob, complete_uniforms(prefixes, torch.zeros_like(prefixes)), 15)
    highest = invert_cdf(15, prob, complete_uniforms(prefixes, torch.full_like(prefixes, -1)), 15)
    decided = counts >= 0
    assert torch.equal(counts[decided], lowest[decided])
    assert torch.equal(counts[decided], highest[decided])
    assert torch.all(lowest[~decided] != highest[~decided])
    # About 15 * 2**-21 of the elements stay open: far fewer than 1 in 1,000.
    assert int((~decided).sum()) < 100


def test_open_elements_follow_conditional_law(monkeypatch: pytest.MonkeyPatch) -> None:
    # Every element's prefix interval contains the key CDF(6) of Binomial(15, 0.4), so its
    # count is 6 or 7, and only the 32 extension bits decide which.
    size, trials, prob = 30000, 15, 0.4
    probs = torch.full((size,), prob, dtype=torch.float64)
    key = float(binomial_keys(trials, probs[:1], trials)[0][0, 6])
    prefix = math.floor(key * 2**PREFIX_BITS)
    word = prefix | (prefix << PREFIX_BITS) | (prefix << 2 * PREFIX_BITS)
    monkeypatch.setattr(sampling, "draw_words", lambda count, generator, device: torch.full((-(-count // 3),), word))

    counts = BinomialSampler(trials, 0.0, 1.0).sample(probs, generator=torch.Generator().manual_seed(6))
    assert set(counts.unique().tolist()) == {6, 7}
    # P(count = 7) = P(u >= key) for u uniform on the prefix's interval.
    expected = (prefix + 1 - key * 2**PREFIX_BITS)
    p_value = stats.binomtest(int((counts == 7).sum()), size, expected).pvalue
    assert p_value > 1e-3, f"fraction {float((counts == 7).double().mean()):.4f}, expected {expected:.4f}"


def test_sampler_draws_words_then_extensions() -> None:
    size = 300000
    prob = torch.rand(size, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    generator = torch.Generator().manual_seed(8)
    BinomialSampler(63, 0.0, 1.0).sample(prob, generator=generator)

    replay = torch.Generator().manual_seed(8)
    prefixes = split_words(draw_words(size, replay, torch.device("cpu")), size)
    open_count = int((BinomialSampler(63, 0.0, 1.0).first_pass(prob, None, prefixes, None) < 0).sum())
    assert open_count > 0
    torch.empty(open_count, dtype=torch.int64).random_(generator=replay)
    assert torch.equal(generator.get_state(), replay.get_state())


def test_split_words_yields_uniform_prefixes() -> None:
    words = draw_words(300000, torch.Generator().manual_seed(9), torch.device("cpu"))
    prefixes = split_words(words, 299999)
    assert prefixes.shape == (299999,)
    assert int(prefixes.min()) >= 0 and int(prefixes.max()) < 2**PREFIX_BITS
    assert torch.equal(prefixes[1::3][:5], (words[:5] >> PREFIX_BITS) & (2**PREFIX_BITS - 1))
    # Each of the 21 bits is set in half of the prefixes, within 5 standard errors.
    bit_means = torch.stack([((prefixes >> bit) & 1).double().mean() for bit in range(PREFIX_BITS)])
    assert torch.all((bit_means - 0.5).abs() < 5 * 0.5 / math.sqrt(len(prefixes)))


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
        flat = sampler.sample(prob.reshape(-1), generator=torch.Generator().manual_seed(9))
        assert first.shape == (3, 5, 7)
        assert first.dtype == torch.int64
        assert torch.equal(first, second)
        assert torch.equal(first.reshape(-1), flat)
    assert sampler.sample(torch.empty(0, dtype=torch.float64)).shape == (0,)
