"""Plot one run from its tables: latency by device class, where time goes, bytes and privacy.

Usage: python -m analysis.plot_run RUN_DIR [--out DIR]
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from analysis.tables import read_table  # noqa: E402

logger = logging.getLogger(__name__)

STAGES = [
    ("client compute", "client_start_s", "client_done_s"),
    ("uplink", "uplink_start_s", "uplink_done_s"),
    ("queue", "uplink_done_s", "server_start_s"),
    ("prefill", "server_start_s", "first_token_s"),
    ("decode", "first_token_s", "server_done_s"),
    ("downlink", "downlink_start_s", "done_s"),
]


def plot_latency_cdf(requests, path: Path) -> None:
    """Empirical CDF of end-to-end latency per device class."""
    figure, axis = plt.subplots(figsize=(6, 4))
    for name, group in requests.groupby("device_class"):
        values = np.sort(group["latency_s"].to_numpy())
        axis.step(values, np.arange(1, len(values) + 1) / len(values), where="post", label=f"{name} (n={len(values)})")
    axis.set_xscale("log")
    axis.set_xlabel("end-to-end latency (virtual s)")
    axis.set_ylabel("fraction of requests")
    axis.legend()
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def plot_stage_breakdown(requests, path: Path) -> None:
    """Mean virtual seconds per stage of a request, stacked, per device class."""
    classes = sorted(requests["device_class"].unique())
    figure, axis = plt.subplots(figsize=(6, 4))
    bottom = np.zeros(len(classes))
    for label, start, end in STAGES:
        means = np.array([(g[end] - g[start]).mean() for _, g in requests.groupby("device_class")])
        axis.bar(classes, means, bottom=bottom, label=label)
        bottom += means
    axis.set_ylabel("mean time per request (virtual s)")
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def plot_privacy(users, path: Path) -> None:
    """Per-user epsilon by the GDP closed form, the Opacus ledger and exact accounting."""
    figure, axis = plt.subplots(figsize=(6, 4))
    order = users.sort_values("epsilon_gdp")
    x = np.arange(len(order))
    for column, label in (("epsilon_gdp", "GDP closed form"), ("epsilon_ledger", "Opacus ledger"), ("epsilon_exact", "exact")):
        if order[column].notna().any():
            axis.plot(x, order[column], marker=".", linestyle="", label=label)
    axis.set_xlabel("users, by GDP epsilon")
    axis.set_ylabel(f"epsilon at delta={order['delta'].iloc[0]:g}")
    axis.legend()
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    """Write latency, stage and privacy plots of a run folder as PNG files."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="folder written by 'delsim run'")
    parser.add_argument("--out", type=Path, help="folder for the PNG files (default RUN_DIR/plots)")
    args = parser.parse_args(argv)

    requests = read_table(args.run_dir, "requests")
    users = read_table(args.run_dir, "users")
    completed = requests[requests["status"] == "completed"]
    out = args.out or args.run_dir / "plots"
    out.mkdir(parents=True, exist_ok=True)

    plot_latency_cdf(completed, out / "latency_cdf.png")
    plot_stage_breakdown(completed, out / "stages.png")
    plot_privacy(users, out / "privacy.png")
    print(f"wrote latency_cdf.png, stages.png and privacy.png to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
