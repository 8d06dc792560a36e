"""Numba kernels that draw the quantizer's levels, imported by ``sampling.load_kernels`` when numba is installed.

The kernels run the algorithm of :mod:`delsim.mechanism.sampling` in one pass over the
coordinates. Each performs, element by element, the float64 operations of the torch code
in ``sampling.py`` and ``quantizer.py`` in the same order: no fused multiply-add (numba
does not contract without ``fastmath``), no reassociation, integer powers by the same
binary exponentiation. The levels therefore match the torch backend bit for bit, which
``tests/mechanism`` checks.

The constants below repeat those of ``sampling.py``. Numba caches compiled code per source
file and would not notice a change made there, so a test asserts that they agree.
"""

from __future__ import annotations

import numpy as np
from numba import njit

PREFIX_BITS = 21
PREFIXES_PER_WORD = 3
EXTENSION_BITS = 32
PREFIX_MASK = (1 << PREFIX_BITS) - 1
EXTENSION_MASK = (1 << EXTENSION_BITS) - 1
UNIFORM_SCALE = 2.0**-53


@njit(cache=True)
def _integer_power(base: float, exponent: int) -> float:
    result = 1.0
    square = base
    while exponent:
        if exponent & 1:
            result = result * square
        square = square * square
        exponent >>= 1
    return result


@njit(cache=True)
def _walk(trials: int, prob: float, low: float, high: float) -> int:
    """Return the count of Binomial(trials, prob) at every uniform in ``[low, high]``, or -1 if it varies there.

    The keys are those of ``sampling.binomial_keys``, computed one at a time until the
    count is settled; see ``sampling.count_below`` for how they map to counts.
    """
    if trials == 0:
        return 0
    upper = prob > 0.5
    small_prob = 1.0 - prob if upper else prob
    failure_prob = 1.0 - small_prob
    ratio = small_prob / failure_prob
    pmf = _integer_power(failure_prob, trials)
    key = pmf
    for count in range(trials):
        if count > 0:
            pmf = pmf * (ratio * ((trials - count + 1) / count))
            key = key + pmf
        if upper:
            # The count is trials minus the keys below 1 - u, with 1 - high <= 1 - u <= 1 - low.
            if key >= 1.0 - low:
                return trials - count
            if key >= 1.0 - high:
                return -1
        else:
            # The count is the number of keys at or below u.
            if key > high:
                return count
            if key > low:
                return -1
    return 0 if upper else trials


@njit(cache=True)
def _walk_prefix(trials: int, prob: float, prefix: int) -> int:
    """Return the count at every 53-bit uniform that starts with ``prefix``, or -1 if it varies."""
    first = prefix << EXTENSION_BITS
    return _walk(trials, prob, first * UNIFORM_SCALE, (first | EXTENSION_MASK) * UNIFORM_SCALE)


@njit(cache=True, inline="always")
def _plus_prob(z: float, clip: float, inverse_two_a: float, prob_low: float, prob_high: float) -> float:
    """Return ``1/2 + clip(z) / (2A)`` clamped to the plus-probability range, as ``LevelSampler.plus_prob`` does."""
    clipped = min(max(np.float64(z), -clip), clip)
    return min(max(clipped * inverse_two_a + 0.5, prob_low), prob_high)


@njit(cache=True)
def plus_cells(z: np.ndarray, settings: np.ndarray, prob_cells: int, uniform_cells: int, cells: np.ndarray) -> bool:
    """Write each coordinate's table offset ``cell * uniform_cells`` to ``cells``, and return whether ``z`` has NaN.

    ``settings`` contains clip, 1 / (2A), the plus-probability range, the plus table's cell
    scale and the sparsity.
    """
    clip, inverse_two_a, prob_low, prob_high, cell_scale, _ = settings
    top = prob_cells - 1.0
    found_nan = False
    for index in range(z.shape[0]):
        found_nan |= z[index] != z[index]
        prob = _plus_prob(z[index], clip, inverse_two_a, prob_low, prob_high)
        cells[index] = np.int32(min(max((prob - prob_low) * cell_scale, 0.0), top)) * uniform_cells
    return found_nan


@njit(cache=True)
def _split_words(words: np.ndarray, count: int) -> np.ndarray:
    """Return the first ``count`` prefixes of ``words`` as int32, in the order of ``sampling.split_words``."""
    prefixes = np.empty(PREFIXES_PER_WORD * words.shape[0], dtype=np.int32)
    for position in range(words.shape[0]):
        word = words[position]
        prefixes[PREFIXES_PER_WORD * position] = word & PREFIX_MASK
        prefixes[PREFIXES_PER_WORD * position + 1] = (word >> PREFIX_BITS) & PREFIX_MASK
        prefixes[PREFIXES_PER_WORD * position + 2] = (word >> (2 * PREFIX_BITS)) & PREFIX_MASK
    return prefixes[:count]


@njit(cache=True)
def quantize_first_pass(
    z: np.ndarray,
    cells: np.ndarray,
    words: np.ndarray,
    settings: np.ndarray,
    rounds: int,
    sparse: bool,
    plus_table: np.ndarray,
    plus_shift: int,
    nonzero_table: np.ndarray,
    nonzero_shift: int,
    level_values: np.ndarray,
    out: np.ndarray,
    open_index: np.ndarray,
) -> int:
    """Draw each coordinate's level from its prefixes and write ``level_values[level]`` to ``out``.

    Coordinate i reads prefix i. For sparse levels it reads prefix 2i for the nonzero count
    and prefix 2i + 1 for the plus count. ``cells`` comes from :func:`plus_cells`.
    Coordinates whose prefixes leave a count open keep their ``out`` entry. The kernel
    returns how many there are and stores the first ``len(open_index)`` of their indices,
    in order.

    The dense and sparse loops are separate and read the flattened plus table with one
    precomputed offset, so the common case is a gather and a compare per coordinate.
    """
    clip, inverse_two_a, prob_low, prob_high, _, sparsity = settings
    size = z.shape[0]
    prefixes = _split_words(words, 2 * size if sparse else size)
    plus_flat = plus_table.reshape(-1)
    row_size = plus_table.shape[1] * plus_table.shape[2]
    capacity = open_index.shape[0]
    open_count = 0
    if not sparse:
        for index in range(size):
            plus = plus_flat[cells[index] + (prefixes[index] >> plus_shift)]
            if plus < 0:
                prob = _plus_prob(z[index], clip, inverse_two_a, prob_low, prob_high)
                plus = _walk_prefix(rounds, prob, prefixes[index])
            if plus >= 0:
                out[index] = level_values[plus]
                continue
            if open_count < capacity:
                open_index[open_count] = index
            open_count += 1
        return open_count

    for index in range(size):
        nonzero_prefix = prefixes[2 * index]
        nonzero = nonzero_table[0, 0, nonzero_prefix >> nonzero_shift]
        if nonzero < 0:
            nonzero = _walk_prefix(rounds, sparsity, nonzero_prefix)
        if nonzero >= 0:
            prefix = prefixes[2 * index + 1]
            plus = plus_flat[nonzero * row_size + cells[index] + (prefix >> plus_shift)]
            if plus < 0:
                prob = _plus_prob(z[index], clip, inverse_two_a, prob_low, prob_high)
                plus = _walk_prefix(nonzero, prob, prefix)
            if plus >= 0:
                out[index] = level_values[2 * plus - nonzero + rounds]
                continue
        if open_count < capacity:
            open_index[open_count] = index
        open_count += 1
    return open_count


@njit(cache=True, inline="always")
def _uniform(words: np.ndarray, position: int, extension: int) -> float:
    """Return the 53-bit uniform made of prefix ``position`` of ``words`` and the low bits of ``extension``."""
    prefix = (words[position // PREFIXES_PER_WORD] >> (PREFIX_BITS * (position % PREFIXES_PER_WORD))) & PREFIX_MASK
    return ((prefix << EXTENSION_BITS) | (extension & EXTENSION_MASK)) * UNIFORM_SCALE


@njit(cache=True)
def quantize_second_pass(
    z: np.ndarray,
    words: np.ndarray,
    settings: np.ndarray,
    rounds: int,
    sparse: bool,
    open_index: np.ndarray,
    extensions: np.ndarray,
    level_values: np.ndarray,
    out: np.ndarray,
) -> None:
    """Write the levels of the coordinates :func:`quantize_first_pass` left open.

    Open coordinate j completes its prefixes with ``extensions[j]``, or for sparse levels
    ``extensions[2j]`` (nonzero count) and ``extensions[2j + 1]`` (plus count), and gets
    its counts at those complete uniforms.
    """
    clip, inverse_two_a, prob_low, prob_high, _, sparsity = settings
    for slot in range(open_index.shape[0]):
        index = open_index[slot]
        prob = _plus_prob(z[index], clip, inverse_two_a, prob_low, prob_high)
        if sparse:
            nonzero_uniform = _uniform(words, 2 * index, extensions[2 * slot])
            nonzero = _walk(rounds, sparsity, nonzero_uniform, nonzero_uniform)
            plus_uniform = _uniform(words, 2 * index + 1, extensions[2 * slot + 1])
            plus = _walk(nonzero, prob, plus_uniform, plus_uniform)
            out[index] = level_values[2 * plus - nonzero + rounds]
        else:
            uniform = _uniform(words, index, extensions[slot])
            out[index] = level_values[_walk(rounds, prob, uniform, uniform)]
