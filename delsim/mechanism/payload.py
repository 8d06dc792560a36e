"""Wire format of a privatized prompt: a 20-byte header and the levels packed bit by bit.

Layout (all integers little-endian):

======  =====  ==========================================================
offset  bytes  field
======  =====  ==========================================================
0       4      magic ``b"DELP"``
4       1      format version (1)
5       1      flags: bit 0 set when the levels are sparse (ternary rounds)
6       1      bits n of the quantizer, 1..16
7       1      reserved, 0
8       4      tokens T, uint32 >= 1
12      4      dim d, uint32 >= 1
16      4      decoding scale, float32 finite > 0 (A, or B when sparse)
======  =====  ==========================================================

The body contains ``T * d`` levels in row-major order, each ``w`` bits wide, where ``w = n``
for binomial levels and ``n + 1`` for sparse ones. Level ``i`` occupies stream bits
``i*w .. i*w + w - 1``, least significant bit first, and stream bit ``j`` is bit ``j % 8``
of body byte ``j // 8``. Unused bits of the last byte are 0. A payload is therefore exactly
``HEADER_SIZE + ceil(T * d * w / 8)`` bytes.
"""

from __future__ import annotations

import logging
import math
import struct
from dataclasses import dataclass

import numpy as np
import torch

from delsim.mechanism.levels import levels_to_values, max_level, to_wire_scale
from delsim.mechanism.quantizer import MAX_BITS
from delsim.mechanism.validation import check_int_range

logger = logging.getLogger(__name__)

MAGIC = b"DELP"
"""First four bytes of every payload."""

FORMAT_VERSION = 1
"""Version of the layout described in this module."""

FLAG_SPARSE = 0x01
"""Flags bit set when the levels are sparse (2R + 1 levels, n + 1 bits each)."""

_HEADER = struct.Struct("<4sBBBBIIf")

HEADER_SIZE = _HEADER.size
"""Header size in bytes (20)."""

_PACK_CHUNK = 1 << 18
"""Levels packed per step; a multiple of 8 keeps every chunk on a byte boundary."""


class PayloadError(ValueError):
    """Raised when bytes are not a valid payload: truncated, oversized, foreign or out of range."""


@dataclass(frozen=True)
class Payload:
    """A parsed payload: header fields and the integer levels.

    Attributes
    ----------
    tokens : int
        Number of prompt tokens T.
    dim : int
        Coordinates per token d.
    bits : int
        Quantizer bits n.
    sparse : bool
        Whether the levels are sparse (ternary rounds).
    scale : float
        Decoding scale as stored (float32 precision).
    levels : torch.Tensor
        int64 levels, shape ``(tokens, dim)``.
    """

    tokens: int
    dim: int
    bits: int
    sparse: bool
    scale: float
    levels: torch.Tensor

    @property
    def bits_per_coordinate(self) -> int:
        """Width w of one packed level: n, or n + 1 when sparse."""
        return self.bits + 1 if self.sparse else self.bits

    @property
    def rounds(self) -> int:
        """Quantizer rounds R = 2**n - 1."""
        return (1 << self.bits) - 1


def payload_size(tokens: int, dim: int, bits: int) -> int:
    """Return the size in bytes of a payload of ``tokens x dim`` levels of ``bits`` bits each.

    Parameters
    ----------
    tokens : int
        Number of tokens T.
    dim : int
        Coordinates per token d.
    bits : int
        Bits per coordinate on the wire (n, or n + 1 for sparse levels).

    Returns
    -------
    int
        ``HEADER_SIZE + ceil(tokens * dim * bits / 8)``.
    """
    return HEADER_SIZE + math.ceil(tokens * dim * bits / 8)


def pack_payload(
    levels: torch.Tensor,
    *,
    quantizer: object | None = None,
    bits: int | None = None,
    sparse: bool | None = None,
    scale: float | None = None,
) -> bytes:
    """Serialize integer levels of shape ``(T, d)`` into payload bytes.

    Pass either ``quantizer`` (anything with ``bits``, ``sparse`` and ``scale`` attributes,
    such as :class:`StochasticQuantizer`) or all of ``bits``, ``sparse`` and ``scale``.

    Parameters
    ----------
    levels : torch.Tensor
        Integer levels, shape ``(T, d)``, in ``0..max_level``.
    quantizer : object, optional
        Source of bits, sparse flag and scale.
    bits : int, optional
        Quantizer bits n, 1..16.
    sparse : bool, optional
        Whether the levels are sparse.
    scale : float, optional
        Decoding scale (A, or B when sparse); stored as float32.

    Returns
    -------
    bytes
        The payload, exactly ``payload_size(T, d, w)`` bytes.

    Raises
    ------
    ValueError
        If the arguments are inconsistent or a level is out of range.
    """
    bits, sparse, scale = _resolve_format(quantizer, bits, sparse, scale)
    if not isinstance(levels, torch.Tensor) or levels.dim() != 2 or levels.is_floating_point():
        raise ValueError(f"levels must be a 2-D integer tensor (T, d), got {getattr(levels, 'shape', type(levels))}")
    tokens, dim = levels.shape
    if tokens < 1 or dim < 1 or tokens > 0xFFFFFFFF or dim > 0xFFFFFFFF:
        raise ValueError(f"levels shape must be (T, d) with 1 <= T, d < 2**32, got {tuple(levels.shape)}")
    highest = max_level(bits, sparse)
    low, high = int(levels.min()), int(levels.max())
    if low < 0 or high > highest:
        raise ValueError(f"levels must lie in 0..{highest} for bits={bits}, sparse={sparse}; got range {low}..{high}")

    width = bits + 1 if sparse else bits
    header = _HEADER.pack(MAGIC, FORMAT_VERSION, FLAG_SPARSE if sparse else 0, bits, 0, tokens, dim, scale)
    values = levels.detach().cpu().reshape(-1).numpy().astype(np.uint32)
    return header + _pack_bits(values, width)


def unpack_payload(data: bytes | bytearray | memoryview) -> Payload:
    """Parse and validate payload bytes.

    Parameters
    ----------
    data : bytes-like
        A complete payload.

    Returns
    -------
    Payload
        The header fields and the levels.

    Raises
    ------
    PayloadError
        If the bytes are not exactly one valid payload.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise PayloadError(f"payload must be bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) < HEADER_SIZE:
        raise PayloadError(f"payload truncated: {len(data)} bytes is shorter than the {HEADER_SIZE}-byte header")

    magic, version, flags, bits, reserved, tokens, dim, scale = _HEADER.unpack_from(data)
    _check_header(magic, version, flags, bits, reserved, tokens, dim, scale)
    sparse = bool(flags & FLAG_SPARSE)
    width = bits + 1 if sparse else bits

    expected = payload_size(tokens, dim, width)
    if len(data) != expected:
        state = "truncated" if len(data) < expected else "oversized"
        raise PayloadError(f"payload {state}: {len(data)} bytes, expected {expected} for T={tokens}, d={dim}, {width} bits per level")

    values = _unpack_bits(data[HEADER_SIZE:], tokens * dim, width)
    highest = max_level(bits, sparse)
    if values.size and int(values.max()) > highest:
        raise PayloadError(f"payload level {int(values.max())} is out of range 0..{highest} for bits={bits}, sparse={sparse}")

    levels = torch.from_numpy(values.astype(np.int64)).reshape(tokens, dim)
    return Payload(tokens=tokens, dim=dim, bits=bits, sparse=sparse, scale=float(scale), levels=levels)


def decode_payload(payload: Payload) -> torch.Tensor:
    """Map a payload's levels to released values, identical to ``StochasticQuantizer.decode``.

    Parameters
    ----------
    payload : Payload
        Parsed payload.

    Returns
    -------
    torch.Tensor
        float32 values, shape ``(T, d)``.
    """
    return levels_to_values(payload.levels, bits=payload.bits, sparse=payload.sparse, scale=payload.scale)


def _resolve_format(quantizer: object | None, bits: int | None, sparse: bool | None, scale: float | None) -> tuple[int, bool, float]:
    if quantizer is not None:
        if bits is not None or sparse is not None or scale is not None:
            raise ValueError("pass either quantizer or bits/sparse/scale to pack_payload, not both")
        bits, sparse, scale = quantizer.bits, quantizer.sparse, quantizer.scale
    elif bits is None or sparse is None or scale is None:
        raise ValueError("pack_payload needs quantizer=... or all of bits=, sparse= and scale=")

    bits = check_int_range("bits", bits, 1, MAX_BITS)
    scale32 = to_wire_scale(float(scale))
    if not math.isfinite(scale32) or scale32 <= 0:
        raise ValueError(f"scale must be a finite float32 > 0, got {scale!r}")
    return bits, bool(sparse), scale32


def _check_header(magic: bytes, version: int, flags: int, bits: int, reserved: int, tokens: int, dim: int, scale: float) -> None:
    if magic != MAGIC:
        raise PayloadError(f"not a DEL payload: magic {magic!r}, expected {MAGIC!r}")
    if version != FORMAT_VERSION:
        raise PayloadError(f"unsupported payload format version {version}; this reader supports version {FORMAT_VERSION}")
    if flags & ~FLAG_SPARSE:
        raise PayloadError(f"unknown payload flags 0x{flags:02x}; only 0x{FLAG_SPARSE:02x} (sparse) is defined")
    if reserved != 0:
        raise PayloadError(f"payload reserved byte must be 0, got {reserved}")
    if not 1 <= bits <= MAX_BITS:
        raise PayloadError(f"payload bits {bits} is out of range 1..{MAX_BITS}")
    if tokens < 1 or dim < 1:
        raise PayloadError(f"payload shape must have T >= 1 and d >= 1, got T={tokens}, d={dim}")
    if not math.isfinite(scale) or scale <= 0:
        raise PayloadError(f"payload scale must be finite and > 0, got {scale}")


def _pack_bits(values: np.ndarray, width: int) -> bytes:
    if width == 8:
        return values.astype("<u1").tobytes()
    if width == 16:
        return values.astype("<u2").tobytes()

    pieces = []
    for start in range(0, values.size, _PACK_CHUNK):
        chunk = values[start : start + _PACK_CHUNK].astype("<u4")
        bit_rows = np.unpackbits(chunk.view(np.uint8).reshape(-1, 4), axis=1, bitorder="little")
        pieces.append(np.packbits(bit_rows[:, :width].reshape(-1), bitorder="little").tobytes())
    return b"".join(pieces)


def _unpack_bits(body: bytes, count: int, width: int) -> np.ndarray:
    raw = np.frombuffer(body, dtype=np.uint8)
    if width == 8:
        return raw.astype(np.uint32)
    if width == 16:
        return raw.view("<u2").astype(np.uint32)

    used_bits = count * width
    if used_bits % 8 and raw[-1] >> (used_bits % 8):
        raise PayloadError("payload padding bits after the last level must be 0")
    values = np.empty(count, dtype=np.uint32)
    for start in range(0, count, _PACK_CHUNK):
        stop = min(start + _PACK_CHUNK, count)
        chunk_bits = np.unpackbits(raw[start * width // 8 :], bitorder="little", count=(stop - start) * width)
        padded = np.zeros((stop - start, 32), dtype=np.uint8)
        padded[:, :width] = chunk_bits.reshape(-1, width)
        values[start:stop] = np.packbits(padded, axis=1, bitorder="little").view("<u4").reshape(-1)
    return values
