"""`open_dataset(path)`: detect a dataset's format and open it with the matching reader.

Why: every tool takes a dataset path from the user and must not care which format it is. Detection rules:
- LeRobot: `meta/info.json` exists (its `codebase_version` picks v3.0 / v2.1 / v2.0 handling);
- recording: a zarr group whose root attribute `format` is "yam-recording";
- Diffusion-Policy zarr: a zarr group (directory or `.zip`) with `meta/episode_ends`.
Options are checked against the detected reader, so a misspelled option is an error, not ignored.
"""

from __future__ import annotations

from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import zarr

from robodata.dataset import Dataset, DatasetError
from robodata.lerobot_meta import INFO_PATH
from robodata.lerobot_reader import LeRobotDataset, LeRobotOptions
from robodata.recording import RecordingDataset, RecordingOptions, is_recording
from robodata.zarr_dp_reader import DPKeyMap, DPZarrDataset, DPZarrOptions, open_zarr_group

LEROBOT = "lerobot"
DP_ZARR = "dp-zarr"
RECORDING = "recording-zarr"

# DP key-map entries may also be given flat: open_dataset(p, action_key="act", image_keys=["cam0"]).
_DP_FLAT_KEYS = {
    "action_key": "action",
    "state_key": "state",
    "image_keys": "images",
    "timestamp_key": "timestamp",
}


def detect_format(path: str | Path) -> str:
    """One of "lerobot", "recording-zarr", "dp-zarr"; raises DatasetError saying what was looked for."""
    p = Path(path)
    if not p.exists():
        raise DatasetError(f"{p}: no such file or directory")
    if p.is_dir() and (p / INFO_PATH).is_file():
        return LEROBOT
    if is_recording(p):
        return RECORDING
    looked = (
        f"looked for {INFO_PATH} (LeRobot v2.x/v3.0), a zarr group with root attribute "
        f"format='yam-recording' (recording), and a zarr group (directory or .zip) with meta/episode_ends "
        f"(Diffusion-Policy ReplayBuffer)"
    )
    try:
        group, store = open_zarr_group(p)
    except DatasetError as err:
        raise DatasetError(f"{p}: not a dataset this stack reads; {looked} ({err})") from err
    try:
        meta = group.get("meta")
        if isinstance(meta, zarr.Group) and isinstance(meta.get("episode_ends"), zarr.Array):
            return DP_ZARR
    finally:
        if store is not None:
            store.close()
    raise DatasetError(f"{p}: not a dataset this stack reads; {looked}")


def _episodes(value: Any) -> tuple[int, ...] | None:
    if value is None:
        return None
    if isinstance(value, int):
        return (value,)
    try:
        return tuple(int(v) for v in value)
    except (TypeError, ValueError) as err:
        raise DatasetError(f"option episodes must be a list of integers, got {value!r}") from err


def _check_options(fmt: str, options: dict[str, Any], accepted: set[str]) -> None:
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise DatasetError(
            f"option(s) {unknown} do not apply to a {fmt} dataset; accepted: {sorted(accepted)}"
        )


def open_dataset(path: str | Path, **options: Any) -> Dataset:
    """Open any supported dataset. Options (all keyword, per format):

    - every format: episodes (indices to expose);
    - LeRobot: state_key, action_key, video_tolerance_s, strict_video_frame_count;
    - DP zarr: fps, keys (a DPKeyMap) or action_key / state_key / image_keys / timestamp_key;
    - recording: include_incomplete.
    """
    p = Path(path)
    fmt = detect_format(p)
    opts = dict(options)
    episodes = _episodes(opts.pop("episodes", None))
    if fmt == LEROBOT:
        accepted = {f.name for f in fields(LeRobotOptions)} - {"episodes"}
        _check_options(fmt, opts, accepted)
        return LeRobotDataset(p, replace(LeRobotOptions(), episodes=episodes, **opts))
    if fmt == RECORDING:
        accepted = {f.name for f in fields(RecordingOptions)} - {"episodes"}
        _check_options(fmt, opts, accepted)
        return RecordingDataset(p, replace(RecordingOptions(), episodes=episodes, **opts))
    _check_options(fmt, opts, {"fps", "keys", *_DP_FLAT_KEYS})
    keys = opts.pop("keys", None) or DPKeyMap()
    if not isinstance(keys, DPKeyMap):
        raise DatasetError(f"option keys must be a DPKeyMap, got {type(keys).__name__}")
    flat = {_DP_FLAT_KEYS[k]: opts.pop(k) for k in list(opts) if k in _DP_FLAT_KEYS}
    if "images" in flat and flat["images"] is not None:
        flat["images"] = tuple(flat["images"])
    keys = replace(keys, **flat)
    fps = opts.pop("fps", None)
    return DPZarrDataset(
        p, DPZarrOptions(keys=keys, fps=None if fps is None else float(fps), episodes=episodes)
    )
