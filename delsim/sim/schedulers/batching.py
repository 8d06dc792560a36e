"""Batching policies: static (request-level) and continuous (iteration-level) batching."""

from __future__ import annotations

from delsim.sim.schedulers.base import BATCHING_POLICIES, BatchingPolicy, ReplicaState


class StaticBatching(BatchingPolicy):
    """Forms a new batch only when the previous one has fully finished.

    Short requests wait for the longest one in their batch, which is the classic cost of
    request-level batching.
    """

    def admit(self, replica: ReplicaState, prefill_tokens: dict[int, int]) -> list[int]:
        if replica.running:
            return []
        return self._take_fitting(replica, prefill_tokens, self.max_batch_size)


class ContinuousBatching(BatchingPolicy):
    """Admits waiting requests at every iteration while the batch has free slots.

    A prefill iteration for the newcomers runs before the running batch decodes again
    (prefill first, no chunking).
    """

    def admit(self, replica: ReplicaState, prefill_tokens: dict[int, int]) -> list[int]:
        slots = self.max_batch_size - len(replica.running)
        if slots <= 0:
            return []
        return self._take_fitting(replica, prefill_tokens, slots)


BATCHING_POLICIES.update({"static": StaticBatching, "continuous": ContinuousBatching})
