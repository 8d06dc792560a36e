"""Tests of the Gaussian-noise baseline and its optional unbiased rounding."""

from __future__ import annotations

import math

import pytest
import torch

from delsim.mechanism import GaussianMechanism, decode_payload, pack_payload, unpack_payload


def test_sigma_formula() -> None:
    for mu, clip, dim in ((1.0, 0.05, 128), (0.3, 1.0, 1), (8.0, 0.2, 4096)):
        mechanism = GaussianMechanism(mu, clip, dim)
        assert mechanism.sigma == pytest.approx(2 * clip * math.sqrt(dim) / mu)


def test_noise_moments() -> None:
    mechanism = GaussianMechanism(2.0, 0.5, 16)
    z = torch.linspace(-1.0, 1.0, 16)
    draws = 20000
    release = mechanism.privatize(z.expand(draws, 16), generator=torch.Generator().manual_seed(0)).to(torch.float64)
    clipped = z.to(torch.float64).clamp(-0.5, 0.5)
    standard_error = mechanism.sigma / math.sqrt(draws)
    # Mean within 4.5 standard errors per coordinate; the std within 3% (its SE is 0.5%).
    assert torch.all((release.mean(0) - clipped).abs() < 4.5 * standard_error)
    assert torch.allclose(release.std(0), torch.full((16,), mechanism.sigma, dtype=torch.float64), rtol=0.03)


def test_quantized_release_unbiased() -> None:
    mechanism = GaussianMechanism(4.0, 0.5, 4, bits=3, quantization_range=3.0)
    z = torch.tensor([-0.5, -0.1, 0.2, 0.5])
    draws = 40000
    levels = mechanism.encode(z.expand(draws, 4), generator=torch.Generator().manual_seed(1))
    assert int(levels.min()) >= 0
    assert int(levels.max()) <= 7
    release = mechanism.decode(levels).to(torch.float64)

    grid = {round(3.0 * (2 * k - 7) / 7, 5) for k in range(8)}
    assert {round(value, 5) for value in release.unique().tolist()} <= grid
    # The range of 3.0 is 3 sigma past the clip bound, so clipping to it moves the mean by
    # under 0.01; the bound adds 4.5 standard errors of the rounded release.
    standard_error = release.std(0) / math.sqrt(draws)
    assert torch.all((release.mean(0) - z.to(torch.float64)).abs() < 4.5 * standard_error + 0.01)


def test_quantized_levels_fit_payload() -> None:
    mechanism = GaussianMechanism(1.0, 0.05, 8, bits=5)
    levels = mechanism.encode(torch.zeros(3, 8), generator=torch.Generator().manual_seed(2))
    payload = unpack_payload(pack_payload(levels, bits=5, sparse=False, scale=mechanism.scale))
    assert torch.equal(decode_payload(payload), mechanism.decode(levels))


def test_default_range() -> None:
    mechanism = GaussianMechanism(1.0, 0.05, 128, bits=8)
    assert mechanism.quantization_range == pytest.approx(0.05 + 4 * mechanism.sigma)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mu": 0.0}, r"mu must be a finite number > 0, got 0\.0"),
        ({"clip": -1.0}, r"clip must be a finite number > 0, got -1\.0"),
        ({"dim": 0}, r"dim must be an integer in >= 1, got 0"),
        ({"bits": 17}, r"bits must be an integer in 1\.\.16, got 17"),
        ({"quantization_range": 0.0}, r"quantization_range must be a finite number > 0"),
    ],
)
def test_invalid_settings_raise(kwargs: dict, message: str) -> None:
    settings = {"mu": 1.0, "clip": 0.05, "dim": 8, "bits": None, **kwargs}
    with pytest.raises(ValueError, match=message):
        GaussianMechanism(**settings)


def test_encode_needs_bits() -> None:
    with pytest.raises(ValueError, match="encode needs bits"):
        GaussianMechanism(1.0, 0.05, 8).encode(torch.zeros(1, 8))
    with pytest.raises(ValueError, match="last dimension 8"):
        GaussianMechanism(1.0, 0.05, 8).privatize(torch.zeros(1, 4))
