"""Loading norm stats from real files: openpi norm_stats.json, LeRobot processor safetensors, LeRobot stats.json,
our own format; checkpoint discovery rules; the policy config; digest and spec conversion."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from policy_norm import (
    NormalizationConfig,
    NormConfigError,
    NormStatsError,
    build_pipeline,
    find_openpi_norm_stats,
    load_checkpoint_stats,
    read_lerobot_processor_stats,
    read_lerobot_stats_json,
    read_openpi_norm_stats,
    read_stats_file,
    read_yam_norm_stats,
    write_yam_norm_stats,
)
from policy_norm.spec import NormStatsSpec
from policy_norm.stats import FeatureNormStats, NormStats, StatsSource

NAMES = ("j1", "j2", "gripper")
MEAN, STD = [0.5, 1.0, 0.5], [0.2, 0.3, 0.4]
Q01, Q99 = [0.1, 0.4, 0.0], [0.9, 1.6, 1.0]


def _openpi_file(path: Path, q: bool = True) -> Path:
    """norm_stats.json as openpi's NormStats.model_dump_json(indent=2) writes it."""
    entry = {"mean": MEAN, "std": STD, "q01": Q01 if q else None, "q99": Q99 if q else None}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"norm_stats": {"state": entry, "actions": entry}}, indent=2))
    return path


def _config(**kw: object) -> NormalizationConfig:
    base: dict[str, object] = dict(state_names=NAMES, action_names=NAMES, action_delta_mask=(True, True, False),
                                   model_state_dim=8, model_action_dim=8)
    base.update(kw)
    return NormalizationConfig(**base)  # type: ignore[arg-type]


def _lerobot_checkpoint(root: Path, norm: str = "QUANTILES", action_q99: list[float] | None = None,
                        features: bool = True, step: int = 2) -> Path:
    """policy_preprocessor.json + step safetensors, policy_postprocessor.json + unnormalizer safetensors."""
    root.mkdir(parents=True, exist_ok=True)
    feats = {"observation.state": {"type": "STATE", "shape": [3]}, "action": {"type": "ACTION", "shape": [3]},
             "observation.images.top": {"type": "VISUAL", "shape": [3, 224, 224]}} if features else {}
    norm_map = {"VISUAL": "IDENTITY", "STATE": norm, "ACTION": norm}
    tensors: dict[str, np.ndarray] = {}
    for feat in ("observation.state", "action"):
        for stat, vals in (("mean", MEAN), ("std", STD), ("q01", Q01), ("q99", Q99), ("min", Q01), ("max", Q99)):
            tensors[f"{feat}.{stat}"] = np.asarray(vals, dtype=np.float32)
    tensors["observation.images.top.mean"] = np.zeros((3, 1, 1), dtype=np.float32)
    pre_steps: list[dict[str, object]] = [{"registry_name": "rename_observations_processor", "config": {}}] * step
    normalizer: dict[str, object] = {
        "registry_name": "normalizer_processor",
        "config": {"eps": 1e-8, "features": feats, "norm_map": norm_map},
    }
    if features:  # lerobot/pi05_base has an empty normalizer and no state file
        normalizer["state_file"] = f"policy_preprocessor_step_{step}_normalizer_processor.safetensors"
    pre_steps = list(pre_steps) + [normalizer]
    (root / "policy_preprocessor.json").write_text(json.dumps({"name": "policy_preprocessor", "steps": pre_steps}))
    if features:
        save_file(tensors, str(root / f"policy_preprocessor_step_{step}_normalizer_processor.safetensors"))
    post = {k: v.copy() for k, v in tensors.items() if k.startswith("action.")}
    if action_q99 is not None:
        post["action.q99"] = np.asarray(action_q99, dtype=np.float32)
    save_file(post, str(root / "policy_postprocessor_step_0_unnormalizer_processor.safetensors"))
    (root / "policy_postprocessor.json").write_text(json.dumps({"name": "policy_postprocessor", "steps": [
        {"registry_name": "unnormalizer_processor",
         "config": {"eps": 1e-8, "features": {"action": {"type": "ACTION", "shape": [3]}}, "norm_map": norm_map},
         "state_file": "policy_postprocessor_step_0_unnormalizer_processor.safetensors"},
        {"registry_name": "device_processor", "config": {"device": "cpu"}},
    ]}))
    return root


# ---- openpi ----------------------------------------------------------------------------------------------


def test_openpi_norm_stats_json(tmp_path: Path) -> None:
    stats = read_openpi_norm_stats(_openpi_file(tmp_path / "norm_stats.json"))
    assert stats.state.dim == 3 and stats.mode is None and stats.epsilon == "openpi"
    assert stats.actions.q99 is not None and stats.actions.q99.tolist() == Q99
    no_q = read_openpi_norm_stats(_openpi_file(tmp_path / "b" / "norm_stats.json", q=False))
    assert no_q.state.q01 is None  # openpi's q01/q99 are optional


@pytest.mark.parametrize(("body", "match"), [
    ({"state": {}}, r"norm_stats"),
    ({"norm_stats": {"state": {"mean": [0.0], "std": [1.0]}}}, r"norm_stats.actions missing"),
    ({"norm_stats": {"state": {"mean": [0.0]}, "actions": {"mean": [0.0], "std": [1.0]}}},
     r"norm_stats.state.std missing"),
    ({"norm_stats": {"state": {"mean": [0.0, 1.0], "std": [1.0]}, "actions": {"mean": [0.0], "std": [1.0]}}},
     r"norm_stats.state.*1-D of one length"),
    ({"norm_stats": {"state": {"mean": [0.0], "std": ["x"]}, "actions": {"mean": [0.0], "std": [1.0]}}},
     r"norm_stats.state.std: not a list of numbers"),
])
def test_openpi_errors_name_the_field(tmp_path: Path, body: dict[str, object], match: str) -> None:
    path = tmp_path / "norm_stats.json"
    path.write_text(json.dumps(body))
    with pytest.raises(NormStatsError, match=match):
        read_openpi_norm_stats(path)


def test_non_finite_stats_are_refused_naming_the_dim(tmp_path: Path) -> None:
    path = tmp_path / "norm_stats.json"
    path.write_text('{"norm_stats": {"state": {"mean": [0, NaN], "std": [1, 1]}, '
                    '"actions": {"mean": [0, 0], "std": [1, 1]}}}')
    with pytest.raises(NormStatsError, match=r"mean\[1\] is nan"):
        read_openpi_norm_stats(path)


def test_stats_at_the_padded_width_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "ck" / "assets" / "yam" / "norm_stats.json"
    path.parent.mkdir(parents=True)
    entry = {"mean": [0.0] * 32, "std": [1.0] * 32, "q01": [-1.0] * 32, "q99": [1.0] * 32}
    path.write_text(json.dumps({"norm_stats": {"state": entry, "actions": entry}}))
    with pytest.raises(NormStatsError, match=r"state stats have 32 dims, the robot's state has 3 .*padded"):
        build_pipeline(tmp_path / "ck", _config(mode="quantile"))


def test_asset_discovery_rules(tmp_path: Path) -> None:
    ckpt = tmp_path / "ckpt"
    with pytest.raises(NormStatsError, match="no <asset_id>/norm_stats.json"):
        find_openpi_norm_stats(ckpt)
    _openpi_file(ckpt / "assets" / "yam" / "norm_stats.json")
    assert find_openpi_norm_stats(ckpt).parent.name == "yam"  # the only one
    _openpi_file(ckpt / "assets" / "trossen" / "norm_stats.json")
    with pytest.raises(NormStatsError, match=r"several assets.*\['trossen', 'yam'\]"):
        find_openpi_norm_stats(ckpt)
    assert find_openpi_norm_stats(ckpt, "trossen").parent.name == "trossen"
    with pytest.raises(NormStatsError, match=r"asset_id 'droid'.*\['trossen', 'yam'\]"):
        find_openpi_norm_stats(ckpt, "droid")
    with pytest.raises(NormConfigError, match="single folder name"):
        find_openpi_norm_stats(ckpt, "../yam")


# ---- LeRobot processor files -----------------------------------------------------------------------------


def test_lerobot_processor_safetensors(tmp_path: Path) -> None:
    stats = read_lerobot_processor_stats(_lerobot_checkpoint(tmp_path / "ck"))
    assert stats.mode == "quantile" and stats.epsilon == "lerobot"
    assert stats.state.q01 is not None and np.allclose(stats.state.q01, Q01)
    assert stats.actions.std is not None and np.allclose(stats.actions.std, STD)
    assert "step 2" in stats.source.detail
    z = read_lerobot_processor_stats(_lerobot_checkpoint(tmp_path / "z", norm="MEAN_STD", step=3))
    assert z.mode == "zscore"


def test_lerobot_processor_refusals(tmp_path: Path) -> None:
    with pytest.raises(NormStatsError, match="no features .*pi05_base"):
        read_lerobot_processor_stats(_lerobot_checkpoint(tmp_path / "base", features=False))
    with pytest.raises(NormStatsError, match=r"action.q99 differs from the preprocessor's copy"):
        read_lerobot_processor_stats(_lerobot_checkpoint(tmp_path / "diff", action_q99=[1.0, 1.0, 1.0]))
    with pytest.raises(NormStatsError, match=r"norm_map.STATE = 'MIN_MAX' is not supported"):
        read_lerobot_processor_stats(_lerobot_checkpoint(tmp_path / "mm", norm="MIN_MAX"))
    ck = _lerobot_checkpoint(tmp_path / "gone")
    (ck / "policy_postprocessor_step_0_unnormalizer_processor.safetensors").unlink()
    with pytest.raises(NormStatsError, match=r"unnormalizer_processor.*stats file .* does not exist"):
        read_lerobot_processor_stats(ck)


def test_lerobot_checkpoint_builds_a_pipeline_with_its_recorded_mode(tmp_path: Path) -> None:
    ckpt = _lerobot_checkpoint(tmp_path / "ck")
    pipeline = build_pipeline(ckpt, _config(mode=None, state_bins=0))
    assert pipeline.mode == "quantile" and pipeline.epsilon == "lerobot"
    with pytest.raises(NormConfigError, match="mode conflict.*'zscore'.*'quantile'"):
        build_pipeline(ckpt, _config(mode="zscore"))


# ---- LeRobot dataset stats.json and ours -----------------------------------------------------------------


def test_lerobot_stats_json_and_content_detection(tmp_path: Path) -> None:
    path = tmp_path / "stats.json"
    path.write_text(json.dumps({
        "observation.state": {"mean": MEAN, "std": STD, "min": Q01, "max": Q99, "q01": Q01, "q99": Q99,
                              "count": [100]},
        "action": {"mean": MEAN, "std": STD, "q01": Q01, "q99": Q99, "count": [100]},
    }))
    stats = read_lerobot_stats_json(path, NAMES, NAMES)
    assert stats.state.names == NAMES and stats.state.count == 100 and stats.epsilon == "lerobot"
    assert read_stats_file(path).source.kind == "lerobot-dataset"
    assert read_stats_file(_openpi_file(tmp_path / "o.json")).source.kind == "openpi"
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(NormStatsError, match="not a norm stats file"):
        read_stats_file(tmp_path / "x.json")


def test_own_format_round_trip(tmp_path: Path) -> None:
    feat = FeatureNormStats(mean=np.array(MEAN), std=np.array(STD), q01=np.array(Q01), q99=np.array(Q99),
                            count=10, names=NAMES)
    stats = NormStats(feat, feat, StatsSource("yam", "mem"), action_delta_mask=(True, True, False),
                      provenance={"dataset": "d"})
    path = write_yam_norm_stats(tmp_path / "s.json", stats, "quantile", "openpi", action_horizon=50)
    back = read_yam_norm_stats(path)
    assert back.mode == "quantile" and back.epsilon == "openpi" and back.action_delta_mask == (True, True, False)
    assert back.state.names == NAMES and back.provenance["dataset"] == "d"
    assert back.digest("quantile") == stats.digest("quantile")
    raw = json.loads(path.read_text())
    raw.pop("mode")
    path.write_text(json.dumps(raw))
    with pytest.raises(NormStatsError, match="'mode' must be one of"):
        read_yam_norm_stats(path)


def test_names_are_checked_and_reordered(tmp_path: Path) -> None:
    feat = FeatureNormStats(q01=np.array([0.0, 1.0, 2.0]), q99=np.array([1.0, 2.0, 3.0]), names=("gripper", "j1", "j2"))
    stats = NormStats(feat, feat, StatsSource("yam", "mem"), mode="quantile", epsilon="openpi")
    from policy_norm import NormalizationPipeline

    p = NormalizationPipeline(_config(), stats)
    assert p.resolved.state.a.tolist() == [1.0, 2.0, 0.0]  # stats now in the robot's joint order
    assert p.to_spec().state.q01 == (1.0, 2.0, 0.0)  # and so is what PolicyMetadata advertises
    assert any("reordered by joint name" in n for n in p.notes)
    bad = FeatureNormStats(q01=np.zeros(3), q99=np.ones(3), names=("j1", "j2", "elbow"))
    with pytest.raises(NormStatsError, match=r"missing \['gripper'\], unexpected \['elbow'\]"):
        NormalizationPipeline(_config(), NormStats(bad, bad, StatsSource("yam", "mem"), "quantile", "openpi"))


# ---- checkpoint dirs and policy config -------------------------------------------------------------------


def test_checkpoint_dir_with_policy_config(tmp_path: Path) -> None:
    ckpt = tmp_path / "ckpt"
    _openpi_file(ckpt / "assets" / "yam" / "norm_stats.json")
    with pytest.raises(NormConfigError, match=r"no normalization config; write policy_config.json"):
        build_pipeline(ckpt)
    cfg = _config(mode=None)
    (ckpt / "policy_config.json").write_text(json.dumps({"normalization": cfg.to_dict()}))
    with pytest.raises(NormConfigError, match=r'normalization mode unknown: openpi stats .* set "mode"'):
        build_pipeline(ckpt)
    (ckpt / "policy_config.json").write_text(json.dumps({"normalization": _config(mode="quantile").to_dict()}))
    pipeline = build_pipeline(ckpt)
    assert pipeline.mode == "quantile" and pipeline.epsilon == "openpi"
    spec = pipeline.to_spec()
    assert isinstance(spec, NormStatsSpec) and spec.mode == "quantile" and spec.state.q01 == tuple(Q01)
    assert pipeline.digest() == spec.digest() == pipeline.stats.digest("quantile")
    assert spec.to_proto().digest == pipeline.digest()


def test_several_sources_are_an_error_listing_them(tmp_path: Path) -> None:
    ckpt = _lerobot_checkpoint(tmp_path / "ck")
    _openpi_file(ckpt / "assets" / "yam" / "norm_stats.json")
    with pytest.raises(NormStatsError, match=r"several norm stats sources: \['openpi assets/yam/norm_stats.json', "
                                             r"'lerobot policy_preprocessor.json'\]"):
        load_checkpoint_stats(ckpt)
    assert load_checkpoint_stats(ckpt, asset_id="yam").source.kind == "openpi"
    assert load_checkpoint_stats(ckpt, stats_file="assets/yam/norm_stats.json").source.kind == "openpi"
    with pytest.raises(NormConfigError, match="inside the checkpoint dir"):
        load_checkpoint_stats(ckpt, stats_file="../elsewhere.json")


def test_config_dict_round_trip_and_errors() -> None:
    raw = _config(mode="quantile", joint_limits={"j1": (-1.0, 1.0)}).to_dict()
    assert NormalizationConfig.from_dict(raw) == _config(mode="quantile", joint_limits={"j1": (-1.0, 1.0)})
    raw2 = dict(raw, action_delta_mask={"make_bool_mask": [2, -1]}, joint_limits={"gripper": [0.0, 1.0]})
    cfg = NormalizationConfig.from_dict(raw2)
    assert cfg.action_delta_mask == (True, True, False) and cfg.joint_limits == {"gripper": (0.0, 1.0)}
    # Limits are the robot's, written out by whoever writes the config; a name standing for a table is refused.
    with pytest.raises(NormConfigError, match=r"joint_limits: expected null or \{name: \[lower, upper\]\}"):
        NormalizationConfig.from_dict(dict(raw, joint_limits="yam"))
    with pytest.raises(NormConfigError, match=r"unknown key\(s\) \['modee'\]"):
        NormalizationConfig.from_dict(dict(raw, modee="quantile"))
    with pytest.raises(NormConfigError, match=r"action_delta_mask has 2 entries, expected 3"):
        NormalizationConfig.from_dict(dict(raw, action_delta_mask=[True, False]))
    with pytest.raises(NormConfigError, match=r"normalization.thresholds.quantile_bound: expected a finite number"):
        NormalizationConfig.from_dict(dict(raw, thresholds={"quantile_bound": "big"}))
    with pytest.raises(NormConfigError, match=r"model_state_dim \(2\) < number of state dims \(3\)"):
        NormalizationConfig.from_dict(dict(raw, model_state_dim=2))
    with pytest.raises(NormConfigError, match=r"mode must be one of"):
        NormalizationConfig.from_dict(dict(raw, mode="minmax"))
