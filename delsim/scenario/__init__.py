"""Scenario files: the YAML schema, validation and sweeps."""

from delsim.scenario.loader import ScenarioError, expand_sweep, load_scenario, validate_scenario
from delsim.scenario.schema import Scenario, SweptScenario

__all__ = ["Scenario", "ScenarioError", "SweptScenario", "expand_sweep", "load_scenario", "validate_scenario"]
