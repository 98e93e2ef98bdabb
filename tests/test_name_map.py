"""Joint-name maps: a dataset (or policy) naming its joints `left_joint_0..5` runs on the robot whose config says
`left_joint1..6` once given `--name-map`, in replay sim, the doctor, the calibration check and the client; every
refusal prints the map that would fix it, and no path ends in a traceback. The datasets are LeRobot 0.6.1's own
(tests/golden/lerobot/datasets, names as a LeRobot user writes them)."""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")

import argparse
import io
import json
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
import tomli_w

from calibration import check_cli
from policy_norm.joint_names import NameMap, NameMapError, joint_name_mismatch, parse_name_map, suggest_name_map
from policy_server.dataset_policy import DatasetPolicy, DatasetPolicyConfig
from policy_server.server import PolicyServer, ServerConfig
from replay.cli import main
from replay.dataset_args import map_joint_names
from robodata.dataset import DatasetError
from robodata.open import open_dataset
from robot_client.config import load_robot_config
from robot_client.rig import RigError
from robot_client.run_cli import check_policy_names

REPO = Path(__file__).resolve().parents[1]
GOLDEN = REPO / "tests" / "golden" / "lerobot" / "datasets"
CLEAN = GOLDEN / "clean"
ROBOT = load_robot_config("bimanual_yam").joint_names
MANIFEST = json.loads((GOLDEN / "manifest.json").read_text())
LEROBOT_NAMES = tuple(MANIFEST["clean"]["names"])  # left_joint_0..5, left_gripper, right_joint_0..5, right_gripper


def _cli(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    return main(list(argv), out), out.getvalue()


def test_maps_parse_and_apply() -> None:
    assert LEROBOT_NAMES[0] == "left_joint_0" and ROBOT[0] == "left_joint1"
    shift = parse_name_map("index+1")
    assert shift.apply(LEROBOT_NAMES, ROBOT) == ROBOT
    pairs = parse_name_map("left_joint_0=left_joint1, right_gripper=right_gripper")
    assert pairs.apply(["left_joint_0", "right_gripper"], ROBOT) == ("left_joint1", "right_gripper")
    mixed = parse_name_map("index+1,left_gripper=left_gripper")
    assert mixed.shift == 1 and mixed.spec() == "index+1,left_gripper=left_gripper"
    for bad, message in (("left_joint_0", "expected DATASET_NAME=ROBOT_NAME or index\\+N"),
                         ("index+1,index-1", "more than one index shift"), ("", "is empty"),
                         ("a=b,a=c", r"\['a'\] mapped more than once")):
        with pytest.raises(NameMapError, match=message):
            parse_name_map(bad)
    with pytest.raises(NameMapError, match=r"two names the same name: \['a', 'b'\] -> 'x'"):
        parse_name_map("a=x,b=x").apply(["a", "b"], ["x", "y"])
    with pytest.raises(NameMapError, match="index\\+1 is ambiguous for 'arm_0'"):
        NameMap(shift=1).apply(["arm_0"], ["arm1", "arm_1"])
    with pytest.raises(NameMapError, match=r"\['left_joint_9'\] name no joint here"):
        parse_name_map("left_joint_9=left_joint1").check_entries(LEROBOT_NAMES)


def test_map_files(tmp_path: Path) -> None:
    toml_path = tmp_path / "yam.toml"
    toml_path.write_text('# dataset name = robot name\n[names]\nleft_joint_0 = "left_joint1"\n')
    assert parse_name_map(str(toml_path)).pairs == (("left_joint_0", "left_joint1"),)
    shifted = tmp_path / "shift.toml"
    shifted.write_text("index_shift = 1\n")
    assert parse_name_map(str(shifted)).apply(LEROBOT_NAMES, ROBOT) == ROBOT
    json_path = tmp_path / "yam.json"
    json_path.write_text(json.dumps(dict(zip(LEROBOT_NAMES, ROBOT, strict=True))))
    assert parse_name_map(str(json_path)).apply(LEROBOT_NAMES, ROBOT) == ROBOT
    (tmp_path / "bad.toml").write_text("[names\n")
    with pytest.raises(NameMapError, match="bad.toml: cannot read the name map"):
        parse_name_map(str(tmp_path / "bad.toml"))
    with pytest.raises(NameMapError, match="missing.json: name map file not found"):
        parse_name_map(str(tmp_path / "missing.json"))


def test_refusals_say_which_map_fixes_them() -> None:
    found = suggest_name_map(ROBOT, LEROBOT_NAMES)
    assert found is not None and found[0].spec() == "index+1" and not found[1]
    message = joint_name_mismatch(ROBOT, LEROBOT_NAMES, "action", other="dataset", hint_flag="--name-map")
    assert message is not None and "to map the names pass --name-map index+1 (left_joint_0 -> left_joint1" in message
    generic = tuple(f"state_{i}" for i in range(len(ROBOT)))  # DP zarr's made-up names: only a positional pairing
    positional = joint_name_mismatch(ROBOT, generic, "state", other="dataset", hint_flag="--name-map")
    assert positional is not None and "--name-map state_0=left_joint1,state_1=left_joint2," in positional
    assert "pairs by position: check that the dataset's order is the robot's" in positional
    reordered = (ROBOT[1], ROBOT[0], *ROBOT[2:])
    assert suggest_name_map(ROBOT, reordered) is None  # a reorder is refused, never renamed away
    assert "--name-map" not in (joint_name_mismatch(ROBOT, reordered, "state", hint_flag="--name-map") or "")


def test_replay_sim_runs_a_lerobot_dataset_given_the_map(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _ = _cli("sim", "--dataset", str(CLEAN), "--episode", "1", "--no-plots", "--out", str(tmp_path / "no"))
    err = capsys.readouterr().err
    assert code == 2 and "to map the names pass --name-map index+1" in err and "Traceback" not in err
    out_dir = tmp_path / "sim"
    code, text = _cli("sim", "--dataset", str(CLEAN), "--episode", "1", "--name-map", "index+1", "--speed", "0.5",
                      "--no-plots", "--out", str(out_dir))
    assert code in (0, 1), capsys.readouterr().err  # it replayed (tracking at the servo's limits is its own verdict)
    trace = np.load(out_dir / "trace.npz")
    assert tuple(trace["joint_names"]) == ROBOT
    # The map renames, never reorders: the replayed actions are the episode's, column for column.
    np.testing.assert_array_equal(trace["dataset_actions"], open_dataset(CLEAN).episode(1).actions)
    assert trace["times"][-1] >= trace["dataset_times"][-1]  # played to the end of the episode
    report = (out_dir / "report.md").read_text()
    assert "right_joint6" in report and "right_joint_5" not in report
    assert "tracking of the dataset actions" in text


def test_sim_with_a_config_the_model_lacks_is_explained(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A robot config renamed to the dataset's names cannot drive the MuJoCo model (its actuators carry the
    bundled names): one error line naming both and the fix, exit 2."""
    raw = tomllib.loads((REPO / "robot_client" / "configs" / "bimanual_yam.toml").read_text())
    limits = raw["limits"]
    renamed: dict[str, object] = {k: v for k, v in limits.items() if not k.startswith("joint")}
    for arm in raw["arm"]:
        arm["joints"] = [f"{arm['name']}_joint_{i}" for i in range(len(arm["joints"]))]
        renamed.update({name: limits[f"joint{i + 1}"] for i, name in enumerate(arm["joints"])})
    raw["limits"] = renamed
    config = tmp_path / "renamed.toml"
    config.write_bytes(tomli_w.dumps(raw).encode())
    code, _ = _cli("sim", "--dataset", str(CLEAN), "--episode", "0", "--robot-config", str(config), "--no-plots",
                   "--out", str(tmp_path / "o"))
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "no actuator named 'left_joint_0'" in err and "its actuators are ['left_joint1'" in err
    assert "run with --robot-config bimanual_yam (the model's joint names) and to map the names pass --name-map " \
           "index+1" in err


def test_doctor_and_info_see_the_robot_names(capsys: pytest.CaptureFixture[str]) -> None:
    ds = map_joint_names(open_dataset(CLEAN), "index+1", ROBOT)
    assert ds.info.action_names == ROBOT and ds.info.state_names == ROBOT
    assert ds.info.features["action"].names == ROBOT
    mapped = "joint names mapped by --name-map index+1: left_joint_0 -> left_joint1"
    assert any(n.startswith(mapped) for n in ds.info.notes)
    with pytest.raises(DatasetError, match=r"\['left_joint9'\] name no joint here"):
        map_joint_names(open_dataset(CLEAN), "left_joint9=left_joint1", ROBOT)
    code, text = _cli("info", "--dataset", str(CLEAN), "--name-map", "index+1", "--no-verify")
    assert code == 0 and "action (14): left_joint1, left_joint2" in text
    # The doctor's joint limits are keyed by the robot's names: with the map its outliers meet them.
    code, text = _cli("doctor", "--dataset", str(GOLDEN / "outliers"), "--name-map", "index+1", "--no-plots")
    assert "action_outside_joint_limits  episode 0 frame 17 action left_joint3" in text
    assert "Traceback" not in capsys.readouterr().err


def test_calibration_check_takes_the_map(capsys: pytest.CaptureFixture[str]) -> None:
    def names_findings(*extra: str) -> list[str]:
        parser = argparse.ArgumentParser()
        check_cli.add_arguments(parser)
        check_cli.run(parser.parse_args(["--dataset", str(CLEAN), "--robot", "sim", "--fps", "30", *extra]))
        return [line for line in capsys.readouterr().out.splitlines() if "joint_names" in line]

    refused = names_findings()
    assert len(refused) == 2 and all("--name-map index+1" in line for line in refused)
    assert names_findings("--name-map", "index+1") == []


def test_client_checks_the_policy_names_through_the_map() -> None:
    with pytest.raises(RigError, match="to map the names pass --name-map index\\+1"):
        check_policy_names(ROBOT, LEROBOT_NAMES, LEROBOT_NAMES, None)
    check_policy_names(ROBOT, LEROBOT_NAMES, LEROBOT_NAMES, "index+1")
    with pytest.raises(RigError, match="same names, different order"):
        check_policy_names(ROBOT, LEROBOT_NAMES[::-1], LEROBOT_NAMES[::-1], "index+1")


def test_client_run_refuses_then_runs_with_the_map() -> None:
    """`robot_client run` against a server whose policy uses LeRobot's names: exit 2 with the map to pass (no
    traceback, nothing moved), then a dry run with it."""
    policy = DatasetPolicy(DatasetPolicyConfig(dataset=CLEAN, action_horizon=10))
    env = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    with PolicyServer(policy, ServerConfig(host="127.0.0.1", port=0)) as server:
        base = [sys.executable, "-m", "robot_client", "run", "--server", f"127.0.0.1:{server.port}", "--robot", "sim",
                "--seconds", "0.5", "--dry-run", "--allow-far-start", "--pace", "4"]
        refused = subprocess.run(base, cwd=REPO, capture_output=True, text=True, timeout=240, env=env)
        mapped = subprocess.run([*base, "--name-map", "index+1"], cwd=REPO, capture_output=True, text=True,
                                timeout=240, env=env)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "error: state names do not match the robot config" in refused.stderr
    assert "--name-map index+1" in refused.stderr
    assert mapped.returncode == 0, mapped.stderr[-2000:]
