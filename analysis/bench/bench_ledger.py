"""Benchmark of the privacy layer: ledger charges and epsilon, the PRV accountant, exact accounting.

Part ``ledger`` (default workload): 100,000 users x 1,000 queries x 50 tokens, one
``charge`` call per query (1e8 calls), users visited one after another. Each user
sends all queries at one per-token mu, drawn round-robin from ``--levels``, so the
users share one account per level and the accountant runs once per level.

Part ``prv``: Opacus's PRV accountant on plain Gaussian compositions
(sample_rate=1.0) at two eps_error values, against the closed form.

Part ``exact``: time of the exact quantizer epsilon at d=128, n=8 for 1,000 and
50,000 tokens, dense and sparse.

Run: ``python analysis/bench/bench_ledger.py`` (all parts), or for example
``--part ledger --users 1000`` for a quick run.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import platform
import resource
import time
import warnings

import numpy as np
from opacus.accountants import PRVAccountant

from delsim.privacy import PrivacyLedger, QuantizerLoss, gdp_epsilon

logger = logging.getLogger(__name__)


def parse_args() -> argparse.Namespace:
    """Read the benchmark's command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000, help="number of users (default 100000)")
    parser.add_argument("--queries", type=int, default=1_000, help="queries per user (default 1000)")
    parser.add_argument("--tokens", type=int, default=50, help="tokens per query (default 50)")
    parser.add_argument("--levels", type=str, default="0.01,0.02,0.05,0.1",
                        help="comma-separated per-token mu values assigned to users round-robin")
    parser.add_argument("--delta", type=float, default=1e-5, help="delta of the reported epsilon (default 1e-5)")
    parser.add_argument("--accountant", choices=["prv", "rdp"], default="prv", help="Opacus accountant (default prv)")
    parser.add_argument("--part", choices=["all", "ledger", "prv", "exact"], default="all", help="which part to run (default all)")
    return parser.parse_args()


def charge_all(ledger: PrivacyLedger, *, users: int, queries: int, tokens: int, levels: list[float]) -> float:
    """Charge every query of every user, printing progress; return the elapsed seconds."""
    start = time.perf_counter()
    report_every = max(1, users // 20)
    for user in range(users):
        mu = levels[user % len(levels)]
        for _ in range(queries):
            ledger.charge(user, mu=mu, count=tokens)

        if (user + 1) % report_every == 0 or user + 1 == users:
            elapsed = time.perf_counter() - start
            done = (user + 1) * queries
            print(f"  charged {user + 1:>7} users ({done:,} queries) in {elapsed:7.1f} s, "
                  f"{done / elapsed / 1e6:.2f} M charges/s", flush=True)
    return time.perf_counter() - start


def bench_prv(delta: float) -> None:
    """Time Opacus's PRV accountant on Gaussian compositions without subsampling."""
    print("PRV accountant, history [(1/mu, 1.0, steps)]:")
    for mu, steps in [(0.5, 1), (8.0, 1), (0.1, 1000), (0.01, 50_000), (0.05, 50_000), (0.2, 10_000)]:
        closed_form = gdp_epsilon(delta, mu * math.sqrt(steps))
        for eps_error in (0.01, 0.1):
            accountant = PRVAccountant()
            accountant.history = [(1.0 / mu, 1.0, steps)]
            start = time.perf_counter()
            with warnings.catch_warnings(), np.errstate(divide="ignore", over="ignore", invalid="ignore"):
                warnings.simplefilter("ignore")
                epsilon = accountant.get_epsilon(delta, eps_error=eps_error)
            elapsed = time.perf_counter() - start
            print(f"  mu={mu:g} steps={steps:>6} eps_error={eps_error:g}: epsilon {epsilon:.4f}, "
                  f"closed form {closed_form:.4f}, excess {epsilon - closed_form:.4f}, {elapsed:.2f} s", flush=True)


def bench_exact(delta: float) -> None:
    """Time the exact quantizer epsilon at d=128, n=8 and per-token mu 0.05."""
    print("exact quantizer epsilon, bits=8, dim=128, mu=0.05, clip=0.05:")
    for sparsity, releases in [(1.0, 1_000), (0.5, 1_000), (1.0, 50_000), (0.5, 50_000)]:
        loss = QuantizerLoss.of(bits=8, mu=0.05, clip=0.05, dim=128, sparsity=sparsity, releases=releases)
        start = time.perf_counter()
        epsilon = loss.epsilon(delta)
        elapsed = time.perf_counter() - start
        closed_form = gdp_epsilon(delta, 0.05 * math.sqrt(releases))
        print(f"  sparsity={sparsity:g} releases={releases:>6} rounds={loss.rounds:,}: exact {epsilon:.4f}, "
              f"GDP {closed_form:.4f}, {elapsed:.3f} s", flush=True)


def main() -> int:
    """Run the selected parts and print their measurements."""
    args = parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs visible, "
          f"Python {platform.python_version()}")
    if args.part in ("all", "prv"):
        bench_prv(args.delta)
    if args.part in ("all", "exact"):
        bench_exact(args.delta)
    if args.part in ("all", "ledger"):
        bench_ledger(args)
    return 0


def bench_ledger(args: argparse.Namespace) -> None:
    """Charge the ledger workload, compute epsilon for all users and print the measurements."""
    levels = [float(value) for value in args.levels.split(",")]
    print(f"workload: {args.users:,} users x {args.queries:,} queries x {args.tokens} tokens, "
          f"mu levels {levels}, accountant {args.accountant}, delta {args.delta:g}")

    ledger = PrivacyLedger(accountant=args.accountant)
    charge_s = charge_all(ledger, users=args.users, queries=args.queries, tokens=args.tokens, levels=levels)
    charges = args.users * args.queries
    print(f"charges: {charges:,} in {charge_s:.1f} s ({charge_s / charges * 1e6:.2f} us per charge)")

    start = time.perf_counter()
    epsilons = ledger.epsilons(delta=args.delta)
    epsilon_s = time.perf_counter() - start
    distinct = len({ledger.account(user) for user in ledger.users()})
    print(f"epsilon for {len(epsilons):,} users: {epsilon_s:.2f} s "
          f"({distinct} distinct accounts, one accountant evaluation each)")

    start = time.perf_counter()
    ledger.epsilons(delta=args.delta)
    print(f"epsilon for all users again (cached): {time.perf_counter() - start:.2f} s")

    for index, mu in enumerate(levels[: min(len(levels), args.users)]):
        composed = mu * math.sqrt(args.queries * args.tokens)
        closed_form = gdp_epsilon(args.delta, composed)
        epsilon = epsilons[index]
        within = closed_form - 1e-9 <= epsilon <= closed_form + ledger.tolerance(epsilon)
        print(f"  mu={mu:g}: composed mu {composed:.4f}, ledger epsilon {epsilon:.4f}, "
              f"closed form {closed_form:.4f}, within tolerance: {within}")

    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak resident memory: {peak_mib:.0f} MiB")
    print(f"total: {charge_s + epsilon_s:.1f} s")


if __name__ == "__main__":
    raise SystemExit(main())
