"""Round trips, exact sizes and rejection of invalid input for the payload wire format."""

from __future__ import annotations

import math
import struct

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from delsim.mechanism import (
    HEADER_SIZE,
    Payload,
    PayloadError,
    StochasticQuantizer,
    decode_payload,
    pack_payload,
    payload_size,
    unpack_payload,
)

HEADER = struct.Struct("<4sBBBBIIf")


def random_levels(tokens: int, dim: int, highest: int, seed: int) -> torch.Tensor:
    return torch.randint(0, highest + 1, (tokens, dim), generator=torch.Generator().manual_seed(seed))


def test_header_size() -> None:
    assert HEADER_SIZE == 20
    assert HEADER_SIZE <= 32
    assert payload_size(3, 5, 7) == 20 + math.ceil(3 * 5 * 7 / 8)


@pytest.mark.parametrize("bits", range(1, 17))
@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize(("tokens", "dim"), [(1, 1), (3, 7), (5, 13), (2, 128)])
def test_round_trip_bit_exact(bits: int, sparse: bool, tokens: int, dim: int) -> None:
    rounds = (1 << bits) - 1
    highest = 2 * rounds if sparse else rounds
    levels = random_levels(tokens, dim, highest, seed=bits * 100 + tokens)
    levels[0, 0] = highest
    levels[-1, -1] = 0

    data = pack_payload(levels, bits=bits, sparse=sparse, scale=0.375)
    width = bits + 1 if sparse else bits
    assert len(data) == payload_size(tokens, dim, width)

    payload = unpack_payload(data)
    assert torch.equal(payload.levels, levels)
    assert payload.tokens == tokens
    assert payload.dim == dim
    assert payload.bits == bits
    assert payload.sparse is sparse
    assert payload.scale == 0.375
    assert payload.bits_per_coordinate == width


def test_bit_order_little_endian() -> None:
    # Levels 1, 2, 3 at 2 bits each: stream bits 10 01 11 (LSB first) -> byte 0b00111001.
    data = pack_payload(torch.tensor([[1, 2, 3]]), bits=2, sparse=False, scale=1.0)
    assert data[HEADER_SIZE:] == bytes([0b00111001])
    # Level 5 at 3 bits and level 1 at 3 bits: bits 101 100 -> byte 0b00001101.
    data = pack_payload(torch.tensor([[5, 1]]), bits=3, sparse=False, scale=1.0)
    assert data[HEADER_SIZE:] == bytes([0b00001101])
    # 16-bit levels are little-endian uint16.
    data = pack_payload(torch.tensor([[0x1234]]), bits=16, sparse=False, scale=1.0)
    assert data[HEADER_SIZE:] == bytes([0x34, 0x12])


def test_header_fields() -> None:
    data = pack_payload(torch.zeros(4, 6, dtype=torch.int64), bits=5, sparse=True, scale=2.5)
    magic, version, flags, bits, reserved, tokens, dim, scale = HEADER.unpack_from(data)
    assert (magic, version, flags, bits, reserved, tokens, dim, scale) == (b"DELP", 1, 1, 5, 0, 4, 6, 2.5)


def test_decode_agrees_with_quantizer() -> None:
    for sparsity in (1.0, 0.5):
        quantizer = StochasticQuantizer(6, 3.0, 0.05, 32, sparsity)
        levels = quantizer.encode(torch.randn(9, 32) * 0.05, generator=torch.Generator().manual_seed(0))
        payload = unpack_payload(pack_payload(levels, quantizer=quantizer))
        assert torch.equal(decode_payload(payload), quantizer.decode(levels))


def test_large_payload_round_trip() -> None:
    levels = random_levels(512, 4096, 255, seed=1)
    data = pack_payload(levels, bits=8, sparse=False, scale=1.0)
    assert len(data) == HEADER_SIZE + 512 * 4096
    assert torch.equal(unpack_payload(data).levels, levels)

    odd = random_levels(37, 4096, 2 * 511, seed=2)
    data = pack_payload(odd, bits=9, sparse=True, scale=1.0)
    assert torch.equal(unpack_payload(data).levels, odd)


def valid_payload() -> bytes:
    return pack_payload(torch.tensor([[0, 1, 2], [3, 4, 5]]), bits=3, sparse=False, scale=1.5)


def replace_header(data: bytes, **fields: object) -> bytes:
    names = ("magic", "version", "flags", "bits", "reserved", "tokens", "dim", "scale")
    values = dict(zip(names, HEADER.unpack_from(data)))
    values.update(fields)
    return HEADER.pack(*(values[name] for name in names)) + data[HEADER_SIZE:]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (valid_payload()[:10], r"truncated: 10 bytes is shorter than the 20-byte header"),
        (valid_payload()[:-1], r"payload truncated: 22 bytes, expected 23"),
        (valid_payload() + b"\x00", r"payload oversized: 24 bytes, expected 23"),
        (replace_header(valid_payload(), magic=b"XELP"), r"not a DEL payload: magic"),
        (replace_header(valid_payload(), version=2), r"unsupported payload format version 2"),
        (replace_header(valid_payload(), flags=4), r"unknown payload flags 0x04"),
        (replace_header(valid_payload(), reserved=1), r"reserved byte must be 0, got 1"),
        (replace_header(valid_payload(), bits=0), r"payload bits 0 is out of range 1\.\.16"),
        (replace_header(valid_payload(), bits=17), r"payload bits 17 is out of range 1\.\.16"),
        (replace_header(valid_payload(), tokens=0), r"T >= 1 and d >= 1, got T=0"),
        (replace_header(valid_payload(), dim=0), r"T >= 1 and d >= 1, got T=2, d=0"),
        (replace_header(valid_payload(), scale=math.nan), r"scale must be finite and > 0"),
        (replace_header(valid_payload(), scale=-1.0), r"scale must be finite and > 0"),
        (replace_header(valid_payload(), tokens=2**32 - 1), r"payload truncated"),
        (valid_payload()[:-1] + b"\xc0", r"padding bits after the last level must be 0"),
    ],
)
def test_invalid_payload_rejected(data: bytes, message: str) -> None:
    with pytest.raises(PayloadError, match=message):
        unpack_payload(data)


def test_sparse_level_out_of_range() -> None:
    # Sparse 2-bit levels use 3 bits, so 7 is representable but above the maximum 2R = 6.
    data = pack_payload(torch.tensor([[6, 0]]), bits=2, sparse=True, scale=1.0)
    body = bytearray(data[HEADER_SIZE:])
    body[0] |= 0b111
    with pytest.raises(PayloadError, match=r"level 7 is out of range 0\.\.6"):
        unpack_payload(data[:HEADER_SIZE] + bytes(body))


def test_payload_error_is_value_error() -> None:
    assert issubclass(PayloadError, ValueError)
    with pytest.raises(PayloadError, match="payload must be bytes"):
        unpack_payload("DELP")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "levels", "message"),
    [
        ({"bits": 3, "sparse": False, "scale": 1.0}, torch.tensor([[8]]), r"levels must lie in 0\.\.7"),
        ({"bits": 3, "sparse": False, "scale": 1.0}, torch.tensor([[-1]]), r"levels must lie in 0\.\.7"),
        ({"bits": 0, "sparse": False, "scale": 1.0}, torch.tensor([[0]]), r"bits must be an integer in 1\.\.16"),
        ({"bits": 3, "sparse": False, "scale": 0.0}, torch.tensor([[0]]), r"scale must be a finite float32 > 0"),
        ({"bits": 3, "sparse": False, "scale": 1e39}, torch.tensor([[0]]), r"scale must be a finite float32 > 0"),
        ({"bits": 3, "sparse": False, "scale": 1.0}, torch.tensor([0, 1]), r"levels must be a 2-D integer tensor"),
        ({"bits": 3, "sparse": False, "scale": 1.0}, torch.tensor([[0.5]]), r"levels must be a 2-D integer tensor"),
        ({"bits": 3, "sparse": False, "scale": 1.0}, torch.zeros(0, 4, dtype=torch.int64), r"1 <= T, d < 2\*\*32"),
        ({"bits": 3}, torch.tensor([[0]]), r"needs quantizer=\.\.\. or all of bits="),
    ],
)
def test_invalid_pack_arguments(kwargs: dict, levels: torch.Tensor, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        pack_payload(levels, **kwargs)


def test_pack_rejects_quantizer_and_fields() -> None:
    quantizer = StochasticQuantizer(3, 1.0, 0.05, 1)
    with pytest.raises(ValueError, match="not both"):
        pack_payload(torch.tensor([[0]]), quantizer=quantizer, bits=3)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=200))
def test_arbitrary_bytes_parse_or_reject(data: bytes) -> None:
    check_parse_or_reject(data)


@settings(max_examples=400, deadline=None)
@given(
    st.integers(min_value=1, max_value=16),
    st.booleans(),
    st.integers(min_value=1, max_value=6),
    st.integers(min_value=1, max_value=9),
    st.data(),
)
def test_mutated_payload_parse_or_reject(bits: int, sparse: bool, tokens: int, dim: int, data: st.DataObject) -> None:
    rounds = (1 << bits) - 1
    levels = random_levels(tokens, dim, 2 * rounds if sparse else rounds, seed=bits)
    payload = bytearray(pack_payload(levels, bits=bits, sparse=sparse, scale=0.5))
    position = data.draw(st.integers(min_value=0, max_value=len(payload) - 1))
    payload[position] = data.draw(st.integers(min_value=0, max_value=255))
    cut = data.draw(st.integers(min_value=0, max_value=len(payload)))
    check_parse_or_reject(bytes(payload[:cut]) if data.draw(st.booleans()) else bytes(payload))


def check_parse_or_reject(data: bytes) -> None:
    """Assert that ``data`` either raises PayloadError or parses into a self-consistent payload."""
    try:
        payload = unpack_payload(data)
    except PayloadError:
        return
    assert isinstance(payload, Payload)
    assert payload.tokens >= 1
    assert payload.dim >= 1
    assert 1 <= payload.bits <= 16
    assert math.isfinite(payload.scale)
    assert payload.scale > 0
    assert payload.levels.shape == (payload.tokens, payload.dim)
    highest = 2 * payload.rounds if payload.sparse else payload.rounds
    assert int(payload.levels.min()) >= 0
    assert int(payload.levels.max()) <= highest
    assert len(data) == payload_size(payload.tokens, payload.dim, payload.bits_per_coordinate)
    # A valid payload re-packs to the very same bytes.
    repacked = pack_payload(payload.levels, bits=payload.bits, sparse=payload.sparse, scale=payload.scale)
    assert repacked == data
    assert np.isfinite(decode_payload(payload).numpy()).all()
