"""Startup self-test: round trip on stats-derived points, and refusing data not normalized by the stats."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from policy_norm import (
    NormalizationConfig,
    NormalizationPipeline,
    SelfTestError,
    build_pipeline,
    round_trip_selftest,
    startup_selftest,
)
from policy_norm.stats import FeatureNormStats, NormStats, StatsSource
from robodata.open import open_dataset
from tests.test_doctor_fixtures import (
    YAM_MASK,
    computed_stats,
    feature,
    openpi_checkpoint,
    policy_config,
    write_lerobot,
    yam_episodes,
)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_lerobot(tmp_path_factory.mktemp("ds") / "ds", yam_episodes(num=5))


@pytest.mark.parametrize("mode", ["quantile", "zscore"])
@pytest.mark.parametrize("epsilon", ["openpi", "lerobot"])
def test_round_trip_on_real_stats(dataset: Path, tmp_path: Path, mode: str, epsilon: str) -> None:
    stats = computed_stats(dataset, YAM_MASK, horizon=10)
    ckpt = openpi_checkpoint(tmp_path / "ck", stats.feature("state"), stats.feature("actions"),
                             policy_config(mode=mode, mask=YAM_MASK, horizon=10, epsilon=epsilon))
    result = round_trip_selftest(build_pipeline(ckpt))
    assert result.ok, result.summary()
    assert result.points > 100 and result.max_error < 1e-5


def test_clean_dataset_passes_startup(dataset: Path, tmp_path: Path) -> None:
    stats = computed_stats(dataset, YAM_MASK, horizon=10)
    ckpt = openpi_checkpoint(tmp_path / "ck", stats.feature("state"), stats.feature("actions"),
                             policy_config(mask=YAM_MASK, horizon=10, strict=True))
    result = startup_selftest(build_pipeline(ckpt), list(open_dataset(dataset)))
    assert result.ok and result.data is not None and result.data.samples > 500
    assert not [f for f in result.data.findings if f.severity != "info"], result.summary()


def test_never_normalized_data_is_refused_at_startup(dataset: Path, tmp_path: Path) -> None:
    """The seed bug as the server would meet it: a pipeline that does not normalize, fed robot units."""
    stats = computed_stats(dataset)
    ckpt = openpi_checkpoint(tmp_path / "ck", stats.feature("state"), stats.feature("actions"),
                             policy_config(mode="identity"))
    pipeline = build_pipeline(ckpt)
    episodes = list(open_dataset(dataset))
    with pytest.raises(SelfTestError, match=r"not normalized by these stats[\s\S]*data never normalized: the mode "
                                            r"is identity, so left_joint2 reaches the model in robot units"):
        startup_selftest(pipeline, episodes)
    allowed = startup_selftest(pipeline, episodes, allow_data_mismatch=True)
    assert not allowed.ok and allowed.data is not None
    assert {f.code for f in allowed.data.errors()} == {"never_normalized"}


def test_stats_from_another_dataset_are_refused(dataset: Path, tmp_path: Path) -> None:
    ones = np.ones(14)
    other = feature(mean=ones * 2, std=ones * 0.1, q01=ones * 1.8, q99=ones * 2.2)
    ckpt = openpi_checkpoint(tmp_path / "ck", other, other, policy_config())
    with pytest.raises(SelfTestError, match=r"stats from another dataset: the data is not normalized by these stats"):
        startup_selftest(build_pipeline(ckpt), list(open_dataset(dataset)))


def test_broken_round_trip_is_refused() -> None:
    """LeRobot's z-score unnormalizes without eps: on a near-constant dim the round trip breaks, and says so."""
    names = ("a", "b")
    std = np.array([1.0, 1e-9])
    feat = FeatureNormStats(mean=np.zeros(2), std=std, q01=np.full(2, -0.5), q99=np.full(2, 0.5))
    stats = NormStats(feat, feat, StatsSource("test", "in memory"), epsilon="lerobot")
    config = NormalizationConfig(state_names=names, action_names=names, action_delta_mask=(False, False),
                                 model_state_dim=2, model_action_dim=2, mode="zscore", degenerate_threshold=0.0,
                                 state_bins=0)
    pipeline = NormalizationPipeline(config, stats)
    result = round_trip_selftest(pipeline)
    assert not result.ok and any("state[1] (b)" in f for f in result.failures)
    with pytest.raises(SelfTestError, match=r"round trip .* FAILED"):
        startup_selftest(pipeline)


def test_a_few_episodes_are_checked_for_containment_not_coverage(dataset: Path, tmp_path: Path) -> None:
    """A recording covers part of the training range: with coverage=False it passes where it lies inside the
    stats, and the wrong stats and never-normalized data are still named."""
    from policy_norm.datacheck import DataCheckThresholds, check_data

    stats = computed_stats(dataset, YAM_MASK, horizon=10)
    ckpt = openpi_checkpoint(tmp_path / "ck", stats.feature("state"), stats.feature("actions"),
                             policy_config(mask=YAM_MASK, horizon=10))
    episode = next(iter(open_dataset(dataset)))
    third = len(episode.states) // 3

    class Part:  # the first third of one episode: a fraction of the range
        states = np.asarray(episode.states[:third])
        actions = np.asarray(episode.actions[:third])

    part = [Part()]
    containment = DataCheckThresholds(coverage=False)
    assert not check_data(build_pipeline(ckpt), part).ok  # coverage: the part does not span the stats
    assert check_data(build_pipeline(ckpt), part, containment).ok

    ones = np.ones(14)
    other = feature(mean=ones * 2, std=ones * 0.1, q01=ones * 1.8, q99=ones * 2.2)
    wrong = openpi_checkpoint(tmp_path / "wrong", other, other, policy_config())
    result = check_data(build_pipeline(wrong), part, containment)
    assert not result.ok and any("stats from another dataset" in f.message for f in result.errors())

    identity = openpi_checkpoint(tmp_path / "id", stats.feature("state"), stats.feature("actions"),
                                 policy_config(mode="identity"))
    result = check_data(build_pipeline(identity), part, containment)
    assert not result.ok and {f.code for f in result.errors()} == {"never_normalized"}
