"""Dispatch policies: round robin, least loaded and seeded random."""

from __future__ import annotations

import numpy as np

from delsim.sim.schedulers.base import DISPATCH_POLICIES, DispatchPolicy, ReplicaState


class RoundRobinDispatch(DispatchPolicy):
    """Sends requests to replicas in turn, whatever their load."""

    def __init__(self) -> None:
        self._next = 0

    def choose(self, request_id: int, replicas: list[ReplicaState]) -> int:
        index = self._next % len(replicas)
        self._next += 1
        return index


class LeastLoadedDispatch(DispatchPolicy):
    """Sends each request to the replica with the fewest waiting plus running requests.

    Ties go to the lowest replica index.
    """

    def choose(self, request_id: int, replicas: list[ReplicaState]) -> int:
        loads = [r.load for r in replicas]
        return loads.index(min(loads))


class RandomDispatch(DispatchPolicy):
    """Sends each request to a uniformly random replica from a seeded stream."""

    def __init__(self, seed: int = 0) -> None:
        self._rng = np.random.default_rng([seed, 0xD15])

    def choose(self, request_id: int, replicas: list[ReplicaState]) -> int:
        return int(self._rng.integers(len(replicas)))


DISPATCH_POLICIES.update(
    {"round_robin": RoundRobinDispatch, "least_loaded": LeastLoadedDispatch, "random": RandomDispatch}
)
