"""Argument checks shared by the mechanisms; each raises ValueError naming the value and the valid range."""

from __future__ import annotations

import math
import numbers

import torch


def check_int_range(name: str, value: object, low: int, high: int | None = None) -> int:
    """Return ``value`` as int if it is an integer in ``low..high``, else raise ValueError.

    Parameters
    ----------
    name : str
        Argument name used in the message.
    value : object
        Value to check; bool is rejected.
    low : int
        Smallest valid value.
    high : int, optional
        Largest valid value; no upper limit when None.

    Returns
    -------
    int
        The checked value.
    """
    valid = f"{low}..{high}" if high is not None else f">= {low}"
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer in {valid}, got {value!r}")
    if value < low or (high is not None and value > high):
        raise ValueError(f"{name} must be an integer in {valid}, got {value}")
    return int(value)


def check_positive(name: str, value: object) -> float:
    """Return ``value`` as float if it is finite and > 0, else raise ValueError.

    Parameters
    ----------
    name : str
        Argument name used in the message.
    value : object
        Value to check.

    Returns
    -------
    float
        The checked value.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def check_last_dim(name: str, tensor: object, dim: int, *, check_nan: bool = True) -> None:
    """Raise ValueError unless ``tensor`` is a NaN-free floating tensor whose last dimension is ``dim``.

    Infinite values pass, because clipping maps them to the clip bound.

    Parameters
    ----------
    name : str
        Argument name used in the message.
    tensor : object
        Value to check.
    dim : int
        Expected size of the last dimension.
    check_nan : bool, default True
        Whether to scan for NaN here; a caller that scans in its own pass over the data
        sets it to False.
    """
    if not isinstance(tensor, torch.Tensor) or not tensor.is_floating_point():
        raise ValueError(f"{name} must be a floating-point torch.Tensor, got {type(tensor).__name__}")
    if tensor.dim() == 0 or tensor.shape[-1] != dim:
        raise ValueError(f"{name} must have last dimension {dim} (the mechanism's dim), got shape {tuple(tensor.shape)}")
    if check_nan and bool(torch.isnan(tensor).any()):
        raise_nan(name)


def raise_nan(name: str) -> None:
    """Raise the ValueError for NaN values in argument ``name``."""
    raise ValueError(f"{name} contains NaN values; pass real-valued coordinates")
