"""Turn a validated scenario into what the run needs: artifact paths, mechanism, fleet and prompts."""

from __future__ import annotations

import json
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
from delsim.mechanism import StochasticQuantizer
from delsim.runtime.spec import MechanismSpec, ModelSpec
from delsim.scenario.schema import Scenario
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
        StochasticQuantizer(bits=section.bits, mu=section.mu, clip=clip, dim=section.dim, sparsity=section.sparsity)
    except ValueError as error:
        raise RunSetupError(f"mechanism: the quantizer rejects bits={section.bits}, mu={section.mu}, clip={clip}, dim={section.dim}, sparsity={section.sparsity}: {error}") from None
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


@dataclass(frozen=True)
class RunInputs:
    """Everything resolved before Ray starts."""

    model: ModelSpec
    mechanism: MechanismSpec
    clients: list[Client]
