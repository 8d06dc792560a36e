"""Tests of the encoder/decoder projection: shapes, safetensors files and PCA initialisation."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from delsim.mechanism import Projection


def test_shapes_and_no_bias() -> None:
    projection = Projection(32, 8)
    assert projection.encoder.bias is None
    assert projection.decoder.bias is None
    assert projection.encode(torch.randn(5, 32)).shape == (5, 8)
    assert projection.decode(torch.randn(5, 8)).shape == (5, 32)
    assert projection(torch.randn(2, 3, 32)).shape == (2, 3, 32)


def test_save_load_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    projection = Projection(24, 6)
    path = tmp_path / "projection.safetensors"
    projection.save(path)

    loaded = Projection.load(path)
    assert loaded.hidden_size == 24
    assert loaded.dim == 6
    assert torch.equal(loaded.encoder.weight, projection.encoder.weight)
    assert torch.equal(loaded.decoder.weight, projection.decoder.weight)


def test_load_rejects_foreign_files(tmp_path: Path) -> None:
    foreign = tmp_path / "foreign.safetensors"
    save_file({"weight": torch.zeros(2, 2)}, str(foreign))
    with pytest.raises(ValueError, match="not a delsim projection"):
        Projection.load(foreign)

    wrong_shape = tmp_path / "wrong.safetensors"
    tensors = {"encoder.weight": torch.zeros(4, 10), "decoder.weight": torch.zeros(10, 3)}
    save_file(tensors, str(wrong_shape), metadata={"format": "delsim-projection-v1", "hidden_size": "10", "dim": "4"})
    with pytest.raises(ValueError, match=r"decoder.weight must have shape \(10, 4\)"):
        Projection.load(wrong_shape)


def test_invalid_sizes_raise() -> None:
    with pytest.raises(ValueError, match=r"dim must be an integer in 1\.\.16, got 17"):
        Projection(16, 17)
    with pytest.raises(ValueError, match="hidden_size must be an integer"):
        Projection(0, 1)


def test_from_pca_recovers_subspace() -> None:
    generator = torch.Generator().manual_seed(3)
    basis, _ = torch.linalg.qr(torch.randn(40, 5, generator=generator))
    coefficients = torch.randn(500, 5, generator=generator) * torch.tensor([5.0, 4.0, 3.0, 2.0, 1.0]) + 0.5
    table = coefficients @ basis.T
    projection = Projection.from_pca(table, 5)

    encoder = projection.encoder.weight.detach().to(torch.float64)
    assert torch.allclose(encoder @ encoder.T, torch.eye(5, dtype=torch.float64), atol=1e-5)
    assert torch.equal(projection.decoder.weight, projection.encoder.weight.T)
    # Every row lies in the 5-dimensional span of the basis, so projecting onto the top five
    # principal axes loses nothing beyond float32 rounding.
    assert torch.allclose(projection(table), table, atol=1e-4)


def test_from_pca_deterministic_signs() -> None:
    table = torch.randn(300, 16, generator=torch.Generator().manual_seed(4))
    first = Projection.from_pca(table, 4).encoder.weight
    second = Projection.from_pca(table.clone(), 4).encoder.weight
    assert torch.equal(first, second)
    largest = first.gather(1, first.abs().argmax(1, keepdim=True))
    assert torch.all(largest > 0)


def test_from_pca_orders_by_variance() -> None:
    generator = torch.Generator().manual_seed(5)
    scales = torch.tensor([1.0, 9.0, 3.0, 0.1])
    table = torch.randn(4000, 4, generator=generator) * scales
    projection = Projection.from_pca(table, 2)
    # The top two principal axes are coordinate 1 (std 9) and then coordinate 2 (std 3).
    assert projection.encoder.weight[0].abs().argmax().item() == 1
    assert projection.encoder.weight[1].abs().argmax().item() == 2
