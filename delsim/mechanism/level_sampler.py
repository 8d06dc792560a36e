"""Drawing the quantizer's levels: the round counts of every coordinate, on numba kernels or in pure torch.

For ``p = 1`` a coordinate's level is its count of ``+A`` rounds, Binomial(R, q) with
``q = 1/2 + clip(z) / (2A)``. For ``p < 1`` it is ``2 k - m + R`` with ``m`` ~ Binomial(R, p)
nonzero rounds and ``k`` ~ Binomial(m, q) of them positive.

Up to ``TABLE_MAX_TRIALS`` rounds, both counts come from the prefix inversion of
:mod:`delsim.mechanism.sampling`. Coordinate i reads prefix i, or for ``p < 1`` prefix 2i
for ``m`` and prefix 2i + 1 for ``k``. The open coordinates, in order, then draw one
extension per count: two for ``p < 1``, even where one of the two counts is already known.

With numba installed and ``z`` on CPU, :mod:`delsim.mechanism.sampling_kernels` runs this
in one pass that clips, draws and writes each level or released value. The pure torch path
draws the same integers and returns the same levels.

More rounds go to ``torch.binomial``, with ``m`` drawn by inverting its CDF at a
``torch.rand`` uniform.
"""

from __future__ import annotations

import logging
from types import ModuleType

import numpy as np
import torch

from delsim.mechanism.levels import levels_to_values, max_level
from delsim.mechanism.sampling import (
    TABLE_MAX_TRIALS,
    BinomialSampler,
    binomial_cdf_rows,
    check_backend,
    complete_uniforms,
    draw_extensions,
    draw_words,
    invert_cdf,
    kernel_table,
    kernels_for,
    split_words,
)
from delsim.mechanism.validation import raise_nan

logger = logging.getLogger(__name__)

OPEN_CAPACITY = 64
"""Open coordinates that one run of the kernels' first pass lists; more need a second run."""


class LevelSampler:
    """Sampler of the DP stochastic quantizer's integer levels and released values.

    Parameters
    ----------
    bits : int
        Bit width n; the mechanism runs ``R = 2**n - 1`` rounds.
    clip : float
        Clipping bound c.
    scale_a : float
        Round magnitude A, at least ``clip``.
    sparsity : float
        Probability p in (0, 1] that a round is nonzero.
    scale : float
        Decoding scale of the released values (A for p = 1, else A / p).
    backend : {"auto", "numba", "torch"}
        Sampling code, as for :class:`~delsim.mechanism.quantizer.StochasticQuantizer`.
    """

    def __init__(self, bits: int, clip: float, scale_a: float, sparsity: float, scale: float, backend: str) -> None:
        self.rounds = (1 << bits) - 1
        self.clip = clip
        self.sparsity = sparsity
        self.sparse = sparsity < 1.0
        self.backend = check_backend(backend)

        half_span = clip / (2.0 * scale_a)
        self.plus_range = (max(0.0, 0.5 - half_span), min(1.0, 0.5 + half_span))
        self._inverse_two_a = 1.0 / (2.0 * scale_a)
        self.plus_sampler = BinomialSampler(self.rounds, *self.plus_range, varying_trials=self.sparse)
        if self.sparse and self.rounds <= TABLE_MAX_TRIALS:
            self.nonzero_sampler = BinomialSampler(self.rounds, sparsity, sparsity)
        elif self.sparse:
            self._nonzero_cdf = binomial_cdf_rows(self.rounds, torch.tensor([sparsity]))[0]

        levels = max_level(bits, self.sparse) + 1
        self._level_numbers = np.arange(levels, dtype=np.int64)
        self._level_values = levels_to_values(torch.arange(levels), bits=bits, sparse=self.sparse, scale=scale).numpy()
        self._kernel_cache: tuple[tuple[bool, bool], tuple[np.ndarray, np.ndarray, int, np.ndarray, int]] | None = None

    def levels(self, z: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Return the int64 level of every coordinate of ``z``, whose type and shape the caller checked."""
        kernels = self._kernels_for(z)
        if kernels is not None:
            return self._kernel_draw(kernels, z, generator, self._level_numbers)
        return self._torch_levels(z, generator)

    def values(self, z: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Return the float32 released value of every coordinate of ``z``, ``levels_to_values`` of its level."""
        kernels = self._kernels_for(z)
        if kernels is not None:
            return self._kernel_draw(kernels, z, generator, self._level_values)
        levels = self._torch_levels(z, generator)
        return torch.from_numpy(self._level_values).to(levels.device)[levels]

    def plus_prob(self, z: torch.Tensor) -> torch.Tensor:
        """Return ``1/2 + clip(z) / (2A)`` in float64, clamped to the plus range, as the kernels compute it."""
        clipped = z.detach().to(torch.float64).clamp(-self.clip, self.clip)
        return clipped.mul_(self._inverse_two_a).add_(0.5).clamp_(*self.plus_range)

    def _kernels_for(self, z: torch.Tensor) -> ModuleType | None:
        """Return the kernel module when the kernels apply to ``z``, or else check ``z`` for NaN and return None.

        The kernels scan for NaN in their own first pass, before they draw.
        """
        kernels = kernels_for(self.backend, z) if self.rounds <= TABLE_MAX_TRIALS else None
        if kernels is None and bool(torch.isnan(z).any()):
            raise_nan("z")
        return kernels

    def _torch_levels(self, z: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        plus_prob = self.plus_prob(z)
        if not self.sparse:
            return self.plus_sampler.sample(plus_prob, generator=generator, check_range=False)
        if self.rounds <= TABLE_MAX_TRIALS:
            return self._torch_sparse_levels(plus_prob, generator)

        uniforms = torch.rand(plus_prob.shape, generator=generator, dtype=torch.float64, device=z.device)
        nonzero = torch.searchsorted(self._nonzero_cdf.to(z.device), uniforms, right=True).clamp_max(self.rounds)
        plus = self.plus_sampler.sample(plus_prob, nonzero, generator=generator, check_range=False)
        return 2 * plus - nonzero + self.rounds

    def _torch_sparse_levels(self, plus_prob: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Draw sparse levels in torch from the prefixes and extensions that the kernels read."""
        prob = plus_prob.reshape(-1)
        count = prob.numel()
        prefixes = split_words(draw_words(2 * count, generator, prob.device), 2 * count)

        sparsity = torch.full_like(prob, self.sparsity)
        nonzero = self.nonzero_sampler.first_pass(sparsity, None, prefixes[0::2], self.nonzero_sampler.prepare(count))
        plus_table = self.plus_sampler.prepare(count)
        plus = self.plus_sampler.first_pass(prob, nonzero.clamp(min=0), prefixes[1::2], plus_table)

        open_index = ((nonzero < 0) | (plus < 0)).nonzero().squeeze(1)
        if open_index.numel():
            extensions = draw_extensions(2 * open_index.numel(), generator, prob.device)
            nonzero_uniforms = complete_uniforms(prefixes[2 * open_index], extensions[0::2])
            plus_uniforms = complete_uniforms(prefixes[2 * open_index + 1], extensions[1::2])
            nonzero[open_index] = invert_cdf(self.rounds, sparsity[open_index], nonzero_uniforms, self.rounds)
            plus[open_index] = invert_cdf(nonzero[open_index], prob[open_index], plus_uniforms, self.rounds)
        return (2 * plus - nonzero + self.rounds).reshape(plus_prob.shape)

    def _kernel_draw(
        self, kernels: ModuleType, z: torch.Tensor, generator: torch.Generator | None, level_table: np.ndarray
    ) -> torch.Tensor:
        """Run the kernels on ``z`` and return ``level_table[level]`` per coordinate."""
        flat = z.detach().reshape(-1)
        if flat.dtype is not torch.float32 and flat.dtype is not torch.float64:
            flat = flat.to(torch.float64)
        coordinates = flat.contiguous().numpy()
        count = coordinates.shape[0]
        settings, plus_table, plus_shift, nonzero_table, nonzero_shift = self._kernel_inputs(count)

        cells = np.empty(count, dtype=np.int32)
        if kernels.plus_cells(coordinates, settings, plus_table.shape[1], plus_table.shape[2], cells):
            raise_nan("z")
        words = draw_words(2 * count if self.sparse else count, generator, flat.device).numpy()
        out = np.empty(count, dtype=level_table.dtype)
        arguments = (
            coordinates, cells, words, settings, self.rounds, self.sparse,
            plus_table, plus_shift, nonzero_table, nonzero_shift, level_table, out,
        )
        open_index = np.empty(OPEN_CAPACITY, dtype=np.int64)
        open_count = kernels.quantize_first_pass(*arguments, open_index)
        if open_count > OPEN_CAPACITY:
            # The kernel draws nothing itself, so a second run writes the same levels and lists every open coordinate.
            open_index = np.empty(open_count, dtype=np.int64)
            kernels.quantize_first_pass(*arguments, open_index)
        if open_count:
            extensions = draw_extensions((2 if self.sparse else 1) * open_count, generator, flat.device).numpy()
            kernels.quantize_second_pass(
                coordinates, words, settings, self.rounds, self.sparse,
                open_index[:open_count], extensions, level_table, out,
            )
        return torch.from_numpy(out).reshape(z.shape)

    def _kernel_inputs(self, count: int) -> tuple[np.ndarray, np.ndarray, int, np.ndarray, int]:
        """Record ``count`` draws with the samplers, and return the settings and both tables with their shifts."""
        plus_table = self.plus_sampler.prepare(count)
        nonzero_table = self.nonzero_sampler.prepare(count) if self.sparse else None
        # Tables only change once, from None to built, so the key records which are built.
        key = (plus_table is not None, nonzero_table is not None)
        if self._kernel_cache is None or self._kernel_cache[0] != key:
            cell_scale = self.plus_sampler.cell_scale
            settings = np.array([self.clip, self._inverse_two_a, *self.plus_range, cell_scale, self.sparsity])
            tables = (*kernel_table(plus_table, self.rounds + 1), *kernel_table(nonzero_table, 1))
            self._kernel_cache = (key, (settings, *tables))
        return self._kernel_cache[1]
