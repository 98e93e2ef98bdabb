"""Load every episode for the doctor, including the ones a reader refuses.

Why: the readers rightly refuse an episode with NaN values (DP zarr) or timestamps that go backwards (LeRobot,
DP zarr, recordings), but the doctor's job is to say exactly which frame and joint is broken. When a reader
refuses an episode, this module reads the same stored columns directly (LeRobot parquet, DP zarr arrays)
without the reader's checks, and keeps the reader's message as a finding. Formats without a raw path keep only
the message.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import zarr

from replay.doctor.findings import Finding
from robodata.dataset import Dataset, DatasetError
from robodata.lerobot_meta import ACTION_KEY, STATE_KEY
from robodata.lerobot_reader import LeRobotDataset
from robodata.zarr_dp_reader import DPZarrDataset, open_zarr_group


@dataclass(frozen=True)
class DoctorEpisode:
    """One episode's numbers as stored: states/actions float32 [T, D] (may hold NaN), timestamps float64 [T]."""

    index: int
    states: npt.NDArray[np.float32]
    actions: npt.NDArray[np.float32]
    timestamps: npt.NDArray[np.float64]
    raw: bool  # True when read past a reader refusal

    def __len__(self) -> int:
        return int(self.states.shape[0])


def _matrix(values: npt.NDArray[np.generic], dim: int, where: str) -> npt.NDArray[np.float32]:
    arr = np.asarray(values, dtype=np.float32)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2 or arr.shape[1] != dim:
        raise DatasetError(f"{where}: expected [T, {dim}], got {list(arr.shape)}")
    return arr


def _array(group: zarr.Group, key: str) -> zarr.Array[Any]:
    arr = group[key]
    if not isinstance(arr, zarr.Array):
        raise DatasetError(f"{group.path}/{key}: expected an array")
    return arr


def _raw_dp(ds: DPZarrDataset, index: int) -> DoctorEpisode:
    group, store = open_zarr_group(ds.path)
    try:
        meta = group["meta"]
        data = group["data"]
        if not isinstance(meta, zarr.Group) or not isinstance(data, zarr.Group):
            raise DatasetError(f"{ds.path}: 'meta' and 'data' must be groups")
        ends = np.asarray(_array(meta, "episode_ends")[:], dtype=np.int64)
        start = int(ends[index - 1]) if index > 0 else 0
        end = int(ends[index])
        states = _matrix(np.asarray(_array(data, ds.state_key)[start:end]), ds.info.state_dim,
                         f"data/{ds.state_key}")
        actions = _matrix(np.asarray(_array(data, ds.action_key)[start:end]), ds.info.action_dim,
                          f"data/{ds.action_key}")
        if ds.timestamp_key is not None:
            ts = np.asarray(_array(data, ds.timestamp_key)[start:end], dtype=np.float64).reshape(-1)
            ts = ts - ts[0] if np.isfinite(ts[0]) else ts
        else:
            ts = np.arange(end - start, dtype=np.float64) / ds.info.fps
    finally:
        if store is not None:
            store.close()
    return DoctorEpisode(index, states, actions, ts, raw=True)


def _raw_lerobot(ds: LeRobotDataset, index: int) -> DoctorEpisode:
    files = sorted(Path(ds.info.path).glob("data/**/*.parquet"))
    state_key = ds.options.state_key or STATE_KEY
    action_key = ds.options.action_key or ACTION_KEY
    columns = ["episode_index", "frame_index", "timestamp", state_key, action_key]
    parts = []
    for path in files:
        table = pq.read_table(path, columns=columns)
        rows = table.filter(pc.equal(table.column("episode_index"), pa.scalar(index, table.schema.field(
            "episode_index").type)))
        if rows.num_rows:
            parts.append(rows)
    if not parts:
        raise DatasetError(f"{ds.info.path}: no rows for episode {index} in data/**/*.parquet")
    rows = pa.concat_tables(parts)
    order = np.argsort(np.asarray(rows.column("frame_index").to_numpy(), dtype=np.int64), kind="stable")
    rows = rows.take(pa.array(order))

    def matrix(key: str, dim: int) -> npt.NDArray[np.float32]:
        col = rows.column(key).combine_chunks()
        flat = np.asarray(col.flatten().to_numpy(zero_copy_only=False), dtype=np.float32)
        return _matrix(flat.reshape(rows.num_rows, -1), dim, key)

    ts = np.asarray(rows.column("timestamp").to_numpy(), dtype=np.float64)
    return DoctorEpisode(index, matrix(state_key, ds.info.state_dim), matrix(action_key, ds.info.action_dim), ts,
                         raw=True)


def load_episode(ds: Dataset, index: int) -> tuple[DoctorEpisode | None, Finding | None]:
    """One episode as the reader gives it, or read raw past its refusal (with an INFO saying so), or None with
    the error naming why it cannot be read."""
    try:
        ep = ds.episode(index)
        return DoctorEpisode(index, ep.states, ep.actions, ep.timestamps, raw=False), None
    except DatasetError as err:
        refusal = str(err)
    raw: DoctorEpisode | None = None
    try:
        if isinstance(ds, DPZarrDataset):
            raw = _raw_dp(ds, index)
        elif isinstance(ds, LeRobotDataset):
            raw = _raw_lerobot(ds, index)
    except (DatasetError, KeyError, ValueError, OSError) as err:
        refusal += f" (reading it raw failed too: {err})"
    if raw is None:
        return None, Finding("error", "episode_unreadable", f"episode {index}", refusal)
    return raw, Finding("info", "episode_read_raw", f"episode {index}",
                        f"the reader refused it ({refusal}); checked from the stored columns")


def load_episodes(ds: Dataset) -> tuple[list[DoctorEpisode], list[Finding]]:
    """Every episode, as the reader gives it or read raw past its refusal; refusals become findings."""
    episodes: list[DoctorEpisode] = []
    findings: list[Finding] = []
    for index in ds.episode_indices():
        ep, finding = load_episode(ds, index)
        if finding is not None:
            findings.append(finding)
        if ep is not None:
            episodes.append(ep)
    return episodes, findings
