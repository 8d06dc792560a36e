"""The JSON file that sits next to a trained projection and records its clip value c.

The clip value depends on the model and the trained encoder, so the projection recipe measures
it and stores it here. Scenarios and the soft-prompt recipe read it back.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def projection_info_path(projection_path: str | os.PathLike[str]) -> Path:
    """Return the JSON path of a projection: the same path with the suffix ``.json``."""
    return Path(projection_path).with_suffix(".json")


def write_projection_info(projection_path: str | os.PathLike[str], info: dict[str, Any]) -> Path:
    """Write the facts of a trained projection (clip, dim, validation perplexities) as JSON."""
    path = projection_info_path(projection_path)
    path.write_text(json.dumps(info, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return path


def read_projection_info(projection_path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read the JSON of a projection written by the projection recipe."""
    path = projection_info_path(projection_path)
    if not path.is_file():
        raise FileNotFoundError(
            f"projection info not found: {path}; train the projection with `delsim train projection` "
            "or pass the clip value explicitly"
        )
    return json.loads(path.read_text(encoding="utf-8"))


def read_projection_clip(projection_path: str | os.PathLike[str]) -> float:
    """Return the clip value c stored next to a projection."""
    info = read_projection_info(projection_path)
    if "clip" not in info:
        raise ValueError(f"{projection_info_path(projection_path)} has no 'clip' field; retrain the projection")
    return float(info["clip"])
