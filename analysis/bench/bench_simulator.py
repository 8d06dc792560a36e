"""Benchmark the discrete-event core: simulated requests per wall second, per batching policy.

Usage: python analysis/bench/bench_simulator.py [--clients 100000] [--rate-hz 0.002] [--duration-s 600]

Request sizes are synthetic (no Ray, no torch): the point is the cost of the event loop at fleet
scale, compared across policies in one run.
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np

from delsim.sim.arrivals import generate_arrivals
from delsim.sim.cost import ACCELERATORS, ClientCostModel, ModelShape, ServerCostModel
from delsim.sim.devices import DeviceProfile, assign_device_classes
from delsim.sim.engine import ServerPoolConfig, SimRequest, Simulator

PROFILES = [
    DeviceProfile("phone", 5e6, 2e7, 0.06, 5e9, availability=0.8, mean_online_s=300),
    DeviceProfile("laptop", 5e7, 1e8, 0.02, 5e10, availability=0.95, mean_online_s=1800),
    DeviceProfile("iot", 2.5e5, 1e6, 0.3, 2e8, availability=0.7, mean_online_s=120),
]


def build_requests(clients: int, rate_hz: float, duration_s: float, seed: int) -> list[SimRequest]:
    """Draw a fleet and its arrivals, with prompt and output lengths from a fixed distribution."""
    fleet = assign_device_classes(clients, PROFILES, [0.5, 0.3, 0.2], np.random.default_rng(seed))
    arrivals = generate_arrivals(fleet, process="poisson", duration_s=duration_s, seed=seed, rate_hz=rate_hz)
    rng = np.random.default_rng([seed, 1])
    prompt = rng.integers(40, 120, size=len(arrivals))
    generated = rng.integers(1, 129, size=len(arrivals))
    return [
        SimRequest(a.request_id, fleet[a.client_id], a.time_s, a.time_s, int(p), 20, int(p) * 16 + 20, int(g) * 2 + 5, int(g))
        for a, p, g in zip(arrivals, prompt, generated)
    ]


def main() -> None:
    """Time the simulation of one workload under each batching policy and print a table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=100_000, help="simulated clients")
    parser.add_argument("--rate-hz", type=float, default=0.002, help="requests per second per online client")
    parser.add_argument("--duration-s", type=float, default=600.0, help="arrival window in virtual seconds")
    parser.add_argument("--replicas", type=int, default=64, help="virtual server replicas")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    started = time.perf_counter()
    requests = build_requests(args.clients, args.rate_hz, args.duration_s, args.seed)
    build_s = time.perf_counter() - started
    print(f"machine: {platform.processor() or platform.machine()}, python {platform.python_version()}")
    print(f"{args.clients} clients, {len(requests)} requests, workload built in {build_s:.1f} s")

    shape = ModelShape(6.7e9, 32, 4096)
    print(f"{'batching':<12} {'wall s':>8} {'requests/s':>12} {'p50 latency s':>14} {'p99 latency s':>14}")
    for batching in ("static", "continuous"):
        pool = ServerPoolConfig(replicas=args.replicas, batching=batching, max_batch_size=32)
        simulator = Simulator(pool, ServerCostModel(shape, ACCELERATORS["a100"]), ClientCostModel(4096, 128), seed=args.seed)
        started = time.perf_counter()
        timelines = simulator.run(requests)
        wall = time.perf_counter() - started
        latency = np.array([t.done_s - t.arrival_s for t in timelines.values()])
        print(f"{batching:<12} {wall:>8.1f} {len(requests) / wall:>12.0f} {np.percentile(latency, 50):>14.3f} {np.percentile(latency, 99):>14.3f}")


if __name__ == "__main__":
    main()
