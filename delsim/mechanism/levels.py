"""Mapping between integer quantization levels and the released float values.

The quantizer, the Gaussian baseline and the payload decoder all use this one mapping, so a
value decoded on the server is bit-identical to the value the client mechanism releases.
"""

from __future__ import annotations

import math
import struct

import torch


def to_wire_scale(scale: float) -> float:
    """Round a decoding scale to float32, the precision the payload header stores.

    Parameters
    ----------
    scale : float
        Decoding scale (A for the binomial quantizer, B for the sparse one).

    Returns
    -------
    float
        The nearest float32 value, as a Python float; infinite when ``scale`` exceeds the
        float32 range.
    """
    try:
        return struct.unpack("<f", struct.pack("<f", scale))[0]
    except OverflowError:
        return math.copysign(math.inf, scale)


def max_level(bits: int, sparse: bool) -> int:
    """Return the largest valid level: ``R`` for binomial levels, ``2R`` for sparse ones.

    Parameters
    ----------
    bits : int
        Quantizer bits n, so that ``R = 2**n - 1``.
    sparse : bool
        Whether the levels encode the ternary (sparsity < 1) release.

    Returns
    -------
    int
        The maximum level.
    """
    rounds = (1 << bits) - 1
    return 2 * rounds if sparse else rounds


def levels_to_values(levels: torch.Tensor, *, bits: int, sparse: bool, scale: float) -> torch.Tensor:
    """Map integer levels to released values.

    Binomial levels ``k in 0..R`` map to ``scale * (2k - R) / R``; sparse levels
    ``l = k_plus - k_minus + R in 0..2R`` map to ``scale * (l - R) / R``.

    Parameters
    ----------
    levels : torch.Tensor
        Integer levels, already checked to lie in ``0..max_level(bits, sparse)``.
    bits : int
        Quantizer bits n.
    sparse : bool
        Whether the levels are sparse (ternary rounds).
    scale : float
        Decoding scale; it is rounded to float32 first, as in the payload header.

    Returns
    -------
    torch.Tensor
        float32 values with the shape of ``levels``.
    """
    rounds = (1 << bits) - 1
    signed_sum = levels.to(torch.float64)
    if not sparse:
        signed_sum.mul_(2.0)
    return signed_sum.sub_(rounds).mul_(to_wire_scale(scale) / rounds).to(torch.float32)
