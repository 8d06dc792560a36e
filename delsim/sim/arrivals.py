"""Request arrival processes of a fleet, with device availability (online and offline periods)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from delsim.sim.devices import Client


@dataclass(frozen=True)
class Arrival:
    """A request created by a client at a virtual time, before admission."""

    request_id: int
    client_id: int
    user_id: str
    time_s: float


def online_periods(client: Client, duration_s: float, rng: np.random.Generator) -> list[tuple[float, float]]:
    """Return the client's online intervals in ``[0, duration_s)``.

    The device alternates exponentially distributed online and offline periods whose means give
    its availability; it starts online with probability equal to the availability.
    """
    device = client.device
    if device.availability >= 1.0:
        return [(0.0, duration_s)]

    periods: list[tuple[float, float]] = []
    online = rng.random() < device.availability
    t = 0.0
    while t < duration_s:
        mean = device.mean_online_s if online else device.mean_offline_s
        length = rng.exponential(mean)
        end = min(t + length, duration_s)
        if online:
            periods.append((t, end))
        t = end
        online = not online
    return periods


def poisson_arrival_times(
    client: Client, rate_hz: float, duration_s: float, rng: np.random.Generator
) -> list[float]:
    """Return Poisson arrival times at ``rate_hz`` during the client's online periods."""
    times: list[float] = []
    for start, end in online_periods(client, duration_s, rng):
        count = rng.poisson(rate_hz * (end - start))
        times.extend(np.sort(rng.uniform(start, end, size=count)).tolist())
    return times


def fixed_count_arrival_times(
    client: Client, count: int, duration_s: float, rng: np.random.Generator
) -> list[float]:
    """Return ``count`` arrival times spread uniformly over the client's online time."""
    periods = online_periods(client, duration_s, rng)
    lengths = np.array([end - start for start, end in periods])
    total = float(lengths.sum())
    if total <= 0.0:
        # The client never came online: its requests arrive at the start of the run.
        periods, lengths, total = [(0.0, duration_s)], np.array([duration_s]), duration_s

    offsets = np.sort(rng.uniform(0.0, total, size=count))
    edges = np.concatenate([[0.0], np.cumsum(lengths)])
    index = np.clip(np.searchsorted(edges, offsets, side="right") - 1, 0, len(periods) - 1)
    return [periods[i][0] + (o - edges[i]) for o, i in zip(offsets, index)]


def generate_arrivals(
    clients: list[Client],
    *,
    process: str,
    duration_s: float,
    seed: int,
    rate_hz: float | None = None,
    requests_per_client: int | None = None,
) -> list[Arrival]:
    """Generate the arrivals of every client, ordered by time and then client id.

    Each client draws from its own random stream derived from ``(seed, client_id)``, so adding
    clients or changing how they are split across actors leaves other clients' arrivals alone.

    Parameters
    ----------
    process:
        ``poisson`` (rate ``rate_hz`` per client while online) or ``fixed`` (exactly
        ``requests_per_client`` per client, uniform over its online time).
    """
    pending: list[tuple[float, int]] = []
    for client in clients:
        rng = np.random.default_rng([seed, 0xA771, client.client_id])
        if process == "poisson":
            if rate_hz is None:
                raise ValueError("process 'poisson' needs rate_hz")
            times = poisson_arrival_times(client, rate_hz, duration_s, rng)
        elif process == "fixed":
            if requests_per_client is None:
                raise ValueError("process 'fixed' needs requests_per_client")
            times = fixed_count_arrival_times(client, requests_per_client, duration_s, rng)
        else:
            raise ValueError(f"unknown arrival process {process!r}; use 'poisson' or 'fixed'")
        pending.extend((t, client.client_id) for t in times)

    pending.sort()
    by_id = {c.client_id: c for c in clients}
    return [
        Arrival(request_id=i, client_id=cid, user_id=by_id[cid].user_id, time_s=t)
        for i, (t, cid) in enumerate(pending)
    ]
