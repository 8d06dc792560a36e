"""Exact, vectorized binomial sampling for the quantizer's round counts.

``torch.binomial`` runs a scalar sampler per element (``ATen/native/Distributions.h`` in
torch 2.13). Where ``trials * q < 10`` that sampler is inversion by a geometric sum, and
on CPU it is no faster than summing the Bernoulli rounds one by one. Where
``trials * q >= 10`` it is the BTRS transformed-rejection sampler, whose cost does not
grow with the trials. Its acceptance test uses a Stirling series truncated after the
``k**-5`` term, which is off by about 1e-10 in log probability at most.

:class:`BinomialSampler` therefore inverts the CDF itself up to ``TABLE_MAX_TRIALS``
trials and hands larger counts to ``torch.binomial`` in float64.

Inversion gives each element the count ``F^{-1}(u)`` of a 53-bit uniform ``u``: the number
of CDF values at or below ``u``. The CDF comes from the recurrence
``pmf(k + 1) = pmf(k) * q / (1 - q) * (t - k) / (k + 1)`` started at ``pmf(0) = (1 - q)**t``
(:func:`binomial_keys`). For ``q > 1/2`` it runs over the failure count instead, so its
start stays above ``2**-t`` and never underflows. Counts are thus exact up to the float64
rounding of that CDF, a few times ``t * 2**-53`` in absolute terms, which the tests bound
against scipy.

Uniforms are completed lazily. Each element first gets a 21-bit prefix, three of which
come from one 63-bit integer of the generator, and the prefix fixes ``u`` to an interval
of width ``2**-21``. Where no CDF value falls inside that interval the count is known.
Only the other elements ("open" ones, a fraction of about ``t * 2**-21``) draw one more
integer each, whose low 32 bits complete their ``u`` to 53 bits. The counts have the same
law as with a full 53-bit uniform per element, at about a third of the generator's draws.

A lookup table over cells of the (probability, uniform) square gives the count of the
first pass wherever it is constant over the cell. Elsewhere, and before the table is
built, the CDF is computed for the element alone.

The quantizer runs the same algorithm as compiled numba kernels
(:mod:`delsim.mechanism.sampling_kernels`) when numba is installed. They perform the same
float64 operations in the same order as the torch code here, read the same tables and draw
the same integers, so both backends return identical counts for the same generator state.
The counts depend on the flat order of the elements, not on the tensor shape. Splitting a
batch over several calls changes them, because each call draws its extensions after its
prefixes.
"""

from __future__ import annotations

import importlib
import logging
import math
from functools import lru_cache
from types import ModuleType

import numpy as np
import torch

logger = logging.getLogger(__name__)

TABLE_MAX_TRIALS = 63
"""Largest number of trials (n = 6 bits) sampled by inversion instead of ``torch.binomial``."""

TABLE_MAX_ENTRIES = 1 << 18
"""Upper bound on lookup-table cells: 256 KiB of int8, small enough to stay in the per-core
L2 cache of x86 CPUs since about 2008, so that lookups in random order rarely miss it. On the
2-core benchmark machine of ``docs/benchmarks.md``, the kernels' first pass at 15 trials ran
10 percent (p = 1) to 40 percent (p = 0.5) faster with this cap than with 4 MiB tables,
although 2 to 4.5 percent of the elements, not 0.7 to 1.2, then went to the per-element CDF."""

TABLE_AMBIGUITY = 1.0 / 256.0
"""Target fraction of elements that the probability cells, and separately the uniform
cells, send to the per-element CDF. The real fraction is larger where the table hits its size cap."""

TABLE_MIN_ELEMENTS = 1 << 18
"""Elements a sampler draws before it builds its table, so one-off uses skip the build."""

PREFIX_BITS = 21
"""Bits of each uniform that the first pass draws."""

PREFIXES_PER_WORD = 3
"""Prefixes cut from one int64 of the generator, whose low 63 bits are random."""

UNIFORM_BITS = 53
"""Bits of a complete uniform, as in ``torch.rand(dtype=torch.float64)``."""

EXTENSION_BITS = UNIFORM_BITS - PREFIX_BITS
"""Bits that the second pass appends to a prefix."""

PREFIX_MASK = (1 << PREFIX_BITS) - 1
EXTENSION_MASK = (1 << EXTENSION_BITS) - 1
UNIFORM_SCALE = 2.0**-UNIFORM_BITS

BACKENDS = ("auto", "numba", "torch")
"""Quantizer backends: the numba kernels, pure torch, or the kernels wherever numba is installed."""


@lru_cache(maxsize=1)
def load_kernels() -> ModuleType | None:
    """Import the numba kernels, or return None when numba is not installed."""
    try:
        return importlib.import_module("delsim.mechanism.sampling_kernels")
    except ImportError as error:
        if error.name != "numba":
            raise
        logger.info("numba is not installed, so the quantizer samples on the pure torch path")
        return None


def check_backend(backend: object) -> str:
    """Return ``backend`` if it is one of ``BACKENDS`` and usable here, else raise ValueError."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend == "numba" and load_kernels() is None:
        raise ValueError("backend='numba' needs the numba package; install it or use backend='auto' or 'torch'")
    return str(backend)


def kernels_for(backend: str, tensor: torch.Tensor) -> ModuleType | None:
    """Return the kernel module when ``backend`` allows it and ``tensor`` is on CPU, else None."""
    if backend == "torch" or tensor.device.type != "cpu":
        return None
    return load_kernels()


@lru_cache(maxsize=32)
def _log_factorials(max_trials: int) -> torch.Tensor:
    return torch.lgamma(torch.arange(max_trials + 1, dtype=torch.float64) + 1.0)


def binomial_cdf_rows(trials: int, probs: torch.Tensor) -> torch.Tensor:
    """Return the CDF of Binomial(trials, q) at counts ``0..trials``, one row per probability.

    The rows come from log-factorials, so they suit any number of trials. The quantizer
    uses them for its nonzero-round count when it runs more than ``TABLE_MAX_TRIALS`` rounds.

    Parameters
    ----------
    trials : int
        Number of trials t.
    probs : torch.Tensor
        1-D success probabilities q in [0, 1].

    Returns
    -------
    torch.Tensor
        float64, shape ``(len(probs), trials + 1)``, each row nondecreasing, normalized to
        end at 1.
    """
    log_factorials = _log_factorials(trials).to(probs.device)
    log_choose = log_factorials[trials] - log_factorials - log_factorials.flip(0)
    counts = torch.arange(trials + 1, dtype=torch.float64, device=probs.device)
    probs = probs.to(torch.float64).unsqueeze(1)
    pmf = torch.exp(log_choose + torch.xlogy(counts, probs) + torch.xlogy(trials - counts, 1.0 - probs))
    cdf = pmf.cumsum(1)
    return cdf / cdf[:, -1:]


@lru_cache(maxsize=8)
def _recurrence_factors(max_trials: int) -> torch.Tensor:
    """Return ``(t - k) / (k + 1)`` at row t, column k, each a correctly rounded float64 quotient."""
    rows = [[(t - k) / (k + 1) for k in range(max_trials)] for t in range(max_trials + 1)]
    return torch.tensor(rows, dtype=torch.float64)


def _integer_power(base: torch.Tensor, exponent: torch.Tensor | int, max_exponent: int) -> torch.Tensor:
    """Return ``base**exponent`` by binary exponentiation, the multiplication order of the kernel."""
    result = torch.ones_like(base)
    square = base
    for bit in range(max_exponent.bit_length()):
        if isinstance(exponent, int):
            if exponent >> bit & 1:
                result = result * square
        else:
            result = torch.where((exponent >> bit) & 1 == 1, result * square, result)
        square = square * square
    return result


def binomial_keys(trials: torch.Tensor | int, prob: torch.Tensor, max_trials: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Return the values that every sampling path compares uniforms with, one row per element.

    For ``q <= 1/2`` row k is ``P(K <= k)``. For ``q > 1/2`` it is ``P(t - K <= k)``, the CDF
    of the failure count, and the count at ``u`` is ``t`` minus the number of keys below
    ``1 - u`` (see :func:`count_below`). Keys come from the pmf recurrence started at
    ``(1 - q')**t`` with ``q' = min(q, 1 - q)``; both ``1 - q'`` and ``q' / (1 - q')`` are
    computed once per element.

    Parameters
    ----------
    trials : int or torch.Tensor
        Number of trials t: one int for all rows, or a 1-D int64 tensor with one value per row.
    prob : torch.Tensor
        1-D success probabilities q in [0, 1].
    max_trials : int
        Upper bound on ``trials``; the number of key columns.

    Returns
    -------
    keys : torch.Tensor
        float64, shape ``(len(prob), max_trials)``, nondecreasing in each row, ``+inf`` from
        column t on.
    upper : torch.Tensor
        bool, shape ``(len(prob),)``, true where ``q > 1/2`` (keys of the failure count).
    """
    prob = prob.to(torch.float64)
    trials_tensor = torch.as_tensor(trials, dtype=torch.int64, device=prob.device).expand(prob.shape)
    upper = prob > 0.5
    small_prob = torch.where(upper, 1.0 - prob, prob)
    failure_prob = 1.0 - small_prob
    ratio = small_prob / failure_prob
    first_pmf = _integer_power(failure_prob, trials if isinstance(trials, int) else trials_tensor, max_trials)

    factors = _recurrence_factors(max_trials).to(prob.device)
    factors = factors[trials, : max_trials - 1] if isinstance(trials, int) else factors[trials_tensor, : max_trials - 1]
    # Row k + 1 of the chain is pmf(k + 1) = pmf(k) * (ratio * factor(k)). CPU cumprod and
    # cumsum accumulate left to right, in the kernel's order.
    chain = torch.cat([first_pmf.unsqueeze(1), ratio.unsqueeze(1) * factors], dim=1)
    keys = chain.cumprod(1).cumsum(1)

    columns = torch.arange(max_trials, device=prob.device)
    keys.masked_fill_(columns >= trials_tensor.unsqueeze(1), math.inf)
    return keys, upper


def count_below(
    keys: torch.Tensor, upper: torch.Tensor, trials: torch.Tensor | int, uniforms: torch.Tensor
) -> torch.Tensor:
    """Return the inverse CDF at ``uniforms`` from :func:`binomial_keys` rows.

    Parameters
    ----------
    keys, upper : torch.Tensor
        Output of :func:`binomial_keys`, ``n`` rows.
    trials : int or torch.Tensor
        Number of trials per row, as passed to :func:`binomial_keys`.
    uniforms : torch.Tensor
        float64 uniforms in [0, 1), shape ``(n,)`` or ``(n, m)`` for m uniforms per row.

    Returns
    -------
    torch.Tensor
        int64 counts with the shape of ``uniforms``: the number of keys at or below ``u``,
        or for ``upper`` rows, t minus the number of keys below ``1 - u``.
    """
    flat = uniforms.dim() == 1
    values = uniforms.unsqueeze(1) if flat else uniforms
    trials_column = torch.as_tensor(trials, dtype=torch.int64, device=keys.device).expand(upper.shape).unsqueeze(1)
    # 1 - u is exact for u on the 2**-53 grid, so the upper rows compare the same numbers.
    lower_counts = torch.searchsorted(keys, values, right=True)
    upper_counts = trials_column - torch.searchsorted(keys, 1.0 - values, right=False)
    counts = torch.where(upper.unsqueeze(1), upper_counts, lower_counts)
    return counts.squeeze(1) if flat else counts


def invert_cdf(trials: torch.Tensor | int, prob: torch.Tensor, uniforms: torch.Tensor, max_trials: int) -> torch.Tensor:
    """Return the inverse CDF of Binomial(trials, prob) at ``uniforms``, element by element.

    Parameters
    ----------
    trials : int or torch.Tensor
        Trial counts in ``0..max_trials``: one int, or a 1-D int64 tensor.
    prob : torch.Tensor
        1-D float64 success probabilities in [0, 1].
    uniforms : torch.Tensor
        1-D float64 uniforms in [0, 1), multiples of ``2**-53``.
    max_trials : int
        Upper bound on ``trials``.

    Returns
    -------
    torch.Tensor
        1-D int64 counts.
    """
    keys, upper = binomial_keys(trials, prob, max_trials)
    return count_below(keys, upper, trials, uniforms)


def draw_words(prefix_count: int, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """Draw the int64 words that hold ``prefix_count`` prefixes, ``PREFIXES_PER_WORD`` each.

    On CPU, ``random_()`` fills int64 with the low 63 bits of the generator's 64-bit draw,
    the same draw that ``torch.rand`` takes 53 bits of.
    """
    word_count = -(-prefix_count // PREFIXES_PER_WORD)
    return torch.empty(word_count, dtype=torch.int64, device=device).random_(generator=generator)


def split_words(words: torch.Tensor, prefix_count: int) -> torch.Tensor:
    """Return the first ``prefix_count`` prefixes of ``words``: bits 0-20, 21-41 and 42-62 of each word in turn."""
    shifts = torch.arange(0, PREFIX_BITS * PREFIXES_PER_WORD, PREFIX_BITS, device=words.device)
    return ((words.unsqueeze(1) >> shifts) & PREFIX_MASK).reshape(-1)[:prefix_count]


def prefix_intervals(prefixes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Return the smallest and the largest 53-bit uniform that starts with each prefix."""
    first = prefixes << EXTENSION_BITS
    return first.to(torch.float64) * UNIFORM_SCALE, (first | EXTENSION_MASK).to(torch.float64) * UNIFORM_SCALE


def draw_extensions(count: int, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """Draw ``count`` int64 words whose low ``EXTENSION_BITS`` bits complete one prefix each."""
    return torch.empty(count, dtype=torch.int64, device=device).random_(generator=generator)


def complete_uniforms(prefixes: torch.Tensor, extensions: torch.Tensor) -> torch.Tensor:
    """Return float64 uniforms on the 2**-53 grid: ``prefixes`` followed by the low ``EXTENSION_BITS`` bits of ``extensions``."""
    return ((prefixes << EXTENSION_BITS) | (extensions & EXTENSION_MASK)).to(torch.float64) * UNIFORM_SCALE


class BinomialSampler:
    """Exact sampler of Binomial(t, q) for ``t <= max_trials`` and q in ``[prob_low, prob_high]``.

    Parameters
    ----------
    max_trials : int
        Number of trials, or the upper bound on it when ``varying_trials`` is set.
    prob_low, prob_high : float
        Range of the success probabilities that :meth:`sample` accepts, within [0, 1].
    varying_trials : bool, default False
        Whether each element has its own number of trials in ``0..max_trials``.

    Notes
    -----
    Up to ``TABLE_MAX_TRIALS`` trials, a sampler computes each element's CDF until it has
    drawn ``TABLE_MIN_ELEMENTS`` counts. Then it builds a lookup table of at most
    ``TABLE_MAX_ENTRIES`` cells, which took 1 to 40 ms on one core of the benchmark machine.
    Both give the same counts for the same generator state. The table judges a cell by its
    corners, which assumes that the computed CDF falls as q grows, like the exact one.
    Where rounding breaks that by an ulp, the two could differ for a uniform within about
    1e-16 of a CDF value. Larger counts go to ``torch.binomial``.
    """

    def __init__(self, max_trials: int, prob_low: float, prob_high: float, *, varying_trials: bool = False) -> None:
        if not 0.0 <= prob_low <= prob_high <= 1.0:
            raise ValueError(f"probability range must satisfy 0 <= prob_low <= prob_high <= 1, got [{prob_low}, {prob_high}]")
        self.max_trials = max_trials
        self.prob_low = prob_low
        self.prob_high = prob_high
        self.varying_trials = varying_trials
        self._table: torch.Tensor | None = None
        self._device_table: torch.Tensor | None = None
        self._cell_scale = 0.0
        self._elements_sampled = 0

    def sample(
        self,
        prob: torch.Tensor,
        trials: torch.Tensor | None = None,
        *,
        generator: torch.Generator | None = None,
        check_range: bool = True,
    ) -> torch.Tensor:
        """Draw one count per element of ``prob``.

        Parameters
        ----------
        prob : torch.Tensor
            float64 success probabilities in ``[prob_low, prob_high]``.
        trials : torch.Tensor, optional
            int64 trial counts with the shape of ``prob``; required when the sampler has
            varying trials, ignored otherwise.
        generator : torch.Generator, optional
            Source of randomness; the same generator state gives the same counts.
        check_range : bool, default True
            Whether to raise ValueError for a probability outside the range. A caller that
            clamps ``prob`` to the range itself may skip the check, which costs a pass over
            the data and a device sync.

        Returns
        -------
        torch.Tensor
            int64 counts with the shape of ``prob``.
        """
        prob_flat = prob.reshape(-1).to(torch.float64)
        if prob_flat.numel() == 0:
            return torch.zeros(prob.shape, dtype=torch.int64, device=prob.device)
        if check_range:
            self._check_range(prob_flat)
        if self.varying_trials and trials is None:
            raise ValueError("this sampler has varying trials, so sample() needs trials=")
        trials_flat = trials.reshape(-1).to(torch.int64) if self.varying_trials else None

        if self.max_trials > TABLE_MAX_TRIALS:
            counts = torch.binomial(self._trials_or_max(trials_flat, prob_flat).to(torch.float64), prob_flat, generator=generator)
            return counts.to(torch.int64).reshape(prob.shape)

        count = prob_flat.numel()
        prefixes = split_words(draw_words(count, generator, prob.device), count)
        counts = self.first_pass(prob_flat, trials_flat, prefixes, self.prepare(count))
        open_index = (counts < 0).nonzero().squeeze(1)
        if open_index.numel():
            extensions = draw_extensions(open_index.numel(), generator, prob.device)
            uniforms = complete_uniforms(prefixes[open_index], extensions)
            open_trials = self._subset(trials_flat, open_index)
            counts[open_index] = invert_cdf(open_trials, prob_flat[open_index], uniforms, self.max_trials)
        return counts.reshape(prob.shape)

    @property
    def cell_scale(self) -> float:
        """Probability cells of the table per unit of probability, 0 before the build and for a single probability."""
        return self._cell_scale

    def prepare(self, count: int) -> torch.Tensor | None:
        """Record ``count`` more elements and return the lookup table, or None until ``TABLE_MIN_ELEMENTS`` are recorded."""
        self._elements_sampled += count
        if self._table is None and self._elements_sampled >= TABLE_MIN_ELEMENTS:
            self._table = _build_table(self.max_trials, self.prob_low, self.prob_high, self.varying_trials)
            span = self.prob_high - self.prob_low
            self._cell_scale = self._table.shape[1] / span if span > 0 else 0.0
        return self._table

    def first_pass(
        self, prob: torch.Tensor, trials: torch.Tensor | None, prefixes: torch.Tensor, table: torch.Tensor | None
    ) -> torch.Tensor:
        """Return the count of each element for every uniform with its prefix, or -1 where that count is not unique.

        Parameters
        ----------
        prob : torch.Tensor
            1-D float64 success probabilities.
        trials : torch.Tensor, optional
            1-D int64 trial counts, or None for ``max_trials``.
        prefixes : torch.Tensor
            1-D int64 prefixes of ``PREFIX_BITS`` bits, one per element.
        table : torch.Tensor, optional
            The lookup table that :meth:`prepare` returned for this batch.

        Returns
        -------
        torch.Tensor
            1-D int64 counts, -1 for elements whose count depends on bits past the prefix.
        """
        if table is None:
            counts = torch.full(prob.shape, -1, dtype=torch.int64, device=prob.device)
            pending = torch.arange(prob.numel(), device=prob.device)
        else:
            counts = self._table_counts(self._table_on(prob.device), prob, trials, prefixes)
            pending = (counts < 0).nonzero().squeeze(1)
        if pending.numel():
            sub_trials = self._subset(trials, pending)
            keys, upper = binomial_keys(sub_trials, prob[pending], self.max_trials)
            ends = count_below(keys, upper, sub_trials, torch.stack(prefix_intervals(prefixes[pending]), dim=1))
            counts[pending] = torch.where(ends[:, 0] == ends[:, 1], ends[:, 0], -1)
        return counts

    def _table_on(self, device: torch.device) -> torch.Tensor:
        if self._device_table is None or self._device_table.device != device:
            self._device_table = self._table.to(device)
        return self._device_table

    def _subset(self, trials: torch.Tensor | None, index: torch.Tensor) -> torch.Tensor | int:
        return self.max_trials if trials is None else trials[index]

    def _trials_or_max(self, trials: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
        if trials is not None:
            return trials
        return torch.full(like.shape, self.max_trials, dtype=torch.int64, device=like.device)

    def _check_range(self, prob: torch.Tensor) -> None:
        smallest, largest = (float(value) for value in torch.aminmax(prob))
        if not self.prob_low <= smallest <= largest <= self.prob_high:
            raise ValueError(
                f"prob must lie in [{self.prob_low}, {self.prob_high}], the range this sampler was built for; "
                f"got [{smallest}, {largest}]"
            )

    def _table_counts(
        self, table: torch.Tensor, prob: torch.Tensor, trials: torch.Tensor | None, prefixes: torch.Tensor
    ) -> torch.Tensor:
        _, prob_cells, uniform_cells = table.shape
        prob_cell = ((prob - self.prob_low) * self._cell_scale).floor_().clamp_(0, prob_cells - 1).long()
        index = prob_cell * uniform_cells + (prefixes >> (PREFIX_BITS - uniform_cells.bit_length() + 1))
        if trials is not None:
            index += trials * (prob_cells * uniform_cells)
        return table.reshape(-1)[index].long()


def kernel_table(table: torch.Tensor | None, rows: int) -> tuple[np.ndarray, int]:
    """Return a lookup table in the form the kernels take, and the shift from a prefix to its uniform cell.

    Without a table, the kernels get ``rows`` cells of -1, one per trial row, and shift
    ``PREFIX_BITS``, so every element goes to its own CDF.
    """
    if table is None:
        return np.full((rows, 1, 1), -1, dtype=np.int8), PREFIX_BITS
    return table.numpy(), PREFIX_BITS - table.shape[2].bit_length() + 1


def _table_shape(max_trials: int, prob_span: float, varying_trials: bool) -> tuple[int, int, int]:
    """Choose (trial rows, probability cells, uniform cells) for the lookup table.

    Counts change ``max_trials`` times along the uniform axis and about
    ``max_trials * prob_span`` times along the probability axis, so each axis gets enough
    cells for ``TABLE_AMBIGUITY``. When that exceeds ``TABLE_MAX_ENTRIES``, both axes shrink
    by about the same factor. Uniform cells are a power of two, at most ``2**PREFIX_BITS``,
    so a prefix's top bits name its cell.
    """
    trial_rows = max_trials + 1 if varying_trials else 1
    cells_per_row = TABLE_MAX_ENTRIES // trial_rows
    uniform_cells = max(1024, 1 << math.ceil(math.log2(max_trials / TABLE_AMBIGUITY)))
    prob_cells = max(1, math.ceil(max_trials * prob_span / TABLE_AMBIGUITY))

    excess = prob_cells * uniform_cells / cells_per_row
    if excess > 1.0:
        uniform_cells = max(1, 1 << int(math.log2(uniform_cells / math.sqrt(excess))))
        prob_cells = max(1, cells_per_row // uniform_cells)
    return trial_rows, prob_cells, min(uniform_cells, 1 << PREFIX_BITS)


def _build_table(max_trials: int, prob_low: float, prob_high: float, varying_trials: bool) -> torch.Tensor:
    """Return int8 counts per (trials, probability cell, uniform cell), -1 where the count varies within the cell.

    The count grows with q and with u, so it is constant over a cell when it is equal at the
    lowest corner and at the largest 53-bit uniform of the highest corner.
    """
    trial_rows, prob_cells, uniform_cells = _table_shape(max_trials, prob_high - prob_low, varying_trials)
    prob_edges = torch.linspace(prob_low, prob_high, prob_cells + 1, dtype=torch.float64)
    cell_width = 1 << (UNIFORM_BITS - uniform_cells.bit_length() + 1)
    cell_starts = torch.arange(uniform_cells, dtype=torch.int64) * cell_width
    lowest_uniforms = (cell_starts.to(torch.float64) * UNIFORM_SCALE).expand(prob_cells, -1).contiguous()
    highest_uniforms = (cell_starts + cell_width - 1).to(torch.float64) * UNIFORM_SCALE
    highest_uniforms = highest_uniforms.expand(prob_cells, -1).contiguous()

    table = torch.zeros(trial_rows, prob_cells, uniform_cells, dtype=torch.int8)
    first_trials = 0 if varying_trials else max_trials
    for row, trials in enumerate(range(first_trials, max_trials + 1)):
        if trials == 0:
            continue
        keys, upper = binomial_keys(trials, prob_edges, trials)
        lowest = count_below(keys[:-1], upper[:-1], trials, lowest_uniforms)
        highest = count_below(keys[1:], upper[1:], trials, highest_uniforms)
        table[row] = torch.where(lowest == highest, lowest, -1).to(torch.int8)

    logger.debug(
        "binomial lookup table: trials<=%d, q in [%.6g, %.6g], %d x %d x %d cells, %.4f ambiguous",
        max_trials, prob_low, prob_high, trial_rows, prob_cells, uniform_cells, float((table < 0).double().mean()),
    )
    return table
