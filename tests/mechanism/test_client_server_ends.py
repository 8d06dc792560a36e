"""Tests of the client and server ends: embeddings to payload bytes and back."""

from __future__ import annotations

import pytest
import torch

from delsim.mechanism import (
    PayloadError,
    Projection,
    StochasticQuantizer,
    decode_from_payload,
    encode_to_payload,
    pack_payload,
    payload_size,
)


def make_projection() -> Projection:
    table = torch.randn(64, 48, generator=torch.Generator().manual_seed(0))
    return Projection.from_pca(table, 12)


def test_round_trip_matches_manual_steps() -> None:
    projection = make_projection()
    quantizer = StochasticQuantizer(5, 4.0, 0.3, 12, 0.7)
    embeddings = torch.randn(9, 48, generator=torch.Generator().manual_seed(1))

    data = encode_to_payload(embeddings, projection, quantizer, generator=torch.Generator().manual_seed(2))
    assert len(data) == payload_size(9, 12, quantizer.bits_per_coordinate)

    with torch.no_grad():
        levels = quantizer.encode(projection.encode(embeddings), generator=torch.Generator().manual_seed(2))
        expected = projection.decode(quantizer.decode(levels))
    assert data == pack_payload(levels, quantizer=quantizer)
    decoded = decode_from_payload(data, projection)
    assert decoded.shape == (9, 48)
    assert torch.equal(decoded, expected)


def test_dimension_mismatches_raise() -> None:
    projection = make_projection()
    with pytest.raises(ValueError, match=r"embeddings must have shape \(T, 48\)"):
        encode_to_payload(torch.zeros(3, 40), projection, StochasticQuantizer(4, 1.0, 0.3, 12))
    with pytest.raises(ValueError, match=r"quantizer.dim=8 must equal projection.dim=12"):
        encode_to_payload(torch.zeros(3, 48), projection, StochasticQuantizer(4, 1.0, 0.3, 8))
    other = pack_payload(torch.zeros(2, 8, dtype=torch.int64), bits=4, sparse=False, scale=1.0)
    with pytest.raises(PayloadError, match=r"payload dim 8 does not match projection.dim=12"):
        decode_from_payload(other, projection)
