"""The run driver: joins the virtual-time simulation to real compute on Ray actors.

A run has five stages. (1) The fleet and its arrivals are drawn. (2) Client-shard actors encode
every prompt into a real DEL payload. (3) Requests are admitted against per-user budgets in
arrival order; rejected ones charge nothing. (4) Server-replica actors decode the released
payloads and run the LLM. (5) The discrete-event simulation times every request from the real
payload and response sizes. Real compute does not depend on virtual timing, so running it before
the simulation gives the same results as interleaving them.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import ray

from delsim.runtime.accounting import admit_requests, make_enforcer, user_report
from delsim.runtime.client_shard import ClientShardActor
from delsim.runtime.outputs import build_requests_table, summarize, write_run
from delsim.runtime.pools import chunked, connect_ray, gpus_in_cluster, map_on_pool, run_routed
from delsim.runtime.seeding import FIDELITY_STREAM, GENERATION_STREAM, PROMPT_STREAM, QUANTIZER_STREAM, derive_seed
from delsim.runtime.server_replica import ServerReplicaActor
from delsim.runtime.setup import (
    RunSetupError,
    build_arrivals,
    build_fleet,
    build_mechanism,
    build_model_spec,
    check_model,
    load_prompts,
    resolve_projection,
)
from delsim.runtime.spec import ClientJob, ServerJob
from delsim.scenario.schema import Scenario
from delsim.sim.cost import ACCELERATORS, ClientCostModel, ModelShape, ServerCostModel
from delsim.sim.engine import ServerPoolConfig, SimRequest, Simulator

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunResult:
    """Output folder and summary of a finished run."""

    out_dir: Path
    summary: dict


def _server_device(scenario: Scenario) -> tuple[str, float]:
    """Return the torch device and Ray GPU count of each server actor."""
    wanted = scenario.servers.gpu
    available = gpus_in_cluster()
    actors = scenario.runtime.server_actors
    if wanted == "never":
        return "cpu", 0.0
    if available >= actors:
        return "cuda", 1.0
    if wanted == "required":
        raise RunSetupError(f"servers.gpu: 'required' but the Ray cluster has {available:g} GPUs for {actors} server actors. Fix: set servers.gpu to 'auto', lower runtime.server_actors, or join a cluster with GPUs (--address)")
    return "cpu", 0.0


def _check_actor_resources(scenario: Scenario) -> None:
    """Raise RunSetupError when one actor requests more CPUs than the cluster has, because Ray would wait forever."""
    cpus = float(ray.cluster_resources().get("CPU", 0.0))
    wanted = scenario.runtime.cpus_per_actor
    if wanted > cpus:
        raise RunSetupError(f"runtime.cpus_per_actor: value {wanted:g} exceeds the {cpus:g} CPUs of the Ray cluster, so no actor could start. Fix: set it to at most {cpus:g}")


def run_scenario(
    scenario: Scenario,
    out_dir: Path,
    *,
    address: str | None = None,
    scenario_path: str | None = None,
    progress: bool = True,
) -> RunResult:
    """Run a scenario end to end and write its tables, manifest and summary to ``out_dir``."""
    started = time.time()
    seed = scenario.seed
    logger.info("run %r started (seed %d, output %s)", scenario.name, seed, out_dir)

    projection_path = resolve_projection(scenario.model.projection)
    mechanism = build_mechanism(scenario, projection_path)
    model_spec = build_model_spec(scenario, projection_path)
    clients = build_fleet(scenario, seed)
    workload = scenario.workload
    arrivals = build_arrivals(scenario, clients)
    check_model(scenario.model.name)
    prompts = load_prompts(scenario)
    logger.info("fleet of %d clients made %d requests over %.0f s", len(clients), len(arrivals), workload.duration_s)

    prompt_index = {a.request_id: int(np.random.default_rng(derive_seed(seed, PROMPT_STREAM, a.request_id)).integers(len(prompts))) for a in arrivals}
    owns_ray = connect_ray(address)
    try:
        _check_actor_resources(scenario)
        client_results = _encode_on_clients(scenario, model_spec, mechanism, arrivals, prompts, prompt_index, seed)

        ledger, enforcer = make_enforcer(scenario.privacy)
        admission_input = [
            {"request_id": a.request_id, "user_id": a.user_id, "tokens": client_results[a.request_id].prompt_tokens, "arrival_s": a.time_s}
            for a in arrivals
        ]
        admissions = admit_requests(enforcer, admission_input, mechanism.mu)

        released = [a for a in arrivals if admissions[a.request_id].status == "released"]
        server_results, device, loaded_shape = _serve(scenario, model_spec, mechanism, released, client_results, prompts, prompt_index, seed)
        shape = _timed_model_shape(scenario, loaded_shape)
    finally:
        if owns_ray:
            ray.shutdown()

    timelines = _simulate(scenario, clients, released, admissions, client_results, server_results, shape, mechanism, seed)
    requests = build_requests_table(
        arrivals=arrivals, clients=clients, prompts=prompts, prompt_index=prompt_index, client_results=client_results,
        admissions=admissions, server_results=server_results, timelines=timelines, mechanism=mechanism,
        keep_text=scenario.outputs.keep_text,
    )
    users = user_report(ledger, requests, mechanism, scenario.privacy)
    summary = summarize(requests, users, scenario, wall_s=time.time() - started, server_device=device, ledger_fallbacks=ledger.fallbacks)
    write_run(out_dir, scenario=scenario, scenario_path=scenario_path, requests=requests, users=users, summary=summary, ledger=ledger)
    logger.info("run %r finished in %.1f s: %d requests, outputs in %s", scenario.name, time.time() - started, len(requests), out_dir)
    return RunResult(out_dir=out_dir, summary=summary)


def _encode_on_clients(scenario, model_spec, mechanism, arrivals, prompts, prompt_index, seed) -> dict:
    runtime = scenario.runtime
    shards = [
        ClientShardActor.options(num_cpus=runtime.cpus_per_actor, name=None).remote(i, model_spec, mechanism)
        for i in range(runtime.client_shards)
    ]
    # A client always lives on the same shard: shard = client id modulo the shard count.
    by_shard: dict[int, list[ClientJob]] = {}
    for arrival in arrivals:
        job = ClientJob(arrival.request_id, arrival.client_id, prompts[prompt_index[arrival.request_id]].prompt, derive_seed(seed, QUANTIZER_STREAM, arrival.request_id))
        by_shard.setdefault(arrival.client_id % len(shards), []).append(job)
    calls = [(shards[s], chunk) for s, jobs in sorted(by_shard.items()) for chunk in chunked(jobs, runtime.requests_per_call)]
    results = run_routed(calls, lambda actor, chunk: actor.encode.remote(chunk), description="client encode", total=len(arrivals))
    for shard in shards:
        ray.kill(shard)
    return {r.request_id: r for r in results}


def _serve(scenario, model_spec, mechanism, released, client_results, prompts, prompt_index, seed) -> tuple[dict, str, ModelShape]:
    runtime = scenario.runtime
    device, gpus = _server_device(scenario)
    replicas = [
        ServerReplicaActor.options(num_cpus=runtime.cpus_per_actor, num_gpus=gpus).remote(i, model_spec, mechanism, device)
        for i in range(runtime.server_actors)
    ]
    jobs = []
    for arrival in released:
        rid = arrival.request_id
        draw = np.random.default_rng(derive_seed(seed, FIDELITY_STREAM, rid)).random()
        jobs.append(ServerJob(rid, client_results[rid].payload, derive_seed(seed, GENERATION_STREAM, rid), bool(draw < scenario.fidelity.real_fraction), prompts[prompt_index[rid]].reference))
    results = map_on_pool(replicas, lambda actor, chunk: actor.process.remote(chunk), chunked(jobs, runtime.requests_per_call), description="server", total=len(jobs))
    shape = ModelShape(**ray.get(replicas[0].model_shape.remote()))
    for replica in replicas:
        ray.kill(replica)
    failed = [r for r in results if r.status == "failed"]
    if failed:
        logger.error("%d requests failed on the server, first: request %d: %s", len(failed), failed[0].request_id, failed[0].error)
    return {r.request_id: r for r in results}, device, shape


def _timed_model_shape(scenario: Scenario, loaded: ModelShape) -> ModelShape:
    """Return the model size the server cost model times: the loaded model unless overridden."""
    timing = scenario.servers.timing_model
    if timing is not None:
        return ModelShape(timing.parameters, timing.num_layers, timing.hidden_size, timing.bytes_per_parameter)
    return loaded


def _simulate(scenario, clients, released, admissions, client_results, server_results, shape, mechanism, seed) -> dict:
    servers = scenario.servers
    pool = ServerPoolConfig(
        replicas=servers.replicas, dispatch=servers.dispatch, batching=servers.batching, max_batch_size=servers.max_batch_size,
        max_prefill_tokens=servers.max_prefill_tokens, soft_prompt_prefix_cache=servers.soft_prompt_prefix_cache,
    )
    accelerator = ACCELERATORS[servers.accelerator]
    simulator = Simulator(
        pool=pool,
        server_cost=ServerCostModel(shape, accelerator, servers.iteration_overhead_s),
        client_cost=ClientCostModel(hidden_size=shape.hidden_size, dim=mechanism.dim),
        seed=seed,
    )
    by_client = {c.client_id: c for c in clients}
    sim_requests = []
    for arrival in released:
        rid = arrival.request_id
        served = server_results[rid]
        if served.status != "completed":
            continue
        sim_requests.append(
            SimRequest(
                request_id=rid, client=by_client[arrival.client_id], arrival_s=arrival.time_s, release_s=admissions[rid].release_s,
                prompt_tokens=client_results[rid].prompt_tokens, soft_prompt_tokens=served.soft_prompt_tokens,
                uplink_bytes=len(client_results[rid].payload), downlink_bytes=len(served.downlink), generated_tokens=served.generated_tokens,
            )
        )
    logger.info("simulating %d requests on %d virtual replicas", len(sim_requests), servers.replicas)
    return simulator.run(sim_requests)
