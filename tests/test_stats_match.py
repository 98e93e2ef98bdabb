"""Stored stats against data, like with like, and each cause recognised by its signature; robust outliers; a
recording whose policy strays named as such. Arrays here are small synthetic trajectories; the formats and the
conventions themselves are held against LeRobot's own files in test_doctor_lerobot_golden.py."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
import pytest

from policy_norm.stats_match import (
    CAUSE_DOUBLE,
    CAUSE_IDENTITY,
    CAUSE_MODE_SWAP,
    CAUSE_NORMALIZED_STATS,
    CAUSE_OTHER,
    CAUSE_UNIT,
    StatsMatch,
    match_stored_stats,
)
from replay.doctor.checks import CheckThresholds, check_outliers
from replay.doctor.raw import DoctorEpisode
from robodata.stats import QUANTILES_EPISODE_MEAN, QUANTILES_WHOLE_DATA, compute_feature_stats, recompute_stats

F64 = npt.NDArray[np.float64]
NAMES = ("joint_a", "joint_b")


def episodes(seed: int = 3, scale: float = 1.0, offset: float = 0.0) -> list[F64]:
    """Five smooth two-joint episodes over different ranges (as demonstrations are)."""
    rng = np.random.default_rng(seed)
    out = []
    for length in (60, 80, 70, 90, 75):
        t = np.linspace(0, 1, length)[:, None]
        centre = rng.normal(0.0, 0.3, 2)
        out.append(offset + scale * (centre + 0.4 * np.sin(2 * math.pi * t * rng.uniform(0.5, 1.5, 2)
                                                           + rng.uniform(0, 6, 2))))
    return out


def match(stored: dict[str, F64], eps: list[F64]) -> StatsMatch:
    candidates = {QUANTILES_EPISODE_MEAN: recompute_stats(eps, QUANTILES_EPISODE_MEAN),
                  QUANTILES_WHOLE_DATA: recompute_stats(eps, QUANTILES_WHOLE_DATA)}
    return match_stored_stats("observation.state", NAMES, stored, candidates,
                              compute_feature_stats(np.concatenate(eps)))


@pytest.mark.parametrize("convention", [QUANTILES_EPISODE_MEAN, QUANTILES_WHOLE_DATA])
def test_stats_of_either_convention_describe_their_data(convention: str) -> None:
    eps = episodes()
    m = match(recompute_stats(eps, convention), eps)
    assert m.convention == convention and not m.verdicts and m.deviation < 1e-9
    assert m.quantile_gap is not None and (m.quantile_gap.worst > 0.01) == (convention == QUANTILES_EPISODE_MEAN)


@pytest.mark.parametrize(("factor", "words"), [(180 / math.pi, ("degrees", "radians")),
                                               (math.pi / 180, ("radians", "degrees")),
                                               (100.0, ("0..100 (percent)", "0..1"))])
def test_a_unit_change_is_named(factor: float, words: tuple[str, str]) -> None:
    eps = episodes()
    stored = recompute_stats([e * factor for e in eps], QUANTILES_EPISODE_MEAN)
    m = match(stored, eps)
    assert [v.cause for v in m.verdicts] == [CAUSE_UNIT, CAUSE_UNIT]
    assert all(v.severity == "error" and v.units == words for v in m.verdicts)


def test_identity_placeholders_mean_never_normalized() -> None:
    eps = episodes(offset=1.5)
    stored = dict(recompute_stats(eps, QUANTILES_WHOLE_DATA))
    stored.update(q01=np.full(2, -1.0), q99=np.full(2, 1.0), mean=np.zeros(2), std=np.ones(2),
                  min=np.full(2, -1.0), max=np.full(2, 1.0))
    m = match(stored, eps)
    assert {v.cause for v in m.verdicts} == {CAUSE_IDENTITY} and all(v.severity == "error" for v in m.verdicts)


def test_data_already_normalized_is_double_normalization() -> None:
    robot = episodes(offset=1.2, scale=0.5)
    stats = recompute_stats(robot, QUANTILES_WHOLE_DATA)
    lo, hi = stats["q01"], stats["q99"]
    normalized = [2 * (e - lo) / (hi - lo) - 1 for e in robot]  # what a pipeline stored after normalizing
    m = match(dict(stats), normalized)
    assert {v.cause for v in m.verdicts} == {CAUSE_DOUBLE}


def test_stats_of_normalized_data_mean_robot_units_reach_the_model() -> None:
    robot = episodes(offset=1.2, scale=0.5)
    stats = recompute_stats(robot, QUANTILES_WHOLE_DATA)
    normalized = [2 * (e - stats["q01"]) / (stats["q99"] - stats["q01"]) - 1 for e in robot]
    m = match(dict(recompute_stats(normalized, QUANTILES_WHOLE_DATA)), robot)
    assert {v.cause for v in m.verdicts} == {CAUSE_NORMALIZED_STATS}


def test_z_score_stats_written_as_quantiles() -> None:
    eps = episodes(offset=0.7)
    stored = dict(recompute_stats(eps, QUANTILES_WHOLE_DATA))
    stored["q01"] = stored["mean"] - stored["std"]
    stored["q99"] = stored["mean"] + stored["std"]
    m = match(stored, eps)
    assert {v.cause for v in m.verdicts} == {CAUSE_MODE_SWAP}
    assert all("z-score stats written as quantiles" in v.detail for v in m.verdicts)


@pytest.mark.parametrize(("shift", "severity"), [(0.12, "warning"), (3.0, "error")])
def test_another_dataset_is_an_error_only_when_it_would_shift_or_squash(shift: float, severity: str) -> None:
    eps = episodes(offset=0.9)  # joints around 0.9 rad: nothing about them looks normalized
    whole = np.concatenate(eps)
    spread = float(np.max(np.quantile(whole, 0.99, axis=0) - np.quantile(whole, 0.01, axis=0)))
    stored = recompute_stats([e + shift * spread for e in eps], QUANTILES_EPISODE_MEAN)
    m = match(stored, eps)
    assert {v.cause for v in m.verdicts} == {CAUSE_OTHER}
    assert {v.severity for v in m.verdicts} == {severity}
    assert all("normalized with them (quantile)" in v.detail for v in m.verdicts)


# ---- outliers --------------------------------------------------------------------------------------------


def _doctor_episodes(arrays: list[F64]) -> list[DoctorEpisode]:
    return [DoctorEpisode(i, a.astype(np.float32), a.astype(np.float32), np.arange(len(a)) / 30.0, False)
            for i, a in enumerate(arrays)]


def test_spikes_are_found_even_when_they_inflate_the_data_quantiles() -> None:
    """8 spikes in 375 frames (2 %) move q99 onto the spike value; median/MAD and q05/q95 do not move."""
    eps = episodes()
    spots = [(0, 5), (0, 40), (1, 10), (1, 60), (2, 33), (3, 2), (3, 70), (4, 50)]
    for e, f in spots:
        eps[e][f, 1] = 50.0
    found = check_outliers(_doctor_episodes(eps), NAMES, NAMES, CheckThresholds(), limits={})
    outliers = [f for f in found if f.code == "state_outlier"]
    assert len(outliers) == 1 and "joint_b" in outliers[0].where
    assert f"{len(spots)} frame(s)" in outliers[0].message
    assert all(f"{f} (50)" in outliers[0].message for _, f in spots)
    assert any(f.code == "action_outlier" for f in found)  # actions are checked the same way


def test_a_joint_that_rests_and_moves_rarely_is_not_an_outlier() -> None:
    """A wrist resting at 0 with sensor noise that turns 0.8 rad and back in 3 % of the frames: its MAD and q05/q95
    are noise-sized, but the move is sustained (no spike), so nothing is flagged."""
    rng = np.random.default_rng(0)
    eps = []
    for length in (100, 100, 100, 100):
        a = rng.normal(0.0, 0.002, (length, 2))
        eps.append(a)
    t = np.linspace(0, 1, 12)
    eps[2][40:52, 0] += 0.8 * np.sin(np.pi * t)  # 12 of 400 frames: a smooth excursion
    found = check_outliers(_doctor_episodes(eps), NAMES, NAMES, CheckThresholds(), limits={})
    assert not [f for f in found if f.severity != "info"], found


def test_a_dim_that_never_moves_has_no_flicker_outliers_but_a_real_spike_is_named() -> None:
    """A gripper that never moves reads ~2e-7 with rare 2e-5 flickers (the embedded demo's recordings): its MAD is
    1e-6, so without a floor every flicker is '18 robust scales' out. The scale never drops below the
    never-moves spread (degenerate_spread / 3.29), so flickers pass and a 0.5 spike is still named."""
    rng = np.random.default_rng(1)
    eps = [rng.normal(2e-7, 1e-6, (100, 2)) for _ in range(4)]
    for e, f in ((0, 20), (2, 28), (3, 61)):
        eps[e][f, 1] = 2.5e-5
    assert not [f for f in check_outliers(_doctor_episodes(eps), NAMES, NAMES, CheckThresholds(), limits={})
                if f.severity != "info"]
    eps[1][40, 1] = 0.5
    found = [f for f in check_outliers(_doctor_episodes(eps), NAMES, NAMES, CheckThresholds(), limits={})
             if f.code == "state_outlier"]
    assert len(found) == 1 and found[0].where == "episode 1 frame 40 state joint_b", found


def test_joint_limits_through_a_name_map_flag_states_and_actions() -> None:
    eps = episodes()
    eps[1][7, 0] = 4.0
    found = check_outliers(_doctor_episodes(eps), NAMES, NAMES, CheckThresholds(),
                           limits={"joint_a": (-2.0, 2.0), "joint_b": (-2.0, 2.0)})
    codes = {f.code: f for f in found}
    assert {"state_outside_joint_limits", "action_outside_joint_limits"} <= set(codes)
    assert codes["state_outside_joint_limits"].where == "episode 1 frame 7 state joint_a"
    assert "state_outlier" not in codes  # the limit already names that frame
