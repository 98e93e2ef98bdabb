"""The oracle's rerun recording: for each episode, the dataset's actions with the policy's chunks drawn as fans
from the frames they were predicted at, and the per-joint first-action error as a signal.

Why a recording next to the tables: the report says *which* joint and step depart from the data; the fans show
*how* (a constant offset, a drift along the horizon, a gripper flipped, a lag) against the actions the policy
should have reproduced. One .rrd per episode, because every episode has its own time axis; the layout is the
dataset view's (`replay.view.layout`), so the same blueprint and entity paths apply.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
import rerun as rr

from replay.oracle.result import OracleResult
from replay.view import layout
from replay.view.chunks import FanLogger
from replay.view.columns import TimeIndex, log_series_styles, send_joint_series, send_scalars
from robodata.dataset import Dataset

ORACLE_SOURCE = "oracle"


def write_oracle_rrd(result: OracleResult, dataset: Dataset, directory: Path) -> list[Path]:
    """Write `oracle_episode_<e>.rrd` per episode with sampled frames; returns the files written."""
    directory.mkdir(parents=True, exist_ok=True)
    by_episode: dict[int, list[int]] = defaultdict(list)
    for i, (episode, _) in enumerate(result.located):
        by_episode[episode].append(i)
    names = result.action_names
    info = dataset.info
    fps = float(info.fps)
    order = [list(info.action_names).index(n) for n in names]
    written: list[Path] = []
    for episode, rows in sorted(by_episode.items()):
        ep = dataset.episode(episode)
        path = directory / f"oracle_episode_{episode}.rrd"
        rec = rr.RecordingStream("yam_oracle", recording_id=f"oracle-{result.dataset}-{episode}")
        content = layout.ViewContent(joint_names=names, robot=False, signals=True)
        rec.save(str(path), default_blueprint=layout.build_blueprint(content))
        actions = np.asarray(ep.actions, dtype=np.float64)[:, order]
        steps = np.arange(len(actions))
        log_series_styles(rec, names, layout.ACTION)
        send_joint_series(rec, names, layout.ACTION, TimeIndex.of(steps, steps / fps), actions)
        fans = FanLogger(joint_names=names, fps=fps, source=ORACLE_SOURCE)
        frames = np.array([result.located[i][1] for i in rows])
        for i in rows:
            frame = result.located[i][1]
            fans.log(rec, frame, frame / fps, result.predicted[i])
        first_error = np.abs(result.predicted[rows, 0, :].astype(np.float64) - result.truth[rows, 0, :])
        index = TimeIndex.of(frames, frames / fps)
        for j, joint in enumerate(names):
            send_scalars(rec, layout.signal_path(f"oracle_first_error_{joint}"), index, first_error[:, j])
        rec.flush()
        rec.disconnect()
        written.append(path)
    return written
