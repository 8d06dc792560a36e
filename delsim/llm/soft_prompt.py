"""The server's soft-prompt library: one learned soft prompt per DEL privacy configuration.

A library is a folder of safetensors files (one (m, D) tensor each) plus ``index.json``, which
maps each configuration key to its file, shape and training metadata.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from safetensors.torch import load_file, save_file

logger = logging.getLogger(__name__)

KEY_SIGNIFICANT_DIGITS = 3
"""Significant digits of mu, clip and sparsity in a configuration key.

Two configurations whose mu agree to three significant digits (1.234 and 1.2341) share a key,
and so share a soft prompt.
"""

INDEX_FILE = "index.json"
INDEX_FORMAT = 1
TENSOR_NAME = "soft_prompt"


def round_significant(value: float, digits: int = KEY_SIGNIFICANT_DIGITS) -> float:
    """Round ``value`` to ``digits`` significant digits."""
    if value == 0.0 or not math.isfinite(value):
        return value
    return float(f"{value:.{digits}g}")


class _HasPrivacyFields(Protocol):
    dim: int
    bits: int
    mu: float
    clip: float
    sparsity: float


@dataclass(frozen=True)
class PrivacyConfig:
    """A DEL privacy configuration: what a soft prompt was trained for.

    Parameters
    ----------
    dim
        Projected size d.
    bits
        Quantizer bit width n.
    mu
        GDP parameter of one token.
    clip
        Clip value c of the projected coordinates.
    sparsity
        Quantizer sparsity p in (0, 1].
    """

    dim: int
    bits: int
    mu: float
    clip: float
    sparsity: float = 1.0

    def __post_init__(self) -> None:
        if int(self.dim) != self.dim or self.dim < 1:
            raise ValueError(f"dim must be a positive integer, got {self.dim!r}")
        if int(self.bits) != self.bits or not 1 <= self.bits <= 16:
            raise ValueError(f"bits must be an integer in 1..16, got {self.bits!r}")
        for name in ("mu", "clip"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite value > 0, got {value!r}")
        if not 0.0 < self.sparsity <= 1.0:
            raise ValueError(f"sparsity must lie in (0, 1], got {self.sparsity!r}")

    @classmethod
    def from_any(cls, config: PrivacyConfig | Mapping[str, Any] | _HasPrivacyFields) -> PrivacyConfig:
        """Build a configuration from a mapping or any object with the five fields (a quantizer)."""
        if isinstance(config, PrivacyConfig):
            return config
        names = ("dim", "bits", "mu", "clip", "sparsity")
        if isinstance(config, Mapping):
            missing = [name for name in names[:4] if name not in config]
            if missing:
                raise ValueError(f"privacy configuration {dict(config)!r} is missing {missing}")
            values = {name: config[name] for name in names if name in config}
        else:
            values = {name: getattr(config, name) for name in names}
        return cls(
            dim=int(values["dim"]),
            bits=int(values["bits"]),
            mu=float(values["mu"]),
            clip=float(values["clip"]),
            sparsity=float(values.get("sparsity", 1.0)),
        )

    @property
    def key(self) -> str:
        """Library key, e.g. ``d32_b4_mu1.23_c0.05_p1`` (floats to three significant digits)."""
        mu, clip, sparsity = (f"{round_significant(v):g}" for v in (self.mu, self.clip, self.sparsity))
        return f"d{self.dim}_b{self.bits}_mu{mu}_c{clip}_p{sparsity}"


class SoftPromptLibrary:
    """Soft prompts stored on disk and looked up by privacy configuration.

    Parameters
    ----------
    directory
        Folder of the library. It is created on the first ``save``.
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)

    @staticmethod
    def key_of(config: str | PrivacyConfig | Mapping[str, Any] | _HasPrivacyFields) -> str:
        """Return the library key of a configuration; a string is taken as a key already."""
        if isinstance(config, str):
            return config
        return PrivacyConfig.from_any(config).key

    def _read_index(self) -> dict[str, Any]:
        path = self.directory / INDEX_FILE
        if not path.is_file():
            return {"format": INDEX_FORMAT, "entries": {}}
        index = json.loads(path.read_text(encoding="utf-8"))
        if index.get("format") != INDEX_FORMAT:
            raise ValueError(f"{path} has index format {index.get('format')!r}; this version reads format {INDEX_FORMAT}")
        return index

    def _write_index(self, index: dict[str, Any]) -> None:
        # Write to a temporary file and rename, so a reader never sees a half-written index.
        handle, tmp_name = tempfile.mkstemp(dir=self.directory, prefix=".index.", suffix=".json")
        os.chmod(tmp_name, 0o644)
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            json.dump(index, stream, indent=2, sort_keys=True)
            stream.write("\n")
        os.replace(tmp_name, self.directory / INDEX_FILE)

    def keys(self) -> list[str]:
        """Return the stored keys, sorted."""
        return sorted(self._read_index()["entries"])

    def __contains__(self, config: object) -> bool:
        return self.key_of(config) in self._read_index()["entries"]  # type: ignore[arg-type]

    def __len__(self) -> int:
        return len(self._read_index()["entries"])

    def save(
        self,
        config: str | PrivacyConfig | Mapping[str, Any] | _HasPrivacyFields,
        soft_prompt: torch.Tensor,
        metadata: Mapping[str, Any] | None = None,
    ) -> str:
        """Store a soft prompt under a configuration, replacing any earlier one.

        Parameters
        ----------
        config
            A ``PrivacyConfig``, a mapping or object with its fields, or a key string.
        soft_prompt
            Tensor of shape (m, D); stored as float32.
        metadata
            JSON-serializable facts about training (steps, loss, model), kept in the index.

        Returns
        -------
        str
            The key it was stored under.
        """
        if soft_prompt.dim() != 2 or soft_prompt.shape[0] == 0:
            raise ValueError(f"soft_prompt must have shape (m, D) with m >= 1, got {tuple(soft_prompt.shape)}")
        key = self.key_of(config)
        self.directory.mkdir(parents=True, exist_ok=True)

        file_name = f"{key}.safetensors"
        tensor = soft_prompt.detach().to(device="cpu", dtype=torch.float32).contiguous()
        save_file({TENSOR_NAME: tensor}, str(self.directory / file_name), metadata={"key": key})

        index = self._read_index()
        entry: dict[str, Any] = {
            "file": file_name,
            "num_virtual_tokens": int(tensor.shape[0]),
            "hidden_size": int(tensor.shape[1]),
            "metadata": dict(metadata or {}),
        }
        if not isinstance(config, str):
            entry["config"] = asdict(PrivacyConfig.from_any(config))
        index["entries"][key] = entry
        self._write_index(index)
        logger.info("saved soft prompt %s (%d x %d) to %s", key, tensor.shape[0], tensor.shape[1], self.directory)
        return key

    def get(self, config: str | PrivacyConfig | Mapping[str, Any] | _HasPrivacyFields) -> torch.Tensor | None:
        """Return the soft prompt (m, D) stored for a configuration, or ``None`` if there is none."""
        key = self.key_of(config)
        entry = self._read_index()["entries"].get(key)
        if entry is None:
            return None
        return load_file(str(self.directory / entry["file"]))[TENSOR_NAME]

    def entry(self, config: str | PrivacyConfig | Mapping[str, Any] | _HasPrivacyFields) -> dict[str, Any] | None:
        """Return the index entry (file, shape, configuration, metadata) of a configuration, or ``None``."""
        return self._read_index()["entries"].get(self.key_of(config))
