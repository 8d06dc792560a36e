"""Edge device profiles and simulated clients of a fleet."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class DeviceProfile:
    """System model of one class of edge device.

    Attributes
    ----------
    name:
        Device class name, for example ``phone``.
    uplink_bps, downlink_bps:
        Link bandwidths in bits per second.
    rtt_s:
        Round-trip time in seconds; each one-way transfer pays half of it.
    flops_per_s:
        Sustained compute speed of the device for the client-side transform, in FLOP/s.
    availability:
        Long-run fraction of time the device is online, in (0, 1].
    mean_online_s:
        Mean length of an online period in seconds (exponentially distributed).
    energy_per_flop_j:
        Compute energy in joules per FLOP.
    radio_energy_per_byte_j:
        Radio energy in joules per byte sent or received.
    """

    name: str
    uplink_bps: float
    downlink_bps: float
    rtt_s: float
    flops_per_s: float
    availability: float = 1.0
    mean_online_s: float = 600.0
    energy_per_flop_j: float = 0.0
    radio_energy_per_byte_j: float = 0.0

    @property
    def mean_offline_s(self) -> float:
        """Mean offline period in seconds that yields the configured availability."""
        if self.availability >= 1.0:
            return 0.0
        return self.mean_online_s * (1.0 - self.availability) / self.availability


@dataclass(frozen=True)
class Client:
    """One simulated edge client: a user on a device of some class."""

    client_id: int
    user_id: str
    device: DeviceProfile


def assign_device_classes(
    num_clients: int, profiles: list[DeviceProfile], shares: list[float], rng: np.random.Generator
) -> list[Client]:
    """Build a fleet of clients whose device classes follow the given shares.

    Counts are the largest-remainder rounding of ``num_clients * share``, so a class with share
    0.2 of 50 clients gets exactly 10; the order of clients is then shuffled with ``rng``.
    """
    if len(profiles) != len(shares):
        raise ValueError(f"got {len(profiles)} device profiles but {len(shares)} shares")

    weights = np.asarray(shares, dtype=float)
    weights = weights / weights.sum()
    exact = weights * num_clients
    counts = np.floor(exact).astype(int)
    remainder = num_clients - int(counts.sum())
    order = np.argsort(-(exact - counts), kind="stable")
    counts[order[:remainder]] += 1

    classes = np.repeat(np.arange(len(profiles)), counts)
    rng.shuffle(classes)
    return [
        Client(client_id=i, user_id=f"user-{i:06d}", device=profiles[int(c)])
        for i, c in enumerate(classes)
    ]
