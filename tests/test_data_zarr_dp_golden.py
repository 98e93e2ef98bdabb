"""Diffusion-Policy stores written by DP's own ReplayBuffer (tests/golden/dp/make_golden.py, zarr 2.18) read back
exactly: the real-robot recording (episodes added one by one, float64 low-dim arrays, extra keys) and the training
cache (`.zarr.zip`, JPEG 2000 camera arrays, one frame per chunk). The hashes in expected.json are of the arrays as
DP's own code reads them."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from replay.cli import main
from robodata.dataset import DatasetError
from robodata.open import open_dataset
from robodata.zarr_dp_reader import DPKeyMap, DPZarrDataset, DPZarrOptions

GOLDEN = Path(__file__).resolve().parent / "golden" / "dp"
EXPECTED = json.loads((GOLDEN / "expected.json").read_text())
STORES = ("real_raw.zarr", "real_cache.zarr.zip")


def _sha(values: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(values).tobytes()).hexdigest()


@pytest.mark.parametrize("store", STORES)
def test_every_array_reads_as_dp_reads_it(store: str) -> None:
    expected = EXPECTED[store]
    ds = DPZarrDataset(GOLDEN / store)
    try:
        ends = np.cumsum([ds.episode_meta(i).length for i in ds.episode_indices()])
        assert ends.tolist() == expected["episode_ends"]
        for key, want in expected["data"].items():
            values = np.concatenate([ds.array(key, i) for i in ds.episode_indices()])
            assert str(values.dtype) == want["dtype"], key  # float64 stays float64
            assert list(values.shape) == want["shape"], key
            assert _sha(values) == want["sha256"], key
    finally:
        ds.close()


def test_jpeg2k_cameras_decode_to_dp_pixels() -> None:
    expected = EXPECTED["real_cache.zarr.zip"]["data"]
    ds = DPZarrDataset(GOLDEN / "real_cache.zarr.zip")
    try:
        assert expected["camera_0"]["compressor"] == "imagecodecs_jpeg2k"
        assert ds.info.camera_names == ("camera_0", "camera_1")
        for cam in ds.info.camera_names:
            frames = np.concatenate([ds.episode(i).images(cam) for i in ds.episode_indices()])
            assert frames.dtype == np.uint8 and _sha(frames) == expected[cam]["sha256"]
        assert all(c.ok for c in ds.verify_files())
    finally:
        ds.close()


def test_roles_dtypes_and_fps_are_stated() -> None:
    ds = DPZarrDataset(GOLDEN / "real_cache.zarr.zip")
    try:
        info = ds.info
        roles = "\n".join(info.roles)
        # DP's real-robot configs train on the end-effector pose; the joint reading is offered, not taken.
        assert ds.state_key == "robot_eef_pose"
        assert "state     data/robot_eef_pose float64 [T, 6] (picked by name; also present: robot_joint; change " \
               "with --state-key KEY)" in roles
        assert "camera_0 uint8 [T, 24, 32, 3], camera_1 uint8 [T, 24, 32, 3]" in roles and "--image-keys" in roles
        notes = "\n".join(info.notes)
        assert "['segmentation'] have no camera name" in notes
        assert "--image-keys camera_0,camera_1,segmentation" in notes
        assert "data/robot_eef_pose (float64), data/action (float64) read as float32" in notes
        # Episode 0 was recorded at 5 Hz; the store's rate comes from all episodes, and episode 0 is named.
        assert info.fps == pytest.approx(10.0, rel=0.01)
        assert "episodes recorded at another rate than the store's 10.0" in notes and "0 at 5.00 Hz" in notes
        ep = ds.episode(1)
        np.testing.assert_array_equal(ep.states, ds.array("robot_eef_pose", 1).astype(np.float32))
        np.testing.assert_allclose(np.diff(ep.timestamps), 0.1, atol=0.01)
    finally:
        ds.close()
    joints = DPZarrDataset(GOLDEN / "real_cache.zarr.zip",
                           DPZarrOptions(keys=DPKeyMap(state="robot_joint", images=("camera_0", "segmentation"))))
    try:
        assert joints.state_key == "robot_joint" and joints.info.camera_names == ("camera_0", "segmentation")
        assert any(r.startswith("state     data/robot_joint") and r.endswith("(given)") for r in joints.info.roles)
        np.testing.assert_array_equal(joints.episode(2).images("segmentation"), joints.array("segmentation", 2))
    finally:
        joints.close()


def test_info_prints_roles_and_takes_the_override_flags(capsys: pytest.CaptureFixture[str]) -> None:
    out = io.StringIO()
    path = str(GOLDEN / "real_cache.zarr.zip")
    assert main(["info", "--dataset", path], out) == 0
    text = out.getvalue()
    assert "roles (which stored array is what; the option changes it)" in text
    assert "data/robot_eef_pose" in text and "files (10 checked" in text
    out = io.StringIO()
    assert main(["info", "--dataset", path, "--state-key", "robot_joint", "--image-keys", "camera_1"], out) == 0
    assert "state     data/robot_joint float64 [T, 6] (given)" in out.getvalue()
    assert "cameras   camera_1 (given)" in out.getvalue()
    assert main(["info", "--dataset", path, "--state-key", "robot_pose"], io.StringIO()) == 2
    assert "state key 'robot_pose' not found" in capsys.readouterr().err


def test_unknown_codec_names_the_array(tmp_path: Path) -> None:
    store = tmp_path / "real_raw.zarr"
    shutil.copytree(GOLDEN / "real_raw.zarr", store)
    meta_path = store / "data" / "robot_joint" / ".zarray"
    meta = json.loads(meta_path.read_text())
    meta["compressor"] = {"id": "imagecodecs_nosuchcodec"}
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(DatasetError, match=r"data/robot_joint: cannot read the array's metadata: .*nosuchcodec.*"
                                           r"the installed imagecodecs does not provide this codec"):
        open_dataset(store)
