"""The pipeline as data: step lists built from the config, one step shape with a record from every step, one mode
enum with one formula table, and one non-finite locator shared by the pipeline and the server."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from policy_norm import (
    MODE_NAMES,
    NormalizationConfig,
    NormalizationPipeline,
    NormConfigError,
    NormMode,
    NormStatsError,
    StepError,
    parse_mode,
    write_yam_norm_stats,
)
from policy_norm.finite import dim_label, first_non_finite
from policy_norm.numeric import MODE_FORMULAS, normalize
from policy_norm.report import StepRecord
from policy_norm.spec import CameraSpec, FeatureStatsSpec, NormStatsSpec, PolicySpec, SpecError
from policy_norm.stats import FeatureNormStats, NormStats, StatsSource
from policy_norm.steps import StepData, run_steps
from policy_server.core import InferenceCore
from policy_server.policy import PolicyError, PolicyIdentity

NAMES = ("j1", "j2", "gripper")
LO, HI = np.array([-1.0, 0.0, 0.0]), np.array([1.0, 2.0, 1.0])
IN_ORDER = ("select_state", "normalize_state", "discretize_state", "pad_state")
OUT_ORDER = ("unpad_actions", "denormalize_actions", "delta_to_absolute", "gripper_convention", "robot_limits")
INVERSE_ORDER = ("gripper_to_model", "absolute_to_delta", "normalize_actions", "pad_actions")


def _pipeline(mode: str = "quantile") -> NormalizationPipeline:
    feat = FeatureNormStats(mean=(LO + HI) / 2, std=(HI - LO) / 4, q01=LO.copy(), q99=HI.copy())
    config = NormalizationConfig(
        state_names=NAMES, action_names=NAMES, action_delta_mask=(True, True, False), model_state_dim=5,
        model_action_dim=6, mode=NormMode(mode), joint_limits={"j1": (-0.5, 0.5)},
    )
    return NormalizationPipeline(config, NormStats(feat, feat, StatsSource("test", "in memory"), epsilon="openpi"))


def _state() -> np.ndarray:
    return np.array([0.9, 1.0, 0.5], dtype=np.float32)


def test_pipeline_built_from_a_config_lists_its_steps_in_order() -> None:
    steps = _pipeline().steps
    assert tuple(s.name for s in steps.inputs) == IN_ORDER
    assert tuple(s.name for s in steps.outputs) == OUT_ORDER
    assert tuple(s.name for s in steps.inverse) == INVERSE_ORDER
    # The reports list exactly the steps that ran, in the same order.
    p = _pipeline()
    inputs, in_report = p.prepare(_state())
    _, out_report = p.finish(np.zeros((4, 6), dtype=np.float32), inputs.robot_state)
    assert in_report.step_names == IN_ORDER and out_report.step_names == OUT_ORDER


@pytest.mark.parametrize("mode", list(NormMode))
def test_every_step_returns_a_record(mode: NormMode) -> None:
    p = _pipeline(mode)
    starts = {
        "inputs": StepData(_state()),
        "outputs": StepData(np.full((4, 6), 0.3, dtype=np.float32), robot_state=_state()),
        "inverse": StepData(np.full((4, 3), 0.2, dtype=np.float32), robot_state=_state()),
    }
    for label, steps in (("inputs", p.steps.inputs), ("outputs", p.steps.outputs), ("inverse", p.steps.inverse)):
        data = starts[label]
        for step in steps:
            data, record = step.run(data)
            assert isinstance(record, StepRecord) and record.name == step.name and record.note, (label, step.name)
        _, records = run_steps(steps, starts[label])
        assert [r.name for r in records] == [s.name for s in steps]


def test_products_travel_in_the_data_not_in_step_attributes() -> None:
    p = _pipeline()
    state = _state()
    state[0] = 5.0  # far above q99: its prompt bin saturates
    data, _ = run_steps(p.steps.inputs, StepData(state))
    assert data.state_bins is not None and data.state_bins[0] == 255
    (clips,) = data.clips
    assert clips.step == "discretize_state" and clips.counts.tolist() == [1, 0, 0]
    assert clips.notes[0] == "its prompt bin is the top bin 255"
    chunk = np.zeros((4, 6), dtype=np.float32)
    chunk[:, 0] = 1.5  # j1: delta +1.5 from 0.9, past its 0.5 limit (and outside [-1, 1] in model space)
    chunk[:, 2] = 3.0  # gripper far above 1
    data, _ = run_steps(p.steps.outputs, StepData(chunk, robot_state=_state()))
    assert [c.step for c in data.clips] == ["gripper_convention", "robot_limits"]
    assert data.clip_counts(3).tolist() == [4, 0, 4]
    assert data.model_space is not None and data.model_space.shape == (4, 3)
    _, report = p.finish(chunk, _state())
    assert [(w.code, w.field) for w in report.warnings] == [
        ("action_out_of_range", "actions[0] (j1)"),
        ("action_limit_clipped", "actions[0] (j1)"),
        ("action_out_of_range", "actions[2] (gripper)"),
        ("gripper_clipped", "actions[2] (gripper)"),
    ]
    assert "clipped to the joint limits [-0.5, 0.5] (worst 1.9 beyond)" in report.warnings[1].message


def test_every_mode_has_its_formulas_in_the_table() -> None:
    assert set(MODE_FORMULAS) == set(NormMode)
    assert MODE_NAMES == tuple(m.value for m in NormMode)
    wire: str = "quantile"
    assert NormMode.QUANTILE == wire and f"{NormMode.ZSCORE}" == "zscore"  # still its string on the wire
    assert json.dumps({"mode": NormMode.IDENTITY}) == '{"mode": "identity"}'


ALLOWED = r"\('quantile', 'zscore', 'identity'\)"


def test_unknown_mode_string_is_refused_naming_the_allowed_modes(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=rf"mode must be one of {ALLOWED}, got 'minmax'"):
        parse_mode("minmax")
    with pytest.raises(NormConfigError, match=rf"normalization.mode must be one of {ALLOWED}.*got 'minmax'"):
        NormalizationConfig.from_dict({"state_names": ["a"], "action_names": ["a"], "action_delta_mask": [False],
                                       "model_state_dim": 1, "model_action_dim": 1, "mode": "minmax"})
    with pytest.raises(NormConfigError, match=rf"mode must be one of {ALLOWED}"):
        NormalizationConfig(state_names=("a",), action_names=("a",), action_delta_mask=(False,), model_state_dim=1,
                            model_action_dim=1, mode="QUANTILE")  # type: ignore[arg-type]
    feat = FeatureNormStats(q01=np.zeros(1), q99=np.ones(1))
    with pytest.raises(NormStatsError, match=rf"test stats mem: mode must be one of {ALLOWED}, got 'min_max'"):
        NormStats(feat, feat, StatsSource("test", "mem"), mode="min_max")  # type: ignore[arg-type]
    with pytest.raises(NormStatsError, match=rf"mode must be one of {ALLOWED}"):
        write_yam_norm_stats(tmp_path / "s.json", NormStats(feat, feat, StatsSource("test", "mem")),
                             "mean_std", "openpi")  # type: ignore[arg-type]
    with pytest.raises(SpecError, match=rf"norm_stats.mode must be one of {ALLOWED}, got 'z'"):
        NormStatsSpec("z", FeatureStatsSpec(), FeatureStatsSpec())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=rf"mode must be one of {ALLOWED}"):
        normalize(np.zeros(1), "minmax", np.zeros(1), np.ones(1), "openpi")
    # Strings from files and callers still work, and become the enum.
    cfg = NormalizationConfig(state_names=("a",), action_names=("a",), action_delta_mask=(False,), model_state_dim=1,
                              model_action_dim=1, mode="zscore")  # type: ignore[arg-type]
    assert cfg.mode is NormMode.ZSCORE and cfg.to_dict()["mode"] == "zscore"


def test_first_non_finite_locates_names_and_counts() -> None:
    assert first_non_finite(np.zeros((2, 3), dtype=np.float32)) is None
    chunk = np.zeros((4, 3), dtype=np.float32)
    chunk[2, 1] = np.inf
    chunk[3, 0] = np.nan
    bad = first_non_finite(chunk)
    assert bad is not None and bad.index == (2, 1) and bad.row == 2 and bad.dim == 1 and bad.count == 2
    assert bad.where("actions", NAMES) == "actions[1] (j2) at row 2"
    assert bad.describe("actions", NAMES) == "actions[1] (j2) at row 2 is inf (2 non-finite value(s))"
    vec = np.array([0.0, 0.0, 0.0, -np.inf])
    bad = first_non_finite(vec)
    assert bad is not None and bad.row is None and bad.where("state", NAMES) == "state[3] (padded dim)"
    assert bad.where("state") == "state at (3,)" and dim_label(NAMES, 2) == "[2] (gripper)"
    with pytest.raises(StepError, match=r"encode_actions: actions\[1\] \(j2\) at row 2 is inf"):
        _pipeline().encode_actions(chunk, _state())


class _SpecOnly:
    """Just enough of a Policy for the server core to check a chunk against its spec."""

    concurrent_safe = True
    supports_batching = False

    def __init__(self) -> None:
        self.spec = PolicySpec(
            policy_type="test", model_id="m", weight_hash="h", action_horizon=4, state_names=NAMES,
            action_names=NAMES, cameras=(CameraSpec("top", 8, 8),), control_fps=10.0,
            action_delta_mask=(False,) * 3, action_gripper_mask=(False, False, True),
        )

    def identity(self) -> PolicyIdentity:
        return PolicyIdentity(weight_hash=self.spec.weight_hash)


def test_server_refuses_a_non_finite_chunk_naming_step_and_joint() -> None:
    core = InferenceCore(_SpecOnly(), max_request_bytes=1 << 20)  # type: ignore[arg-type]
    chunk = np.zeros((4, 3), dtype=np.float32)
    core._check_actions(chunk)
    chunk[1, 2] = np.nan
    chunk[3, 0] = np.inf
    with pytest.raises(PolicyError, match=r"produced a non-finite action at step 1, dim 2 \(gripper\); 2 non-finite "
                                          r"values in the chunk"):
        core._check_actions(chunk)
