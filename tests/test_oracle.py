"""The oracle against real policy servers on loopback.

The dataset policy answers with ground truth, so served on its own dataset every joint and chunk step must
show exactly 0 error, in raw and normalized units. A policy that adds +0.2 to one joint from chunk step k on
(a real Policy wrapping the dataset policy, served by the real PolicyServer) must show exactly that offset at
(that joint, steps >= k) and 0 everywhere else, and 0.2 * 2 / (q99 - q01) in normalized units (the dataset
policy declares mode identity but carries q01/q99). Padded ground-truth rows past an episode's end are left
out of the statistics by default and reported on their own.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from policy_server.dataset_policy import DatasetPolicy, DatasetPolicyConfig
from policy_server.policy import Policy, PolicyOutput
from policy_server.server import PolicyServer, ServerConfig
from policy_server.validate import ObservationInput
from replay.oracle.command import OracleOptions, run_oracle
from replay.oracle.core import OracleError, frame_chunks
from replay.oracle.result import PADDED_INCLUDE
from replay.oracle.sources import ServerSource
from replay.view.rrd_read import read_rrd
from robodata.dataset import Dataset
from tests.test_doctor_fixtures import run_cli, write_lerobot, yam_episodes
from tests.wire_helpers import SAMPLE_DATASET, sample_dataset

HORIZON = 12
JOINT = 2  # left_joint3
STEP = 4
OFFSET = 0.2


class OffsetPolicy(Policy):
    """The dataset policy's ground truth with `offset` added to one joint from chunk step `step` on."""

    concurrent_safe = True

    def __init__(self, inner: DatasetPolicy, joint: int, step: int, offset: float) -> None:
        self.inner = inner
        self.spec = inner.spec
        self.joint, self.step, self.offset = joint, step, offset

    def check(self, obs: ObservationInput) -> None:
        self.inner.check(obs)

    def infer(self, obs: ObservationInput, noise_seed: int | None = None) -> PolicyOutput:
        out = self.inner.infer(obs, noise_seed)
        actions = out.actions.copy()
        actions[self.step :, self.joint] += np.float32(self.offset)
        return PolicyOutput(actions=actions, norm_report=out.norm_report, warnings=out.warnings)


@contextmanager
def serve(policy: Policy) -> Iterator[str]:
    server = PolicyServer(policy, ServerConfig(host="127.0.0.1", port=0))
    server.start()
    try:
        yield f"127.0.0.1:{server.port}"
    finally:
        server.stop(grace=0.2)


def dataset_policy(path: Path = SAMPLE_DATASET) -> DatasetPolicy:
    return DatasetPolicy(DatasetPolicyConfig(dataset=path, action_horizon=HORIZON))


@pytest.fixture(scope="module")
def ds() -> Dataset:
    return sample_dataset()


@pytest.fixture(scope="module")
def exact_server() -> Iterator[str]:
    with serve(dataset_policy()) as target:
        yield target


@pytest.fixture(scope="module")
def offset_server() -> Iterator[str]:
    with serve(OffsetPolicy(dataset_policy(), JOINT, STEP, OFFSET)) as target:
        yield target


def test_dataset_policy_gives_zero_error_on_every_joint_and_step(ds: Dataset, exact_server: str) -> None:
    source = ServerSource(exact_server, noise_seed=0)
    try:
        result = run_oracle(ds, source, OracleOptions(stride=13, batch_size=5))
        pair = frame_chunks(ds, source, 1, 120)
        one_episode = run_oracle(ds, source, OracleOptions(episodes=(2,), stride=50))
        with pytest.raises(OracleError, match=r"OracleOptions.episodes: \[9\] not in the dataset"):
            run_oracle(ds, source, OracleOptions(episodes=(2, 9)))
    finally:
        source.close()
    sampled = sum(len(range(0, ds.episode_meta(e).length, 13)) for e in ds.episode_indices())
    assert result.frames == result.sampled == sampled and result.horizon == HORIZON and not result.failures
    assert result.normalized is not None and "q01/q99" in result.normalization
    for stats in (result.raw, result.normalized):
        for values in (stats.step_joint_l1, stats.step_joint_rms, stats.step_joint_bias, stats.joint_l1,
                       stats.first_l1, stats.frame_joint_l1, stats.padded_joint_l1):
            assert np.all(values == 0.0), values
    assert result.worst_frames == () and result.mean_first_l1 == 0.0
    assert result.warning_counts.get("chunk_padded", 0) > 0
    np.testing.assert_array_equal(result.jump, result.truth_jump)  # the dataset's own first action
    assert pair.valid == 5 and np.array_equal(pair.predicted, pair.truth)
    assert one_episode.located == ((2, 0), (2, 50), (2, 100))
    stored = result.chunk_pair(0, 13)
    np.testing.assert_array_equal(stored.truth, ds.episode(0).actions[13 : 13 + HORIZON])
    with pytest.raises(KeyError, match="episode 0 frame 1 was not compared"):
        result.chunk_pair(0, 1)


def test_offset_shows_on_its_joint_from_its_step(ds: Dataset, offset_server: str) -> None:
    source = ServerSource(offset_server, noise_seed=0)
    try:
        result = run_oracle(ds, source, OracleOptions(stride=11, max_frames=30))
    finally:
        source.close()
    raw = result.raw
    expected = np.zeros((HORIZON, len(result.action_names)))
    expected[STEP:, JOINT] = OFFSET
    np.testing.assert_allclose(raw.step_joint_l1, expected, rtol=0, atol=1e-6)
    np.testing.assert_allclose(raw.step_joint_bias, expected, rtol=0, atol=1e-6)  # the sign: +0.2
    assert np.all(np.delete(raw.step_joint_l1, JOINT, axis=1) == 0.0) and np.all(raw.step_joint_l1[:STEP] == 0.0)
    assert raw.first_l1[JOINT] == 0.0
    worst = result.worst_frames[0]
    assert worst.joint == "left_joint3" and worst.max_step >= STEP and worst.first_error == 0.0
    np.testing.assert_allclose(worst.max_error, OFFSET, atol=1e-6)

    # Normalized: the same offset scaled by 2 / (q99 - q01) of that joint (openpi epsilon: + 1e-6).
    assert result.normalized is not None
    stats = ds.info.stats
    assert stats is not None
    span = np.asarray(stats["action"]["q99"], np.float64) - np.asarray(stats["action"]["q01"], np.float64)
    np.testing.assert_allclose(result.normalized.step_joint_l1[STEP:, JOINT], 2 * OFFSET / span[JOINT], rtol=1e-4)
    ratio = result.normalized.joint_l1[JOINT] / raw.joint_l1[JOINT]
    np.testing.assert_allclose(ratio, 2.0 / span[JOINT], rtol=1e-4)
    assert np.all(np.delete(result.normalized.step_joint_l1, JOINT, axis=1) == 0.0)


def test_padded_rows_are_excluded_by_default_and_reported_apart(ds: Dataset, offset_server: str) -> None:
    last = ds.episode_meta(0).length - 1
    frames = ((0, last - 2), (1, 0))  # 3 real rows (the offset from step 4 lands only on padding), 12 real rows
    source = ServerSource(offset_server, noise_seed=0)
    try:
        excluded = run_oracle(ds, source, OracleOptions(frames=frames))
        included = run_oracle(ds, source, OracleOptions(frames=frames, padded_rows=PADDED_INCLUDE))
    finally:
        source.close()
    assert list(excluded.valid) == [3, HORIZON]
    assert list(excluded.raw.step_frames) == [2, 2, 2] + [1] * (HORIZON - 3)
    np.testing.assert_allclose(excluded.raw.frame_joint_l1[0, JOINT], 0.0)  # its offset rows are all padding
    padded_offset = OFFSET * (HORIZON - STEP) / (HORIZON - 3)  # padding is steps 3.., the offset from step 4
    np.testing.assert_allclose(excluded.raw.padded_joint_l1[JOINT], padded_offset, atol=1e-6)
    assert excluded.raw.padded_rows == HORIZON - 3
    np.testing.assert_allclose(excluded.raw.step_joint_l1[STEP:, JOINT], OFFSET, atol=1e-6)
    np.testing.assert_allclose(included.raw.frame_joint_l1[0, JOINT], OFFSET * (HORIZON - STEP) / HORIZON, atol=1e-6)
    assert list(included.raw.step_frames) == [2] * HORIZON


def test_names_must_match_by_name(tmp_path: Path, ds: Dataset) -> None:
    names = tuple(f"joint_{i}" for i in range(13)) + ("left_joint1",)
    other = write_lerobot(tmp_path / "renamed", yam_episodes(num=1), names=names)
    with serve(DatasetPolicy(DatasetPolicyConfig(dataset=other, action_horizon=HORIZON))) as target:
        source = ServerSource(target, noise_seed=0)
        try:
            with pytest.raises(OracleError, match=r"state names differ.*missing from the policy: \['left_joint2'"):
                run_oracle(ds, source, OracleOptions(max_frames=2))
        finally:
            source.close()
        rc, out = run_cli("oracle", "--dataset", str(SAMPLE_DATASET), "--server", target, "--no-progress")
    assert rc == 2, out


def test_cli_exit_codes_and_outputs(tmp_path: Path, exact_server: str, offset_server: str) -> None:
    out_dir = tmp_path / "exact"
    rc, out = run_cli("oracle", "--dataset", str(SAMPLE_DATASET), "--server", exact_server, "--episodes", "0,2-3",
                      "--stride", "20", "--out", str(out_dir), "--no-progress", "--fail-above", "0.01")
    assert rc == 0, out
    assert "**Mean first-action L1 0**" in out and "| left_joint1 | 0 | 0 | 0 | 0 | 0 | 0 | 0 |" in out
    assert {p.name for p in out_dir.iterdir()} == {"report.md", "results.json", "plots", "oracle_episode_0.rrd",
                                                   "oracle_episode_2.rrd", "oracle_episode_3.rrd"}
    assert {p.name for p in (out_dir / "plots").iterdir()} == {"error_vs_step.png", "error_over_frames.png"}

    shifted = OffsetPolicy(dataset_policy(), JOINT, 0, OFFSET)  # off from the first action: --fail-above trips
    with serve(shifted) as target:
        out_dir = tmp_path / "shifted"
        args = ["oracle", "--dataset", str(SAMPLE_DATASET), "--server", target, "--stride", "50", "--no-progress",
                "--out", str(out_dir)]
        rc_report, out_report = run_cli(*args)
        rc_fail, out_fail = run_cli(*args[:-2], "--max-frames", "2", "--fail-above", "0.01")
    assert rc_report == 0, out_report
    assert rc_fail == 1 and "above --fail-above 0.01" in out_fail, out_fail
    plots = {p.name for p in (out_dir / "plots").iterdir()}
    assert {"error_vs_step.png", "error_over_frames.png", "worst_frame_1.png"} <= plots
    for name in plots:
        assert (out_dir / "plots" / name).read_bytes()[:4] == b"\x89PNG"
    report = (out_dir / "report.md").read_text()
    assert "## Per chunk step" in report and "| left_joint3 | 0.2 |" in report
    # The rerun recording: dataset actions, the chunks as fans, and the offset as left_joint3's first-action error.
    content = read_rrd(out_dir / "oracle_episode_0.rrd")
    assert len(content["/joints/left_joint3/action"].values("Scalars:scalars")) > 100
    assert content.under("/chunks/left_joint3/oracle")
    errors = content["/signals/oracle_first_error_left_joint3"].values("Scalars:scalars")
    assert errors and np.allclose(np.ravel(errors), OFFSET, atol=1e-5)
    assert np.allclose(np.ravel(content["/signals/oracle_first_error_left_joint1"].values("Scalars:scalars")), 0)
