"""Run outputs: the requests and users tables, the summary, the manifest and the ledger state.

Column meanings and units are documented in docs/metrics.md.
"""

from __future__ import annotations

import json
import logging
import math
import platform
import subprocess
import sys
from dataclasses import asdict
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd

import delsim
from delsim.mechanism import HEADER_SIZE
from delsim.runtime.downlink import DOWNLINK_HEADER_BYTES

logger = logging.getLogger(__name__)

TRACKED_PACKAGES = ["torch", "ray", "transformers", "peft", "opacus", "dp-accounting", "pandas", "numpy", "pydantic", "pyarrow"]


def build_requests_table(
    *, arrivals, clients, prompts, prompt_index, client_results, admissions, server_results, timelines, mechanism, keep_text: bool
) -> pd.DataFrame:
    """Join arrivals, real-compute results and simulated timelines into one row per request."""
    by_client = {c.client_id: c for c in clients}
    rows = []
    for arrival in arrivals:
        rid = arrival.request_id
        encoded = client_results[rid]
        admission = admissions[rid]
        served = server_results.get(rid)
        timeline = timelines.get(rid)
        status = _status(admission.status, served, timeline)
        row = {
            "request_id": rid,
            "client_id": arrival.client_id,
            "user_id": arrival.user_id,
            "device_class": by_client[arrival.client_id].device.name,
            "prompt_id": prompts[prompt_index[rid]].paragraph_id,
            "status": status,
            "admission": admission.status,
            "reason": _reason(admission, served),
            "arrival_s": arrival.time_s,
            "release_s": admission.release_s if admission.status == "released" else math.nan,
            "prompt_tokens": encoded.prompt_tokens,
            "uplink_bytes": len(encoded.payload) if admission.status == "released" else 0,
            "payload_header_bytes": HEADER_SIZE,
            "downlink_bytes": len(served.downlink) if served is not None and served.status == "completed" else 0,
            "generated_tokens": served.generated_tokens if served is not None else 0,
            "real_compute": served.real_compute if served is not None else False,
            "soft_prompt": served.soft_prompt if served is not None else None,
            "soft_prompt_tokens": served.soft_prompt_tokens if served is not None else 0,
            "dim": mechanism.dim,
            "bits": mechanism.bits,
            "mu": mechanism.mu,
            "clip": mechanism.clip,
            "sparsity": mechanism.sparsity,
            "mu_charged": admission.charged_mu,
            "nll_sum": served.nll_sum if served is not None else math.nan,
            "nll_tokens": served.nll_tokens if served is not None else 0,
            "perplexity": math.exp(served.nll_sum / served.nll_tokens) if served is not None and served.nll_tokens > 0 else math.nan,
            "coherence": served.coherence if served is not None else math.nan,
            "client_encode_wall_s": encoded.encode_wall_s,
            "server_wall_s": served.server_wall_s if served is not None else math.nan,
        }
        row.update(_timeline_columns(timeline))
        if keep_text:
            row["prompt"] = prompts[prompt_index[rid]].prompt
            row["reference"] = prompts[prompt_index[rid]].reference
            row["generated_text"] = served.generated_text if served is not None else ""
        rows.append(row)
    table = pd.DataFrame(rows)
    table["latency_s"] = table["done_s"] - table["arrival_s"]
    table["ttft_s"] = table["first_token_s"] - table["arrival_s"]
    decode_steps = (table["generated_tokens"] - 1).where(table["generated_tokens"] > 1)
    table["tpot_s"] = (table["server_done_s"] - table["first_token_s"]) / decode_steps
    return table


def _reason(admission, served) -> str | None:
    if admission.status != "released":
        return admission.reason
    if served is None:
        return None
    return served.error


def _status(admission: str, served, timeline) -> str:
    if admission != "released":
        return "rejected"
    if served is None:
        return "failed"
    if served.status != "completed":
        return served.status
    return "completed" if timeline is not None and not math.isnan(timeline.done_s) else "failed"


def _timeline_columns(timeline) -> dict:
    names = [
        "client_start_s", "client_done_s", "uplink_start_s", "uplink_done_s", "server_start_s", "first_token_s",
        "server_done_s", "downlink_start_s", "done_s",
    ]
    if timeline is None:
        return {**{n: math.nan for n in names}, "replica": -1, "batch_size": 0, "client_flops": 0.0, "client_energy_j": 0.0}
    values = asdict(timeline)
    return {n: values[n] for n in names} | {k: values[k] for k in ("replica", "batch_size", "client_flops", "client_energy_j")}


def _quantiles(series: pd.Series) -> dict:
    values = series.dropna()
    if values.empty:
        return {"mean": None, "p50": None, "p95": None, "p99": None}
    return {
        "mean": float(values.mean()),
        "p50": float(values.quantile(0.5)),
        "p95": float(values.quantile(0.95)),
        "p99": float(values.quantile(0.99)),
    }


def summarize(requests: pd.DataFrame, users: pd.DataFrame, scenario, *, wall_s: float, server_device: str, ledger_fallbacks: int = 0) -> dict:
    """Compute the run summary: counts, latency, bytes, utility and privacy spent."""
    completed = requests[requests["status"] == "completed"]
    real = completed[completed["nll_tokens"] > 0]
    makespan = float(completed["done_s"].max() - requests["arrival_s"].min()) if len(completed) else 0.0
    by_class = {}
    for name, group in completed.groupby("device_class", sort=True):
        by_class[name] = {"completed": len(group), "latency_s": _quantiles(group["latency_s"]), "client_energy_j_mean": float(group["client_energy_j"].mean())}
    nll_total = float(real["nll_sum"].sum())
    token_total = int(real["nll_tokens"].sum())
    return {
        "scenario": scenario.name,
        "seed": scenario.seed,
        "requests": len(requests),
        "completed": len(completed),
        "rejected": int((requests["status"] == "rejected").sum()),
        "failed": int((requests["status"] == "failed").sum()),
        "latency_s": _quantiles(completed["latency_s"]),
        "ttft_s": _quantiles(completed["ttft_s"]),
        "tpot_s": _quantiles(completed["tpot_s"]),
        "throughput_rps": len(completed) / makespan if makespan > 0 else None,
        "uplink_bytes_total": int(requests["uplink_bytes"].sum()),
        "uplink_bytes_per_token": float(completed["uplink_bytes"].sum() / completed["prompt_tokens"].sum()) if len(completed) else None,
        "downlink_bytes_total": int(requests["downlink_bytes"].sum()),
        "perplexity": math.exp(nll_total / token_total) if token_total else None,
        "coherence_mean": float(real["coherence"].mean()) if real["coherence"].notna().any() else None,
        "soft_prompt_used": bool(completed["soft_prompt"].notna().any()) if len(completed) else False,
        "privacy": {
            "unit": scenario.privacy.unit,
            "delta": scenario.privacy.delta,
            "mu_max": float(users["mu_gdp"].max()) if len(users) else 0.0,
            "epsilon_gdp_max": float(users["epsilon_gdp"].max()) if len(users) else 0.0,
            "epsilon_ledger_max": float(users["epsilon_ledger"].max()) if len(users) else 0.0,
            "epsilon_exact_max": float(users["epsilon_exact"].max()) if len(users) and users["epsilon_exact"].notna().any() else None,
            "users_where_gdp_understates": int(users["gdp_understates"].sum()) if len(users) else 0,
            # Accounts whose Opacus epsilon failed (beyond about 700 for PRV) and took the GDP closed form.
            "ledger_fallbacks_to_closed_form": ledger_fallbacks,
        },
        "by_device_class": by_class,
        "server_device": server_device,
        "wall_s": wall_s,
        "downlink_header_bytes": DOWNLINK_HEADER_BYTES,
    }


def git_revision() -> str:
    """Return the git revision of the delsim source tree, or 'unknown' outside a checkout."""
    source = Path(delsim.__file__).resolve().parent.parent
    try:
        completed = subprocess.run(["git", "-C", str(source), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    revision = completed.stdout.strip()
    dirty = subprocess.run(["git", "-C", str(source), "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, timeout=10)
    return revision + ("-dirty" if dirty.stdout.strip() else "")


def package_versions() -> dict[str, str]:
    """Return installed versions of delsim and the packages its results depend on."""
    versions = {"delsim": delsim.__version__, "python": platform.python_version()}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def _json_default(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    raise TypeError(f"cannot serialize {type(value).__name__}")


def write_table(table: pd.DataFrame, path_without_suffix: Path, fmt: str) -> Path:
    """Write a table as Parquet or CSV and return the path written."""
    path = path_without_suffix.with_suffix(".parquet" if fmt == "parquet" else ".csv")
    if fmt == "parquet":
        table.to_parquet(path, index=False)
    else:
        table.to_csv(path, index=False)
    return path


def write_run(out_dir: Path, *, scenario, scenario_path, requests, users, summary, ledger) -> None:
    """Write tables, summary, manifest and ledger state into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    fmt = scenario.outputs.format
    written = [write_table(requests, out_dir / "requests", fmt), write_table(users, out_dir / "users", fmt)]

    summary_path = out_dir / "summary.json"
    summary_path.write_text(json.dumps(summary, indent=2, default=_json_default) + "\n")
    manifest = {
        "scenario": scenario.model_dump(mode="json"),
        "scenario_path": scenario_path,
        "seed": scenario.seed,
        "versions": package_versions(),
        "git_revision": git_revision(),
        "command": sys.argv,
        "platform": platform.platform(),
        "files": [p.name for p in written] + ["summary.json", "ledger.json"],
    }
    manifest_path = out_dir / "manifest.json"
    manifest_path.write_text(json.dumps(manifest, indent=2, default=_json_default) + "\n")
    ledger_path = out_dir / "ledger.json"
    ledger_path.write_text(json.dumps(ledger.state_dict(), default=_json_default) + "\n")
    logger.info("wrote %s", ", ".join(str(p) for p in [*written, summary_path, manifest_path, ledger_path]))
