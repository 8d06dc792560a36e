"""End-to-end runs of a tiny scenario on real Ray actors, the shipped model and real payloads."""

import json
import math
from pathlib import Path

import pandas as pd
import pytest
import yaml

from delsim.cli import main
from delsim.mechanism import HEADER_SIZE
from delsim.runtime.driver import run_scenario
from delsim.scenario import Scenario

QUICKSTART = Path(__file__).resolve().parents[2] / "scenarios" / "quickstart.yaml"
WALL_CLOCK_COLUMNS = ["client_encode_wall_s", "server_wall_s"]


def tiny_scenario(**runtime) -> Scenario:
    data = yaml.safe_load(QUICKSTART.read_text())
    data["name"] = "tiny"
    data["fleet"]["clients"] = 3
    data["workload"].update({"duration_s": 30, "prompt_words": 12, "min_words": 40, "max_new_tokens": 6, "max_prompts": 20})
    data["workload"]["arrival"] = {"process": "fixed", "requests_per_client": 2}
    data["servers"]["replicas"] = 1
    data["runtime"] = {"client_shards": 1, "server_actors": 1, "cpus_per_actor": 0.5, "requests_per_call": 4} | runtime
    return Scenario.model_validate(data)


@pytest.fixture(scope="module")
def tiny_run(ray_session, tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny")
    result = run_scenario(tiny_scenario(), out)
    return out, result


def read_tables(out: Path):
    return pd.read_parquet(out / "requests.parquet"), pd.read_parquet(out / "users.parquet")


def test_tables_have_one_row_per_request_and_user(tiny_run):
    out, _ = tiny_run
    requests, users = read_tables(out)
    assert len(requests) == 6
    assert len(users) == 3
    assert set(requests["user_id"]) == set(users["user_id"])
    for name in ["manifest.json", "summary.json", "ledger.json"]:
        assert (out / name).is_file()


def test_every_request_completes(tiny_run):
    out, result = tiny_run
    requests, _ = read_tables(out)
    assert (requests["status"] == "completed").all()
    assert result.summary["completed"] == 6
    assert requests["real_compute"].all()
    assert (requests["generated_tokens"] >= 1).all()
    assert requests["perplexity"].gt(1.0).all()


def test_uplink_bytes_match_the_wire_format(tiny_run):
    out, _ = tiny_run
    requests, _ = read_tables(out)
    for row in requests.itertuples():
        payload_bits = row.prompt_tokens * row.dim * row.bits
        assert row.uplink_bytes == math.ceil(payload_bits / 8) + HEADER_SIZE
    assert HEADER_SIZE <= 32


def test_timelines_are_ordered(tiny_run):
    out, _ = tiny_run
    requests, _ = read_tables(out)
    assert (requests["arrival_s"] <= requests["release_s"]).all()
    assert (requests["release_s"] <= requests["client_done_s"]).all()
    assert (requests["client_done_s"] <= requests["uplink_done_s"]).all()
    assert (requests["uplink_done_s"] <= requests["server_start_s"]).all()
    assert (requests["server_start_s"] <= requests["first_token_s"]).all()
    assert (requests["first_token_s"] <= requests["server_done_s"]).all()
    assert (requests["server_done_s"] <= requests["done_s"]).all()
    assert (requests["latency_s"] > 0).all()


def test_users_are_charged_their_tokens(tiny_run):
    out, _ = tiny_run
    requests, users = read_tables(out)
    for user in users.itertuples():
        tokens = requests.loc[requests["user_id"] == user.user_id, "prompt_tokens"].sum()
        assert user.tokens_released == tokens
        # Under the user unit, every token's mu-GDP release composes: sqrt(tokens) * mu.
        assert user.mu_gdp == pytest.approx(math.sqrt(tokens) * requests["mu"].iloc[0], rel=1e-9)
        assert user.epsilon_ledger > 0
        assert user.epsilon_exact > 0


def test_manifest_records_seed_and_versions(tiny_run):
    out, _ = tiny_run
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["seed"] == 0
    assert manifest["scenario"]["name"] == "tiny"
    assert "torch" in manifest["versions"]
    assert manifest["git_revision"]


def test_same_seed_gives_identical_tables(ray_session, tiny_run, tmp_path):
    out, _ = tiny_run
    # A different actor layout must not change any result either.
    run_scenario(tiny_scenario(client_shards=2, requests_per_call=1), tmp_path)
    first, first_users = read_tables(out)
    second, second_users = read_tables(tmp_path)
    pd.testing.assert_frame_equal(first.drop(columns=WALL_CLOCK_COLUMNS), second.drop(columns=WALL_CLOCK_COLUMNS))
    pd.testing.assert_frame_equal(first_users, second_users)


def test_invalid_scenario_exits_with_status_2(tmp_path, capsys):
    data = yaml.safe_load(QUICKSTART.read_text())
    data["fleet"]["device_classes"][0]["uplink_bps"] = -1
    data["mechanism"]["bits"] = 0
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    assert main(["run", str(path), "--out", str(tmp_path / "out")]) == 2
    message = capsys.readouterr().err
    assert "fleet.device_classes[0].uplink_bps: invalid value -1" in message
    assert "mechanism.bits: invalid value 0" in message
    assert not (tmp_path / "out").exists()


def test_mismatched_dimension_exits_with_status_2(tmp_path, capsys):
    data = yaml.safe_load(QUICKSTART.read_text())
    data["mechanism"]["dim"] = 48
    path = tmp_path / "dim.yaml"
    path.write_text(yaml.safe_dump(data))
    assert main(["run", str(path), "--out", str(tmp_path / "out")]) == 2
    assert "mechanism.dim: value 48 does not match" in capsys.readouterr().err


def test_plots_are_made_from_tables(tiny_run, tmp_path):
    from analysis.plot_run import main as plot_main

    out, _ = tiny_run
    assert plot_main([str(out), "--out", str(tmp_path)]) == 0
    for name in ["latency_cdf.png", "stages.png", "privacy.png"]:
        assert (tmp_path / name).stat().st_size > 1000


def test_sweep_with_budget_runs_every_point(ray_session, tmp_path):
    from analysis.plot_tradeoff import main as tradeoff_main

    data = tiny_scenario().model_dump(mode="json")
    data["fidelity"]["real_fraction"] = 0.0
    data["outputs"]["format"] = "csv"
    # A budget of one short query per user: later requests are rejected and charge nothing.
    data["privacy"]["budget"] = {"epsilon": 40.0, "delta": 1e-5}
    data["sweep"] = {"mechanism.bits": [2, 4]}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(data))

    assert main(["run", str(path), "--out", str(tmp_path / "out"), "--quiet"]) == 0
    index = json.loads((tmp_path / "out" / "sweep.json").read_text())
    assert [entry["label"] for entry in index] == ["mechanism.bits=2", "mechanism.bits=4"]

    for entry, bits in zip(index, [2, 4]):
        requests = pd.read_csv(Path(entry["out_dir"]) / "requests.csv")
        users = pd.read_csv(Path(entry["out_dir"]) / "users.csv")
        assert (requests["bits"] == bits).all()
        assert not requests["real_compute"].any()
        rejected = requests[requests["status"] == "rejected"]
        assert len(rejected) > 0
        assert (rejected["uplink_bytes"] == 0).all()
        assert rejected["reason"].notna().all()
        assert (users["epsilon_gdp"] <= 40.0 + 1e-6).all()
        released = requests[requests["status"] == "completed"]
        for row in released.itertuples():
            assert row.uplink_bytes == math.ceil(row.prompt_tokens * row.dim * bits / 8) + HEADER_SIZE

    assert tradeoff_main([str(tmp_path / "out"), "--out", str(tmp_path / "plots")]) == 0
    assert (tmp_path / "plots" / "tradeoff.csv").is_file()


def test_oversized_actor_exits_with_status_2(ray_session, tmp_path, capsys):
    data = tiny_scenario().model_dump(mode="json")
    data["runtime"]["cpus_per_actor"] = 64
    path = tmp_path / "big.yaml"
    path.write_text(yaml.safe_dump(data))
    assert main(["run", str(path), "--out", str(tmp_path / "out")]) == 2
    assert "runtime.cpus_per_actor: value 64 exceeds" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_negative_seed_exits_with_status_2(tmp_path, capsys):
    assert main(["run", str(QUICKSTART), "--seed", "-1", "--out", str(tmp_path / "out")]) == 2
    assert "--seed: invalid value -1" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_validate_checks_artifacts(tmp_path, capsys):
    data = yaml.safe_load(QUICKSTART.read_text())
    data["mechanism"]["dim"] = 48
    path = tmp_path / "dim.yaml"
    path.write_text(yaml.safe_dump(data))
    assert main(["validate", str(path)]) == 2
    assert "mechanism.dim: value 48 does not match" in capsys.readouterr().err


def test_out_file_path_exits_2(tmp_path, capsys):
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    assert main(["run", str(QUICKSTART), "--out", str(blocker)]) == 2
    assert "--out:" in capsys.readouterr().err
