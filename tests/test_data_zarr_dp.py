"""Diffusion-Policy ReplayBuffer zarr stores (zarr format 2, directory and .zarr.zip) read back exactly."""

from __future__ import annotations

import json
from pathlib import Path

import numcodecs
import numpy as np
import numpy.typing as npt
import pytest
import zarr

from robodata.dataset import DatasetError
from robodata.zarr_dp_reader import DPKeyMap, DPZarrDataset, DPZarrOptions
from robodata.zarr_dp_writer import write_dp_zarr

LENGTHS = (12, 7, 20)


def make_episodes(
    state_key: str = "state", with_timestamp: bool = False, seed: int = 0
) -> list[dict[str, npt.NDArray[np.generic]]]:
    rng = np.random.default_rng(seed)
    episodes = []
    t0 = 1000.0
    for n in LENGTHS:
        ep: dict[str, npt.NDArray[np.generic]] = {
            "action": rng.normal(size=(n, 14)).astype(np.float32),
            state_key: rng.normal(size=(n, 14)).astype(np.float32),
            "camera0_rgb": rng.integers(0, 256, size=(n, 24, 32, 3), dtype=np.uint8),
            "camera1_rgb": rng.integers(0, 256, size=(n, 16, 16, 3), dtype=np.uint8),
        }
        if with_timestamp:
            ep["timestamp"] = t0 + np.arange(n) / 15.0
            t0 += 100.0
        episodes.append(ep)
    return episodes


@pytest.mark.parametrize("name", ["replay.zarr", "replay.zarr.zip"])
@pytest.mark.parametrize("compressor", ["default", "disk"])
def test_roundtrip(tmp_path: Path, name: str, compressor: str) -> None:
    episodes = make_episodes()
    path = write_dp_zarr(tmp_path / name, episodes, compressor=compressor)
    assert path.is_file() == name.endswith(".zip")
    ds = DPZarrDataset(path)
    try:
        info = ds.info
        assert info.format == "dp-zarr"
        assert info.num_episodes == 3 and info.num_frames == sum(LENGTHS)
        assert info.fps == 10.0 and any("assuming 10" in n for n in info.notes)
        assert info.state_names[0] == "state_0" and len(info.action_names) == 14
        assert info.camera_names == ("camera0_rgb", "camera1_rgb")
        assert (info.camera("camera0_rgb").height, info.camera("camera0_rgb").width) == (24, 32)
        for i in ds.episode_indices():
            ep = ds.episode(i)
            np.testing.assert_array_equal(ep.actions, episodes[i]["action"])
            np.testing.assert_array_equal(ep.states, episodes[i]["state"])
            np.testing.assert_array_equal(ep.timestamps, np.arange(LENGTHS[i]) / 10.0)
            np.testing.assert_array_equal(ep.images("camera0_rgb"), episodes[i]["camera0_rgb"])
            np.testing.assert_array_equal(ep.images("camera1_rgb"), episodes[i]["camera1_rgb"])
    finally:
        ds.close()


def test_layout_matches_replay_buffer(tmp_path: Path) -> None:
    path = write_dp_zarr(tmp_path / "r.zarr", make_episodes())
    assert json.loads((path / ".zgroup").read_text())["zarr_format"] == 2
    group = zarr.open_group(str(path), mode="r")
    ends = group["meta/episode_ends"]
    assert isinstance(ends, zarr.Array)
    assert ends.dtype == np.int64 and np.asarray(ends[:]).tolist() == list(np.cumsum(LENGTHS))
    assert ends.compressors == ()
    action = group["data/action"]
    assert isinstance(action, zarr.Array)
    assert action.chunks[1:] == (14,)
    codec = action.compressors[0]
    assert isinstance(codec, numcodecs.Blosc) and codec.cname == "lz4"


def test_key_detection_timestamp_and_subset(tmp_path: Path) -> None:
    episodes = make_episodes(state_key="robot_joint", with_timestamp=True)
    path = write_dp_zarr(tmp_path / "r.zarr", episodes)
    ds = DPZarrDataset(path, DPZarrOptions(episodes=(2, 0)))
    assert ds.state_key == "robot_joint" and ds.timestamp_key == "timestamp"
    assert ds.episode_indices() == [0, 2]
    assert ds.info.fps == pytest.approx(15.0)
    ep = ds.episode(2)
    np.testing.assert_allclose(ep.timestamps, np.arange(LENGTHS[2]) / 15.0, atol=1e-9)
    np.testing.assert_array_equal(ep.states, episodes[2]["robot_joint"])
    with pytest.raises(DatasetError, match="episode 1 not readable"):
        ds.episode(1)


def test_explicit_key_map_and_float_images(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    episodes = [
        {
            "act": rng.normal(size=(n, 2)).astype(np.float32),
            "agent_pos": rng.normal(size=(n, 2)).astype(np.float32),
            "img": rng.integers(0, 256, size=(n, 8, 8, 3)).astype(np.float32),
        }
        for n in (5, 6)
    ]
    path = write_dp_zarr(tmp_path / "pusht.zarr", episodes)
    auto_err = pytest.raises(DatasetError, match=r"no action array; looked for \['action', 'actions'\]")
    with auto_err:
        DPZarrDataset(path)
    ds = DPZarrDataset(path, DPZarrOptions(keys=DPKeyMap(action="act", images=("img",)), fps=10))
    assert ds.state_key == "agent_pos"
    np.testing.assert_array_equal(ds.episode(1).images("img"), episodes[1]["img"].astype(np.uint8))
    assert any("read as 0..255" in n for n in ds.info.notes)


def test_bad_stores(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="not found"):
        DPZarrDataset(tmp_path / "missing.zarr")
    path = write_dp_zarr(tmp_path / "r.zarr", make_episodes())
    group = zarr.open_group(str(path), mode="a")
    ends = group["meta/episode_ends"]
    assert isinstance(ends, zarr.Array)
    ends[:] = np.array([12, 5, 39])
    with pytest.raises(DatasetError, match="episode_ends must be non-negative and non-decreasing"):
        DPZarrDataset(path)
    ends[:] = np.array([12, 19, 400])
    with pytest.raises(DatasetError, match=r"data/\w+ has shape .* needs >= 400 rows"):
        DPZarrDataset(path)
    with pytest.raises(DatasetError, match="state key 'nope' not found"):
        DPZarrDataset(write_dp_zarr(tmp_path / "ok.zarr", make_episodes()), DPZarrOptions(keys=DPKeyMap(state="nope")))


def test_writer_validation(tmp_path: Path) -> None:
    episodes = make_episodes()
    episodes[1]["action"] = episodes[1]["action"][:-1]
    with pytest.raises(DatasetError, match="episode 1 arrays must share a non-zero first dimension"):
        write_dp_zarr(tmp_path / "r.zarr", episodes)
    with pytest.raises(DatasetError, match="already exists"):
        write_dp_zarr(tmp_path / "x.zarr", make_episodes())
        write_dp_zarr(tmp_path / "x.zarr", make_episodes())
