"""The data doctor on real datasets with one injected failure each: the finding names the cause and the joint.

Every test writes a dataset with the project's writers (LeRobot or DP zarr), optionally a checkpoint in
openpi's layout, runs `python -m replay doctor` through its CLI entry point and asserts the exit code and the
one-line finding.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from policy_norm.numeric import quantile_normalize
from replay.doctor.command import DoctorOptions, run_doctor
from robodata.open import open_dataset
from robodata.zarr_dp_writer import write_dp_zarr
from tests.test_doctor_fixtures import (
    YAM_MASK,
    computed_stats,
    feature,
    lerobot_checkpoint,
    openpi_checkpoint,
    policy_config,
    run_cli,
    write_lerobot,
    yam_episodes,
)


def _lines(out: str, code: str) -> list[str]:
    return [line for line in out.splitlines() if f" {code} " in f" {line} "]


def _own_stats_checkpoint(tmp_path: Path, ds: Path, config: dict[str, object] | None = None) -> Path:
    stats = computed_stats(ds)
    return openpi_checkpoint(tmp_path / "ckpt", stats.feature("state"), stats.feature("actions"),
                             config if config is not None else policy_config())


# ---- normalization failures (need a checkpoint) -----------------------------------------------------------


def test_data_never_normalized(tmp_path: Path) -> None:
    """The seed bug: identity stats, so robot units reach the model."""
    ds = write_lerobot(tmp_path / "ds", yam_episodes())
    ones, zeros = np.ones(14), np.zeros(14)
    identity = feature(mean=zeros, std=ones, q01=-ones, q99=ones)
    ckpt = openpi_checkpoint(tmp_path / "ckpt", identity, identity, policy_config())
    rc, out = run_cli("doctor", "--dataset", str(ds), "--checkpoint", str(ckpt), "--no-plots")
    assert rc == 2
    lines = _lines(out, "never_normalized")
    assert any("data never normalized" in line and "left_joint2" in line for line in lines), out


def test_stats_from_another_dataset(tmp_path: Path) -> None:
    eps = yam_episodes()
    ds = write_lerobot(tmp_path / "ds", eps)
    other = eps.copy()
    for a, s in zip(other.actions, other.states, strict=True):
        a[:, :6] = a[:, :6] * 0.4 + 0.9
        s[:, :6] = s[:, :6] * 0.4 + 0.9
    other_ds = write_lerobot(tmp_path / "other", other)
    stats = computed_stats(other_ds)
    ckpt = openpi_checkpoint(tmp_path / "ckpt", stats.feature("state"), stats.feature("actions"), policy_config())
    rc, out = run_cli("doctor", "--dataset", str(ds), "--checkpoint", str(ckpt), "--no-plots")
    assert rc == 2
    lines = _lines(out, "stats_mismatch")
    assert any("stats from another dataset" in line and "left_joint1" in line for line in lines), out


def test_output_denormalization_skipped(tmp_path: Path) -> None:
    """A recording whose actions were left in model space while its states are robot units."""
    eps = yam_episodes()
    stats = computed_stats(write_lerobot(tmp_path / "train", eps))
    act = stats.feature("actions")
    assert act.q01 is not None and act.q99 is not None
    broken = eps.copy()
    broken.actions = [quantile_normalize(a, act.q01, act.q99, "openpi") for a in broken.actions]
    ds = write_lerobot(tmp_path / "ds", broken)
    ckpt = openpi_checkpoint(tmp_path / "ckpt", stats.feature("state"), act, policy_config())
    rc, out = run_cli("doctor", "--dataset", str(ds), "--checkpoint", str(ckpt), "--no-plots")
    assert rc == 2
    lines = _lines(out, "output_denormalization_skipped")
    assert any("output denormalization skipped" in line and "right_joint3" in line for line in lines), out
    assert not _lines(out, "double_normalization")


def test_double_normalization(tmp_path: Path) -> None:
    eps = yam_episodes()
    stats = computed_stats(write_lerobot(tmp_path / "train", eps))
    st, act = stats.feature("state"), stats.feature("actions")
    assert st.q01 is not None and st.q99 is not None and act.q01 is not None and act.q99 is not None
    normalized = eps.copy()
    normalized.states = [quantile_normalize(s, st.q01, st.q99, "openpi") for s in normalized.states]
    normalized.actions = [quantile_normalize(a, act.q01, act.q99, "openpi") for a in normalized.actions]
    ds = write_lerobot(tmp_path / "ds", normalized)
    ckpt = openpi_checkpoint(tmp_path / "ckpt", st, act, policy_config())
    rc, out = run_cli("doctor", "--dataset", str(ds), "--checkpoint", str(ckpt), "--no-plots")
    assert rc == 2
    lines = _lines(out, "double_normalization")
    assert any("double normalization" in line and "state[1] (left_joint2)" in line for line in lines), out


def test_lerobot_checkpoint_dir(tmp_path: Path) -> None:
    """Stats and mode from LeRobot processor safetensors, no policy_config.json: clean data passes, another
    dataset's stats do not."""
    eps = yam_episodes()
    ds = write_lerobot(tmp_path / "ds", eps)
    stats = computed_stats(ds)
    ckpt = lerobot_checkpoint(tmp_path / "ck", stats.feature("state"), stats.feature("actions"))
    rc, out = run_cli("doctor", "--dataset", str(ds), "--checkpoint", str(ckpt), "--no-plots")
    assert rc == 0, out
    assert "lerobot-processor stats" in out and "quantile (lerobot epsilon)" in out
    shifted = eps.copy()
    for s in shifted.states:
        s[:, 1] += 0.6
    rc, out = run_cli("doctor", "--dataset", str(write_lerobot(tmp_path / "ds2", shifted)), "--checkpoint",
                      str(ckpt), "--no-plots")
    assert rc == 2
    assert any("state[1] (left_joint2)" in line for line in _lines(out, "stats_mismatch")), out


def test_quantile_stats_used_as_zscore(tmp_path: Path) -> None:
    """Mean/std slots filled from q01/q99 (mid-point, half-range) and served as z-score."""
    ds = write_lerobot(tmp_path / "ds", yam_episodes())
    stats = computed_stats(ds)
    fake = []
    for f in (stats.feature("state"), stats.feature("actions")):
        assert f.q01 is not None and f.q99 is not None
        fake.append(feature(mean=(f.q01 + f.q99) / 2, std=(f.q99 - f.q01) / 2, q01=f.q01, q99=f.q99))
    ckpt = openpi_checkpoint(tmp_path / "ckpt", fake[0], fake[1], policy_config(mode="zscore"))
    rc, out = run_cli("doctor", "--dataset", str(ds), "--checkpoint", str(ckpt), "--no-plots")
    assert rc == 2
    lines = _lines(out, "quantile_stats_as_zscore")
    assert any("quantile stats used as z-score" in line and "left_joint" in line for line in lines), out


def test_zscore_stats_used_as_quantile(tmp_path: Path) -> None:
    ds = write_lerobot(tmp_path / "ds", yam_episodes())
    stats = computed_stats(ds)
    fake = []
    for f in (stats.feature("state"), stats.feature("actions")):
        assert f.mean is not None and f.std is not None
        fake.append(feature(mean=f.mean, std=f.std, q01=f.mean - f.std, q99=f.mean + f.std))
    ckpt = openpi_checkpoint(tmp_path / "ckpt", fake[0], fake[1], policy_config(mode="quantile"))
    rc, out = run_cli("doctor", "--dataset", str(ds), "--checkpoint", str(ckpt), "--no-plots")
    assert rc == 2
    assert any("z-score stats used as quantile" in line for line in _lines(out, "zscore_stats_as_quantile")), out


def test_degenerate_dim(tmp_path: Path) -> None:
    """A left gripper that never moved: flagged from the data, and the checkpoint's 'refuse' policy is an error."""
    eps = yam_episodes()
    for a, s in zip(eps.actions, eps.states, strict=True):
        a[:, 6] = 1.0
        s[:, 6] = 1.0
    ds = write_lerobot(tmp_path / "ds", eps)
    ckpt = _own_stats_checkpoint(tmp_path, ds)
    rc, out = run_cli("doctor", "--dataset", str(ds), "--checkpoint", str(ckpt), "--no-plots")
    assert rc == 2
    lines = _lines(out, "degenerate_dim")
    assert any(line.startswith("WARNING") and "action left_gripper" in line and "never moves" in line
               for line in lines), out
    assert any(line.startswith("ERROR") and "left_gripper" in line and "refuse" in line for line in lines), out


def test_state_out_of_bin_range(tmp_path: Path) -> None:
    """State q01..q99 narrower than the data (by 20% on one joint): bins clip on many frames."""
    ds = write_lerobot(tmp_path / "ds", yam_episodes())
    stats = computed_stats(ds)
    st = stats.feature("state")
    assert st.q01 is not None and st.q99 is not None and st.mean is not None and st.std is not None
    q01, q99 = st.q01.copy(), st.q99.copy()
    mid = (q01[2] + q99[2]) / 2
    q01[2], q99[2] = mid - 0.8 * (mid - q01[2]), mid + 0.8 * (q99[2] - mid)
    narrow = feature(mean=st.mean, std=st.std, q01=q01, q99=q99)
    ckpt = openpi_checkpoint(tmp_path / "ckpt", narrow, stats.feature("actions"), policy_config())
    rc, out = run_cli("doctor", "--dataset", str(ds), "--checkpoint", str(ckpt), "--no-plots")
    assert rc == 1, out  # a warning, not an error
    lines = _lines(out, "state_out_of_bin_range")
    assert any("state out of bin range" in line and "left_joint3" in line for line in lines), out


def test_delta_mask_wrong_against_checkpoint_stats(tmp_path: Path) -> None:
    """Stats computed on deltas (openpi's DeltaActions) but the config says absolute."""
    ds = write_lerobot(tmp_path / "ds", yam_episodes())
    stats = computed_stats(ds, YAM_MASK, horizon=10)
    ckpt = openpi_checkpoint(tmp_path / "ckpt", stats.feature("state"), stats.feature("actions"),
                             policy_config(mask=(False,) * 14, horizon=10))
    rc, out = run_cli("doctor", "--dataset", str(ds), "--checkpoint", str(ckpt), "--no-plots")
    assert rc == 2
    lines = _lines(out, "delta_mask_wrong")
    assert any("delta mask wrong" in line and "left_joint2" in line and "says left_joint2 is absolute" in line
               for line in lines), out


def test_delta_mask_wrong_for_actions_stored_as_deltas(tmp_path: Path) -> None:
    eps = yam_episodes()
    for a, s in zip(eps.actions, eps.states, strict=True):
        a[:, :6] -= s[:, :6]
        a[:, 7:13] -= s[:, 7:13]
    ds = write_lerobot(tmp_path / "ds", eps)
    rc, out = run_cli("doctor", "--dataset", str(ds), "--delta-mask", "6,-1,6,-1", "--no-plots")
    assert rc == 2
    lines = _lines(out, "delta_mask_wrong")
    assert any("subtracted twice" in line and "right_joint2" in line for line in lines), out


# ---- data-only failures -----------------------------------------------------------------------------------


def test_lag_of_five_frames(tmp_path: Path) -> None:
    ds = write_lerobot(tmp_path / "ds", yam_episodes(lag=5))
    rc, out = run_cli("doctor", "--dataset", str(ds), "--no-plots")
    assert rc == 1, out  # a warning only
    lines = _lines(out, "action_state_lag")
    assert any("lag of 5 frames" in line and "left_joint2" in line for line in lines), out


def test_action_outlier_of_50_rad(tmp_path: Path) -> None:
    eps = yam_episodes()
    eps.actions[1][40, 2] = 50.0
    ds = write_lerobot(tmp_path / "ds", eps)
    rc, out = run_cli("doctor", "--dataset", str(ds), "--no-plots")
    assert rc == 2
    lines = _lines(out, "action_outside_joint_limits")
    assert any("episode 1 frame 40" in line and "left_joint3 = 50" in line for line in lines), out


def test_nan_in_a_frame(tmp_path: Path) -> None:
    """DP zarr stores the NaN; the reader refuses the episode, the doctor still names frame and joint."""
    eps = yam_episodes(num=3)
    eps.states[2][17, 5] = np.nan
    path = write_dp_zarr(tmp_path / "ds.zarr", [{"state": s, "action": a} for s, a in
                                                zip(eps.states, eps.actions, strict=True)])
    rc, out = run_cli("doctor", "--dataset", str(path), "--fps", "30", "--no-plots")
    assert rc == 2
    lines = _lines(out, "non_finite")
    assert any("episode 2 frame 17 state state_5" in line and "nan" in line for line in lines), out


def test_non_monotonic_timestamps(tmp_path: Path) -> None:
    """A LeRobot parquet whose timestamp column goes backwards at episode 1, frame 30."""
    ds = write_lerobot(tmp_path / "ds", yam_episodes(num=3))
    files = sorted((ds / "data").rglob("*.parquet"))
    table = pq.read_table(files[0])
    ts = table.column("timestamp").to_numpy().copy()
    ep = table.column("episode_index").to_numpy()
    first = int(np.flatnonzero(ep == 1)[0])
    ts[first + 30] = ts[first + 28]
    table = table.set_column(table.schema.get_field_index("timestamp"), "timestamp",
                             pa.array(ts, type=pa.float32()))
    pq.write_table(table, files[0])
    rc, out = run_cli("doctor", "--dataset", str(ds), "--no-plots")
    assert rc == 2
    lines = _lines(out, "timestamps_non_monotonic")
    assert any("episode 1 frame 30" in line for line in lines), out


# ---- outputs and exit codes ------------------------------------------------------------------------------


def test_report_plots_and_json_are_written(tmp_path: Path) -> None:
    eps = yam_episodes(num=4)
    eps.actions[0][10, 3] = 50.0
    ds = write_lerobot(tmp_path / "ds", eps)
    ckpt = _own_stats_checkpoint(tmp_path, ds)
    out_dir = tmp_path / "report"
    rc, out = run_cli("doctor", "--dataset", str(ds), "--checkpoint", str(ckpt), "--out", str(out_dir))
    assert rc == 2
    report = (out_dir / "report.md").read_text()
    assert "action_outside_joint_limits" in report and "## Normalization" in report
    pngs = sorted(p.name for p in (out_dir / "plots").glob("*.png"))
    assert {"lag.png", "normalized_ranges.png", "frame_intervals.png"} <= set(pngs)
    assert all((out_dir / "plots" / p).read_bytes()[:4] == b"\x89PNG" for p in pngs)
    findings = json.loads((out_dir / "findings.json").read_text())
    assert any(f["code"] == "action_outside_joint_limits" and f["severity"] == "error" for f in findings)
    assert out.splitlines()[-1].startswith("doctor: 1 error(s)")


def test_exit_codes(tmp_path: Path) -> None:
    ds = write_lerobot(tmp_path / "ds", yam_episodes(num=3))
    assert run_cli("doctor", "--dataset", str(ds), "--no-plots")[0] == 0
    (tmp_path / "empty").mkdir()
    assert run_cli("doctor", "--dataset", str(tmp_path / "empty"))[0] == 2
    rc, out = run_cli("doctor", "--dataset", str(ds), "--checkpoint", str(tmp_path / "missing"), "--no-plots")
    assert rc == 2 and "checkpoint_unusable" in out


def test_checkpoint_without_mode_is_an_error_saying_where_to_set_it(tmp_path: Path) -> None:
    ds = write_lerobot(tmp_path / "ds", yam_episodes(num=3))
    ckpt = _own_stats_checkpoint(tmp_path, ds, policy_config(mode=None))
    rc, out = run_cli("doctor", "--dataset", str(ds), "--checkpoint", str(ckpt), "--no-plots")
    assert rc == 2
    assert any('set "mode"' in line and "policy_config.json" in line for line in _lines(out, "checkpoint_unusable"))


def test_run_doctor_api_gives_structured_findings(tmp_path: Path) -> None:
    eps = yam_episodes(num=3)
    eps.actions[2][5, 8] = -50.0
    ds = write_lerobot(tmp_path / "ds", eps)
    result = run_doctor(open_dataset(ds), DoctorOptions(plots=False))
    assert result.errors == 1 and "action_outside_joint_limits" in result.codes()
    (bad,) = [f for f in result.findings if f.code == "action_outside_joint_limits"]
    assert bad.where == "episode 2 frame 5 action right_joint2"


@pytest.mark.parametrize("fmt", ["lerobot", "dp"])
def test_same_checks_for_both_formats(tmp_path: Path, fmt: str) -> None:
    eps = yam_episodes(num=3)
    eps.actions[0][12, 0] = 50.0
    if fmt == "lerobot":
        ds = write_lerobot(tmp_path / "ds", eps)
        expect = "left_joint1"
    else:
        ds = write_dp_zarr(tmp_path / "ds.zarr", [{"state": s, "action": a} for s, a in
                                                  zip(eps.states, eps.actions, strict=True)])
        expect = "action_0"  # DP zarr has no names: no YAM limit applies, the robust outlier check names it
    rc, out = run_cli("doctor", "--dataset", str(ds), "--fps", "30", "--no-plots") if fmt == "dp" else \
        run_cli("doctor", "--dataset", str(ds), "--no-plots")
    assert "episode 0 frame 12" in out and expect in out, out
