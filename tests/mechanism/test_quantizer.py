"""Statistical and contract tests of the DP stochastic n-bit quantizer."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from delsim.mechanism import StochasticQuantizer

CLIP = 0.05


def round_loop_levels(quantizer: StochasticQuantizer, z: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Sample levels by running the R rounds one at a time, as the mechanism defines them.

    Each round is +B with probability p * (1/2 + z / (2A)), -B with probability
    p * (1/2 - z / (2A)) and 0 otherwise, drawn from one uniform per coordinate.
    """
    clipped = z.to(torch.float64).clamp(-quantizer.clip, quantizer.clip)
    plus_prob = quantizer.sparsity * (0.5 + clipped / (2.0 * quantizer.A))
    plus = torch.zeros(z.shape, dtype=torch.int64)
    minus = torch.zeros(z.shape, dtype=torch.int64)
    for _ in range(quantizer.rounds):
        uniforms = torch.rand(z.shape, generator=generator, dtype=torch.float64)
        plus += uniforms < plus_prob
        minus += (uniforms >= plus_prob) & (uniforms < quantizer.sparsity)
    if quantizer.sparse:
        return plus - minus + quantizer.rounds
    return plus


def merge_bins(counts: np.ndarray, weights: np.ndarray, min_weight: float) -> tuple[np.ndarray, np.ndarray]:
    """Merge adjacent levels until each bin's weight reaches ``min_weight``.

    ``counts`` has one row per sample and one column per level; the last partial bin joins
    the previous one. Returns the merged counts and the merged weights.
    """
    merged_counts, merged_weights = [], []
    count_sum, weight_sum = np.zeros(counts.shape[0]), 0.0
    for level in range(counts.shape[1]):
        count_sum = count_sum + counts[:, level]
        weight_sum += weights[level]
        if weight_sum >= min_weight:
            merged_counts.append(count_sum)
            merged_weights.append(weight_sum)
            count_sum, weight_sum = np.zeros(counts.shape[0]), 0.0
    if merged_counts:
        merged_counts[-1] = merged_counts[-1] + count_sum
        merged_weights[-1] += weight_sum
    return np.stack(merged_counts, axis=1), np.array(merged_weights)


@pytest.mark.parametrize("bits", [1, 2, 4])
@pytest.mark.parametrize("sparsity", [1.0, 0.6])
@pytest.mark.parametrize("z_value", [-CLIP, -CLIP / 3, 0.0, 0.7 * CLIP])
def test_levels_match_round_loop(bits: int, sparsity: float, z_value: float) -> None:
    # A per-round mu of 2 puts A near c (1.1c to 1.4c), so the level distribution depends strongly on z.
    mu = 2.0 * math.sqrt(((1 << bits) - 1) * 4)
    quantizer = StochasticQuantizer(bits, mu, CLIP, 4, sparsity)
    z = torch.full((2500, 4), z_value)
    fast = quantizer.encode(z, generator=torch.Generator().manual_seed(1)).reshape(-1).numpy()
    loop = round_loop_levels(quantizer, z, torch.Generator().manual_seed(2)).reshape(-1).numpy()

    counts = np.stack([np.bincount(sample, minlength=quantizer.levels) for sample in (fast, loop)])
    table, _ = merge_bins(counts, counts.sum(0).astype(float), 10.0)
    if table.shape[1] < 2:
        assert np.array_equal(np.unique(fast), np.unique(loop))
        return
    # Contingency chi-square of 10,000 draws each; a correct sampler fails with probability 1e-3.
    p_value = stats.chi2_contingency(table).pvalue
    assert p_value > 1e-3, f"bits={bits} sparsity={sparsity} z={z_value}: p={p_value:.2e}, table={table}"


@pytest.mark.parametrize(("bits", "sparsity"), [(4, 1.0), (8, 1.0), (12, 1.0), (16, 1.0), (4, 0.5), (8, 0.3)])
def test_levels_match_exact_distribution(bits: int, sparsity: float) -> None:
    quantizer = StochasticQuantizer(bits, 8.0, CLIP, 16, sparsity)
    z_value = 0.6 * CLIP
    # 320,000 draws, enough for the sampler to switch to its lookup table after the first 2**18.
    levels = torch.cat([
        quantizer.encode(torch.full((rows, 16), z_value), generator=torch.Generator().manual_seed(rows))
        for rows in (16384, 3616)
    ])
    plus_prob = 0.5 + z_value / (2 * quantizer.A)
    rounds = quantizer.rounds
    if sparsity == 1.0:
        pmf = stats.binom.pmf(np.arange(rounds + 1), rounds, plus_prob)
    else:
        nonzero_pmf = stats.binom.pmf(np.arange(rounds + 1), rounds, sparsity)
        pmf = np.zeros(2 * rounds + 1)
        for nonzero in range(rounds + 1):
            plus = np.arange(nonzero + 1)
            pmf[2 * plus - nonzero + rounds] += nonzero_pmf[nonzero] * stats.binom.pmf(plus, nonzero, plus_prob)

    observed = np.bincount(levels.reshape(-1).numpy(), minlength=len(pmf))[None, :]
    observed_bins, expected_bins = merge_bins(observed, pmf * observed.sum(), 5.0)
    # Goodness of fit against the exact law; false failure rate 1e-3.
    p_value = stats.chisquare(observed_bins[0], expected_bins * observed.sum() / expected_bins.sum()).pvalue
    assert p_value > 1e-3, f"bits={bits} sparsity={sparsity}: p={p_value:.2e}"


@pytest.mark.parametrize(("bits", "sparsity"), [(1, 1.0), (4, 1.0), (8, 1.0), (16, 1.0), (3, 0.5), (8, 0.25)])
def test_release_unbiased_with_variance(bits: int, sparsity: float) -> None:
    quantizer = StochasticQuantizer(bits, math.sqrt(((1 << bits) - 1) * 8), CLIP, 8, sparsity)
    z = torch.linspace(-1.5 * CLIP, 1.5 * CLIP, 8)
    draws = 40000
    release = quantizer.privatize(z.expand(draws, 8), generator=torch.Generator().manual_seed(4)).to(torch.float64)

    clipped = z.to(torch.float64).clamp(-CLIP, CLIP)
    variance = (quantizer.A**2 / sparsity - clipped**2) / quantizer.rounds
    assert torch.allclose(quantizer.release_variance(z), variance)

    # Mean within 4.5 standard errors on every coordinate (8 coordinates, false failure < 1e-4).
    standard_error = torch.sqrt(variance / draws)
    assert torch.all((release.mean(0) - clipped).abs() < 4.5 * standard_error), (release.mean(0) - clipped) / standard_error
    # Sample variance within 4.5 of its own standard errors, using the fourth moment of the release.
    centered = release - clipped
    variance_error = torch.sqrt(((centered**2 - variance) ** 2).mean(0) / draws)
    assert torch.all((centered.pow(2).mean(0) - variance).abs() < 4.5 * variance_error)


@pytest.mark.parametrize(("bits", "sparsity"), [(1, 1.0), (5, 1.0), (16, 1.0), (1, 0.5), (7, 0.9), (16, 0.2)])
def test_levels_within_range(bits: int, sparsity: float) -> None:
    quantizer = StochasticQuantizer(bits, math.sqrt(((1 << bits) - 1) * 32), CLIP, 32, sparsity)
    levels = quantizer.encode(torch.randn(64, 32) * CLIP * 3, generator=torch.Generator().manual_seed(5))
    assert levels.dtype == torch.int64
    assert levels.shape == (64, 32)
    assert int(levels.min()) >= 0
    assert int(levels.max()) <= quantizer.levels - 1
    values = quantizer.decode(levels)
    assert values.dtype == torch.float32
    assert float(values.abs().max()) <= quantizer.scale * (1 + 1e-6)


def test_derived_quantities() -> None:
    quantizer = StochasticQuantizer(4, 3.0, CLIP, 128, 0.5)
    assert quantizer.rounds == 15
    assert quantizer.per_round_mu == pytest.approx(3.0 / math.sqrt(15 * 128))
    expected_a = CLIP * math.sqrt(0.5 * (4 / quantizer.per_round_mu**2 + 1))
    assert quantizer.A == pytest.approx(expected_a)
    assert quantizer.B == pytest.approx(expected_a / 0.5)
    assert quantizer.scale == quantizer.B
    assert quantizer.levels == 31
    assert quantizer.bits_per_coordinate == 5

    dense = StochasticQuantizer(4, 3.0, CLIP, 128)
    assert dense.levels == 16
    assert dense.bits_per_coordinate == 4
    assert dense.scale == dense.A


def test_decode_matches_formula() -> None:
    dense = StochasticQuantizer(3, 10.0, CLIP, 4)
    levels = torch.tensor([[0, 3, 5, 7]])
    expected = dense.A * (2 * levels.to(torch.float64) - 7) / 7
    assert torch.allclose(dense.decode(levels).to(torch.float64), expected, rtol=1e-6)

    sparse = StochasticQuantizer(3, 10.0, CLIP, 4, 0.5)
    levels = torch.tensor([[0, 7, 10, 14]])
    expected = sparse.B * (levels.to(torch.float64) - 7) / 7
    assert torch.allclose(sparse.decode(levels).to(torch.float64), expected, rtol=1e-6)


def test_same_seed_same_levels() -> None:
    for sparsity in (1.0, 0.4):
        quantizer = StochasticQuantizer(6, 10.0, CLIP, 16, sparsity)
        z = torch.randn(40, 16, generator=torch.Generator().manual_seed(0)) * CLIP
        first = quantizer.encode(z, generator=torch.Generator().manual_seed(11))
        second = quantizer.encode(z, generator=torch.Generator().manual_seed(11))
        other = quantizer.encode(z, generator=torch.Generator().manual_seed(12))
        assert torch.equal(first, second)
        assert not torch.equal(first, other)


def test_privatize_equals_decode_of_encode() -> None:
    quantizer = StochasticQuantizer(5, 10.0, CLIP, 16, 0.7)
    z = torch.randn(10, 16) * CLIP
    levels = quantizer.encode(z, generator=torch.Generator().manual_seed(6))
    released = quantizer.privatize(z, generator=torch.Generator().manual_seed(6))
    assert torch.equal(released, quantizer.decode(levels))


def test_config_round_trip() -> None:
    quantizer = StochasticQuantizer(7, 2.5, 0.1, 64, 0.8)
    rebuilt = StochasticQuantizer.from_config(quantizer.config)
    assert rebuilt.config == quantizer.config
    assert quantizer.state == quantizer.config
    assert quantizer.config == {"bits": 7, "mu": 2.5, "clip": 0.1, "dim": 64, "sparsity": 0.8}
    with pytest.raises(ValueError, match="unknown quantizer config keys"):
        StochasticQuantizer.from_config({**quantizer.config, "sigma": 1.0})


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"bits": 0}, r"bits must be an integer in 1\.\.16, got 0"),
        ({"bits": 17}, r"bits must be an integer in 1\.\.16, got 17"),
        ({"bits": 2.0}, r"bits must be an integer in 1\.\.16, got 2\.0"),
        ({"mu": 0.0}, r"mu must be a finite number > 0, got 0\.0"),
        ({"mu": -1.0}, r"mu must be a finite number > 0, got -1\.0"),
        ({"mu": math.inf}, r"mu must be a finite number > 0, got inf"),
        ({"clip": 0.0}, r"clip must be a finite number > 0, got 0\.0"),
        ({"dim": 0}, r"dim must be an integer in >= 1, got 0"),
        ({"sparsity": 0.0}, r"sparsity must be a number in \(0, 1\], got 0\.0"),
        ({"sparsity": 1.5}, r"sparsity must be a number in \(0, 1\], got 1\.5"),
        ({"sparsity": 0.01, "mu": 1000.0}, r"A = .* is below clip = 0\.05 .*use mu <= .* or sparsity >= "),
    ],
)
def test_invalid_settings_raise(kwargs: dict, message: str) -> None:
    settings = {"bits": 4, "mu": 1.0, "clip": CLIP, "dim": 16, "sparsity": 1.0, **kwargs}
    with pytest.raises(ValueError, match=message):
        StochasticQuantizer(**settings)


def test_invalid_inputs_raise() -> None:
    quantizer = StochasticQuantizer(4, 1.0, CLIP, 16)
    with pytest.raises(ValueError, match=r"last dimension 16"):
        quantizer.encode(torch.zeros(3, 8))
    with pytest.raises(ValueError, match="NaN"):
        quantizer.encode(torch.full((1, 16), math.nan))
    with pytest.raises(ValueError, match="floating-point"):
        quantizer.encode(torch.zeros(1, 16, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"levels must lie in 0\.\.15, got range 0\.\.16"):
        quantizer.decode(torch.tensor([[0, 16]]))


def test_infinite_input_clipped() -> None:
    quantizer = StochasticQuantizer(2, 1000.0, CLIP, 2, 1.0)
    finite = quantizer.encode(torch.tensor([[CLIP, -CLIP]]).expand(500, 2), generator=torch.Generator().manual_seed(7))
    infinite = quantizer.encode(torch.tensor([[math.inf, -math.inf]]).expand(500, 2), generator=torch.Generator().manual_seed(7))
    assert torch.equal(finite, infinite)
