"""The doctor on datasets LeRobot itself wrote (tests/golden/lerobot/datasets, made by make_datasets.py in
LeRobot 0.6.1's and 0.3.3's own environments): the clean one passes without a warning, alone and with a
LeRobot checkpoint holding its own stats in quantile mode; each planted fault is named with its dimension,
episode/frame where it applies, and its cause. The ground truth of each fault is read from the manifest the
maker wrote, not restated here.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest

from replay.doctor.command import DoctorOptions, DoctorResult, run_doctor
from replay.doctor.findings import Finding
from robodata.open import open_dataset
from robodata.stats import QUANTILES_EPISODE_MEAN, QUANTILES_WHOLE_DATA, recompute_stats
from robot_client.yam_limits import yam_joint_limits
from tests.test_doctor_fixtures import run_cli

GOLDEN = Path(__file__).parent / "golden" / "lerobot" / "datasets"
MANIFEST: dict[str, Any] = json.loads((GOLDEN / "manifest.json").read_text())
ARM_DIMS = [n for n in MANIFEST["clean"]["names"] if "gripper" not in n]
GRIPPERS = [n for n in MANIFEST["clean"]["names"] if "gripper" in n]


@cache
def doctor(name: str, checkpoint: str | None = None) -> DoctorResult:
    ckpt = GOLDEN / checkpoint if checkpoint else None
    return run_doctor(open_dataset(GOLDEN / name), DoctorOptions(checkpoint=ckpt, plots=False))


def of(result: DoctorResult, code: str) -> list[Finding]:
    return [f for f in result.findings if f.code == code]


def noisy(result: DoctorResult) -> list[str]:
    return [f.line() for f in result.findings if f.severity != "info"]


def frames(name: str, key: str) -> tuple[np.ndarray, np.ndarray]:
    table = pq.read_table(next((GOLDEN / name / "data").glob("chunk-*/file-*.parquet"))).to_pydict()
    return np.asarray(table["episode_index"]), np.asarray(table[key], dtype=np.float32)


# ---- LeRobot's stats convention ----------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["observation.state", "action"])
def test_stats_recomputed_lerobots_way_equal_its_stats_json(key: str) -> None:
    """Per-episode 5000-bin histogram quantiles, count-weighted mean: LeRobot's meta/stats.json to 1e-6; the
    quantiles of all frames are far from it (which is why comparing with them cried wolf)."""
    episode, values = frames("clean", key)
    per_episode = [values[episode == e] for e in np.unique(episode)]
    stored = json.loads((GOLDEN / "clean" / "meta" / "stats.json").read_text())[key]
    ours = recompute_stats(per_episode, QUANTILES_EPISODE_MEAN)
    for stat in ("mean", "std", "min", "max", "q01", "q10", "q50", "q90", "q99"):
        np.testing.assert_allclose(ours[stat], stored[stat], atol=1e-6, err_msg=stat)
    whole = recompute_stats(per_episode, QUANTILES_WHOLE_DATA)
    assert np.abs(whole["q01"] - np.asarray(stored["q01"])).max() > 0.1


def test_v21_episode_stats_are_lerobots_per_episode_stats() -> None:
    """LeRobot 0.3.3's episodes_stats.jsonl: mean/std/min/max/count per episode, no quantiles."""
    table = pq.read_table(next((GOLDEN / "v21_clean" / "data").glob("chunk-*/episode_000002.parquet")))
    values = np.asarray(table.to_pydict()["action"], dtype=np.float64)
    rows = [json.loads(line) for line in (GOLDEN / "v21_clean" / "meta" / "episodes_stats.jsonl").read_text()
            .splitlines()]
    (row,) = [r for r in rows if r["episode_index"] == 2]
    ours = recompute_stats([values], None)
    for stat in ("mean", "std", "min", "max"):
        np.testing.assert_allclose(ours[stat], row["stats"]["action"][stat], atol=1e-6, err_msg=stat)
    assert "q01" not in row["stats"]["action"]


@pytest.mark.parametrize("name", ["clean", "v21_clean"])
def test_clean_lerobot_dataset_passes_without_a_warning(name: str) -> None:
    result = doctor(name)
    assert result.exit_code == 0 and not noisy(result), noisy(result)
    infos = of(result, "stored_stats_convention")
    assert {f.where for f in infos} == {"observation.state", "action"}
    expected = "per-episode quantiles" if name == "clean" else "no stored quantiles"
    assert all(expected in f.message and "describe the data" in f.message for f in infos), infos


def test_the_info_says_how_far_stored_quantiles_are_from_whole_data() -> None:
    (state,) = [f for f in of(doctor("clean"), "stored_stats_convention") if f.where == "observation.state"]
    assert "from whole-data quantiles" in state.message and "normalized with the stored q01/q99 spans" in state.message


def test_clean_dataset_with_its_own_lerobot_quantile_checkpoint_passes() -> None:
    """The processor files LeRobot saved for a quantile-mode policy trained on `clean`: no error, no warning;
    one INFO per feature says the quantiles are per-episode means and how far whole-data values reach."""
    result = doctor("clean", "clean_checkpoint")
    assert result.exit_code == 0 and not noisy(result), noisy(result)
    assert any("quantile" in f.message for f in of(result, "normalization"))
    conv = of(result, "quantiles_per_episode_mean")
    assert {f.where for f in conv} == {"state", "actions"}
    assert all("LeRobot's convention" in f.message and "as in training" in f.message for f in conv)


def test_cli_exit_codes_on_golden_datasets() -> None:
    rc, out = run_cli("doctor", "--dataset", str(GOLDEN / "clean"), "--checkpoint",
                      str(GOLDEN / "clean_checkpoint"), "--no-plots")
    assert rc == 0, out
    rc, out = run_cli("doctor", "--dataset", str(GOLDEN / "stats_degrees"), "--no-plots")
    assert rc == 2 and "stored_stats_unit" in out and "Traceback" not in out, out


# ---- planted faults ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["stats_degrees", "v21_stats_degrees"])
def test_stats_in_degrees_are_an_error_naming_the_unit_and_the_arm_joints(name: str) -> None:
    result = doctor(name)
    assert result.exit_code == 2
    units = of(result, "stored_stats_unit")
    assert {f.where.split(" ", 1)[0] for f in units} == {"observation.state", "action"}
    for f in units:
        assert f.severity == "error"
        assert "stored stats in degrees, the data in radians" in f.message
        assert "x57.3" in f.message and "squashed" in f.message
        assert all(dim in f.where for dim in ARM_DIMS)
        assert not any(g in f.where for g in GRIPPERS)  # the grippers' stats are right
    assert not of(result, "stored_stats_mismatch")  # the cause is named, not "another dataset"


def test_outliers_named_by_episode_frame_dimension_and_value() -> None:
    truth = MANIFEST["outliers"]
    result = doctor("outliers")
    (finding,) = of(result, "action_outlier")
    assert finding.severity == "warning" and truth["dim"] in finding.where
    for ep, frame in truth["frames"]:
        assert f"episode {ep} frame" in finding.message and f"{frame} (50)" in finding.message
    assert f"{len(truth['frames'])} frame(s)" in finding.message
    assert not of(result, "state_outlier")  # only the action was planted
    assert not of(result, "stored_stats_mismatch")  # LeRobot's stats include the outliers: they describe the data


def test_outliers_past_joint_limits_are_errors_once_names_map_to_the_robot() -> None:
    """`left_joint_2` is the YAM's third joint: given that mapping, the robot config's limit names every frame."""
    truth = MANIFEST["outliers"]
    table = yam_joint_limits()
    limits = {name: table[f"joint{int(name[-1]) + 1}"] for name in ARM_DIMS} | {g: table["gripper"] for g in GRIPPERS}
    result = run_doctor(open_dataset(GOLDEN / "outliers"), DoctorOptions(plots=False, joint_limits=limits))
    (finding,) = of(result, "action_outside_joint_limits")
    assert finding.severity == "error" and truth["dim"] in finding.where
    assert all(f"{frame} (50)" in finding.message for _, frame in truth["frames"])
    assert not of(result, "action_outlier")  # the same frames are not reported twice
    assert not of(result, "joint_limits_not_applied")


def test_without_a_mapping_the_doctor_says_which_dims_have_no_limit() -> None:
    (info,) = of(doctor("clean"), "joint_limits_not_applied")
    assert all(dim in info.message for dim in ARM_DIMS) and "--name-map" in info.message


def test_lag_is_named_per_joint_with_its_frames() -> None:
    expected = MANIFEST["lag5"]["expected_lag_frames"]
    result = doctor("lag5")
    lags = of(result, "action_state_lag")
    assert {f.where for f in lags} == {f"action {n}" for n in MANIFEST["lag5"]["names"]}
    assert all(f"lag of {expected} frames" in f.message and "the state trails the action" in f.message
               for f in lags), lags
    assert not of(result, "arms_swapped") and result.exit_code == 1


def test_swapped_arms_named_without_spurious_lag_warnings() -> None:
    result = doctor("arms_swapped")
    (swap,) = of(result, "arms_swapped")
    assert swap.severity == "error"
    assert not of(result, "action_state_lag"), of(result, "action_state_lag")
    (summary,) = of(result, "action_state_lag_summary")
    assert "median action-to-state lag 1 frame" in summary.message and "arm they track" in summary.message


def test_truncated_data_file_is_an_error_naming_the_file() -> None:
    rc, out = run_cli("doctor", "--dataset", str(GOLDEN / "truncated_parquet"), "--no-plots")
    assert rc == 2 and MANIFEST["truncated_parquet"]["file"] in out and "Traceback" not in out, out


# ---- a recording whose policy strays (the demo's false alarm) -------------------------------------------------


def _stray_copy(tmp_path: Path, dim: int, beyond: float, frames_out: int) -> Path:
    """A run: the clean dataset with episode 0's last `frames_out` actions of `dim` pushed `beyond` x the checkpoint's
    q01..q99 width past its q99: a policy run that strays in a failing episode."""
    import shutil

    import pyarrow as pa

    root = tmp_path / "run"
    shutil.copytree(GOLDEN / "clean", root)
    path = next((root / "data").glob("chunk-*/file-*.parquet"))
    table = pq.read_table(path)
    episode = np.asarray(table.column("episode_index").to_pylist())
    actions = np.asarray(table.column("action").to_pylist(), dtype=np.float32)
    stats = json.loads((root / "meta" / "stats.json").read_text())["action"]
    width = stats["q99"][dim] - stats["q01"][dim]
    rows = np.flatnonzero(episode == 0)[-frames_out:]
    actions[rows, dim] = stats["q99"][dim] + beyond * width * np.linspace(0.2, 1.0, rows.size)
    column = pa.FixedSizeListArray.from_arrays(pa.array(actions.reshape(-1), pa.float32()), actions.shape[1])
    i = table.schema.get_field_index("action")
    pq.write_table(table.set_column(i, table.schema.field(i), column), path)
    return root


def test_a_run_whose_actions_stray_past_the_training_range_is_not_another_dataset(tmp_path: Path) -> None:
    """One training episode as a run, checked for containment in the LeRobot checkpoint's stats: it reaches past
    [-1, 1] (LeRobot's quantiles are per-episode means) but stays inside the training min/max the stats carry,
    which is no finding; its last actions on one joint go past even those: a run that strayed, named so."""
    run = _stray_copy(tmp_path, dim=3, beyond=1.0, frames_out=10)
    rc, out = run_cli("doctor", "--dataset", str(run), "--episodes", "0", "--checkpoint",
                      str(GOLDEN / "clean_checkpoint"), "--stats-fit", "containment", "--no-plots")
    assert rc == 1, out
    lines = [line for line in out.splitlines() if line.startswith(("WARNING", "ERROR"))]
    assert len(lines) == 1 and " beyond_training_range " in lines[0], out  # nothing else: the rest is as trained
    assert "actions[3] (left_joint_3)" in lines[0]
    assert "the policy's actions went past" in lines[0] and "not stats from another dataset" in lines[0]
    assert " stats_mismatch " not in out


def test_a_run_entirely_outside_the_stats_is_still_another_dataset(tmp_path: Path) -> None:
    run = _stray_copy(tmp_path, dim=3, beyond=3.0, frames_out=70)  # nearly the whole episode
    rc, out = run_cli("doctor", "--dataset", str(run), "--episodes", "0", "--checkpoint",
                      str(GOLDEN / "clean_checkpoint"), "--stats-fit", "containment", "--no-plots")
    assert rc == 2 and any(" stats_mismatch " in line and "left_joint_3" in line for line in out.splitlines()), out
