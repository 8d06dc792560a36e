"""Tests of the soft-prompt library: keys, mu rounding, save/get round trips, missing entries."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from delsim.llm.soft_prompt import PrivacyConfig, SoftPromptLibrary, round_significant


def test_key_format() -> None:
    config = PrivacyConfig(dim=32, bits=4, mu=1.2345, clip=0.05)
    assert config.key == "d32_b4_mu1.23_c0.05_p1"


def test_key_rounds_mu_to_three_digits() -> None:
    base = PrivacyConfig(dim=32, bits=4, mu=1.2341, clip=0.05)
    assert PrivacyConfig(dim=32, bits=4, mu=1.2344, clip=0.05).key == base.key
    assert PrivacyConfig(dim=32, bits=4, mu=1.24, clip=0.05).key != base.key
    assert round_significant(0.0012345) == 0.00123
    assert round_significant(12345.0) == 12300.0


def test_key_separates_every_field() -> None:
    base = PrivacyConfig(dim=32, bits=4, mu=2.0, clip=0.05, sparsity=1.0)
    variants = [
        PrivacyConfig(dim=64, bits=4, mu=2.0, clip=0.05),
        PrivacyConfig(dim=32, bits=8, mu=2.0, clip=0.05),
        PrivacyConfig(dim=32, bits=4, mu=3.0, clip=0.05),
        PrivacyConfig(dim=32, bits=4, mu=2.0, clip=0.1),
        PrivacyConfig(dim=32, bits=4, mu=2.0, clip=0.05, sparsity=0.5),
    ]
    keys = {base.key, *(variant.key for variant in variants)}
    assert len(keys) == 6


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"dim": 0}, "dim must be a positive integer"),
        ({"bits": 17}, "bits must be an integer in 1..16"),
        ({"mu": -1.0}, "mu must be a finite value > 0"),
        ({"clip": 0.0}, "clip must be a finite value > 0"),
        ({"sparsity": 1.5}, "sparsity must lie in"),
    ],
)
def test_invalid_config_raises(fields: dict, message: str) -> None:
    values = {"dim": 32, "bits": 4, "mu": 1.0, "clip": 0.05, **fields}
    with pytest.raises(ValueError, match=message):
        PrivacyConfig(**values)


def test_round_trip(tmp_path: Path) -> None:
    library = SoftPromptLibrary(tmp_path / "prompts")
    config = PrivacyConfig(dim=32, bits=4, mu=1.5, clip=0.05)
    prompt = torch.randn(16, 64, generator=torch.Generator().manual_seed(0))

    key = library.save(config, prompt, {"steps": 300})

    assert key == config.key
    assert library.keys() == [key]
    assert torch.equal(library.get(config), prompt)
    assert library.entry(config)["metadata"] == {"steps": 300}
    assert library.entry(config)["config"]["mu"] == 1.5

    # A fresh library object on the same folder reads the same index.
    reopened = SoftPromptLibrary(tmp_path / "prompts")
    assert torch.equal(reopened.get(key), prompt)
    assert config in reopened
    assert len(reopened) == 1


def test_get_with_nearby_mu(tmp_path: Path) -> None:
    library = SoftPromptLibrary(tmp_path)
    prompt = torch.ones(4, 8)
    library.save(PrivacyConfig(dim=32, bits=4, mu=1.2341, clip=0.05), prompt)
    assert torch.equal(library.get(PrivacyConfig(dim=32, bits=4, mu=1.2338, clip=0.05)), prompt)


def test_missing_returns_none(tmp_path: Path) -> None:
    library = SoftPromptLibrary(tmp_path / "empty")
    assert library.get(PrivacyConfig(dim=32, bits=4, mu=1.0, clip=0.05)) is None
    assert library.keys() == []

    library.save(PrivacyConfig(dim=32, bits=4, mu=1.0, clip=0.05), torch.zeros(2, 8))
    assert library.get(PrivacyConfig(dim=32, bits=8, mu=1.0, clip=0.05)) is None
    assert library.entry("d1_b1_mu1_c1_p1") is None


def test_save_replaces_entry(tmp_path: Path) -> None:
    library = SoftPromptLibrary(tmp_path)
    config = PrivacyConfig(dim=32, bits=4, mu=1.0, clip=0.05)
    library.save(config, torch.zeros(2, 8))
    library.save(config, torch.ones(3, 8))
    assert library.keys() == [config.key]
    assert torch.equal(library.get(config), torch.ones(3, 8))


def test_accepts_mapping_and_quantizer_like(tmp_path: Path) -> None:
    library = SoftPromptLibrary(tmp_path)
    mapping = {"dim": 32, "bits": 4, "mu": 1.0, "clip": 0.05}
    quantizer_like = SimpleNamespace(dim=32, bits=4, mu=1.0, clip=0.05, sparsity=1.0)
    library.save(mapping, torch.ones(2, 8))
    assert torch.equal(library.get(quantizer_like), torch.ones(2, 8))
    with pytest.raises(ValueError, match="missing"):
        library.get({"dim": 32, "bits": 4})


def test_index_is_json_with_shapes(tmp_path: Path) -> None:
    library = SoftPromptLibrary(tmp_path)
    key = library.save(PrivacyConfig(dim=16, bits=2, mu=0.5, clip=0.1), torch.ones(5, 8, dtype=torch.float16))
    index = json.loads((tmp_path / "index.json").read_text())
    assert index["entries"][key]["num_virtual_tokens"] == 5
    assert index["entries"][key]["hidden_size"] == 8
    assert library.get(key).dtype == torch.float32


def test_save_rejects_bad_shape(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="soft_prompt must have shape"):
        SoftPromptLibrary(tmp_path).save("key", torch.ones(8))
