"""Network model: time to move a payload over a client's link."""

from __future__ import annotations


def transfer_time_s(num_bytes: int, bandwidth_bps: float, rtt_s: float) -> float:
    """Return the one-way transfer time in seconds of ``num_bytes`` over a link.

    The model is half the round-trip time as propagation delay plus serialisation at the
    link bandwidth; it ignores TCP slow start and loss.
    """
    if bandwidth_bps <= 0:
        raise ValueError(f"bandwidth_bps must be > 0, got {bandwidth_bps}")
    return 0.5 * rtt_s + 8.0 * num_bytes / bandwidth_bps
