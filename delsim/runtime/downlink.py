"""Downlink wire format: the generated token ids the server sends back to the client.

Layout: 1 byte id width in bytes (2 or 4), 4 bytes little-endian count, then the ids
little-endian at that width. Vocabularies up to 65,536 entries use 2 bytes per id.
"""

from __future__ import annotations

import struct

import numpy as np

DOWNLINK_HEADER_BYTES = 5


def pack_token_ids(token_ids: list[int], vocab_size: int) -> bytes:
    """Pack generated token ids for the downlink."""
    width = 2 if vocab_size <= 1 << 16 else 4
    array = np.asarray(token_ids, dtype="<u2" if width == 2 else "<u4")
    return struct.pack("<BI", width, len(token_ids)) + array.tobytes()


def unpack_token_ids(data: bytes) -> list[int]:
    """Unpack a downlink message; raise ValueError if it is malformed."""
    if len(data) < DOWNLINK_HEADER_BYTES:
        raise ValueError(f"downlink message of {len(data)} bytes is shorter than its {DOWNLINK_HEADER_BYTES}-byte header")
    width, count = struct.unpack_from("<BI", data)
    if width not in (2, 4):
        raise ValueError(f"downlink id width {width} is invalid; expected 2 or 4")
    expected = DOWNLINK_HEADER_BYTES + width * count
    if len(data) != expected:
        raise ValueError(f"downlink message is {len(data)} bytes but its header announces {expected}")
    dtype = "<u2" if width == 2 else "<u4"
    return np.frombuffer(data, dtype=dtype, offset=DOWNLINK_HEADER_BYTES).astype(int).tolist()
