"""Discrete-event simulation of a DEL deployment in virtual time.

Every request passes through: release (arrival, or the end of a privacy deferral), client
compute, uplink, queueing at a replica, prefill and decode iterations, and downlink. Events sit
on a heap ordered by (time, kind priority, sequence number), so ties in time resolve the same
way on every run.
"""

from __future__ import annotations

import enum
import heapq
import logging
from dataclasses import dataclass, field

from delsim.sim.cost import ClientCostModel, ServerCostModel
from delsim.sim.devices import Client
from delsim.sim.network import transfer_time_s
from delsim.sim.schedulers import ReplicaState, make_batching_policy, make_dispatch_policy

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SimRequest:
    """Sizes and times of one released request, as the simulation needs them.

    Sizes come from real compute: the packed payload, the generated token ids sent back.
    """

    request_id: int
    client: Client
    arrival_s: float
    release_s: float
    prompt_tokens: int
    soft_prompt_tokens: int
    uplink_bytes: int
    downlink_bytes: int
    generated_tokens: int


@dataclass
class RequestTimeline:
    """Virtual timestamps in seconds and placement of one request."""

    request_id: int
    arrival_s: float
    release_s: float
    client_start_s: float = float("nan")
    client_done_s: float = float("nan")
    uplink_start_s: float = float("nan")
    uplink_done_s: float = float("nan")
    server_start_s: float = float("nan")
    first_token_s: float = float("nan")
    server_done_s: float = float("nan")
    downlink_start_s: float = float("nan")
    done_s: float = float("nan")
    replica: int = -1
    batch_size: int = 0
    client_flops: float = 0.0
    client_energy_j: float = 0.0


class EventKind(enum.IntEnum):
    """Event kinds; the value breaks ties between events at the same virtual time."""

    ITERATION_DONE = 0
    DOWNLINK_DONE = 1
    SERVER_ARRIVAL = 2
    RELEASE = 3
    ITERATION_START = 4


@dataclass(frozen=True)
class ServerPoolConfig:
    """Virtual server pool: replica count and scheduling policies."""

    replicas: int
    dispatch: str = "least_loaded"
    batching: str = "continuous"
    max_batch_size: int = 16
    max_prefill_tokens: int = 8192
    soft_prompt_prefix_cache: bool = False


@dataclass
class _Client:
    compute_free_s: float = 0.0
    uplink_free_s: float = 0.0
    downlink_free_s: float = 0.0


@dataclass
class Simulator:
    """Runs the event loop over a set of released requests.

    Parameters
    ----------
    pool:
        Server pool configuration.
    server_cost:
        Virtual time of prefill and decode iterations.
    client_cost:
        FLOPs of the client-side transform.
    seed:
        Seed of policies that draw random numbers.
    """

    pool: ServerPoolConfig
    server_cost: ServerCostModel
    client_cost: ClientCostModel
    seed: int = 0
    _heap: list = field(default_factory=list, init=False)
    _sequence: int = field(default=0, init=False)

    def _push(self, time_s: float, kind: EventKind, payload: int) -> None:
        heapq.heappush(self._heap, (time_s, int(kind), self._sequence, payload))
        self._sequence += 1

    def run(self, requests: list[SimRequest]) -> dict[int, RequestTimeline]:
        """Simulate all requests and return their timelines by request id."""
        self._heap, self._sequence = [], 0
        by_id = {r.request_id: r for r in requests}
        timelines = {r.request_id: RequestTimeline(r.request_id, r.arrival_s, r.release_s) for r in requests}
        clients: dict[int, _Client] = {}
        replicas = [ReplicaState(i) for i in range(self.pool.replicas)]
        dispatch = make_dispatch_policy(self.pool.dispatch, seed=self.seed)
        batching = make_batching_policy(
            self.pool.batching, max_batch_size=self.pool.max_batch_size, max_prefill_tokens=self.pool.max_prefill_tokens
        )
        prefill_tokens = {r.request_id: self._prefill_length(r) for r in requests}
        iteration_members: dict[int, tuple[list[int], bool]] = {}

        for request in requests:
            self._push(request.release_s, EventKind.RELEASE, request.request_id)

        while self._heap:
            now, kind, _, payload = heapq.heappop(self._heap)
            if kind == EventKind.RELEASE:
                self._on_release(now, by_id[payload], timelines[payload], clients)
            elif kind == EventKind.SERVER_ARRIVAL:
                index = dispatch.choose(payload, replicas)
                replicas[index].waiting.append(payload)
                timelines[payload].replica = index
                if not replicas[index].busy:
                    replicas[index].busy = True
                    self._push(now, EventKind.ITERATION_START, index)
            elif kind == EventKind.ITERATION_START:
                self._on_iteration_start(now, replicas[payload], batching, prefill_tokens, by_id, timelines, iteration_members)
            elif kind == EventKind.ITERATION_DONE:
                self._on_iteration_done(now, replicas[payload], by_id, timelines, clients, iteration_members)
            elif kind == EventKind.DOWNLINK_DONE:
                timelines[payload].done_s = now

        return timelines

    def _prefill_length(self, request: SimRequest) -> int:
        cached = self.pool.soft_prompt_prefix_cache
        return request.prompt_tokens + (0 if cached else request.soft_prompt_tokens)

    def _on_release(self, now: float, request: SimRequest, timeline: RequestTimeline, clients: dict[int, _Client]) -> None:
        device = request.client.device
        state = clients.setdefault(request.client.client_id, _Client())

        # One device computes one request at a time, and its uplink carries one payload at a time.
        flops = self.client_cost.flops(request.prompt_tokens)
        timeline.client_flops = flops
        timeline.client_start_s = max(now, state.compute_free_s)
        timeline.client_done_s = timeline.client_start_s + flops / device.flops_per_s
        state.compute_free_s = timeline.client_done_s

        timeline.uplink_start_s = max(timeline.client_done_s, state.uplink_free_s)
        timeline.uplink_done_s = timeline.uplink_start_s + transfer_time_s(request.uplink_bytes, device.uplink_bps, device.rtt_s)
        state.uplink_free_s = timeline.uplink_done_s

        timeline.client_energy_j = flops * device.energy_per_flop_j + request.uplink_bytes * device.radio_energy_per_byte_j
        self._push(timeline.uplink_done_s, EventKind.SERVER_ARRIVAL, request.request_id)

    def _on_iteration_start(self, now, replica, batching, prefill_tokens, by_id, timelines, members) -> None:
        admitted = batching.admit(replica, prefill_tokens)
        if admitted:
            duration = self.server_cost.prefill_time_s(sum(prefill_tokens[i] for i in admitted))
            batch_size = len(admitted) + len(replica.running)
            for request_id in admitted:
                timelines[request_id].server_start_s = now
                timelines[request_id].batch_size = batch_size
                replica.running[request_id] = 0
            members[replica.replica_id] = (admitted, True)
        elif replica.running:
            context = sum(
                by_id[i].prompt_tokens + by_id[i].soft_prompt_tokens + generated for i, generated in replica.running.items()
            )
            duration = self.server_cost.decode_time_s(len(replica.running), context)
            members[replica.replica_id] = (list(replica.running), False)
        else:
            replica.busy = False
            return
        self._push(now + duration, EventKind.ITERATION_DONE, replica.replica_id)

    def _on_iteration_done(self, now, replica, by_id, timelines, clients, members) -> None:
        request_ids, was_prefill = members.pop(replica.replica_id)
        for request_id in request_ids:
            # A prefill iteration yields each newcomer's first token.
            replica.running[request_id] += 1
            if was_prefill:
                timelines[request_id].first_token_s = now
            target = max(1, by_id[request_id].generated_tokens)
            if replica.running[request_id] >= target:
                del replica.running[request_id]
                self._send_downlink(now, by_id[request_id], timelines[request_id], clients)
        self._push(now, EventKind.ITERATION_START, replica.replica_id)

    def _send_downlink(self, now: float, request: SimRequest, timeline: RequestTimeline, clients: dict[int, _Client]) -> None:
        device = request.client.device
        state = clients.setdefault(request.client.client_id, _Client())
        timeline.server_done_s = now
        timeline.downlink_start_s = max(now, state.downlink_free_s)
        done = timeline.downlink_start_s + transfer_time_s(request.downlink_bytes, device.downlink_bps, device.rtt_s)
        state.downlink_free_s = done
        timeline.client_energy_j += request.downlink_bytes * device.radio_energy_per_byte_j
        self._push(done, EventKind.DOWNLINK_DONE, request.request_id)
