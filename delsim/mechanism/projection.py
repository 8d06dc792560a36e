"""Learned bias-free linear encoder (D -> d) and decoder (d -> D) of DEL, with safetensors I/O."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from delsim.mechanism.validation import check_int_range

logger = logging.getLogger(__name__)

PROJECTION_FORMAT = "delsim-projection-v1"
"""Value of the ``format`` metadata key in a saved projection."""

PCA_ROW_CHUNK = 16384
"""Embedding-table rows per step when accumulating the covariance for PCA."""


class Projection(nn.Module):
    """Encoder ``W_enc in R^{d x D}`` and decoder ``W_dec in R^{D x d}``, both without bias.

    Parameters
    ----------
    hidden_size : int
        The LLM's hidden size D.
    dim : int
        Projected size d, at most D.
    """

    def __init__(self, hidden_size: int, dim: int) -> None:
        super().__init__()
        self.hidden_size = check_int_range("hidden_size", hidden_size, 1)
        self.dim = check_int_range("dim", dim, 1, self.hidden_size)
        self.encoder = nn.Linear(self.hidden_size, self.dim, bias=False)
        self.decoder = nn.Linear(self.dim, self.hidden_size, bias=False)

    def encode(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Project embeddings ``(..., D)`` to coordinates ``(..., d)``."""
        return self.encoder(embeddings.to(self.encoder.weight.dtype))

    def decode(self, coordinates: torch.Tensor) -> torch.Tensor:
        """Map coordinates ``(..., d)`` back to embeddings ``(..., D)``."""
        return self.decoder(coordinates.to(self.decoder.weight.dtype))

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Return ``decode(encode(embeddings))``, the reconstruction without the mechanism."""
        return self.decode(self.encode(embeddings))

    def save(self, path: str | Path) -> None:
        """Write both weight matrices to a safetensors file, with D and d in its metadata.

        Parameters
        ----------
        path : str or Path
            Destination file; its folder must exist.
        """
        tensors = {
            "encoder.weight": self.encoder.weight.detach().contiguous().cpu(),
            "decoder.weight": self.decoder.weight.detach().contiguous().cpu(),
        }
        metadata = {"format": PROJECTION_FORMAT, "hidden_size": str(self.hidden_size), "dim": str(self.dim)}
        save_file(tensors, str(path), metadata=metadata)
        logger.info("saved projection D=%d d=%d to %s", self.hidden_size, self.dim, path)

    @classmethod
    def load(cls, path: str | Path) -> Projection:
        """Read a projection written by :meth:`save`.

        Parameters
        ----------
        path : str or Path
            safetensors file.

        Returns
        -------
        Projection
            The projection, with the stored dtype.

        Raises
        ------
        ValueError
            If the metadata or the weight shapes do not describe a projection.
        """
        metadata = _read_metadata(path)
        try:
            hidden_size = int(metadata["hidden_size"])
            dim = int(metadata["dim"])
        except (KeyError, ValueError) as error:
            raise ValueError(f"{path}: metadata needs integer hidden_size and dim, got {metadata}") from error

        tensors = load_file(str(path))
        expected = {"encoder.weight": (dim, hidden_size), "decoder.weight": (hidden_size, dim)}
        for name, shape in expected.items():
            if name not in tensors or tuple(tensors[name].shape) != shape:
                found = tuple(tensors[name].shape) if name in tensors else "missing"
                raise ValueError(f"{path}: {name} must have shape {shape} for D={hidden_size}, d={dim}; found {found}")

        projection = cls(hidden_size, dim).to(tensors["encoder.weight"].dtype)
        projection.load_state_dict(tensors)
        logger.info("loaded projection D=%d d=%d from %s", hidden_size, dim, path)
        return projection

    @classmethod
    def from_pca(cls, embedding_table: torch.Tensor, dim: int) -> Projection:
        """Initialise from the top-``dim`` principal directions of an embedding table.

        The encoder rows are the leading eigenvectors of the table's covariance and the
        decoder is their transpose, so ``decode(encode(e))`` is the orthogonal projection of
        ``e`` onto that subspace. Each eigenvector's sign is fixed so that its entry of
        largest magnitude is positive, which makes the result deterministic.

        Parameters
        ----------
        embedding_table : torch.Tensor
            Shape ``(V, D)``.
        dim : int
            Projected size d, at most D.

        Returns
        -------
        Projection
            float32 projection.
        """
        if not isinstance(embedding_table, torch.Tensor) or embedding_table.dim() != 2:
            raise ValueError(f"embedding_table must be a 2-D tensor (V, D), got {getattr(embedding_table, 'shape', embedding_table)}")
        vocab_size, hidden_size = embedding_table.shape
        projection = cls(hidden_size, dim)

        covariance = _covariance(embedding_table)
        _, eigenvectors = torch.linalg.eigh(covariance)
        components = eigenvectors[:, -projection.dim :].flip(1)
        largest = components.gather(0, components.abs().argmax(0, keepdim=True))
        components = components * torch.sign(largest)

        with torch.no_grad():
            projection.encoder.weight.copy_(components.T.to(torch.float32))
            projection.decoder.weight.copy_(components.to(torch.float32))
        logger.info("initialised projection from PCA of %d x %d table, d=%d", vocab_size, hidden_size, projection.dim)
        return projection


def _covariance(table: torch.Tensor) -> torch.Tensor:
    """Covariance of the rows in float64, accumulated in chunks so a large table is never copied whole."""
    rows, hidden_size = table.shape
    total = torch.zeros(hidden_size, dtype=torch.float64)
    second_moment = torch.zeros(hidden_size, hidden_size, dtype=torch.float64)
    for start in range(0, rows, PCA_ROW_CHUNK):
        chunk = table[start : start + PCA_ROW_CHUNK].detach().to("cpu", torch.float64)
        total += chunk.sum(0)
        second_moment += chunk.T @ chunk
    mean = total / rows
    return second_moment / rows - torch.outer(mean, mean)


def _read_metadata(path: str | Path) -> dict[str, str]:
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
    if metadata.get("format") != PROJECTION_FORMAT:
        raise ValueError(f"{path}: not a delsim projection (metadata format={metadata.get('format')!r}, expected {PROJECTION_FORMAT!r})")
    return metadata
