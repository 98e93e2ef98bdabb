"""NormalizationPipeline: named steps, asserted inputs/outputs, per-request reports, strict mode, degenerate dims."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from policy_norm import (
    GripperConfig,
    NormalizationConfig,
    NormalizationPipeline,
    NormRangeError,
    NormStatsError,
    StepError,
    make_bool_mask,
)
from policy_norm.stats import FeatureNormStats, NormStats, StatsSource
from protos import policy_pb2 as pb
from robot_client.yam_limits import yam_limits

ARM = ("joint1", "joint2", "joint3", "joint4", "joint5", "joint6", "gripper")
NAMES = tuple(f"{side}_{j}" for side in ("left", "right") for j in ARM)
LO = np.array([-1.0, 0.5, 0.4, -0.8, -0.6, -1.0, 0.0] * 2)
HI = np.array([1.0, 2.5, 2.4, 0.8, 0.6, 1.0, 1.0] * 2)
DELTA_LO = np.array([-0.2] * 6 + [0.0] + [-0.2] * 6 + [0.0])
DELTA_HI = np.array([0.2] * 6 + [1.0] + [0.2] * 6 + [1.0])
IN_ORDER = ("select_state", "normalize_state", "discretize_state", "pad_state")
OUT_ORDER = ("unpad_actions", "denormalize_actions", "delta_to_absolute", "gripper_convention", "robot_limits")


def _feat(lo: np.ndarray, hi: np.ndarray) -> FeatureNormStats:
    return FeatureNormStats(mean=(lo + hi) / 2, std=(hi - lo) / 4, q01=lo.copy(), q99=hi.copy(), min=lo - 0.1,
                            max=hi + 0.1)


def _stats(action_lo: np.ndarray = DELTA_LO, action_hi: np.ndarray = DELTA_HI) -> NormStats:
    return NormStats(_feat(LO, HI), _feat(action_lo, action_hi), StatsSource("test", "in memory"), epsilon="openpi")


def _config(**kw: object) -> NormalizationConfig:
    base: dict[str, object] = dict(
        state_names=NAMES, action_names=NAMES, action_delta_mask=make_bool_mask(6, -1, 6, -1), model_state_dim=32,
        model_action_dim=32, mode="quantile", action_horizon=10, joint_limits=yam_limits(NAMES),
    )
    base.update(kw)
    return NormalizationConfig(**base)  # type: ignore[arg-type]


def _pipeline(**kw: object) -> NormalizationPipeline:
    return NormalizationPipeline(_config(**kw), _stats())


def _mid_state() -> npt.NDArray[np.float32]:
    out: npt.NDArray[np.float32] = ((LO + HI) / 2).astype(np.float32)
    return out


def _readonly(arr: np.ndarray) -> np.ndarray:
    arr.setflags(write=False)
    return arr


def test_prepare_outputs_and_report() -> None:
    p = _pipeline()
    state = _readonly(_mid_state())
    inputs, report = p.prepare(state)
    assert inputs.state.shape == (32,) and inputs.state.dtype == np.float32
    assert np.all(inputs.state[14:] == 0.0)  # padded dims exactly 0
    assert np.allclose(inputs.state[:14], 0.0, atol=1e-5)
    assert inputs.state_bins is not None and inputs.state_bins.dtype == np.int64
    assert set(inputs.state_bins.tolist()) <= {127, 128}
    assert np.array_equal(inputs.robot_state, state) and inputs.robot_state is not state
    assert report.step_names == IN_ORDER and report.warnings == () and report.state_bins_out_of_range == 0
    assert [d.name for d in report.state] == list(NAMES)
    proto = report.to_proto()
    assert isinstance(proto, pb.NormReport) and list(proto.steps) == list(IN_ORDER) and proto.mode == "quantile"


def test_state_below_range_keeps_the_trainers_bin_minus_one_and_is_reported() -> None:
    p = _pipeline()
    state = _mid_state()
    state[3] = LO[3] - 0.5  # left_joint4 well below q01
    inputs, report = p.prepare(state)
    assert inputs.state_bins is not None and inputs.state_bins[3] == -1  # what openpi and LeRobot emit
    assert inputs.normalized_state[3] < -1  # the value itself is not altered either
    assert report.state_bins_out_of_range == 1 and report.state[3].clipped_count == 0
    assert report.state[3].fraction_out_of_range == 1.0 and report.state[3].normalized_min < -1
    (warning,) = report.warnings
    assert warning.code == "state_out_of_range" and warning.field == "observation.state[3] (left_joint4)"
    assert "its prompt bin is -1" in warning.message
    assert f"robot value {LO[3] - 0.5:.4g}" in warning.message
    assert "1 value(s) below -1 in bin -1" in report.step("discretize_state").note


def test_strict_mode_rejects_naming_the_joint() -> None:
    p = _pipeline(strict=True)
    state = _mid_state()
    state[8] = HI[8] + 1.0
    with pytest.raises(NormRangeError, match=r"observation.state\[8\] \(right_joint2\)"):
        p.prepare(state)
    chunk = np.zeros((10, 32), dtype=np.float32)
    chunk[:, 1] = 3.0  # left_joint2 far outside [-1, 1] on the whole chunk
    with pytest.raises(NormRangeError, match=r"actions\[1\] \(left_joint2\)"):
        p.finish(chunk, _mid_state())


def test_finish_delta_to_absolute_gripper_and_limits() -> None:
    p = _pipeline()
    state = _readonly(_mid_state())
    chunk = np.zeros((10, 32), dtype=np.float32)  # normalized 0 = mid of the action stats
    chunk[:, 6] = 1.5  # left gripper beyond its range -> clipped to 1
    chunk[0, 1] = 40.0  # left_joint2 delta = 0.2 * 40 = 8 rad -> past its limit
    chunk = _readonly(chunk)
    actions, report = p.finish(chunk, state)
    assert actions.shape == (10, 14) and actions.dtype == np.float32
    np.testing.assert_allclose(actions[1:, 0], state[0], atol=1e-5)  # delta 0 -> the chunk-start state
    assert np.all(actions[:, 6] == 1.0)
    assert actions[0, 1] == pytest.approx(3.66519)  # YAM joint2 upper limit (the robot config's)
    assert report.step_names == OUT_ORDER
    codes = {(w.code, w.field) for w in report.warnings}
    assert ("gripper_clipped", "actions[6] (left_gripper)") in codes
    assert ("action_limit_clipped", "actions[1] (left_joint2)") in codes
    assert report.actions[6].clipped_count == 10 and report.actions[1].clipped_count == 1
    assert "12 delta dim(s)" in report.step("delta_to_absolute").note


def test_nothing_to_do_is_said_not_silent() -> None:
    p = NormalizationPipeline(
        _config(action_delta_mask=(False,) * 14, model_state_dim=14, model_action_dim=14, joint_limits=None,
                gripper=GripperConfig(convention="none"), state_bins=0),
        _stats(LO, HI),
    )
    inputs, in_report = p.prepare(_mid_state())
    assert inputs.state_bins is None
    assert "disabled (state_bins = 0)" in in_report.step("discretize_state").note
    assert "nothing to pad" in in_report.step("pad_state").note
    _, out_report = p.finish(np.zeros((4, 14), dtype=np.float32), _mid_state())
    assert "nothing to unpad" in out_report.step("unpad_actions").note
    assert "all false" in out_report.step("delta_to_absolute").note
    assert "convention 'none'" in out_report.step("gripper_convention").note
    assert "no joint limits configured" in out_report.step("robot_limits").note
    identity = NormalizationPipeline(_config(mode="identity"), _stats())
    assert "identity mode" in identity.prepare(_mid_state())[1].step("normalize_state").note


@pytest.mark.parametrize(("value", "match"), [
    (np.zeros(13, dtype=np.float32), r"select_state: state must have shape \[14\], got \[13\]"),
    (np.zeros(14, dtype=np.float64), r"select_state: state must be float32, got float64"),
    ([0.0] * 14, r"must be a numpy array, got list"),
])
def test_bad_state_is_refused(value: object, match: str) -> None:
    with pytest.raises(StepError, match=match):
        _pipeline().prepare(value)


def test_non_finite_values_name_the_joint() -> None:
    state = _mid_state()
    state[13] = np.nan
    with pytest.raises(StepError, match=r"state\[13\] \(right_gripper\) is nan"):
        _pipeline().prepare(state)
    chunk = np.zeros((5, 32), dtype=np.float32)
    chunk[2, 4] = np.inf
    with pytest.raises(StepError, match=r"unpad_actions: model actions\[4\] \(left_joint5\) at row 2 is inf"):
        _pipeline().finish(chunk, _mid_state())
    with pytest.raises(StepError, match=r"model actions must have shape \[N, 32\], got \[5, 14\]"):
        _pipeline().finish(np.zeros((5, 14), dtype=np.float32), _mid_state())


def test_state_by_name_is_reordered_and_checked() -> None:
    p = _pipeline()
    state = _mid_state()
    order = list(reversed(range(14)))
    shuffled = np.ascontiguousarray(state[order])
    inputs, report = p.prepare(shuffled, [NAMES[i] for i in order])
    assert np.array_equal(inputs.robot_state, state)
    assert "reordered" in report.step("select_state").note
    with pytest.raises(StepError, match=r"lacks state joints \['right_gripper'\]"):
        p.prepare(shuffled[1:], [NAMES[i] for i in order][1:])


def test_padded_output_is_checked() -> None:
    chunk = np.zeros((5, 32), dtype=np.float32)
    chunk[:, 20] = 2.0
    _, report = _pipeline().finish(chunk, _mid_state())
    assert any(w.code == "padded_output_nonzero" for w in report.warnings)


def test_degenerate_dims_by_policy() -> None:
    lo, hi = DELTA_LO.copy(), DELTA_HI.copy()
    lo[6] = hi[6] = 1.0  # left gripper never moved in the training data
    stats = NormStats(_feat(LO, HI), _feat(lo, hi), StatsSource("test", "in memory"), epsilon="openpi")
    with pytest.raises(NormStatsError, match=r"degenerate dims .*actions\[6\] \(left_gripper\)"):
        NormalizationPipeline(_config(), stats)
    zero = NormalizationPipeline(_config(degenerate_policy="zero"), stats)
    actions, report = zero.finish(np.full((3, 32), 0.7, dtype=np.float32), _mid_state())
    assert np.all(actions[:, 6] == 1.0)  # emitted as its constant value
    assert "degenerate dims ['left_gripper']: zero" in report.step("denormalize_actions").note
    passthrough = NormalizationPipeline(_config(degenerate_policy="passthrough"), stats)
    actions, _ = passthrough.finish(np.full((3, 32), 0.7, dtype=np.float32), _mid_state())
    assert np.allclose(actions[:, 6], 0.7)
    assert [d.name for d in zero.degenerate] == ["left_gripper"]


def test_stats_that_do_not_fit_the_robot_are_refused() -> None:
    short = NormStats(_feat(LO[:13], HI[:13]), _feat(DELTA_LO, DELTA_HI), StatsSource("test", "f.json"),
                      epsilon="openpi")
    with pytest.raises(NormStatsError, match=r"state stats have 13 dims, the robot's state has 14"):
        NormalizationPipeline(_config(), short)
    lo, hi = LO.copy(), HI.copy()
    lo[2], hi[2] = 2.0, 1.0
    inverted = NormStats(_feat(lo, hi), _feat(DELTA_LO, DELTA_HI), StatsSource("test", "f.json"), epsilon="openpi")
    with pytest.raises(NormStatsError, match=r"state.q99 < state.q01 at state\[2\]"):
        NormalizationPipeline(_config(), inverted)
    quantile_only = NormStats(FeatureNormStats(q01=LO, q99=HI), FeatureNormStats(q01=DELTA_LO, q99=DELTA_HI),
                              StatsSource("test", "f.json"), epsilon="openpi")
    with pytest.raises(NormStatsError, match=r"mode 'zscore' needs state.mean and state.std.*quantile stats cannot "
                                             r"be used as z-score"):
        NormalizationPipeline(_config(mode="zscore"), quantile_only)


@settings(max_examples=60, deadline=None)
@given(hnp.arrays(np.float64, (6, 14), elements=st.floats(-1.2, 1.2)), st.sampled_from(["quantile", "zscore"]),
       st.sampled_from(["openpi", "lerobot"]))
def test_encode_then_finish_round_trips(normalized: np.ndarray, mode: str, epsilon: str) -> None:
    """Robot-unit actions inside the limits come back through encode_actions -> finish unchanged."""
    p = NormalizationPipeline(_config(mode=mode, epsilon=epsilon), _stats())
    state = _mid_state()
    robot = np.clip(p.resolved.actions.unnormalize(normalized) + np.where(p.config.action_delta_mask, state, 0.0),
                    [yam_limits(NAMES)[n][0] for n in NAMES], [yam_limits(NAMES)[n][1] for n in NAMES])
    robot32 = robot.astype(np.float32)
    encoded = p.encode_actions(robot32, state)
    assert encoded.shape == (6, 32) and np.all(encoded[:, 14:] == 0)
    back, _ = p.finish(encoded, state)
    np.testing.assert_allclose(back, robot32, atol=2e-6)


def test_report_merge_and_warnings_proto() -> None:
    p = _pipeline()
    state = _mid_state()
    state[0] = 5.0
    inputs, in_report = p.prepare(state)
    _, out_report = p.finish(np.zeros((4, 32), dtype=np.float32), inputs.robot_state)
    merged = in_report.merged(out_report)
    assert merged.step_names == IN_ORDER + OUT_ORDER
    proto = merged.to_proto()
    assert len(proto.state) == 14 and len(proto.actions) == 14 and proto.state_bins_out_of_range == 1
    warnings = merged.warnings_proto()
    assert [(w.code, w.field) for w in warnings] == [
        ("state_out_of_range", "observation.state[0] (left_joint1)"),
        # the chunk-start state (5 rad) plus a zero delta is past joint1's limit: clipped and said so
        ("action_limit_clipped", "actions[0] (left_joint1)"),
    ]


def test_config_replace_keeps_validation() -> None:
    with pytest.raises(ValueError, match="degenerate_policy must be one of"):
        replace(_config(), degenerate_policy="ignore")
