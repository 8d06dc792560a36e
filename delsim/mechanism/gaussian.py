"""Gaussian-noise baseline on clipped coordinates, with optional unbiased n-bit rounding.

Clipping every coordinate of a d-dimensional vector to [-c, c] bounds the L2 distance
between any two clipped vectors by ``2 * c * sqrt(d)``. Adding N(0, sigma**2) noise per
coordinate with ``sigma = 2 * c * sqrt(d) / mu`` is then mu-GDP (Dong, Roth, Su, 2022,
"Gaussian differential privacy", Theorem 2.7).
"""

from __future__ import annotations

import logging
import math

import torch

from delsim.mechanism.levels import levels_to_values
from delsim.mechanism.quantizer import MAX_BITS
from delsim.mechanism.validation import check_int_range, check_last_dim, check_positive

logger = logging.getLogger(__name__)

DEFAULT_RANGE_SIGMAS = 4.0
"""Default quantization half-range in noise standard deviations beyond the clip bound."""


class GaussianMechanism:
    """Gaussian mechanism on clipped coordinates, mu-GDP per token.

    Parameters
    ----------
    mu : float
        GDP parameter of one token, > 0.
    clip : float
        Clipping bound c > 0 per coordinate.
    dim : int
        Number of coordinates d per token.
    bits : int, optional
        When set (1..16), the noisy value is rounded at random to one of ``2**bits`` evenly
        spaced levels on ``[-quantization_range, quantization_range]``. Rounding is
        unbiased for values inside the range; values outside are first clipped to it,
        which biases them toward zero. When None, the release is the unquantized float.
    quantization_range : float, optional
        Half-width h of the quantization grid; defaults to ``clip + 4 * sigma``.
    """

    def __init__(
        self,
        mu: float,
        clip: float,
        dim: int,
        bits: int | None = None,
        quantization_range: float | None = None,
    ) -> None:
        self.mu = check_positive("mu", mu)
        self.clip = check_positive("clip", clip)
        self.dim = check_int_range("dim", dim, 1)
        self.bits = None if bits is None else check_int_range("bits", bits, 1, MAX_BITS)
        if quantization_range is None:
            quantization_range = self.clip + DEFAULT_RANGE_SIGMAS * self.sigma
        self.quantization_range = check_positive("quantization_range", quantization_range)

    @property
    def sigma(self) -> float:
        """Noise standard deviation per coordinate, 2 * c * sqrt(d) / mu."""
        return 2.0 * self.clip * math.sqrt(self.dim) / self.mu

    @property
    def scale(self) -> float:
        """Decoding scale of the quantized levels (the half-range h), as the payload stores it."""
        return self.quantization_range

    def _noisy(self, z: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        check_last_dim("z", z, self.dim)
        clipped = z.detach().to(torch.float64).clamp(-self.clip, self.clip)
        noise = torch.randn(clipped.shape, generator=generator, dtype=torch.float64, device=z.device)
        return clipped + self.sigma * noise

    def encode(self, z: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Add noise and round at random to integer levels ``0..2**bits - 1``.

        Parameters
        ----------
        z : torch.Tensor
            Coordinates, shape ``(..., dim)``.
        generator : torch.Generator, optional
            Source of randomness.

        Returns
        -------
        torch.Tensor
            int64 levels; level k stands for ``h * (2k - R) / R`` with ``R = 2**bits - 1``.

        Raises
        ------
        ValueError
            If the mechanism has no ``bits`` set.
        """
        if self.bits is None:
            raise ValueError("encode needs bits; create GaussianMechanism with bits=1..16 to quantize")
        rounds = (1 << self.bits) - 1
        noisy = self._noisy(z, generator).clamp(-self.quantization_range, self.quantization_range)
        position = (noisy + self.quantization_range) * (rounds / (2.0 * self.quantization_range))
        lower = position.floor().clamp(0, rounds - 1)
        uniforms = torch.rand(position.shape, generator=generator, dtype=torch.float64, device=z.device)
        return (lower + (uniforms < position - lower).to(torch.float64)).to(torch.int64)

    def decode(self, levels: torch.Tensor) -> torch.Tensor:
        """Map levels from :meth:`encode` to float32 values."""
        if self.bits is None:
            raise ValueError("decode needs bits; create GaussianMechanism with bits=1..16 to quantize")
        return levels_to_values(levels, bits=self.bits, sparse=False, scale=self.quantization_range)

    def privatize(self, z: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Clip ``z``, add Gaussian noise and, when ``bits`` is set, round to the grid.

        Parameters
        ----------
        z : torch.Tensor
            Coordinates, shape ``(..., dim)``.
        generator : torch.Generator, optional
            Source of randomness.

        Returns
        -------
        torch.Tensor
            float32 release with the shape of ``z``.
        """
        if self.bits is not None:
            return self.decode(self.encode(z, generator=generator))
        return self._noisy(z, generator).to(torch.float32)

    def __repr__(self) -> str:
        return f"GaussianMechanism(mu={self.mu}, clip={self.clip}, dim={self.dim}, bits={self.bits})"
