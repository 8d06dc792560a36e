"""The DP stochastic n-bit quantizer of DEL (binomial for sparsity 1, ternary rounds below 1).

Mechanism (Gu, Jin, Ji, Jin, Xu, 2026, arXiv 2602.11513): with ``R = 2**n - 1`` rounds and
per-round GDP parameter ``mu_r = mu / sqrt(R * d)``, every coordinate ``z`` clipped to
``[-c, c]`` releases the mean of ``R`` rounds. Each round is ``+B`` with probability
``p * (1/2 + z / (2A))``, ``-B`` with probability ``p * (1/2 - z / (2A))`` and 0 otherwise,
where ``A = c * sqrt(p * (4 / mu_r**2 + 1))`` and ``B = A / p``. The release is unbiased with
variance ``(A**2 / p - z**2) / R``.

Sampling draws the round counts directly instead of looping over rounds. For ``p = 1`` the
count of ``+A`` rounds is Binomial(R, q) with ``q = 1/2 + z / (2A)``. For ``p < 1`` the count
of nonzero rounds is Binomial(R, p), and given that count ``m`` the count of ``+B`` rounds is
Binomial(m, q). This two-stage draw has exactly the joint law of the R independent rounds.

:class:`~delsim.mechanism.level_sampler.LevelSampler` draws the counts, on numba kernels
when numba is installed and ``z`` is on CPU, else in pure torch, with the same levels for
the same generator state.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import torch

from delsim.mechanism.level_sampler import LevelSampler
from delsim.mechanism.levels import levels_to_values, max_level
from delsim.mechanism.validation import check_int_range, check_last_dim, check_positive

logger = logging.getLogger(__name__)

MAX_BITS = 16
"""Largest supported bit width n (R = 65,535 rounds)."""


class StochasticQuantizer:
    """DP stochastic n-bit quantizer for one token of ``dim`` coordinates.

    Parameters
    ----------
    bits : int
        Bit width n in 1..16; the mechanism runs ``R = 2**n - 1`` rounds.
    mu : float
        GDP parameter of one token (all ``dim`` coordinates and ``R`` rounds together), > 0.
    clip : float
        Clipping bound c > 0; coordinates are clipped to ``[-c, c]``.
    dim : int
        Number of coordinates d per token, >= 1.
    sparsity : float, default 1.0
        Probability p in (0, 1] that a round is kept (nonzero).
    backend : {"auto", "numba", "torch"}, default "auto"
        Sampling code; every backend returns the same levels for the same generator
        state. "auto" takes the numba kernels when numba is installed, and "numba" raises
        ValueError when it is not. ``z`` off the CPU always takes the torch path. The
        backend is not part of :attr:`config`.

    Raises
    ------
    ValueError
        If a setting is outside its range, or if ``A < clip`` (the success probability
        ``1/2 + z / (2A)`` would leave [0, 1]).
    """

    def __init__(
        self, bits: int, mu: float, clip: float, dim: int, sparsity: float = 1.0, *, backend: str = "auto"
    ) -> None:
        self.bits = check_int_range("bits", bits, 1, MAX_BITS)
        self.mu = check_positive("mu", mu)
        self.clip = check_positive("clip", clip)
        self.dim = check_int_range("dim", dim, 1)
        self.sparsity = _check_sparsity(sparsity)
        self._check_scale()
        self._sampler = LevelSampler(self.bits, self.clip, self.A, self.sparsity, self.scale, backend)
        self.backend = self._sampler.backend
        logger.debug("created %r", self)

    def _check_scale(self) -> None:
        if self.A >= self.clip:
            return
        max_mu = 2.0 * math.sqrt(self.rounds * self.dim) / math.sqrt(1.0 / self.sparsity - 1.0)
        min_sparsity = 1.0 / (4.0 / self.per_round_mu**2 + 1.0)
        raise ValueError(
            f"invalid setting: A = clip * sqrt(sparsity * (4 / per_round_mu**2 + 1)) = {self.A:.6g} "
            f"is below clip = {self.clip:.6g} (mu={self.mu}, bits={self.bits}, dim={self.dim}, "
            f"sparsity={self.sparsity}); use mu <= {max_mu:.6g} or sparsity >= {min_sparsity:.6g}"
        )

    @property
    def rounds(self) -> int:
        """Number of rounds R = 2**bits - 1."""
        return (1 << self.bits) - 1

    @property
    def per_round_mu(self) -> float:
        """Per-round, per-coordinate GDP parameter mu / sqrt(R * d)."""
        return self.mu / math.sqrt(self.rounds * self.dim)

    @property
    def A(self) -> float:  # noqa: N802 (the mechanism's own symbol)
        """Round magnitude before sparsification, c * sqrt(p * (4 / mu_r**2 + 1))."""
        return self.clip * math.sqrt(self.sparsity * (4.0 / self.per_round_mu**2 + 1.0))

    @property
    def B(self) -> float:  # noqa: N802 (the mechanism's own symbol)
        """Magnitude of a nonzero round, A / p."""
        return self.A / self.sparsity

    @property
    def sparse(self) -> bool:
        """Whether rounds can be zero (sparsity < 1), which gives ternary levels."""
        return self.sparsity < 1.0

    @property
    def scale(self) -> float:
        """Decoding scale that the payload header carries: A for sparsity 1, else B."""
        return self.B if self.sparse else self.A

    @property
    def levels(self) -> int:
        """Number of distinct output levels: R + 1 for sparsity 1, 2R + 1 below."""
        return max_level(self.bits, self.sparse) + 1

    @property
    def bits_per_coordinate(self) -> int:
        """Bits each coordinate takes on the wire: n for sparsity 1, n + 1 below."""
        return self.bits + 1 if self.sparse else self.bits

    @property
    def config(self) -> dict[str, Any]:
        """Settings that rebuild this quantizer with :meth:`from_config`."""
        return {"bits": self.bits, "mu": self.mu, "clip": self.clip, "dim": self.dim, "sparsity": self.sparsity}

    state = config

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> StochasticQuantizer:
        """Build a quantizer from a :attr:`config` dict.

        Parameters
        ----------
        config : dict
            Keys bits, mu, clip, dim and optionally sparsity.

        Returns
        -------
        StochasticQuantizer
            The rebuilt quantizer.
        """
        unknown = set(config) - {"bits", "mu", "clip", "dim", "sparsity"}
        if unknown:
            raise ValueError(f"unknown quantizer config keys {sorted(unknown)}; valid keys: bits, mu, clip, dim, sparsity")
        return cls(**config)

    def release_variance(self, z: torch.Tensor) -> torch.Tensor:
        """Return the variance (A**2 / p - z**2) / R of the release for clipped coordinates ``z``.

        Parameters
        ----------
        z : torch.Tensor
            Coordinates; they are clipped to [-c, c] first.

        Returns
        -------
        torch.Tensor
            float64 variances with the shape of ``z``.
        """
        clipped = z.to(torch.float64).clamp(-self.clip, self.clip)
        return (self.A**2 / self.sparsity - clipped**2) / self.rounds

    def encode(self, z: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Clip ``z`` to [-c, c] and draw the integer levels of its privatized release.

        Parameters
        ----------
        z : torch.Tensor
            Projected coordinates, shape ``(..., dim)``.
        generator : torch.Generator, optional
            Source of randomness; the same generator seed gives identical levels.

        Returns
        -------
        torch.Tensor
            int64 levels with the shape of ``z``: ``k in 0..R`` (count of +A rounds) for
            sparsity 1, else ``k_plus - k_minus + R in 0..2R``.
        """
        check_last_dim("z", z, self.dim, check_nan=False)
        return self._sampler.levels(z, generator)

    def decode(self, levels: torch.Tensor) -> torch.Tensor:
        """Map integer levels to released values (float32), as the server decodes them.

        Parameters
        ----------
        levels : torch.Tensor
            Integer levels from :meth:`encode`.

        Returns
        -------
        torch.Tensor
            float32 values with the shape of ``levels``.

        Raises
        ------
        ValueError
            If a level is outside ``0..levels - 1``.
        """
        if levels.is_floating_point() or levels.is_complex():
            raise ValueError(f"levels must be an integer tensor, got dtype {levels.dtype}")
        if levels.numel() and (int(levels.min()) < 0 or int(levels.max()) >= self.levels):
            raise ValueError(
                f"levels must lie in 0..{self.levels - 1}, got range {int(levels.min())}..{int(levels.max())}"
            )
        return levels_to_values(levels, bits=self.bits, sparse=self.sparse, scale=self.scale)

    def privatize(self, z: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Clip, privatize and quantize ``z``; return the released float32 values.

        Parameters
        ----------
        z : torch.Tensor
            Projected coordinates, shape ``(..., dim)``.
        generator : torch.Generator, optional
            Source of randomness.

        Returns
        -------
        torch.Tensor
            float32 release with the shape of ``z``.
        """
        check_last_dim("z", z, self.dim, check_nan=False)
        return self._sampler.values(z, generator)

    def __repr__(self) -> str:
        return (
            f"StochasticQuantizer(bits={self.bits}, mu={self.mu}, clip={self.clip}, dim={self.dim}, "
            f"sparsity={self.sparsity})"
        )


def _check_sparsity(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0.0 < value <= 1.0):
        raise ValueError(f"sparsity must be a number in (0, 1], got {value!r}")
    return float(value)
