"""The ``delsim privacy table`` command: epsilon of the quantizer by GDP, by the ledger and exactly."""

from __future__ import annotations

import argparse
import csv
import logging
import math
import sys
from collections.abc import Iterator
from pathlib import Path

from delsim.privacy.exact import QuantizerLoss
from delsim.privacy.gdp import gdp_epsilon
from delsim.privacy.ledger import ACCOUNTANTS, PrivacyLedger

logger = logging.getLogger(__name__)

BITS = (1, 2, 4, 8)
DIMS = (32, 128)
MUS = (0.5, 1.0, 2.0, 4.0, 8.0)

COLUMNS = ("bits", "dim", "mu", "releases", "epsilon_gdp", "epsilon_ledger", "epsilon_exact", "gdp_understates", "note")


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the table's options to ``parser``."""
    parser.add_argument("--delta", type=float, default=1e-5, help="delta at which epsilon is computed, in (0, 1) (default 1e-5)")
    parser.add_argument("--clip", type=float, default=0.05, help="clipping bound c of the projected coordinates, > 0 (default 0.05)")
    parser.add_argument("--sparsity", type=float, default=1.0, help="quantizer sparsity p in (0, 1] (default 1)")
    parser.add_argument("--releases", type=int, default=1, help="tokens whose releases compose, >= 1 (default 1)")
    parser.add_argument("--accountant", choices=sorted(ACCOUNTANTS), default="prv", help="Opacus accountant of the ledger column (default prv)")
    parser.add_argument("--csv", type=Path, default=None, metavar="PATH", help="also write the table as CSV to PATH")


def build_rows(*, delta: float, clip: float, sparsity: float, releases: int, accountant: str = "prv") -> Iterator[dict[str, object]]:
    """Yield one row per (bits, dim, mu): epsilon by GDP closed form, by the ledger and exactly.

    A setting where the quantizer is invalid (A < clip, possible for sparsity
    below 1) yields a row with None epsilons and the quantizer's error message
    in ``note``; valid rows have an empty note.
    """
    ledger = PrivacyLedger(accountant=accountant)
    for mu in MUS:
        ledger.charge(mu, mu=mu, count=releases)

    for bits in BITS:
        for dim in DIMS:
            for mu in MUS:
                row: dict[str, object] = {"bits": bits, "dim": dim, "mu": mu, "releases": releases}
                try:
                    loss = QuantizerLoss.of(bits=bits, mu=mu, clip=clip, dim=dim, sparsity=sparsity, releases=releases)
                except ValueError as error:
                    row.update(epsilon_gdp=None, epsilon_ledger=None, epsilon_exact=None, gdp_understates=None,
                               note=str(error))
                    yield row
                    continue

                epsilon_gdp = gdp_epsilon(delta, mu * math.sqrt(releases))
                epsilon_exact = loss.epsilon(delta)
                row.update(
                    epsilon_gdp=epsilon_gdp,
                    epsilon_ledger=ledger.epsilon(mu, delta=delta),
                    epsilon_exact=epsilon_exact,
                    gdp_understates=epsilon_exact > epsilon_gdp,
                    note="",
                )
                yield row


def _format(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4f}" if math.isfinite(value) else str(value)
    return str(value)


def main(args: argparse.Namespace) -> int:
    """Print the table and optionally write it as CSV; return the exit status."""
    if not 0.0 < args.delta < 1.0:
        print(f"error: --delta must lie in (0, 1), got {args.delta}", file=sys.stderr)
        return 2
    if not args.clip > 0.0:
        print(f"error: --clip must be > 0, got {args.clip}", file=sys.stderr)
        return 2
    if not 0.0 < args.sparsity <= 1.0:
        print(f"error: --sparsity must lie in (0, 1], got {args.sparsity}", file=sys.stderr)
        return 2
    if args.releases < 1:
        print(f"error: --releases must be >= 1, got {args.releases}", file=sys.stderr)
        return 2

    logger.info("privacy table: delta=%g clip=%g sparsity=%g releases=%d", args.delta, args.clip, args.sparsity, args.releases)
    rows = list(build_rows(delta=args.delta, clip=args.clip, sparsity=args.sparsity, releases=args.releases,
                           accountant=getattr(args, "accountant", "prv")))

    print(f"epsilon at delta={args.delta:g}, clip={args.clip:g}, sparsity={args.sparsity:g}, releases={args.releases} "
          "(GDP: closed form of mu*sqrt(releases); ledger: Opacus accountant; exact: quantizer PLD)")
    header = ("bits", "dim", "mu", "eps_gdp", "eps_ledger", "eps_exact", "gdp_understates")
    print("".join(f"{name:>16}" for name in header))
    for row in rows:
        if row["note"]:
            print(f"{row['bits']:>16}{row['dim']:>16}{row['mu']:>16}  {row['note']}")
            continue
        cells = (row["bits"], row["dim"], row["mu"], row["epsilon_gdp"], row["epsilon_ledger"], row["epsilon_exact"], row["gdp_understates"])
        print("".join(f"{_format(cell):>16}" for cell in cells))

    if args.csv is not None:
        args.csv.parent.mkdir(parents=True, exist_ok=True)
        with args.csv.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
        logger.info("wrote %d rows to %s", len(rows), args.csv)
        print(f"wrote {args.csv}")
    return 0
