"""The oracle's masked statistics on hand-made errors: padded rows, steps nobody reaches, unencodable frames."""

from __future__ import annotations

import numpy as np
import pytest

from replay.oracle.command import OracleOptions
from replay.oracle.core import OracleError, match_names
from replay.oracle.stats import error_stats, real_rows, worst_frames


def test_padded_rows_and_unreached_steps() -> None:
    err = np.zeros((2, 4, 2))
    err[0, :, 0] = [0.1, -0.3, 5.0, 5.0]  # frame 0: 2 real rows, then padding with a large error
    err[1, :, 1] = [0.0, 0.2, 0.2, 0.2]
    real = real_rows([2, 3], 4)
    stats = error_stats(err, real)
    np.testing.assert_allclose(stats.step_joint_l1[:, 0], [0.05, 0.15, 0.0, np.nan])
    np.testing.assert_allclose(stats.step_joint_bias[:2, 0], [0.05, -0.15])
    assert list(stats.step_frames) == [2, 2, 1, 0] and np.isnan(stats.step_l1[3])
    np.testing.assert_allclose(stats.joint_l1, [0.4 / 5, 0.4 / 5])
    np.testing.assert_allclose(stats.joint_rms[0], np.sqrt((0.01 + 0.09) / 5))
    np.testing.assert_allclose(stats.padded_joint_l1, [10.0 / 3, 0.2 / 3])
    assert stats.padded_rows == 3
    included = error_stats(err, real, include_padded=True)
    np.testing.assert_allclose(included.joint_l1[0], 10.4 / 8)
    assert list(included.step_frames) == [2, 2, 2, 2]
    (worst,) = worst_frames(err, real, stats, [(0, 7), (1, 3)], ["a", "b"], 1)
    assert (worst.episode, worst.frame, worst.joint, worst.max_step) == (0, 7, "a", 1)
    np.testing.assert_allclose([worst.chunk_l1, worst.first_error, worst.max_error], [0.2, 0.1, 0.3])


def test_a_frame_that_could_not_be_encoded_is_left_out_not_poisoning() -> None:
    err = np.full((2, 3, 2), 0.5)
    err[1] = np.nan
    stats = error_stats(err, real_rows([3, 3], 3))
    np.testing.assert_allclose(stats.joint_l1, [0.5, 0.5])
    np.testing.assert_allclose(stats.first_rms, [0.5, 0.5])
    assert np.isnan(stats.frame_l1[1]) and stats.frame_l1[0] == 0.5


def test_names_are_matched_by_name_and_mismatches_listed() -> None:
    match = match_names("state", ("b", "a", "c"), ("a", "b", "c"))
    assert match.to_policy == (1, 0, 2) and match.to_dataset == (1, 0, 2) and not match.positional
    with pytest.raises(OracleError, match=r"missing from the policy: \['c'\], not in the dataset: \['x'\]"):
        match_names("action", ("a", "b", "x"), ("a", "b", "c"))
    assert match_names("action", ("a", "b", "x"), ("a", "b", "c"), allow_positional=True).positional


def test_options_name_the_bad_field() -> None:
    with pytest.raises(ValueError, match="OracleOptions.stride must be >= 1"):
        OracleOptions(stride=0)
    with pytest.raises(ValueError, match="OracleOptions.padded_rows"):
        OracleOptions(padded_rows="drop")
