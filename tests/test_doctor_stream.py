"""The doctor in bounded memory (replay.doctor.stream): the histograms it streams whole-data quantiles through
keep their stated error bounds, and on the datasets LeRobot itself wrote (tests/golden/lerobot/datasets: clean
and each planted fault) the streamed doctor names what the exact one names, at the same severity and place.
The figures in the messages may differ within the stated bounds; the frames named may not.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from replay.doctor.command import DoctorOptions, DoctorResult, run_doctor
from replay.doctor.findings import Finding
from replay.doctor.stream import StreamSettings, _MergedStats
from robodata.lag import LagAccumulator, estimate_lags, pair
from robodata.open import open_dataset
from robodata.stats import (
    QUANTILES_EPISODE_MEAN,
    LinearHistogram,
    LogHistogram,
    aggregate_stats,
    episode_feature_stats,
)
from robot_client.yam_limits import yam_joint_limits
from tests.test_doctor_fixtures import run_cli

GOLDEN = Path(__file__).parent / "golden" / "lerobot" / "datasets"
STREAM_ONLY = {"streamed_statistics", "streamed_sample"}
STREAMED = StreamSettings(exact_frames=0)


# ---- the histograms ---------------------------------------------------------------------------------------


def test_linear_histogram_quantiles_within_one_bin_width_while_its_range_grows_both_ways() -> None:
    rng = np.random.default_rng(3)
    hist = LinearHistogram(3, bins=512)
    parts = []
    for i in range(40):
        batch = rng.normal(0.05 * i, 1.0, (97, 3))
        batch[i % 97, 0] = np.nan  # skipped, counted
        if i == 25:
            batch[3, 1] = 50.0  # the range doubles upwards ...
        if i == 31:
            batch[4, 1] = -80.0  # ... and downwards, late
        hist.add(batch)
        parts.append(batch)
    data = np.concatenate(parts)
    levels = [0.0, 0.01, 0.05, 0.1, 0.5, 0.9, 0.95, 0.99, 1.0]
    for d in range(3):
        col = data[np.isfinite(data[:, d]), d]
        assert hist.count(d) == col.size
        assert hist.min[d] == col.min() and hist.max[d] == col.max()
        err = np.abs(hist.quantiles(d, levels) - np.quantile(col, levels))
        assert err.max() <= hist.width[d], (d, err.max(), hist.width[d])
        med = float(np.median(col))
        mad = float(np.median(np.abs(col - med)))
        assert abs(hist.median_abs_deviation(d, float(hist.quantiles(d, [0.5])[0])) - mad) <= 1.5 * hist.width[d]
    assert hist.skipped[0] == 40
    assert hist.width[1] > hist.width[2]  # the outliers widened only their own dim


def test_log_histogram_median_within_its_relative_error() -> None:
    rng = np.random.default_rng(4)
    hist = LogHistogram(2, mantissa_bits=6)
    values = np.abs(rng.standard_cauchy((20001, 2)))
    values[0, 0] = 0.0
    values[1, 1] = np.inf  # skipped
    hist.add(values[:10000])
    hist.add(values[10000:])
    for d in range(2):
        col = values[np.isfinite(values[:, d]), d]
        assert abs(hist.median(d) / np.median(col) - 1) <= hist.relative_error
    assert hist.count(0) == 20001 and hist.count(1) == 20000


def test_lag_accumulated_one_episode_at_a_time_equals_the_pooled_estimate() -> None:
    rng = np.random.default_rng(5)
    series = []
    for _ in range(4):
        a = np.cumsum(rng.normal(0, 0.1, (300, 2)), axis=0)
        s = np.roll(a, 3, axis=0) + rng.normal(0, 1e-3, a.shape)
        series.append(pair(a, s))
    pooled = estimate_lags(series, ["a", "b"], [0, 1], 10)
    acc = LagAccumulator([(0, 0), (1, 1), (0, 1)], 10)
    for one in series:
        acc.add(one)
    streamed = acc.result(["a", "b"], [0, 1])
    assert streamed.lags == pooled.lags == {"a": 3, "b": 3}
    np.testing.assert_array_equal(streamed.curves["a"], pooled.curves["a"])


def test_stats_merged_one_episode_at_a_time_equal_aggregate_stats() -> None:
    rng = np.random.default_rng(6)
    per_episode = [episode_feature_stats(rng.normal(i, 1 + i, (50 + 7 * i, 4)), QUANTILES_EPISODE_MEAN)
                   for i in range(9)]
    merged = _MergedStats()
    for stats in per_episode:
        merged.add(stats)
    expected = aggregate_stats([{"f": e} for e in per_episode])["f"]
    got = merged.result()
    assert set(got) == set(expected)
    for key, value in expected.items():
        np.testing.assert_allclose(got[key], value, rtol=1e-12, atol=1e-12, err_msg=key)


# ---- the streamed doctor against the exact one --------------------------------------------------------------


def _doctor(name: str, streamed: bool, checkpoint: str | None = None) -> DoctorResult:
    options = DoctorOptions(plots=False, checkpoint=GOLDEN / checkpoint if checkpoint else None,
                            stream=STREAMED if streamed else StreamSettings())
    return run_doctor(open_dataset(GOLDEN / name), options)


def _keyed(findings: list[Finding]) -> list[tuple[str, str, str]]:
    return sorted((f.severity, f.code, f.where) for f in findings if f.code not in STREAM_ONLY)


@pytest.mark.parametrize("name", ["clean", "stats_degrees", "outliers", "lag5", "arms_swapped", "rb_swap",
                                  "v21_clean", "v21_stats_degrees", "truncated_parquet", "missing_video"])
def test_streamed_doctor_names_what_the_exact_one_names(name: str) -> None:
    exact, streamed = _doctor(name, False), _doctor(name, True)
    assert "streamed_statistics" not in exact.codes()
    assert ("streamed_statistics" in streamed.codes()) == ("no_episodes" not in exact.codes())
    assert _keyed(streamed.findings) == _keyed(exact.findings)
    assert streamed.exit_code == exact.exit_code


def test_streamed_outliers_name_the_same_frames_and_values() -> None:
    (exact,) = [f for f in _doctor("outliers", False).findings if f.code == "action_outlier"]
    (streamed,) = [f for f in _doctor("outliers", True).findings if f.code == "action_outlier"]
    assert streamed.where == exact.where
    assert streamed.message.split("frame(s): ")[1] == exact.message.split("frame(s): ")[1]


def test_streamed_joint_limits_name_the_same_frames_and_leave_them_out_of_the_outliers() -> None:
    table = yam_joint_limits()
    names = open_dataset(GOLDEN / "outliers").info.action_names
    limits = {n: table["gripper"] if "gripper" in n else table[f"joint{int(n[-1]) + 1}"] for n in names}
    results = [run_doctor(open_dataset(GOLDEN / "outliers"), DoctorOptions(plots=False, joint_limits=limits,
                                                                           stream=stream))
               for stream in (StreamSettings(), STREAMED)]
    exact, streamed = ([f for f in r.findings if f.code == "action_outside_joint_limits"] for r in results)
    assert len(exact) == 1 and [(f.where, f.message) for f in streamed] == [(f.where, f.message) for f in exact]
    assert _keyed(results[1].findings) == _keyed(results[0].findings)
    assert "action_outlier" not in results[1].codes()


def test_streamed_doctor_with_a_checkpoint_checks_it_on_the_sample() -> None:
    exact, streamed = _doctor("clean", False, "clean_checkpoint"), _doctor("clean", True, "clean_checkpoint")
    assert streamed.exit_code == exact.exit_code == 0
    assert _keyed(streamed.findings) == _keyed(exact.findings)
    (sample,) = [f for f in streamed.findings if f.code == "streamed_sample"]
    assert "whole episode(s)" in sample.message


def test_the_streamed_info_states_the_error_bounds() -> None:
    (note,) = [f for f in _doctor("clean", True).findings if f.code == "streamed_statistics"]
    assert "within one bin width" in note.message and "tracking-error medians within" in note.message


def test_cli_exact_frames_switches_to_streaming() -> None:
    rc, out = run_cli("doctor", "--dataset", str(GOLDEN / "stats_degrees"), "--no-plots", "--exact-frames", "1")
    assert rc == 2 and "streamed_statistics" in out and "stored_stats_unit" in out and "Traceback" not in out, out
    rc, out = run_cli("doctor", "--dataset", str(GOLDEN / "clean"), "--no-plots", "--exact-frames", "0")
    assert rc == 0 and "streamed_statistics" in out, out


# ---- the reader's per-episode slices -------------------------------------------------------------------------


def test_v3_file_whose_episodes_are_not_contiguous_reads_the_same(tmp_path: Path) -> None:
    """Episodes are sliced by their contiguous row range; a file that interleaves them (not LeRobot's layout,
    but legal) falls back to filtering and reads the same frames."""
    root = tmp_path / "ds"
    shutil.copytree(GOLDEN / "clean", root)
    (path,) = list((root / "data").glob("chunk-*/file-*.parquet"))
    table = pq.read_table(path)
    frame = np.asarray(table.column("frame_index").to_numpy())
    order = np.lexsort((np.asarray(table.column("episode_index").to_numpy()), frame))  # frame-major: interleaved
    pq.write_table(table.take(pa.array(order)), path)
    original, shuffled = open_dataset(GOLDEN / "clean"), open_dataset(root)
    for index in original.episode_indices():
        a, b = original.episode(index), shuffled.episode(index)
        np.testing.assert_array_equal(a.states, b.states)
        np.testing.assert_array_equal(a.actions, b.actions)
        np.testing.assert_array_equal(a.timestamps, b.timestamps)
