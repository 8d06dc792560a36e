"""Interfaces and registries of the dispatch and batching policies."""

from __future__ import annotations

import abc
from collections import deque
from dataclasses import dataclass, field


@dataclass
class ReplicaState:
    """Queue and running batch of one virtual server replica.

    ``waiting`` contains request ids in arrival order; ``running`` maps a request id to the number
    of tokens it has generated so far.
    """

    replica_id: int
    waiting: deque[int] = field(default_factory=deque)
    running: dict[int, int] = field(default_factory=dict)
    busy: bool = False

    @property
    def load(self) -> int:
        """Requests waiting or running on this replica."""
        return len(self.waiting) + len(self.running)


class DispatchPolicy(abc.ABC):
    """Chooses the replica that receives a request arriving at the server pool."""

    @abc.abstractmethod
    def choose(self, request_id: int, replicas: list[ReplicaState]) -> int:
        """Return the index of the replica for ``request_id``."""


class BatchingPolicy(abc.ABC):
    """Chooses which waiting requests join a replica's batch at the start of an iteration."""

    def __init__(self, max_batch_size: int, max_prefill_tokens: int) -> None:
        self.max_batch_size = max_batch_size
        self.max_prefill_tokens = max_prefill_tokens

    @abc.abstractmethod
    def admit(self, replica: ReplicaState, prefill_tokens: dict[int, int]) -> list[int]:
        """Remove and return the request ids that start prefill now.

        Parameters
        ----------
        replica:
            The replica's state; admitted ids are popped from ``replica.waiting``.
        prefill_tokens:
            Prefill length in tokens of every request id.
        """

    def _take_fitting(self, replica: ReplicaState, prefill_tokens: dict[int, int], slots: int) -> list[int]:
        admitted: list[int] = []
        budget = self.max_prefill_tokens
        while replica.waiting and len(admitted) < slots:
            head = replica.waiting[0]
            # A request longer than the whole prefill budget still runs alone, so it never starves.
            if admitted and prefill_tokens[head] > budget:
                break
            admitted.append(replica.waiting.popleft())
            budget -= prefill_tokens[head]
        return admitted


DISPATCH_POLICIES: dict[str, type[DispatchPolicy]] = {}
BATCHING_POLICIES: dict[str, type[BatchingPolicy]] = {}


def make_dispatch_policy(name: str, *, seed: int = 0) -> DispatchPolicy:
    """Return a dispatch policy by its registered name."""
    # Importing the policy modules fills the registries.
    from delsim.sim.schedulers import dispatch  # noqa: F401

    if name not in DISPATCH_POLICIES:
        raise ValueError(f"unknown dispatch policy {name!r}; choose one of {sorted(DISPATCH_POLICIES)}")
    policy_class = DISPATCH_POLICIES[name]
    return policy_class(seed=seed) if name == "random" else policy_class()


def make_batching_policy(name: str, *, max_batch_size: int, max_prefill_tokens: int) -> BatchingPolicy:
    """Return a batching policy by its registered name."""
    from delsim.sim.schedulers import batching  # noqa: F401

    if name not in BATCHING_POLICIES:
        raise ValueError(f"unknown batching policy {name!r}; choose one of {sorted(BATCHING_POLICIES)}")
    return BATCHING_POLICIES[name](max_batch_size=max_batch_size, max_prefill_tokens=max_prefill_tokens)
