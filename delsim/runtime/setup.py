"""Turn a validated scenario into what the run needs: artifact paths, mechanism, fleet and prompts."""

from __future__ import annotations

import json
import math
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors import safe_open

from delsim.llm.defaults import (
    DEFAULT_MODEL_DIR,
    DEFAULT_MODEL_NAME,
    DEFAULT_PROJECTION_PATH,
    DEFAULT_SOFT_PROMPT_DIR,
)
from transformers import AutoConfig

from delsim.llm import load_prompt_dataset
from delsim.mechanism import StochasticQuantizer
from delsim.runtime.spec import MechanismSpec, ModelSpec
from delsim.scenario.schema import Scenario
from delsim.sim.arrivals import Arrival, generate_arrivals
from delsim.sim.devices import Client, DeviceProfile, assign_device_classes

logger = logging.getLogger(__name__)

FLEET_STREAM = 0xF1EE7


class RunSetupError(ValueError):
    """A scenario is valid on its own but does not fit the artifacts it names."""


def resolve_model(name: str) -> str:
    """Return the model folder or hub name for a scenario's ``model.name``."""
    return str(DEFAULT_MODEL_DIR) if name == DEFAULT_MODEL_NAME else name


def resolve_projection(value: str) -> Path:
    """Return the projection file for a scenario's ``model.projection``."""
    path = DEFAULT_PROJECTION_PATH if value == "default" else Path(value)
    if not path.is_file():
        raise RunSetupError(f"model.projection: file {str(path)!r} not found. Fix: point it at a projection .safetensors file from 'delsim train projection'")
    return path


def resolve_soft_prompts(value: str) -> str | None:
    """Return the soft-prompt library folder, or None for ``none``."""
    if value == "none":
        return None
    path = DEFAULT_SOFT_PROMPT_DIR if value == "default" else Path(value)
    if not path.is_dir():
        raise RunSetupError(f"model.soft_prompts: folder {str(path)!r} not found. Fix: use 'default', 'none' or a library folder from 'delsim train soft-prompt'")
    return str(path)


def projection_metadata(path: Path) -> dict[str, str]:
    """Return the string metadata stored in a projection's safetensors header."""
    with safe_open(str(path), framework="pt") as handle:
        metadata = dict(handle.metadata() or {})
    sidecar = path.with_suffix(".json")
    if sidecar.is_file():
        metadata.update({k: str(v) for k, v in json.loads(sidecar.read_text()).items()})
    return metadata


def build_mechanism(scenario: Scenario, projection_path: Path) -> MechanismSpec:
    """Check the mechanism settings against the projection and return them resolved."""
    section = scenario.mechanism
    metadata = projection_metadata(projection_path)
    projected = int(metadata["dim"]) if "dim" in metadata else None
    if projected is not None and projected != section.dim:
        raise RunSetupError(f"mechanism.dim: value {section.dim} does not match the projection's output size {projected}. Fix: set mechanism.dim: {projected} or use a projection trained for d={section.dim}")

    if section.clip == "default":
        if "clip" not in metadata:
            raise RunSetupError(f"mechanism.clip: 'default' needs a clip value stored with the projection {projection_path}, and there is none. Fix: set mechanism.clip to a positive number")
        clip = float(metadata["clip"])
    else:
        clip = float(section.clip)

    try:
        quantizer = StochasticQuantizer(bits=section.bits, mu=section.mu, clip=clip, dim=section.dim, sparsity=section.sparsity)
        if not math.isfinite(quantizer.A):
            raise ValueError(f"the quantizer range A = {quantizer.A} is not finite")
    except (ValueError, ArithmeticError) as error:
        raise RunSetupError(
            f"mechanism: the quantizer rejects bits={section.bits}, mu={section.mu}, clip={clip}, dim={section.dim}, "
            f"sparsity={section.sparsity}: {type(error).__name__}: {error}. Fix: choose mu, clip and sparsity so that A = clip * sqrt(p * (4 / mu_r^2 + 1)) is finite and at least clip"
        ) from None
    return MechanismSpec(dim=section.dim, bits=section.bits, mu=section.mu, clip=clip, sparsity=section.sparsity)


def build_model_spec(scenario: Scenario, projection_path: Path, reference_tokens: int = 64) -> ModelSpec:
    """Collect the settings the actors load and run the model with."""
    return ModelSpec(
        model=resolve_model(scenario.model.name),
        projection_path=str(projection_path),
        soft_prompt_dir=resolve_soft_prompts(scenario.model.soft_prompts),
        dtype=scenario.model.dtype,
        missing_soft_prompt=scenario.mechanism.missing_soft_prompt,
        max_new_tokens=scenario.workload.max_new_tokens,
        top_p=scenario.workload.top_p,
        temperature=scenario.workload.temperature,
        reference_tokens=reference_tokens,
        perplexity=scenario.fidelity.perplexity,
        coherence=scenario.fidelity.coherence,
    )


def build_fleet(scenario: Scenario, seed: int) -> list[Client]:
    """Create the scenario's clients with their device classes."""
    classes = scenario.fleet.device_classes
    profiles = [
        DeviceProfile(
            name=c.name,
            uplink_bps=c.uplink_bps,
            downlink_bps=c.downlink_bps,
            rtt_s=c.rtt_s,
            flops_per_s=c.flops_per_s,
            availability=c.availability,
            mean_online_s=c.mean_online_s,
            energy_per_flop_j=c.energy_per_flop_j,
            radio_energy_per_byte_j=c.radio_energy_per_byte_j,
        )
        for c in classes
    ]
    rng = np.random.default_rng([seed, FLEET_STREAM])
    return assign_device_classes(scenario.fleet.clients, profiles, [c.share for c in classes], rng)


def check_model(name: str) -> None:
    """Check that the model's configuration loads, so a wrong name fails before any actor starts."""
    path = resolve_model(name)
    try:
        AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as error:
        raise RunSetupError(
            f"model.name: cannot load {name!r} ({type(error).__name__}: {error}). "
            f"Fix: use {DEFAULT_MODEL_NAME!r}, an existing local model folder, or a hub name with network access"
        ) from None


def load_prompts(scenario: Scenario) -> list:
    """Load the workload's prompt examples, turning loader errors into a RunSetupError on the field."""
    workload = scenario.workload
    try:
        prompts = load_prompt_dataset(workload.dataset, prompt_words=workload.prompt_words, min_words=workload.min_words, limit=workload.max_prompts)
    except (OSError, ValueError) as error:
        raise RunSetupError(f"workload.dataset: cannot load {workload.dataset!r}: {error}. Fix: use 'default', a hub dataset name with network access, or an existing UTF-8 .txt file") from None
    if not prompts:
        raise RunSetupError(f"workload.dataset: {workload.dataset!r} gives no paragraph of at least {workload.min_words} words. Fix: lower workload.min_words or use another dataset")
    return prompts


def build_arrivals(scenario: Scenario, clients: list[Client]) -> list[Arrival]:
    """Draw the fleet's arrivals; a workload that yields no request is a setup error."""
    workload = scenario.workload
    arrivals = generate_arrivals(
        clients, process=workload.arrival.process, duration_s=workload.duration_s, seed=scenario.seed,
        rate_hz=workload.arrival.rate_hz, requests_per_client=workload.arrival.requests_per_client,
    )
    if not arrivals:
        raise RunSetupError(
            f"workload: {len(clients)} clients send no request in {workload.duration_s:g} s at rate_hz={workload.arrival.rate_hz}. "
            "Fix: raise workload.arrival.rate_hz or workload.duration_s, or use the 'fixed' process"
        )
    return arrivals


def check_run_setup(scenario: Scenario) -> None:
    """Check everything a run resolves from the scenario before Ray starts: artifacts, mechanism, model, arrivals and prompts."""
    projection_path = resolve_projection(scenario.model.projection)
    build_mechanism(scenario, projection_path)
    build_model_spec(scenario, projection_path)
    check_model(scenario.model.name)
    build_arrivals(scenario, build_fleet(scenario, scenario.seed))
    load_prompts(scenario)
