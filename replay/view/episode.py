"""Log one episode of any dataset (and a recording's extras) into a rerun recording stream.

Why this order: numeric series, chunk fans and the 3D poses go first as whole columns (fast, and the plots are
complete as soon as a viewer connects); images follow frame by frame, JPEG-compressed, behind a progress bar,
because decoding and compressing them is what takes time on long episodes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt
import rerun as rr
from tqdm import tqdm

from replay.view import layout
from replay.view.chunks import DEFAULT_MAX_SLOTS, FanLogger, FanSlots, chunk_sources
from replay.view.columns import TimeIndex, log_at, log_series_styles, send_joint_series, send_scalars
from replay.view.extras import ExtrasPlan, plan_extras, transitions
from replay.view.kinematics import DEFAULT_MODEL, KinematicsError, RobotKinematics
from replay.view.robot3d import log_robot_static, send_robot_poses
from replay.view.text import WARN, TextRow, hold_row
from robodata.dataset import Dataset, Episode
from robodata.recording import RecordingDataset

F64 = npt.NDArray[np.float64]


@dataclass(frozen=True)
class EpisodeViewConfig:
    max_frames: int | None = None
    jpeg_quality: int = 80
    robot: bool = True
    model_path: Path = DEFAULT_MODEL
    max_chunk_slots: int = DEFAULT_MAX_SLOTS
    progress: bool = True

    def __post_init__(self) -> None:
        if self.max_frames is not None and self.max_frames < 1:
            raise ValueError(f"max_frames must be >= 1, got {self.max_frames}")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality must be in 1..100, got {self.jpeg_quality}")


@dataclass
class EpisodeViewReport:
    episode: int
    frames: int
    cameras: tuple[str, ...]
    chunks: int = 0
    robot: bool = False
    notes: list[str] = field(default_factory=list)


def robot_for(names: tuple[str, ...], config: EpisodeViewConfig, notes: list[str]) -> RobotKinematics | None:
    """The arm model for these joint names, or None (with a note saying why) when it cannot be driven."""
    if not config.robot:
        return None
    try:
        kin = RobotKinematics(names, config.model_path)
    except KinematicsError as err:
        notes.append(f"3D view skipped: {err}")
        return None
    if kin.note:
        notes.append(f"3D view: {kin.note}")
    return kin


class EpisodeViewer:
    """Logs episodes of one dataset; static content (geometry, styles) is logged once per stream."""

    def __init__(self, dataset: Dataset, config: EpisodeViewConfig | None = None) -> None:
        self.dataset = dataset
        self.config = config or EpisodeViewConfig()
        self.notes: list[str] = []
        info = dataset.info
        self.kinematics = robot_for(info.state_names, self.config, self.notes)

    def content(self) -> layout.ViewContent:
        """What the blueprint lays out for this dataset (the same for all its episodes)."""
        info = self.dataset.info
        return layout.ViewContent(
            joint_names=tuple(dict.fromkeys((*info.action_names, *info.state_names))),
            camera_names=info.camera_names,
            robot=self.kinematics is not None,
            signals=isinstance(self.dataset, RecordingDataset),
            norm=any(k.startswith("extras/norm_") for k in info.features),
        )

    def log_episode(self, rec: rr.RecordingStream, index: int) -> EpisodeViewReport:
        ds, cfg = self.dataset, self.config
        info = ds.info
        episode = ds.episode(index)
        n = len(episode) if cfg.max_frames is None else min(len(episode), cfg.max_frames)
        report = EpisodeViewReport(index, n, info.camera_names, notes=list(self.notes))
        frames = TimeIndex.of(np.arange(n), episode.timestamps[:n])
        self._log_header(rec, episode, report)
        log_series_styles(rec, info.state_names, layout.STATE)
        log_series_styles(rec, info.action_names, layout.ACTION)
        send_joint_series(rec, info.state_names, layout.STATE, frames, episode.states[:n])
        send_joint_series(rec, info.action_names, layout.ACTION, frames, episode.actions[:n])
        if isinstance(ds, RecordingDataset):
            report.chunks = self._log_extras(rec, ds, index, frames, report)
        if self.kinematics is not None:
            log_robot_static(rec, self.kinematics)
            send_robot_poses(rec, self.kinematics, frames, episode.states[:n])
            report.robot = True
        self._log_images(rec, episode, frames)
        return report

    def _log_header(self, rec: rr.RecordingStream, episode: Episode, report: EpisodeViewReport) -> None:
        info = self.dataset.info
        rows = [TextRow(f"episode {episode.index} ({report.frames} of {len(episode)} frames, {info.fps:g} fps, "
                        f"{info.format}): {episode.task or '(no task)'}")]
        rows += [TextRow(f"note: {n}") for n in (*info.notes, *report.notes)]
        for row in rows:
            log_at(rec, layout.EVENTS, row.archetype(), 0, 0.0)

    # -- recordings ------------------------------------------------------------------------------------------
    def _log_extras(
        self, rec: rr.RecordingStream, ds: RecordingDataset, index: int, frames: TimeIndex,
        report: EpisodeViewReport,
    ) -> int:
        info = ds.info
        names = info.action_names
        plan = plan_extras(ds.extras(index), info.action_dim, len(frames))
        for name, values in plan.joint_series.items():
            log_series_styles(rec, names, name)
            send_joint_series(rec, names, name, frames, values)
        for name, values in plan.norm_series.items():
            for j, joint in enumerate(names):
                path = layout.norm_path(joint, name)
                rec.log(path, rr.SeriesLines(names=f"{joint} {name}", colors=layout.series_color(name)), static=True)
                send_scalars(rec, path, frames, values[:, j])
        for name, values in plan.signals.items():
            width = values.shape[1]
            labels = [name] if width == 1 else [f"{name}[{k}]" for k in range(width)]
            rec.log(layout.signal_path(name), rr.SeriesLines(names=labels), static=True)
            send_scalars(rec, layout.signal_path(name), frames, values)
        self._log_flags(rec, plan, frames)
        if plan.skipped:
            note = f"extras not drawn (shape not understood): {plan.skipped}"
            report.notes.append(note)
            log_at(rec, layout.EVENTS, TextRow(f"note: {note}").archetype(), 0, 0.0)
        return self._log_fans(rec, ds, index, plan, frames)

    def _log_flags(self, rec: rr.RecordingStream, plan: ExtrasPlan, frames: TimeIndex) -> None:
        def at(path: str, row: TextRow, i: int) -> None:
            log_at(rec, path, row.archetype(), int(frames.steps[i]), float(frames.seconds[i]))

        if plan.holding is not None:
            for i, holding in transitions(plan.holding):
                at(layout.EVENTS, hold_row(holding), i)
        if plan.server_warnings is not None:
            counts = np.nan_to_num(plan.server_warnings, nan=0.0)
            for k in np.flatnonzero(counts > 0):
                at(layout.NORM_WARNINGS, TextRow(f"{int(counts[k])} server warning(s) with this frame's chunk", WARN),
                   int(k))

    def _fan_starts(self, ds: RecordingDataset, index: int, plan: ExtrasPlan, frames: TimeIndex) -> F64:
        """Seconds (episode time) at which each frame's chunk was predicted: its observation time when the
        recorder stored it, else the frame's own time."""
        starts = frames.seconds.copy()
        if plan.chunk_obs_time is not None:
            raw = ds.raw_timestamps(index)[: len(frames)]
            obs = plan.chunk_obs_time - raw[0]
            ok = np.isfinite(obs)
            starts[ok] = obs[ok]
        return starts

    def _log_fans(
        self, rec: rr.RecordingStream, ds: RecordingDataset, index: int, plan: ExtrasPlan, frames: TimeIndex
    ) -> int:
        if not plan.chunks:
            return 0
        fps = ds.info.fps
        starts = self._fan_starts(ds, index, plan, frames)
        total = 0
        for source in chunk_sources(list(plan.chunks)):
            fans = FanLogger(ds.info.action_names, fps, source, FanSlots(self.config.max_chunk_slots))
            values = plan.chunks[source]
            for i in range(len(frames)):
                start = float(starts[i])
                if math.isfinite(start) and fans.log(rec, int(round(start * fps)), start, values[i]):
                    total += 1
        return total

    # -- images ----------------------------------------------------------------------------------------------
    def _log_images(self, rec: rr.RecordingStream, episode: Episode, frames: TimeIndex) -> None:
        cameras = episode.camera_names
        if not cameras:
            return
        images = {cam: episode.images(cam) for cam in cameras}
        bar = tqdm(
            range(len(frames)), desc=f"episode {episode.index} images", unit="frame",
            disable=not self.config.progress, leave=False,
        )
        for i in bar:
            for cam in cameras:
                image = rr.Image(images[cam][i]).compress(jpeg_quality=self.config.jpeg_quality)
                log_at(rec, layout.camera_path(cam), image, int(frames.steps[i]), float(frames.seconds[i]))
