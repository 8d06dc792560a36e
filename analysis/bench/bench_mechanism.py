"""Benchmark of the DEL quantizer against an R-round loop, and of payload sizes and packing.

Run from the repository root::

    python analysis/bench/bench_mechanism.py --tokens 64 --repeats 5

It prints the time of the first ``privatize`` call in the process (which loads the numba
kernels), one table of ``privatize`` throughput (tokens per second) next to a reference that
runs the R rounds one at a time, one table of payload bytes per token against fp16
embeddings, and the time to pack and unpack a 512-token, d=4096, 8-bit payload.
"""

from __future__ import annotations

import argparse
import logging
import platform
import time
from collections.abc import Callable

import torch

from delsim.mechanism import HEADER_SIZE, StochasticQuantizer, pack_payload, payload_size, unpack_payload
from delsim.mechanism.sampling import BACKENDS, load_kernels

logger = logging.getLogger(__name__)

CLIP = 0.05
"""Clip bound used for every configuration (the reference code's value for a 7B model)."""

MU = 10.0
"""GDP parameter of one token used for every configuration."""

SETTINGS = ((128, 4, 1.0), (128, 4, 0.5), (128, 8, 1.0), (4096, 8, 1.0), (4096, 8, 0.5))
"""(dim, bits, sparsity) configurations timed."""


def round_loop_release(quantizer: StochasticQuantizer, z: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Release of the mechanism computed round by round: R rounds of +-B, each kept with probability p."""
    clipped = z.to(torch.float64).clamp(-quantizer.clip, quantizer.clip)
    plus_prob = 0.5 + clipped / (2.0 * quantizer.A)
    total = torch.zeros_like(clipped)
    for _ in range(quantizer.rounds):
        signs = torch.rand(clipped.shape, generator=generator, dtype=torch.float64) < plus_prob
        round_values = torch.where(signs, quantizer.B, -quantizer.B)
        if quantizer.sparse:
            round_values = round_values * (torch.rand(clipped.shape, generator=generator, dtype=torch.float64) < quantizer.sparsity)
        total += round_values
    return (total / quantizer.rounds).to(torch.float32)


def best_seconds(function: Callable[[], object], repeats: int, budget_seconds: float) -> float:
    """Return the fastest of up to ``repeats`` timed calls, after one warm-up call."""
    function()
    best = float("inf")
    started = time.perf_counter()
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - start)
        if time.perf_counter() - started > budget_seconds:
            break
    return best


def first_call_seconds(tokens: int, backend: str) -> float:
    """Time the first ``privatize`` call of the process at d=128, n=4: kernel loading plus one draw."""
    quantizer = StochasticQuantizer(4, MU, CLIP, 128, backend=backend)
    z = torch.zeros(tokens, 128)
    start = time.perf_counter()
    quantizer.privatize(z, generator=torch.Generator().manual_seed(0))
    return time.perf_counter() - start


def throughput_rows(
    tokens: int, repeats: int, budget_seconds: float, backend: str
) -> list[tuple[int, int, float, float, float]]:
    """Time ``privatize`` and the round loop for each setting; return (d, n, p, fast tok/s, loop tok/s)."""
    rows = []
    for dim, bits, sparsity in SETTINGS:
        quantizer = StochasticQuantizer(bits, MU, CLIP, dim, sparsity, backend=backend)
        z = (torch.rand(tokens, dim, generator=torch.Generator().manual_seed(0)) * 2 - 1) * CLIP
        generator = torch.Generator().manual_seed(1)

        # Draw 2**18 elements first, so the sampler has built its lookup table when timing starts.
        quantizer.privatize(torch.zeros((1 << 18) // dim + 1, dim), generator=generator)
        fast = best_seconds(lambda: quantizer.privatize(z, generator=generator), repeats, budget_seconds)
        loop = best_seconds(lambda: round_loop_release(quantizer, z, generator), max(1, repeats // 2), budget_seconds)
        rows.append((dim, bits, sparsity, tokens / fast, tokens / loop))
        logger.info("d=%d n=%d p=%.2f: %.0f tok/s, loop %.0f tok/s", dim, bits, sparsity, tokens / fast, tokens / loop)
    return rows


def size_rows(tokens: int, shapes: list[tuple[int, int]]) -> list[tuple[int, int, int, float, int]]:
    """Payload bytes per token at n=4 and n=8, dense and sparse; return (D, d, width, payload B/token, fp16 B/token)."""
    rows = []
    for hidden_size, dim in shapes:
        for width in (4, 5, 8, 9):
            per_token = payload_size(tokens, dim, width) / tokens
            rows.append((hidden_size, dim, width, per_token, 2 * hidden_size))
    return rows


def packing_seconds(repeats: int) -> tuple[float, float, int]:
    """Time packing and unpacking 512 tokens x 4096 coordinates of 8-bit levels."""
    levels = torch.randint(0, 256, (512, 4096), generator=torch.Generator().manual_seed(2))
    data = pack_payload(levels, bits=8, sparse=False, scale=1.0)
    pack = best_seconds(lambda: pack_payload(levels, bits=8, sparse=False, scale=1.0), repeats, 30.0)
    unpack = best_seconds(lambda: unpack_payload(data), repeats, 30.0)
    odd = torch.randint(0, 511, (512, 4096), generator=torch.Generator().manual_seed(3))
    odd_data = pack_payload(odd, bits=8, sparse=True, scale=1.0)
    odd_round_trip = best_seconds(lambda: unpack_payload(pack_payload(odd, bits=8, sparse=True, scale=1.0)), repeats, 30.0)
    logger.info("9-bit round trip %.3f s for %d bytes", odd_round_trip, len(odd_data))
    return pack, unpack, len(data)


def main() -> None:
    """Parse arguments, run the three measurements and print their tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=64, help="tokens per privatize call (default 64, one prompt)")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per configuration; the fastest counts")
    parser.add_argument("--budget", type=float, default=20.0, help="maximum seconds of timed calls per configuration")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--backend", choices=BACKENDS, default="auto", help="quantizer sampling backend (default auto)")
    parser.add_argument("--default-hidden-size", type=int, default=256, help="hidden size D of the embedded default model")
    parser.add_argument("--default-dim", type=int, default=32, help="projected size d of the embedded default model")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)

    print(f"machine: {platform.machine()}, {platform.processor() or 'cpu'}, torch {torch.__version__}, threads {args.threads}")
    first_call = first_call_seconds(args.tokens, args.backend)
    kernels = load_kernels() if args.backend != "torch" else None
    print(f"sampling backend: {'numba kernels' if kernels is not None else 'pure torch'} (--backend {args.backend})")
    print(f"first privatize call in this process: {first_call:.3f} s")
    print(f"\nprivatize throughput, {args.tokens} tokens per call, mu={MU}, clip={CLIP}")
    print(f"{'d':>5} {'n':>2} {'p':>4} {'DEL tok/s':>12} {'loop tok/s':>12} {'speed-up':>9}")
    for dim, bits, sparsity, fast, loop in throughput_rows(args.tokens, args.repeats, args.budget, args.backend):
        print(f"{dim:>5} {bits:>2} {sparsity:>4.2f} {fast:>12.0f} {loop:>12.1f} {fast / loop:>8.1f}x")

    shapes = [(4096, 128), (args.default_hidden_size, args.default_dim)]
    print(f"\npayload bytes per token at T={args.tokens} (header {HEADER_SIZE} bytes per payload) vs fp16 embeddings")
    print(f"{'D':>5} {'d':>4} {'bits/coord':>10} {'payload B/tok':>14} {'fp16 B/tok':>11} {'ratio':>7}")
    for hidden_size, dim, width, per_token, fp16 in size_rows(args.tokens, shapes):
        print(f"{hidden_size:>5} {dim:>4} {width:>10} {per_token:>14.2f} {fp16:>11} {fp16 / per_token:>6.1f}x")

    pack, unpack, size = packing_seconds(args.repeats)
    print(f"\npack 512 x 4096 8-bit levels: {pack * 1e3:.1f} ms, unpack: {unpack * 1e3:.1f} ms ({size} bytes)")


if __name__ == "__main__":
    main()
