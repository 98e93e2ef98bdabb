"""Formulas, epsilons, masks and state bins of policy_norm.numeric (property tests included)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from policy_norm.deltas import (
    absolute_to_delta,
    chunk_action_values,
    delta_state_indices,
    delta_to_absolute,
)
from policy_norm.errors import NormConfigError
from policy_norm.numeric import (
    LEROBOT_EPS,
    OPENPI_EPS,
    discretize_state,
    make_bool_mask,
    normalize,
    quantile_normalize,
    quantile_unnormalize,
    unnormalize,
    zscore_normalize,
    zscore_unnormalize,
)

finite = st.floats(-100.0, 100.0, allow_nan=False, allow_infinity=False)


@st.composite
def stats_and_values(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    dim = draw(st.integers(1, 16))
    a = draw(hnp.arrays(np.float64, dim, elements=st.floats(-10, 10)))
    spread = draw(hnp.arrays(np.float64, dim, elements=st.floats(1e-3, 20)))
    x = draw(hnp.arrays(np.float64, (draw(st.integers(1, 8)), dim), elements=finite))
    return a, spread, x


@settings(max_examples=150, deadline=None)
@given(stats_and_values(), st.sampled_from(["openpi", "lerobot"]))
def test_quantile_round_trip(data: tuple[np.ndarray, np.ndarray, np.ndarray], convention: str) -> None:
    q01, spread, x = data
    q99 = q01 + spread
    back = quantile_unnormalize(quantile_normalize(x, q01, q99, convention), q01, q99, convention)
    np.testing.assert_allclose(back, x, rtol=1e-9, atol=1e-9 * (1 + np.abs(x).max()))


@settings(max_examples=150, deadline=None)
@given(stats_and_values())
def test_zscore_round_trip_openpi_is_exact(data: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    mean, std, x = data
    back = zscore_unnormalize(zscore_normalize(x, mean, std, "openpi"), mean, std, "openpi")
    np.testing.assert_allclose(back, x, rtol=1e-9, atol=1e-9 * (1 + np.abs(x).max()))


@settings(max_examples=150, deadline=None)
@given(stats_and_values())
def test_zscore_round_trip_lerobot_within_its_documented_error(data: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    """LeRobot unnormalizes without eps: relative error eps/std of (x - mean)."""
    mean, std, x = data
    back = zscore_unnormalize(zscore_normalize(x, mean, std, "lerobot"), mean, std, "lerobot")
    bound = np.abs(x - mean) * LEROBOT_EPS / std + 1e-9 * (1 + np.abs(x))
    assert np.all(np.abs(back - x) <= bound)


def test_formulas_match_openpi_and_lerobot() -> None:
    q01, q99 = np.array([0.0, 2.0]), np.array([1.0, 2.0])
    x = np.array([0.5, 2.0])
    openpi = quantile_normalize(x, q01, q99, "openpi")
    np.testing.assert_allclose(openpi, 2 * (x - q01) / (q99 - q01 + OPENPI_EPS) - 1)
    lerobot = quantile_normalize(x, q01, q99, "lerobot")
    assert lerobot[0] == 0.0  # exact 0.5 of the range: no eps where the range is not 0
    assert lerobot[1] == -1.0  # range 0 -> eps, x == q01 -> -1
    # The conventions differ by a relative ~1e-6 / range on a normal dim.
    assert abs(openpi[0] - lerobot[0]) < 1e-6
    mean, std = np.array([1.0]), np.array([0.5])
    assert zscore_normalize(np.array([2.0]), mean, std, "openpi")[0] == pytest.approx(1.0 / (0.5 + OPENPI_EPS))
    assert zscore_unnormalize(np.array([2.0]), mean, std, "lerobot")[0] == 2.0  # x = n * std + mean


def test_identity_mode_copies() -> None:
    x = np.array([3.0, -7.0])
    out = normalize(x, "identity", np.zeros(2), np.ones(2), "openpi")
    assert out is not x and np.array_equal(out, x)
    assert np.array_equal(unnormalize(x, "identity", np.zeros(2), np.ones(2), "openpi"), x)
    with pytest.raises(ValueError, match="mode must be one of"):
        normalize(x, "minmax", np.zeros(2), np.ones(2), "openpi")


def test_make_bool_mask() -> None:
    assert make_bool_mask(2, -2, 2) == (True, True, False, False, True, True)
    assert make_bool_mask(6, -1, 6, -1) == (True,) * 6 + (False,) + (True,) * 6 + (False,)
    with pytest.raises(ValueError, match="non-zero integer"):
        make_bool_mask(2, 0)


def test_discretize_bins_as_the_trainers_do_minus_one_included() -> None:
    # Expected bins from the documented formula k = floor(128 (s + 1)) for -1 <= s < 1 - 2/256, -1 below -1 and
    # 255 from 1 - 2/256 up (pi05 fact sheet), written out by hand, not computed by the code under test.
    s = np.array([-1.5, -1.0 - 1e-9, -1.0, -0.999, 0.0, 0.00390625, 0.9921875 - 1e-9, 0.9921875, 1.0, 3.0])
    k, below, above = discretize_state(s)
    assert k.tolist() == [-1, -1, 0, 0, 128, 128, 254, 255, 255, 255]
    assert below.tolist() == [True, True] + [False] * 8
    assert above.tolist() == [False] * 9 + [True]


@settings(max_examples=100, deadline=None)
@given(hnp.arrays(np.float64, st.integers(1, 40), elements=st.floats(-5, 5)))
def test_bins_are_the_trainers_bins(s: np.ndarray) -> None:
    k, below, above = discretize_state(s)
    assert np.array_equal(k, np.digitize(s, np.linspace(-1, 1, 257)[:-1]) - 1)
    assert k.min() >= -1 and k.max() <= 255
    assert np.all(k[below] == -1) and np.all(k[above] == 255)
    assert np.all(k[~below] >= 0)


def test_delta_helpers_do_not_mutate_and_invert() -> None:
    names = ("a", "b", "g")
    idx = delta_state_indices(names, ("g", "a", "b"), (True, True, False))
    assert idx == (1, 2, -1)  # matched by name
    actions = np.arange(6, dtype=np.float64).reshape(2, 3)
    state = np.array([10.0, 1.0, 2.0])
    frozen = actions.copy()
    delta = absolute_to_delta(actions, state, idx)
    assert np.array_equal(actions, frozen)
    assert delta.tolist() == [[-1.0, -1.0, 2.0], [2.0, 2.0, 5.0]]
    assert np.array_equal(delta_to_absolute(delta, state, idx), actions)
    with pytest.raises(NormConfigError, match=r"action_delta_mask\[2\] \(z\)"):
        delta_state_indices(("a", "b", "z"), ("a", "b"), (False, False, True))


def test_chunk_values_count_every_step_with_end_padding() -> None:
    states = np.array([[0.0], [10.0], [20.0]])
    actions = np.array([[1.0], [2.0], [3.0]])
    rows = chunk_action_values(states, actions, (0,), horizon=2)
    # chunks: t=0 -> a0-s0, a1-s0; t=1 -> a1-s1, a2-s1; t=2 -> a2-s2, a2-s2 (padded with the last frame)
    assert rows[:, 0].tolist() == [1.0, 2.0, -8.0, -7.0, -17.0, -17.0]
