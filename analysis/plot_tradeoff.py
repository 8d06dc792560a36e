"""Plot privacy-utility-communication trade-offs across the points of a sweep.

Usage: python -m analysis.plot_tradeoff SWEEP_DIR [--out DIR]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from analysis.tables import sweep_table  # noqa: E402


def plot_tradeoffs(table, out: Path) -> list[Path]:
    """Write perplexity vs mu (one line per bit width) and uplink bytes vs bits."""
    written = []
    figure, axis = plt.subplots(figsize=(6, 4))
    for bits, group in table.groupby("bits"):
        group = group.sort_values("mu")
        axis.plot(group["mu"], group["perplexity"], marker="o", label=f"n={bits} bits")
    axis.set_xscale("log")
    axis.set_xlabel("mu per token (GDP)")
    axis.set_ylabel("perplexity of the reference continuation")
    axis.legend()
    axis.grid(alpha=0.3)
    figure.tight_layout()
    path = out / "utility_vs_mu.png"
    figure.savefig(path, dpi=120)
    plt.close(figure)
    written.append(path)

    figure, axis = plt.subplots(figsize=(6, 4))
    by_bits = table.groupby("bits")["uplink_bytes_per_token"].mean()
    axis.plot(by_bits.index, by_bits.values, marker="o")
    axis.set_xlabel("bits per coordinate")
    axis.set_ylabel("uplink bytes per prompt token")
    axis.grid(alpha=0.3)
    figure.tight_layout()
    path = out / "bytes_vs_bits.png"
    figure.savefig(path, dpi=120)
    plt.close(figure)
    written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    """Write trade-off plots and a CSV of the sweep's summary figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path, help="folder written by 'delsim run' on a scenario with a sweep")
    parser.add_argument("--out", type=Path, help="folder for the outputs (default SWEEP_DIR/plots)")
    args = parser.parse_args(argv)

    table = sweep_table(args.sweep_dir)
    out = args.out or args.sweep_dir / "plots"
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "tradeoff.csv", index=False)
    written = plot_tradeoffs(table, out)
    print(f"wrote tradeoff.csv and {', '.join(p.name for p in written)} to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
