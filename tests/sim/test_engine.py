"""Tests of the discrete-event engine: hand-computed timelines, ordering and policies."""

import math

import numpy as np
import pytest

from delsim.sim.cost import ACCELERATORS, AcceleratorProfile, ClientCostModel, ModelShape, ServerCostModel
from delsim.sim.devices import Client, DeviceProfile
from delsim.sim.engine import ServerPoolConfig, SimRequest, Simulator
from delsim.sim.network import transfer_time_s

PHONE = DeviceProfile("phone", uplink_bps=1e6, downlink_bps=8e6, rtt_s=0.1, flops_per_s=1e9)
# An accelerator with round numbers: 1e12 FLOP/s and 1e12 bytes/s at full efficiency.
ROUND = AcceleratorProfile("round", peak_flops=1e12, memory_bandwidth_bytes_per_s=1e12, flops_efficiency=1.0, bandwidth_efficiency=1.0)
SHAPE = ModelShape(parameters=1e9, num_layers=10, hidden_size=100, bytes_per_parameter=1.0)


def make_request(request_id, client, time_s=0.0, prompt=100, soft=0, generated=3, up=1000, down=80):
    return SimRequest(request_id, client, time_s, time_s, prompt, soft, up, down, generated)


def make_simulator(replicas=1, batching="continuous", dispatch="least_loaded", max_batch_size=16, cache=False):
    pool = ServerPoolConfig(replicas=replicas, dispatch=dispatch, batching=batching, max_batch_size=max_batch_size, soft_prompt_prefix_cache=cache)
    return Simulator(pool, ServerCostModel(SHAPE, ROUND), ClientCostModel(hidden_size=100, dim=10))


def test_single_request_matches_hand_computation():
    client = Client(0, "u0", PHONE)
    timeline = make_simulator().run([make_request(0, client)])[0]

    client_flops = 100 * (2 * 100 * 10 + 16 * 10)
    assert timeline.client_done_s == pytest.approx(client_flops / 1e9)
    uplink = 0.05 + 8 * 1000 / 1e6
    assert timeline.uplink_done_s == pytest.approx(timeline.client_done_s + uplink)
    # Prefill of 100 tokens: max(2e9*100/1e12 = 0.2 s, weights 1e9 B / 1e12 = 1 ms).
    assert timeline.first_token_s == pytest.approx(timeline.uplink_done_s + 0.2)
    # Two decode iterations at batch 1: compute 2e9 FLOPs / 1e12 = 2 ms beats reading about
    # 1e9 bytes of weights plus the KV cache at 1e12 bytes/s (about 1 ms).
    kv_per_token = 2 * 10 * 100 * 1.0
    memory = [(1e9 + (100 + k) * kv_per_token) / 1e12 for k in (1, 2)]
    decode = [max(2e-3, m) for m in memory]
    assert timeline.server_done_s == pytest.approx(timeline.first_token_s + sum(decode))
    assert timeline.done_s == pytest.approx(timeline.server_done_s + 0.05 + 8 * 80 / 8e6)


def test_transfer_time_rejects_zero_bandwidth():
    with pytest.raises(ValueError, match="bandwidth_bps"):
        transfer_time_s(10, 0.0, 0.1)


def test_timelines_are_ordered():
    rng = np.random.default_rng(3)
    clients = [Client(i, f"u{i}", PHONE) for i in range(5)]
    requests = [make_request(i, clients[i % 5], time_s=float(rng.uniform(0, 2)), generated=int(rng.integers(1, 20))) for i in range(60)]
    timelines = make_simulator(replicas=2, max_batch_size=4).run(requests)
    assert len(timelines) == 60
    for t in timelines.values():
        assert t.arrival_s <= t.client_start_s <= t.client_done_s <= t.uplink_start_s
        assert t.uplink_start_s <= t.uplink_done_s <= t.server_start_s <= t.first_token_s
        assert t.first_token_s <= t.server_done_s <= t.downlink_start_s <= t.done_s
        assert not math.isnan(t.done_s)


def test_one_device_computes_one_request_at_a_time():
    client = Client(0, "u0", PHONE)
    timelines = make_simulator().run([make_request(0, client), make_request(1, client)])
    assert timelines[1].client_start_s == pytest.approx(timelines[0].client_done_s)
    assert timelines[1].uplink_start_s >= timelines[0].uplink_done_s


def test_static_batching_waits_for_whole_batch():
    clients = [Client(i, f"u{i}", PHONE) for i in range(3)]
    # Two requests arrive together; a third arrives while they run.
    requests = [make_request(0, clients[0], generated=50), make_request(1, clients[1], generated=2), make_request(2, clients[2], time_s=0.3, generated=2)]
    static = make_simulator(batching="static").run(requests)
    continuous = make_simulator(batching="continuous").run(requests)
    # Under static batching the third request starts only after the long one is done.
    assert static[2].server_start_s >= static[0].server_done_s
    assert continuous[2].server_start_s < continuous[0].server_done_s
    assert static[0].batch_size == 2


def test_max_batch_size_is_respected():
    clients = [Client(i, f"u{i}", PHONE) for i in range(6)]
    requests = [make_request(i, clients[i]) for i in range(6)]
    timelines = make_simulator(max_batch_size=2).run(requests)
    assert max(t.batch_size for t in timelines.values()) == 2


def test_round_robin_alternates_replicas():
    clients = [Client(i, f"u{i}", PHONE) for i in range(4)]
    requests = [make_request(i, clients[i], time_s=0.01 * i) for i in range(4)]
    timelines = make_simulator(replicas=2, dispatch="round_robin").run(requests)
    assert [timelines[i].replica for i in range(4)] == [0, 1, 0, 1]


def test_prefix_cache_shortens_prefill():
    client = Client(0, "u0", PHONE)
    request = make_request(0, client, soft=50)
    plain = make_simulator().run([request])[0]
    cached = make_simulator(cache=True).run([request])[0]
    assert plain.first_token_s - plain.server_start_s == pytest.approx(2e9 * 150 / 1e12)
    assert cached.first_token_s - cached.server_start_s == pytest.approx(2e9 * 100 / 1e12)


def test_same_input_gives_same_timelines():
    rng = np.random.default_rng(0)
    clients = [Client(i, f"u{i}", PHONE) for i in range(4)]
    requests = [make_request(i, clients[i % 4], time_s=float(rng.uniform(0, 1))) for i in range(30)]
    first = make_simulator(replicas=3, dispatch="random").run(requests)
    second = make_simulator(replicas=3, dispatch="random").run(requests)
    assert [vars(first[i]) for i in range(30)] == [vars(second[i]) for i in range(30)]


def test_unknown_policy_names_are_rejected():
    with pytest.raises(ValueError, match="unknown batching policy"):
        make_simulator(batching="lifo").run([])


def test_builtin_accelerators_have_positive_rates():
    for profile in ACCELERATORS.values():
        assert profile.peak_flops > 0
        assert profile.memory_bandwidth_bytes_per_s > 0
