"""Tests of fleet construction and arrival processes."""

import numpy as np
import pytest

from delsim.sim.arrivals import generate_arrivals, online_periods
from delsim.sim.devices import Client, DeviceProfile, assign_device_classes

ALWAYS = DeviceProfile("always", 1e6, 1e6, 0.0, 1e9)
FLAKY = DeviceProfile("flaky", 1e6, 1e6, 0.0, 1e9, availability=0.25, mean_online_s=10.0)


def test_device_shares_are_exact():
    clients = assign_device_classes(50, [ALWAYS, FLAKY], [0.7, 0.3], np.random.default_rng(0))
    names = [c.device.name for c in clients]
    assert names.count("always") == 35
    assert names.count("flaky") == 15


def test_fixed_process_sends_exact_counts():
    clients = assign_device_classes(7, [ALWAYS, FLAKY], [0.5, 0.5], np.random.default_rng(1))
    arrivals = generate_arrivals(clients, process="fixed", duration_s=100.0, seed=4, requests_per_client=3)
    assert len(arrivals) == 21
    assert [a.request_id for a in arrivals] == list(range(21))
    times = [a.time_s for a in arrivals]
    assert times == sorted(times)
    assert all(0.0 <= t <= 100.0 for t in times)


def test_poisson_rate_matches_expectation():
    # 200 always-online clients at 0.5 Hz for 100 s: mean 10,000 arrivals, standard deviation 100.
    clients = [Client(i, f"u{i}", ALWAYS) for i in range(200)]
    arrivals = generate_arrivals(clients, process="poisson", duration_s=100.0, seed=0, rate_hz=0.5)
    assert abs(len(arrivals) - 10_000) < 400


def test_availability_fraction_is_reached():
    # Over a long window the online fraction converges to the availability (0.25); the
    # tolerance of 0.05 is several standard deviations for 10,000 s with 10 s online periods.
    client = Client(0, "u0", FLAKY)
    periods = online_periods(client, 10_000.0, np.random.default_rng(2))
    online = sum(end - start for start, end in periods)
    assert online / 10_000.0 == pytest.approx(0.25, abs=0.05)


def test_arrivals_fall_in_online_periods():
    client = Client(0, "u0", FLAKY)
    arrivals = generate_arrivals([client], process="poisson", duration_s=1000.0, seed=5, rate_hz=1.0)
    periods = online_periods(client, 1000.0, np.random.default_rng([5, 0xA771, 0]))
    for arrival in arrivals:
        assert any(start <= arrival.time_s <= end for start, end in periods)


def test_client_streams_do_not_depend_on_fleet_size():
    small = generate_arrivals([Client(0, "u0", ALWAYS)], process="poisson", duration_s=50.0, seed=9, rate_hz=0.3)
    large = generate_arrivals([Client(i, f"u{i}", ALWAYS) for i in range(10)], process="poisson", duration_s=50.0, seed=9, rate_hz=0.3)
    assert [a.time_s for a in small] == [a.time_s for a in large if a.client_id == 0]


def test_unknown_process_is_rejected():
    with pytest.raises(ValueError, match="unknown arrival process"):
        generate_arrivals([Client(0, "u0", ALWAYS)], process="bursty", duration_s=1.0, seed=0)
