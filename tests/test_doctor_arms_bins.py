"""The doctor's left/right arm plausibility, state-bin coverage, lag in ms and exit codes, on real files.

Faults are injected into the scripted YAM episodes of the fixtures (arms swapped between state and action
columns, an arm copied or frozen; checkpoint stats wider or narrower than the data) and the doctor is run
through its CLI or its API; each test asserts the code, the joints or arms named and the exit code.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from policy_norm.checkpoint import build_pipeline
from policy_norm.numeric import bin_edges, discretize_state
from policy_norm.pipeline import NormalizationPipeline
from replay.doctor.bins import BinThresholds, bin_coverage, bin_findings, served_bins
from replay.doctor.command import DoctorOptions, run_doctor
from robodata.open import open_dataset
from robodata.zarr_dp_writer import write_dp_zarr
from tests.test_doctor_fixtures import (
    Episodes,
    computed_stats,
    feature,
    openpi_checkpoint,
    policy_config,
    run_cli,
    write_lerobot,
    yam_episodes,
)


def _lines(out: str, code: str) -> list[str]:
    return [line for line in out.splitlines() if f" {code} " in f" {line} "]


def _swap_arms(arrays: list[np.ndarray]) -> None:
    for a in arrays:
        a[:] = np.concatenate([a[:, 7:], a[:, :7]], axis=1)


# ---- left/right arms --------------------------------------------------------------------------------------


@pytest.mark.parametrize("columns", ["state", "action"])
def test_arms_swapped_between_state_and_actions(tmp_path: Path, columns: str) -> None:
    eps = yam_episodes()
    _swap_arms(eps.states if columns == "state" else eps.actions)
    rc, out = run_cli("doctor", "--dataset", str(write_lerobot(tmp_path / "ds", eps)), "--no-plots")
    assert rc == 2
    (line,) = _lines(out, "arms_swapped")
    assert line.startswith("ERROR") and "left_*" in line and "right_*" in line and "joint1" in line, out


def test_arms_swapped_with_delta_actions(tmp_path: Path) -> None:
    """Actions stored as deltas (grippers absolute): the delta form of the tracking error still tells the arms
    apart, and a state swap is caught."""
    eps = yam_episodes()
    for a, s in zip(eps.actions, eps.states, strict=True):
        a[:, :6] -= s[:, :6]
        a[:, 7:13] -= s[:, 7:13]
    clean = run_doctor(open_dataset(write_lerobot(tmp_path / "clean", eps)), DoctorOptions(plots=False))
    assert clean.arms is not None and not {"arms_swapped", "arm_tracks_other_arm"} & clean.codes()
    _swap_arms(eps.states)
    swapped = run_doctor(open_dataset(write_lerobot(tmp_path / "swapped", eps)), DoctorOptions(plots=False))
    assert "arms_swapped" in swapped.codes()


def test_one_arm_copied_from_the_other(tmp_path: Path) -> None:
    eps = yam_episodes()
    for a in eps.actions:
        a[:, 7:] = a[:, :7]
    result = run_doctor(open_dataset(write_lerobot(tmp_path / "ds", eps)), DoctorOptions(plots=False))
    (finding,) = [f for f in result.findings if f.code == "arm_tracks_other_arm"]
    assert finding.severity == "error" and finding.where == "action right_* vs state left_*"
    assert "arms_swapped" not in result.codes()


def test_an_arm_that_never_moves(tmp_path: Path) -> None:
    """Both streams still: info (a one-arm task); only the state still: a frozen state stream (warning)."""
    eps = yam_episodes()
    rest_state, rest_action = eps.states[0][0, 7:].copy(), eps.actions[0][0, 7:].copy()
    idle = eps.copy()
    for a, s in zip(idle.actions, idle.states, strict=True):
        a[:, 7:] = rest_action
        s[:, 7:] = rest_state
    result = run_doctor(open_dataset(write_lerobot(tmp_path / "idle", idle)), DoctorOptions(plots=False))
    (still,) = [f for f in result.findings if f.code == "arm_never_moves"]
    assert still.severity == "info" and still.where == "arm right (right_*)"
    assert "arms_swapped" not in result.codes() and "arm_tracks_other_arm" not in result.codes()

    frozen = eps.copy()
    for s in frozen.states:
        s[:, :7] = eps.states[0][0, :7]
    rc, out = run_cli("doctor", "--dataset", str(write_lerobot(tmp_path / "frozen", frozen)), "--no-plots")
    assert any(line.startswith("WARNING") and "arm left" in line for line in _lines(out, "arm_state_frozen")), out
    assert rc == 1 or rc == 2  # the frozen state also breaks other checks; the arm finding is what is asserted


def test_arm_checks_need_bimanual_names(tmp_path: Path) -> None:
    eps = yam_episodes(num=3)
    path = write_dp_zarr(tmp_path / "ds.zarr", [{"state": s, "action": a} for s, a in
                                                zip(eps.states, eps.actions, strict=True)])
    result = run_doctor(open_dataset(path, fps=30), DoctorOptions(plots=False))
    assert result.arms is None and not any(f.code.startswith("arm") for f in result.findings)


# ---- state bins -------------------------------------------------------------------------------------------


def _checkpoint_with_state_range(tmp_path: Path, ds: Path, joint: int, factor: float) -> Path:
    """The dataset's own stats, with one state joint's q01..q99 scaled about its mid-point by `factor`."""
    stats = computed_stats(ds)
    st = stats.feature("state")
    assert st.q01 is not None and st.q99 is not None and st.mean is not None and st.std is not None
    q01, q99 = st.q01.copy(), st.q99.copy()
    mid, half = (q01[joint] + q99[joint]) / 2, (q99[joint] - q01[joint]) / 2
    q01[joint], q99[joint] = mid - factor * half, mid + factor * half
    return openpi_checkpoint(tmp_path / "ckpt", feature(mean=st.mean, std=st.std, q01=q01, q99=q99),
                             stats.feature("actions"), policy_config())


def test_state_stats_much_wider_than_the_data_use_few_bins(tmp_path: Path) -> None:
    ds = write_lerobot(tmp_path / "ds", yam_episodes())
    ckpt = _checkpoint_with_state_range(tmp_path, ds, joint=1, factor=40.0)
    rc, out = run_cli("doctor", "--dataset", str(ds), "--checkpoint", str(ckpt), "--no-plots")
    assert rc == 2  # the stats do not fit the data either (stats_mismatch)
    (line,) = _lines(out, "state_bins_few")
    assert line.startswith("WARNING") and "state[1] (left_joint2)" in line and "of 256 bins" in line, out
    assert "state_bin_coverage" in out


def test_clipped_state_bins_are_reported_once(tmp_path: Path) -> None:
    """Stats 20% narrower than the data: the checkpoint check's state_out_of_bin_range names the joint, the bin
    coverage does not repeat it, and its table shows the clipped fractions."""
    ds = write_lerobot(tmp_path / "ds", yam_episodes())
    ckpt = _checkpoint_with_state_range(tmp_path, ds, joint=2, factor=0.8)
    result = run_doctor(open_dataset(ds), DoctorOptions(checkpoint=ckpt, out=tmp_path / "report", plots=True))
    assert [f.where for f in result.findings if f.code == "state_out_of_bin_range"] == ["state[2] (left_joint3)"]
    assert "state_bins_out_of_range" not in result.codes()
    assert result.bins is not None
    dim = result.bins.dims[2]
    assert dim.frac_below + dim.frac_above > 0.05 and dim.lowest == -1 and dim.highest == 255
    alone = bin_findings(result.bins, BinThresholds())  # nothing reported it yet: the coverage check does
    assert [f.where for f in alone if f.code == "state_bins_out_of_range"] == ["state[2] (left_joint3)"]
    report = (tmp_path / "report" / "report.md").read_text()
    assert "## State bin coverage" in report and "| left_joint3 |" in report
    assert (tmp_path / "report" / "plots" / "state_bins.png").read_bytes()[:4] == b"\x89PNG"
    assert result.exit_code == 1


def test_bins_are_the_servers_bins(tmp_path: Path) -> None:
    """Coverage counts the bins the pipeline's own prepare() puts into the prompt."""
    eps = yam_episodes(num=2)
    ds = write_lerobot(tmp_path / "ds", eps)
    stats = computed_stats(ds)
    ckpt = openpi_checkpoint(tmp_path / "ckpt", stats.feature("state"), stats.feature("actions"), policy_config())
    pipeline = build_pipeline(ckpt)
    states = np.concatenate(eps.states)
    prepared = [pipeline.prepare(s.astype(np.float32))[0].state_bins for s in states[::3]]
    served = np.stack([b for b in prepared if b is not None])
    assert len(served) == len(prepared)
    coverage = bin_coverage(pipeline, states[::3])
    assert coverage is not None
    assert [d.bins_used for d in coverage.dims] == [np.unique(served[:, i]).size for i in range(14)]
    assert [(d.lowest, d.highest) for d in coverage.dims] == [
        (int(served[:, i].min()), int(served[:, i].max())) for i in range(14)]
    bins, _, _ = served_bins(pipeline, states[::3])
    np.testing.assert_array_equal(bins, served)  # exactly the server's, frame by frame
    strict = NormalizationPipeline(replace(pipeline.config, strict=True), pipeline.stats)
    np.testing.assert_array_equal(served_bins(strict, states[::3])[0], served)  # counted, not refused
    k, _, _ = discretize_state(pipeline.normalize_states(states[::3]))
    assert (k == served).mean() > 0.999  # float32 (server) vs float64 (here) may differ at a bin edge


def test_bins_at_bin_edges_are_the_servers_bins(tmp_path: Path) -> None:
    """States whose normalized value sits on a bin edge: the float64 path puts many in the neighbouring bin, the
    doctor's bins stay the ones prepare() gives on the server (float32 on the wire)."""
    eps = yam_episodes(num=2)
    ds = write_lerobot(tmp_path / "ds", eps)
    stats = computed_stats(ds)
    pipeline = build_pipeline(openpi_checkpoint(tmp_path / "ckpt", stats.feature("state"), stats.feature("actions"),
                                                policy_config()))
    rng = np.random.default_rng(0)
    on_edges = np.tile(rng.choice(bin_edges(256)[1:-1], size=(300, 1)), (1, 14))
    states = pipeline.resolved.state.unnormalize(on_edges)
    states = states + rng.normal(0.0, 1e-7, states.shape) * np.maximum(np.abs(states), 1e-3)
    prepared = [pipeline.prepare(s.astype(np.float32))[0].state_bins for s in states]
    served = np.stack([b for b in prepared if b is not None])
    assert len(served) == len(states)
    np.testing.assert_array_equal(served_bins(pipeline, states)[0], served)
    k64, _, _ = discretize_state(pipeline.normalize_states(states))
    assert (k64 != served).any()  # the float64 path is not the server's: this test can tell them apart


# ---- lag in ms, exit codes --------------------------------------------------------------------------------


def test_lag_is_reported_in_frames_and_ms(tmp_path: Path) -> None:
    ds = write_lerobot(tmp_path / "ds", yam_episodes(lag=5))
    rc, out = run_cli("doctor", "--dataset", str(ds), "--out", str(tmp_path / "r"), "--no-plots")
    assert rc == 1
    assert any("lag of 5 frames (167 ms at 30 fps)" in line and "left_joint2" in line
               for line in _lines(out, "action_state_lag")), out
    assert "5 frame(s) (167 ms at 30 fps)" in _lines(out, "action_state_lag_summary")[0]
    assert "| left_joint2 | +5 | +167 |" in (tmp_path / "r" / "report.md").read_text()


def test_exit_codes_clean_warning_error_unopenable(tmp_path: Path) -> None:
    eps = yam_episodes(num=3)
    assert run_cli("doctor", "--dataset", str(write_lerobot(tmp_path / "clean", eps)), "--no-plots")[0] == 0
    lagged = write_lerobot(tmp_path / "lagged", yam_episodes(num=3, lag=6))  # a lag warning, no error
    assert run_cli("doctor", "--dataset", str(lagged), "--no-plots")[0] == 1
    broken = eps.copy()
    broken.actions[0][3, 0] = 50.0
    assert run_cli("doctor", "--dataset", str(write_lerobot(tmp_path / "broken", broken)), "--no-plots")[0] == 2
    (tmp_path / "empty").mkdir()
    assert run_cli("doctor", "--dataset", str(tmp_path / "empty"))[0] == 2
    rc, out = run_cli("doctor", "--dataset", str(tmp_path / "clean"), "--local-model", "--no-plots")
    assert rc == 2 and "--local-model needs --checkpoint" in out


def test_findings_json_carries_arm_and_bin_findings(tmp_path: Path) -> None:
    eps: Episodes = yam_episodes(num=4)
    _swap_arms(eps.states)
    ds = write_lerobot(tmp_path / "ds", eps)
    rc, _ = run_cli("doctor", "--dataset", str(ds), "--out", str(tmp_path / "r"), "--no-plots")
    assert rc == 2
    findings = json.loads((tmp_path / "r" / "findings.json").read_text())
    assert any(f["code"] == "arms_swapped" and f["severity"] == "error" for f in findings)
    assert "## Left/right arms" in (tmp_path / "r" / "report.md").read_text()
