"""Starting Ray, creating the actor pools and running calls on them with progress and logging."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

import ray
from ray.util import ActorPool
from tqdm.auto import tqdm

logger = logging.getLogger(__name__)


def connect_ray(address: str | None, *, num_cpus: float | None = None) -> bool:
    """Connect to the Ray cluster at ``address`` or start an embedded one.

    Returns ``True`` when this call started Ray (the caller then shuts it down), ``False`` when
    Ray was already initialised in this process or ``address`` named an existing cluster.
    """
    if ray.is_initialized():
        return False
    if address:
        logger.info("connecting to Ray cluster at %s", address)
        ray.init(address=address, logging_level=logging.WARNING)
        return False
    logger.info("starting embedded Ray")
    ray.init(num_cpus=num_cpus, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
    return True


def gpus_in_cluster() -> float:
    """Return the number of GPUs the connected Ray cluster offers."""
    return float(ray.cluster_resources().get("GPU", 0.0))


def chunked(items: list, size: int) -> list[list]:
    """Split ``items`` into consecutive lists of at most ``size`` elements."""
    return [items[i : i + size] for i in range(0, len(items), size)]


def map_on_pool(
    actors: list[Any],
    method: Callable[[Any, list], Any],
    chunks: Iterable[list],
    *,
    description: str,
    total: int,
) -> list:
    """Run ``method(actor, chunk)`` over all chunks on an ActorPool and flatten the results.

    A progress bar counts items, not chunks; results come back in completion order, and the
    caller re-keys them by request id.
    """
    pool = ActorPool(actors)
    results: list = []
    with tqdm(total=total, desc=description, unit="req", leave=False) as bar:
        for chunk_result in pool.map_unordered(method, list(chunks)):
            results.extend(chunk_result)
            bar.update(len(chunk_result))
    return results


def run_routed(
    calls: list[tuple[Any, list]],
    submit: Callable[[Any, list], Any],
    *,
    description: str,
    total: int,
) -> list:
    """Submit each ``(actor, chunk)`` call to its own actor and gather results as they finish.

    Used where a chunk belongs to one actor, such as a client shard that owns its clients.
    """
    pending = {submit(actor, chunk): len(chunk) for actor, chunk in calls}
    results: list = []
    with tqdm(total=total, desc=description, unit="req", leave=False) as bar:
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                results.extend(ray.get(ref))
                bar.update(pending.pop(ref))
    return results
