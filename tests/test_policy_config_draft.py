"""`python -m policy_server config` drafts policy_config.json for both checkpoint layouts, marks what it cannot
infer, and `serve --robot-config` refuses a policy whose joint names are not the robot's."""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from policy_norm.joint_names import first_name_mismatch, joint_name_mismatch
from policy_norm.modes import NormMode
from policy_server import cli
from policy_server.checkpoint.layouts import layout_image_resize
from policy_server.config_draft import camera_role, pair_cameras
from policy_server.model.config import DEFAULT_IMAGE_KEYS
from policy_server.pi05_policy import Pi05Policy, Pi05ServeOptions
from policy_server.policy_config import Pi05PolicyConfig
from policy_server.server import PolicyServer, ServerConfig
from robot_client.config import CONFIG_DIR, load_robot_config
from robot_client.policy_client import GrpcPolicy
from robot_client.yam_limits import yam_limits
from tests.pi05_helpers import DELTA_MASK, make_servable_checkpoint
from tests.wire_helpers import REPO_ROOT, SAMPLE_DATASET, observation_for, sample_dataset

ROBOT = load_robot_config("bimanual_yam")
NAMES = ROBOT.joint_names


@pytest.fixture(scope="module")
def openpi_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_servable_checkpoint(tmp_path_factory.mktemp("draft") / "openpi")


@pytest.fixture(scope="module")
def lerobot_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """LeRobot layout whose image features are named after the dataset's cameras (observation.images.top, ...)."""
    return make_servable_checkpoint(tmp_path_factory.mktemp("draft") / "lerobot", layout="lerobot",
                                    model_changes={"image_keys": ("top", "left_wrist")})


def _robot_toml(tmp_path: Path, old: str, new: str) -> Path:
    text = (CONFIG_DIR / "bimanual_yam.toml").read_text()
    assert old in text
    path = tmp_path / "robot.toml"
    path.write_text(text.replace(old, new))
    return path


def _draft(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    rc = cli.main(["config", *args])
    out = capsys.readouterr()
    return rc, out.out, out.err


def _field_line(report: str, name: str) -> str:
    """The 'from:' line under a field of the report."""
    lines = report.splitlines()
    i = next(i for i, line in enumerate(lines) if line.strip().startswith(f"{name}:"))
    return lines[i + 1].strip()


def test_joint_name_comparison_names_the_first_mismatch() -> None:
    assert first_name_mismatch(NAMES, NAMES) is None and joint_name_mismatch(NAMES, NAMES, "state") is None
    swapped = list(NAMES)
    swapped[2], swapped[3] = swapped[3], swapped[2]
    message = joint_name_mismatch(NAMES, swapped, "state")
    assert message is not None
    assert "first mismatch at state[2]: policy 'left_joint4', robot 'left_joint3'" in message
    assert "same names, different order" in message
    renamed = joint_name_mismatch(NAMES, [*NAMES[:9], "right_elbow", *NAMES[10:]], "action", other="dataset")
    assert renamed is not None and "first mismatch at action[9]: dataset 'right_elbow', robot 'right_joint3'" \
        in renamed and "dataset action names missing on the robot: ['right_elbow']" in renamed
    shorter = joint_name_mismatch(NAMES, NAMES[:-1], "state")
    assert shorter is not None and "state[13]: policy nothing (too few names), robot 'right_gripper'" in shorter


def test_cameras_pair_by_name_then_by_role() -> None:
    assert [camera_role(n) for n in ("top", "cam_high", "base_0_rgb", "left_wrist_0_rgb", "cam_right_wrist",
                                     "observation.images.wrist", "depth")] == \
        ["base", "base", "base", "left_wrist", "right_wrist", "wrist", None]
    pairs, free_cams, free_slots, how = pair_cameras(["cam_high", "cam_left_wrist"], DEFAULT_IMAGE_KEYS)
    assert pairs == {"cam_high": "base_0_rgb", "cam_left_wrist": "left_wrist_0_rgb"}
    assert free_cams == [] and free_slots == ["right_wrist_0_rgb"] and "heuristic" in how
    pairs, _, _, how = pair_cameras(["left_wrist", "top"], ["observation.images.top", "observation.images.left_wrist"])
    assert pairs == {"left_wrist": "observation.images.left_wrist", "top": "observation.images.top"}
    assert how == "same name"
    # Two scene cameras for one scene slot: no guess.
    pairs, free_cams, _, _ = pair_cameras(["top", "front"], ["base_0_rgb"])
    assert pairs == {} and free_cams == ["top", "front"]


def test_openpi_draft_from_checkpoint_robot_and_dataset_serves(openpi_ckpt: Path, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "policy_config.json"
    rc, report, err = _draft(capsys, "--checkpoint", str(openpi_ckpt), "--robot-config", "bimanual_yam",
                             "--dataset", str(SAMPLE_DATASET), "--out", str(out))
    assert rc == 0, report + err
    assert "CONFIRM" not in report
    assert "from: robot config" in _field_line(report, "normalization.state_names")
    assert "dataset names" in _field_line(report, "normalization.state_names")
    assert _field_line(report, "normalization.action_delta_mask").startswith(f"from: dataset {SAMPLE_DATASET}")
    assert "openpi's rule for Pi0.5" in _field_line(report, "normalization.mode")
    assert _field_line(report, "control_fps") == f"from: dataset {SAMPLE_DATASET}"
    config = Pi05PolicyConfig.load(out)
    # What the test helpers write by hand for this checkpoint, found from the records instead.
    assert dict(config.cameras) == {"top": "base_0_rgb", "left_wrist": "left_wrist_0_rgb"}
    norm = config.normalization
    assert norm.state_names == NAMES and norm.action_names == NAMES
    assert norm.action_delta_mask == DELTA_MASK
    assert norm.mode == NormMode.QUANTILE and norm.action_horizon == 10 and norm.model_action_dim == 32
    assert norm.gripper.convention == "clip01" and norm.gripper_dims() == (6, 13)
    assert norm.joint_limits == yam_limits(NAMES) and norm.asset_id == "yam"
    assert config.image_resize == layout_image_resize("openpi") == "resize_with_pad"
    assert config.control_fps == 30.0 and config.tokenizer == "assets/tokenizer.model"

    # Served through the command line, with the robot config checked at start.
    proc = subprocess.Popen(
        [sys.executable, "-m", "policy_server", "serve", "--checkpoint", str(openpi_ckpt), "--policy-config",
         str(out), "--robot-config", "bimanual_yam", "--device", "cpu", "--no-warmup", "--port", "0"],
        cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("READY grpc=127.0.0.1:"), (line, proc.stderr.read() if proc.stderr else "")
        port = int(line.split("grpc=127.0.0.1:")[1].split()[0])
        with GrpcPolicy(target=f"127.0.0.1:{port}") as client:
            assert list(client.metadata.action_delta_mask) == list(DELTA_MASK)
            actions = client.infer(observation_for(sample_dataset(), 0, 20))["actions"]
        assert actions.shape == (10, 14) and np.isfinite(actions).all()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


def test_lerobot_draft_maps_image_features_and_serves(lerobot_ckpt: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "policy_config.json"
    rc, report, err = _draft(capsys, "--checkpoint", str(lerobot_ckpt), "--robot-config", "bimanual_yam",
                             "--dataset", str(SAMPLE_DATASET), "--out", str(out))
    assert rc == 0, report + err
    assert "(lerobot layout)" in report
    assert "same name" in _field_line(report, "cameras")
    assert "config.json normalization_mapping" in _field_line(report, "normalization.mode")
    assert "config.json input_features.observation.state" in _field_line(report, "normalization.state_names")
    config = Pi05PolicyConfig.load(out)
    assert dict(config.cameras) == {"top": "observation.images.top", "left_wrist": "observation.images.left_wrist"}
    assert config.image_resize == layout_image_resize("lerobot") == "resize_with_pad_torch"
    assert config.normalization.mode == NormMode.QUANTILE and config.normalization.action_delta_mask == DELTA_MASK
    assert config.normalization.asset_id is None  # LeRobot stats live in the processor files

    policy = Pi05Policy(Pi05ServeOptions(checkpoint=lerobot_ckpt, policy_config=out, device="cpu", warmup=False))
    with PolicyServer(policy, ServerConfig(host="127.0.0.1", port=0)) as srv, \
            GrpcPolicy(target=f"127.0.0.1:{srv.port}") as client:
        assert [c.name for c in client.metadata.cameras] == ["top", "left_wrist"]
        actions = client.infer(observation_for(sample_dataset(), 1, 12))["actions"]
    assert actions.shape == (10, 14) and np.isfinite(actions).all()


def test_what_the_records_do_not_say_is_marked_confirm(openpi_ckpt: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """Without the dataset: no camera names, no delta mask, no training rate. Still a valid draft, exit 1."""
    out = tmp_path / "draft.json"
    rc, report, _ = _draft(capsys, "--checkpoint", str(openpi_ckpt), "--robot-config", "bimanual_yam",
                           "--out", str(out))
    assert rc == 1
    for name in ("cameras", "normalization.action_delta_mask", "control_fps"):
        assert _field_line(report, name) == "from: default: CONFIRM", name
    confirm = report.split("CONFIRM before serving")[1]
    assert "- normalization.action_delta_mask: the checkpoint records no delta mask" in confirm
    assert "- control_fps: the robot config's servo rate (200 Hz)" in confirm
    assert "- cameras: no robot camera names" in confirm
    assert f"({3} value(s) to confirm)" in report
    # Still inferred: names, mode, gripper, limits.
    assert "CONFIRM" not in _field_line(report, "normalization.mode")
    config = Pi05PolicyConfig.load(out)
    assert config.normalization.action_delta_mask == (False,) * 14 and config.control_fps == 200.0
    assert dict(config.cameras) == {"top": "base_0_rgb", "left_wrist": "left_wrist_0_rgb",
                                    "right_wrist": "right_wrist_0_rgb"}


def test_dataset_names_that_are_not_the_robots_are_marked_confirm(openpi_ckpt: Path, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    robot = _robot_toml(tmp_path, '"right_joint3"', '"right_elbow"')
    rc, report, _ = _draft(capsys, "--checkpoint", str(openpi_ckpt), "--robot-config", str(robot),
                           "--dataset", str(SAMPLE_DATASET), "--out", str(tmp_path / "draft.json"))
    assert rc == 1
    names_line = _field_line(report, "normalization.state_names")
    assert names_line.startswith("from: robot config") and names_line.endswith(": CONFIRM")
    assert "first mismatch at state[9]: dataset 'right_joint3', robot 'right_elbow'" in report
    # The dataset is not compared with the stats under names that are not the robot's.
    assert "the dataset's joint names are not the robot's" in report


def test_refuses_to_overwrite_and_rejects_another_robot(openpi_ckpt: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = Path(shutil.copytree(openpi_ckpt, tmp_path / "ckpt"))
    before = (ckpt / "policy_config.json").read_text()
    rc, _, err = _draft(capsys, "--checkpoint", str(ckpt), "--robot-config", "bimanual_yam")
    assert rc == 2 and "policy_config.json exists; pass --force" in err
    assert (ckpt / "policy_config.json").read_text() == before
    rc, _, _ = _draft(capsys, "--checkpoint", str(ckpt), "--robot-config", "bimanual_yam", "--dataset",
                      str(SAMPLE_DATASET), "--force")
    assert rc == 0 and (ckpt / "policy_config.json").read_text() != before
    Pi05PolicyConfig.load(ckpt / "policy_config.json")
    # A one-arm robot: the checkpoint's 14-dim stats cannot drive its 7 joints.
    text = (CONFIG_DIR / "bimanual_yam.toml").read_text()
    one_arm = tmp_path / "one_arm.toml"
    one_arm.write_text(re.sub(r"\[\[arm\]\]\nname = \"right\".*?(?=# Position limits)", "", text, flags=re.S))
    rc, _, err = _draft(capsys, "--checkpoint", str(ckpt), "--robot-config", str(one_arm), "--out",
                        str(tmp_path / "x.json"))
    assert rc == 2 and "state stats have 14 dims but robot bimanual_yam" in err and "has 7 joints" in err
    assert not (tmp_path / "x.json").exists()


def test_serve_refuses_a_robot_config_with_other_joint_names(openpi_ckpt: Path, tmp_path: Path,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    robot = _robot_toml(tmp_path, '"right_joint3"', '"right_elbow"')
    caplog.set_level(logging.ERROR, logger="policy_server")
    # Refused from the policy config, before any weights load.
    assert cli.main(["serve", "--checkpoint", str(openpi_ckpt), "--robot-config", str(robot), "--device", "cpu",
                     "--port", "0"]) == 1
    assert "first mismatch at state[9]: policy 'right_joint3', robot 'right_elbow'" in caplog.text
    assert "policy_config.json" in caplog.text
    caplog.clear()
    # Any policy type is checked once built: the dataset policy's names are the dataset's.
    assert cli.main(["serve", "--policy", "dataset", "--dataset", str(SAMPLE_DATASET), "--robot-config", str(robot),
                     "--port", "0"]) == 1
    assert "the dataset policy" in caplog.text and "robot 'right_elbow'" in caplog.text
    caplog.clear()
    missing = cli.main(["serve", "--checkpoint", str(openpi_ckpt), "--robot-config", str(tmp_path / "none.toml"),
                        "--port", "0"])
    assert missing == 1 and "none.toml" in caplog.text
