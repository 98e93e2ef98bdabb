"""`python -m replay stats`: exact quantiles on 1M samples, the openpi / LeRobot / our file layouts, delta stats
over chunks, frame sampling, and exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from policy_norm import read_lerobot_stats_json, read_openpi_norm_stats, read_yam_norm_stats
from replay.stats_tool import StatsRequest, compute_norm_stats
from robodata.open import open_dataset
from robodata.zarr_dp_writer import write_dp_zarr
from tests.test_doctor_fixtures import run_cli, write_lerobot, yam_episodes

# The stated error bound of the tool's quantiles against numpy's exact quantile of the same frames: none.
QUANTILE_BOUND = 0.0


def test_quantiles_on_one_million_samples_match_numpy_exactly(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    n, episodes = 1_000_000, 10
    data = np.stack([
        rng.lognormal(0.0, 1.5, n),  # heavy right tail
        np.where(rng.random(n) < 0.97, rng.normal(0.0, 0.01, n), rng.normal(5.0, 1.0, n)),  # rare far mode
        rng.uniform(-3.0, 3.0, n),
    ], axis=1).astype(np.float32)
    parts = np.array_split(data, episodes)
    path = write_dp_zarr(tmp_path / "big.zarr", [{"state": p, "action": p[:, :2]} for p in parts])
    computed = compute_norm_stats(open_dataset(path), StatsRequest(progress=False))
    assert computed.frames == n
    exact = np.quantile(data.astype(np.float64), [0.01, 0.10, 0.50, 0.90, 0.99], axis=0)
    for i, key in enumerate(("q01", "q10", "q50", "q90", "q99")):
        np.testing.assert_allclose(computed.state[key], exact[i], rtol=0, atol=QUANTILE_BOUND)
        np.testing.assert_allclose(computed.actions[key], exact[i, :2], rtol=0, atol=QUANTILE_BOUND)
    np.testing.assert_allclose(computed.state["std"], data.astype(np.float64).std(axis=0), rtol=1e-12)
    # The rare mode sits above the 97th percentile: q99 must land in it, which a coarse histogram misses.
    assert computed.state["q99"][1] > 3.0


def test_openpi_layout_and_cli(tmp_path: Path) -> None:
    eps = yam_episodes(num=3)
    ds = write_lerobot(tmp_path / "ds", eps)
    rc, out = run_cli("stats", "--dataset", str(ds), "--out", str(tmp_path / "assets"), "--format", "openpi",
                      "--asset-id", "yam", "--quiet")
    assert rc == 0, out
    path = tmp_path / "assets" / "yam" / "norm_stats.json"
    assert f"wrote {path}" in out
    raw = json.loads(path.read_text())
    assert set(raw["norm_stats"]) == {"state", "actions"}
    assert set(raw["norm_stats"]["state"]) == {"mean", "std", "q01", "q99"}
    stats = read_openpi_norm_stats(path)
    states = np.concatenate(eps.states).astype(np.float32).astype(np.float64)
    assert stats.state.q01 is not None and stats.state.std is not None
    np.testing.assert_allclose(stats.state.q01, np.quantile(states, 0.01, axis=0), rtol=0, atol=0)
    np.testing.assert_allclose(stats.state.std, states.std(axis=0), rtol=1e-12)
    rc, _ = run_cli("stats", "--dataset", str(ds), "--out", str(tmp_path / "x"), "--format", "openpi")
    assert rc == 2  # no --asset-id: refused, never guessed


def test_lerobot_and_own_layouts(tmp_path: Path) -> None:
    ds = write_lerobot(tmp_path / "ds", yam_episodes(num=3))
    rc, out = run_cli("stats", "--dataset", str(ds), "--out", str(tmp_path / "lr"), "--format", "lerobot", "--quiet")
    assert rc == 0, out
    raw = json.loads((tmp_path / "lr" / "stats.json").read_text())
    assert set(raw) == {"observation.state", "action"}
    assert set(raw["action"]) == {"min", "max", "mean", "std", "count", "q01", "q10", "q50", "q90", "q99"}
    info = open_dataset(ds).info
    lr = read_lerobot_stats_json(tmp_path / "lr" / "stats.json", info.state_names, info.action_names)
    assert lr.state.count == info.num_frames
    # The writer's own stats.json holds the same exact numbers.
    ours = json.loads((ds / "meta" / "stats.json").read_text())
    np.testing.assert_allclose(raw["action"]["q99"], ours["action"]["q99"], rtol=0, atol=0)

    rc, _ = run_cli("stats", "--dataset", str(ds), "--out", str(tmp_path / "y"), "--format", "yam", "--quiet")
    assert rc == 2  # our format records the mode: --mode is required
    rc, out = run_cli("stats", "--dataset", str(ds), "--out", str(tmp_path / "y"), "--format", "yam", "--mode",
                      "quantile", "--delta-mask", "6,-1,6,-1", "--action-horizon", "5", "--quiet")
    assert rc == 0, out
    yam = read_yam_norm_stats(tmp_path / "y" / "norm_stats.yam.json")
    assert yam.mode == "quantile" and yam.action_delta_mask == (True,) * 6 + (False,) + (True,) * 6 + (False,)
    assert yam.state.names == info.state_names and yam.provenance["quantiles"].startswith("exact")


def test_delta_stats_over_chunks_match_brute_force(tmp_path: Path) -> None:
    eps = yam_episodes(num=2)
    ds = write_lerobot(tmp_path / "ds", eps)
    horizon = 4
    mask = (True,) * 6 + (False,) + (True,) * 6 + (False,)
    computed = compute_norm_stats(open_dataset(ds), StatsRequest(delta_mask=mask, action_horizon=horizon,
                                                                 progress=False))
    rows = []
    for s, a in zip(eps.states, eps.actions, strict=True):
        s32, a32 = s.astype(np.float32).astype(np.float64), a.astype(np.float32).astype(np.float64)
        for t in range(len(a32)):
            for k in range(horizon):
                row = a32[min(t + k, len(a32) - 1)].copy()
                row[np.array(mask)] -= s32[t][np.array(mask)]
                rows.append(row)
    brute = np.array(rows)
    assert computed.action_rows == len(brute)
    np.testing.assert_allclose(computed.actions["q01"], np.quantile(brute, 0.01, axis=0), rtol=0, atol=1e-12)
    np.testing.assert_allclose(computed.actions["mean"], brute.mean(axis=0), atol=1e-12)
    assert abs(computed.actions["mean"][1]) < 0.1  # joint deltas center near 0; absolute joint2 sits near 1.3
    assert computed.actions["q01"][6] == pytest.approx(np.quantile(brute[:, 6], 0.01))  # gripper stays absolute


def test_max_frames_samples_and_bad_mask_is_refused(tmp_path: Path) -> None:
    ds = write_lerobot(tmp_path / "ds", yam_episodes(num=3))
    a = compute_norm_stats(open_dataset(ds), StatsRequest(max_frames=100, seed=3, progress=False))
    b = compute_norm_stats(open_dataset(ds), StatsRequest(max_frames=100, seed=3, progress=False))
    assert a.frames == 100 and np.array_equal(a.state["q01"], b.state["q01"])
    assert any("seeded sample of 100" in n for n in a.notes)
    rc, _ = run_cli("stats", "--dataset", str(ds), "--out", str(tmp_path / "o"), "--format", "lerobot",
                    "--delta-mask", "6,-1", "--quiet")
    assert rc == 2
