"""Tests of scenario validation: every problem names the field, the value and the fix."""

import copy
from pathlib import Path

import pytest
import yaml

from delsim.scenario import ScenarioError, expand_sweep, load_scenario, validate_scenario

QUICKSTART = Path(__file__).resolve().parents[2] / "scenarios" / "quickstart.yaml"


@pytest.fixture()
def data():
    return yaml.safe_load(QUICKSTART.read_text())


def problems_of(data):
    with pytest.raises(ScenarioError) as caught:
        validate_scenario(data, "test.yaml")
    return caught.value.problems


def test_quickstart_is_valid():
    scenario = load_scenario(QUICKSTART)
    assert scenario.fleet.clients == 50
    assert len(scenario.fleet.device_classes) == 3
    assert scenario.servers.replicas == 2


def test_unknown_key_names_allowed_keys(data):
    data["servers"]["replica"] = 3
    (problem,) = problems_of(data)
    assert problem.startswith("servers.replica: unknown key")
    assert "'replicas'" in problem


def test_negative_bandwidth_names_field_and_value(data):
    data["fleet"]["device_classes"][1]["uplink_bps"] = -5
    (problem,) = problems_of(data)
    assert problem.startswith("fleet.device_classes[1].uplink_bps: invalid value -5")
    assert "bits per second" in problem


def test_bits_out_of_range(data):
    data["mechanism"]["bits"] = 17
    (problem,) = problems_of(data)
    assert "mechanism.bits: invalid value 17" in problem
    assert "from 1 to 16" in problem


def test_wrong_type(data):
    data["fleet"]["clients"] = "many"
    (problem,) = problems_of(data)
    assert "fleet.clients: invalid value 'many'" in problem


def test_missing_required_field(data):
    del data["mechanism"]["mu"]
    (problem,) = problems_of(data)
    assert problem.startswith("mechanism.mu: required field is missing")


def test_all_problems_are_reported(data):
    data["mechanism"]["sparsity"] = 1.5
    data["workload"]["max_new_tokens"] = 0
    problems = problems_of(data)
    assert len(problems) == 2


def test_defer_needs_renewal_period(data):
    data["privacy"]["on_exhausted"] = "defer"
    (problem,) = problems_of(data)
    assert "renewal_period_s" in problem


def test_prompt_words_below_min_words(data):
    data["workload"]["prompt_words"] = 120
    (problem,) = problems_of(data)
    assert "prompt_words (120)" in problem


def test_duplicate_device_class_names(data):
    data["fleet"]["device_classes"][1]["name"] = "phone"
    (problem,) = problems_of(data)
    assert "repeated: ['phone']" in problem


def test_sweep_expands_grid(data):
    data["sweep"] = {"mechanism.mu": [0.5, 2.0], "mechanism.bits": [2, 4]}
    points = expand_sweep(validate_scenario(data))
    assert len(points) == 4
    assert {(p.mechanism.mu, p.mechanism.bits) for _, p in points} == {(0.5, 2), (0.5, 4), (2.0, 2), (2.0, 4)}
    assert points[0][0] == "mechanism.mu=0.5,mechanism.bits=2"


def test_sweep_point_is_validated(data):
    data["sweep"] = {"mechanism.bits": [4, 40]}
    (problem,) = problems_of(data)
    assert problem.startswith("sweep point mechanism.bits=40: mechanism.bits: invalid value 40")


def test_missing_file_is_reported(tmp_path):
    with pytest.raises(ScenarioError, match="file not found"):
        load_scenario(tmp_path / "absent.yaml")


def test_non_mapping_is_reported(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(ScenarioError, match="top level must be a mapping"):
        load_scenario(path)


def test_data_is_not_modified(data):
    before = copy.deepcopy(data)
    validate_scenario(data)
    assert data == before


@pytest.mark.parametrize("path", sorted(QUICKSTART.parent.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_scenarios_are_valid(path):
    points = expand_sweep(load_scenario(path))
    assert len(points) >= 1


def test_scenario_reference_is_current():
    from delsim.scenario.reference import render_reference

    document = QUICKSTART.parents[1] / "docs" / "scenarios.md"
    assert document.read_text().strip() == render_reference().strip(), "regenerate with: python -m delsim.scenario.reference > docs/scenarios.md"


@pytest.mark.parametrize("value", [float("inf"), float("nan")])
def test_infinite_and_nan_numbers_are_rejected(data, value):
    data["workload"]["duration_s"] = value
    (problem,) = problems_of(data)
    assert problem.startswith("workload.duration_s: invalid value")
