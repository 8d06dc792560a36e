"""Load, validate and expand scenario files, with errors that name the field, value and fix."""

from __future__ import annotations

import copy
import itertools
import logging
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from delsim.scenario.schema import Scenario, SweptScenario

logger = logging.getLogger(__name__)


class ScenarioError(ValueError):
    """A scenario file is missing, unreadable or invalid; ``problems`` lists every finding."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"invalid scenario {source}:\n{lines}")


def _field_path(location: tuple) -> str:
    parts: list[str] = []
    for item in location:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        else:
            parts.append(("." if parts else "") + str(item))
    return "".join(parts)


def _resolve_field(model: type[BaseModel], location: tuple):
    """Return the (model, field) pair a pydantic error location points at, if any."""
    current: Any = model
    field = None
    for item in location:
        if isinstance(item, int) or not (isinstance(current, type) and issubclass(current, BaseModel)):
            continue
        field = current.model_fields.get(str(item))
        if field is None:
            return current, None
        annotation = field.annotation
        current = inner_model(annotation)
    return current, field


def inner_model(annotation: Any) -> Any:
    """Return the pydantic model class inside a field annotation (``X``, ``X | None``, ``list[X]``), or None."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for argument in getattr(annotation, "__args__", ()) or ():
        inner = inner_model(argument)
        if inner is not None:
            return inner
    return None


def describe_errors(error: ValidationError, model: type[BaseModel]) -> list[str]:
    """Turn a pydantic ValidationError into one line per problem: field, value, reason and fix."""
    problems = []
    for item in error.errors():
        location = tuple(item["loc"])
        path = _field_path(location) or "(top level)"
        value = item.get("input")
        reason = item["msg"]
        if item["type"] == "extra_forbidden":
            parent, _ = _resolve_field(model, location[:-1])
            allowed = sorted(parent.model_fields) if isinstance(parent, type) and issubclass(parent, BaseModel) else []
            problems.append(f"{path}: unknown key. Fix: remove it or use one of {allowed}")
            continue
        if item["type"] == "missing":
            _, field = _resolve_field(model, location)
            fix = field.description if field is not None and field.description else "add it"
            problems.append(f"{path}: required field is missing. Fix: add {path}: {fix}")
            continue
        _, field = _resolve_field(model, location)
        fix = field.description if field is not None and field.description else "see the scenario reference in docs/scenarios.md"
        shown = repr(value) if not isinstance(value, dict) else "{...}"
        problems.append(f"{path}: invalid value {shown} ({reason}). Fix: {fix}")
    return problems


def read_scenario_data(path: str | Path) -> dict:
    """Read a YAML scenario file into a mapping, raising ScenarioError when unreadable."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ScenarioError(source, [f"file not found: {source}. Fix: pass the path of an existing YAML file"]) from None
    except OSError as error:
        raise ScenarioError(source, [f"cannot read {source}: {error}"]) from None
    except UnicodeDecodeError as error:
        raise ScenarioError(source, [f"not a UTF-8 text file ({error}). Fix: pass a YAML scenario file"]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ScenarioError(source, [f"not valid YAML: {error}"]) from None
    if not isinstance(data, dict):
        raise ScenarioError(source, [f"top level must be a mapping of sections, got {type(data).__name__}"])
    return data


def validate_scenario(data: dict, source: str = "<scenario>") -> SweptScenario:
    """Validate scenario data and every point of its sweep; raise ScenarioError listing all problems."""
    try:
        scenario = SweptScenario.model_validate(data)
    except ValidationError as error:
        raise ScenarioError(source, describe_errors(error, SweptScenario)) from None

    problems: list[str] = []
    try:
        points = _sweep_points(data)
    except ValueError as error:
        raise ScenarioError(source, [f"sweep: {error}. Fix: sweep over fields of sections, such as mechanism.mu or servers.replicas"]) from None
    for label, point in points:
        try:
            Scenario.model_validate(point)
        except ValidationError as error:
            problems.extend(f"sweep point {label}: {p}" for p in describe_errors(error, Scenario))
    if problems:
        raise ScenarioError(source, problems)
    return scenario


def load_scenario(path: str | Path) -> SweptScenario:
    """Read and validate a scenario file."""
    scenario = validate_scenario(read_scenario_data(path), str(path))
    logger.info("loaded scenario %r from %s", scenario.name, path)
    return scenario


def _set_dotted(data: dict, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = data
    for key in keys[:-1]:
        if not isinstance(node, dict):
            raise ValueError(f"path {dotted!r}: the part before {key!r} is not a section")
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ValueError(f"path {dotted!r}: {key!r} is not a section (lists and values cannot be swept into)")
    node[keys[-1]] = value


def _sweep_points(data: dict) -> list[tuple[str, dict]]:
    sweep = data.get("sweep") or {}
    if not isinstance(sweep, dict) or not sweep:
        return []
    base = {k: v for k, v in data.items() if k != "sweep"}
    paths = list(sweep)
    points = []
    for values in itertools.product(*(sweep[p] for p in paths)):
        point = copy.deepcopy(base)
        for dotted, value in zip(paths, values):
            _set_dotted(point, dotted, value)
        label = ",".join(f"{p}={v}" for p, v in zip(paths, values))
        points.append((label, point))
    return points


def expand_sweep(scenario: SweptScenario) -> list[tuple[str, Scenario]]:
    """Return (label, scenario) for every sweep point, or one unlabelled point without a sweep."""
    data = scenario.model_dump(mode="json")
    points = _sweep_points(data)
    if not points:
        base = {k: v for k, v in data.items() if k != "sweep"}
        return [("", Scenario.model_validate(base))]
    return [(label, Scenario.model_validate(point)) for label, point in points]
