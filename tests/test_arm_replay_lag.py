"""The shared action-to-state lag estimator (robodata.lag): known delays come back, in samples and sub-sample."""

from __future__ import annotations

import numpy as np
import pytest

from replay.doctor.checks import CheckThresholds
from replay.doctor.checks import estimate_lags as doctor_estimate_lags
from replay.doctor.raw import DoctorEpisode
from robodata.lag import Signal, estimate_lags, lag_ms, pair


def _smooth_walk(n: int, dims: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    steps = rng.normal(size=(n, dims))
    kernel = np.hanning(15)
    return np.stack([np.cumsum(np.convolve(steps[:, d], kernel / kernel.sum(), mode="same")) for d in range(dims)],
                    axis=1)


def _delayed(x: np.ndarray, delay: float) -> np.ndarray:
    """x delayed by `delay` samples (linear interpolation for a fractional part), first value held."""
    t = np.arange(len(x), dtype=np.float64)
    return np.stack([np.interp(t - delay, t, x[:, d]) for d in range(x.shape[1])], axis=1)


def _sines(n: int, dims: int) -> np.ndarray:
    t = np.arange(n, dtype=np.float64)
    return np.stack([np.sin(t / (9 + 3 * d)) + 0.5 * np.sin(t / (23 + d) + d) for d in range(dims)], axis=1)


@pytest.mark.parametrize("signal", ["velocity", "position"])
def test_integer_delays_come_back_per_joint(signal: Signal) -> None:
    actions = _smooth_walk(600, 3, seed=1) if signal == "velocity" else _sines(600, 3)
    states = np.concatenate([_delayed(actions[:, :1], 4), _delayed(actions[:, 1:2], 0), _delayed(actions[:, 2:], 7)],
                            axis=1)
    result = estimate_lags([pair(actions, states)], ["a", "b", "c"], [0, 1, 2], 20, signal=signal)
    assert result.lags == {"a": 4, "b": 0, "c": 7}
    assert all(result.peaks[k] > 0.9 for k in "abc")
    assert result.curves["a"].shape == (41,)


def test_fractional_delay_is_refined_below_one_sample() -> None:
    actions = _smooth_walk(800, 1, seed=2)
    result = estimate_lags([pair(actions, _delayed(actions, 3.4))], ["j"], [0], 10)
    assert result.lags["j"] == 3
    assert result.refined["j"] == pytest.approx(3.4, abs=0.2)


def test_still_joints_and_missing_states_get_no_entry() -> None:
    actions = _smooth_walk(300, 2, seed=3)
    actions[:, 1] = 0.5
    result = estimate_lags([pair(actions, actions)], ["moving", "still"], [0, 1], 5)
    assert set(result.lags) == {"moving"}
    assert estimate_lags([pair(actions, actions)], ["moving", "still"], [-1, -1], 5).lags == {}
    with pytest.raises(ValueError, match="max_lag"):
        estimate_lags([pair(actions, actions)], ["a", "b"], [0, 1], -1)


def test_lag_in_ms() -> None:
    assert lag_ms(5, 30) == pytest.approx(166.67, abs=0.01)
    assert lag_ms(36, 200) == pytest.approx(180.0)


def test_the_doctor_uses_the_shared_estimator() -> None:
    actions = _smooth_walk(200, 2, seed=4).astype(np.float32)
    states = _delayed(actions.astype(np.float64), 5).astype(np.float32)
    ep = DoctorEpisode(index=0, states=states, actions=actions, timestamps=np.arange(200) / 30.0, raw=False)
    th = CheckThresholds()
    doctor = doctor_estimate_lags([ep], ["a", "b"], [0, 1], th)
    shared = estimate_lags([ep], ["a", "b"], [0, 1], th.max_lag_frames)
    assert doctor.lags == shared.lags == {"a": 5, "b": 5}
    assert doctor.max_lag == th.max_lag_frames
    np.testing.assert_array_equal(doctor.curves["a"], shared.curves["a"])
