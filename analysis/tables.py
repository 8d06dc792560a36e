"""Reading run folders: requests and users tables, summaries and sweep indexes."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd


def read_table(run_dir: Path, name: str) -> pd.DataFrame:
    """Read ``name`` (requests or users) from a run folder, as Parquet or CSV."""
    for suffix, reader in ((".parquet", pd.read_parquet), (".csv", pd.read_csv)):
        path = run_dir / f"{name}{suffix}"
        if path.is_file():
            return reader(path)
    raise FileNotFoundError(f"no {name}.parquet or {name}.csv in {run_dir}; pass a folder written by 'delsim run'")


def run_folders(path: Path) -> list[Path]:
    """Return the run folders under ``path``: itself, or every sweep point listed in sweep.json."""
    index = path / "sweep.json"
    if index.is_file():
        return [Path(entry["out_dir"]) for entry in json.loads(index.read_text())]
    if (path / "summary.json").is_file():
        return [path]
    raise FileNotFoundError(f"{path} contains neither summary.json nor sweep.json; pass a folder written by 'delsim run'")


def sweep_table(path: Path) -> pd.DataFrame:
    """Return one row per run folder: its mechanism settings and summary figures."""
    rows = []
    for folder in run_folders(path):
        summary = json.loads((folder / "summary.json").read_text())
        manifest = json.loads((folder / "manifest.json").read_text())
        mechanism = manifest["scenario"]["mechanism"]
        rows.append(
            {
                "run": folder.name,
                "mu": mechanism["mu"],
                "bits": mechanism["bits"],
                "dim": mechanism["dim"],
                "sparsity": mechanism["sparsity"],
                "perplexity": summary["perplexity"],
                "coherence": summary["coherence_mean"],
                "latency_p50_s": summary["latency_s"]["p50"],
                "latency_p95_s": summary["latency_s"]["p95"],
                "uplink_bytes_per_token": summary["uplink_bytes_per_token"],
                "epsilon_gdp_max": summary["privacy"]["epsilon_gdp_max"],
                "epsilon_exact_max": summary["privacy"]["epsilon_exact_max"],
            }
        )
    return pd.DataFrame(rows)
