"""Server scheduling policies: dispatch of requests to replicas and batching on a replica.

Each policy is one file; the registries map a scenario's policy name to its class.
"""

from delsim.sim.schedulers.base import (
    BATCHING_POLICIES,
    DISPATCH_POLICIES,
    BatchingPolicy,
    DispatchPolicy,
    ReplicaState,
    make_batching_policy,
    make_dispatch_policy,
)

__all__ = [
    "BATCHING_POLICIES",
    "DISPATCH_POLICIES",
    "BatchingPolicy",
    "DispatchPolicy",
    "ReplicaState",
    "make_batching_policy",
    "make_dispatch_policy",
]
