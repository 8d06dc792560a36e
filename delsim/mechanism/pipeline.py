"""The client and server ends of DEL: embeddings to payload bytes, and payload bytes to embeddings."""

from __future__ import annotations

import logging

import torch

from delsim.mechanism.payload import PayloadError, decode_payload, pack_payload, unpack_payload
from delsim.mechanism.projection import Projection
from delsim.mechanism.quantizer import StochasticQuantizer

logger = logging.getLogger(__name__)


def encode_to_payload(
    embeddings: torch.Tensor,
    projection: Projection,
    quantizer: StochasticQuantizer,
    generator: torch.Generator | None = None,
) -> bytes:
    """Project, clip, privatize and pack the token embeddings of one prompt (client side).

    Parameters
    ----------
    embeddings : torch.Tensor
        Token embeddings ``(T, D)``.
    projection : Projection
        Encoder and decoder; only the encoder is used.
    quantizer : StochasticQuantizer
        Mechanism with ``dim`` equal to ``projection.dim``.
    generator : torch.Generator, optional
        Source of the mechanism noise.

    Returns
    -------
    bytes
        The payload that goes on the uplink.
    """
    if embeddings.dim() != 2 or embeddings.shape[1] != projection.hidden_size:
        raise ValueError(f"embeddings must have shape (T, {projection.hidden_size}), got {tuple(embeddings.shape)}")
    if quantizer.dim != projection.dim:
        raise ValueError(f"quantizer.dim={quantizer.dim} must equal projection.dim={projection.dim}")
    with torch.no_grad():
        coordinates = projection.encode(embeddings)
    return pack_payload(quantizer.encode(coordinates, generator=generator), quantizer=quantizer)


def decode_from_payload(data: bytes, projection: Projection) -> torch.Tensor:
    """Unpack payload bytes and decode them to embeddings ``(T, D)`` (server side).

    Parameters
    ----------
    data : bytes
        Payload from :func:`encode_to_payload`.
    projection : Projection
        Encoder and decoder; only the decoder is used.

    Returns
    -------
    torch.Tensor
        Decoded embeddings ``(T, D)`` in the decoder's dtype.

    Raises
    ------
    PayloadError
        If the bytes are invalid or their dim differs from ``projection.dim``.
    """
    payload = unpack_payload(data)
    if payload.dim != projection.dim:
        raise PayloadError(f"payload dim {payload.dim} does not match projection.dim={projection.dim}")
    with torch.no_grad():
        return projection.decode(decode_payload(payload))
