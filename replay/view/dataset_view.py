"""View episodes of a dataset: one rerun recording per episode, sent to the configured sinks.

Why one recording per episode: every episode starts at step 0 / time 0, so episodes in one recording would be
drawn on top of each other; as separate recordings of one application the viewer lists them side by side.
With a file sink and several episodes, each episode gets its own file (`<stem>_episode_<N>.rrd`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import rerun as rr

from replay.view.episode import EpisodeViewConfig, EpisodeViewer, EpisodeViewReport
from replay.view.layout import build_blueprint
from replay.view.sinks import SinkConfig, Sinks
from robodata.dataset import Dataset

APP_ID = "yam_replay"


@dataclass(frozen=True)
class ViewedEpisode:
    report: EpisodeViewReport
    path: Path | None
    stream: rr.RecordingStream


def episode_file(base: Path, episode: int, several: bool) -> Path:
    """`base` itself for a single episode, else `<stem>_episode_<N><suffix>` next to it."""
    if not several:
        return base
    return base.with_name(f"{base.stem}_episode_{episode:06d}{base.suffix or '.rrd'}")


def default_save_path(dataset_path: Path, cwd: Path | None = None) -> Path:
    """Where a view goes when no sink is given: `<dataset name>.rrd` in the working directory.

    Not inside or next to the dataset: datasets are often read-only or shared, and a file added inside a
    dataset folder is something its readers would have to ignore.
    """
    name = dataset_path.resolve().name or "dataset"
    return (cwd or Path.cwd()) / f"{name}.rrd"


def view_dataset(
    dataset: Dataset,
    episodes: Sequence[int],
    sink: SinkConfig,
    config: EpisodeViewConfig | None = None,
    out: TextIO | None = None,
) -> list[ViewedEpisode]:
    """Log `episodes` of `dataset`. File sinks are flushed and closed before returning; served or connected
    streams are returned open (the caller keeps them alive while viewers watch)."""
    viewer = EpisodeViewer(dataset, config)
    sinks = Sinks(sink, out)
    blueprint = build_blueprint(viewer.content())
    several = len(episodes) > 1
    name = dataset.info.path.resolve().name
    viewed = []
    for index in episodes:
        rec = rr.RecordingStream(APP_ID, recording_id=f"{name}/episode_{index:06d}")
        path = episode_file(sink.save, index, several) if sink.save is not None else None
        sinks.attach(rec, blueprint, save=path)
        report = viewer.log_episode(rec, index)
        rec.flush()
        if not (sink.serve or sink.connect):
            rec.disconnect()
        viewed.append(ViewedEpisode(report, path, rec))
        if out is not None:
            where = f" -> {path}" if path is not None else ""
            extra = f", {report.chunks} chunks" if report.chunks else ""
            out.write(f"episode {index}: {report.frames} frames{extra}{where}\n")
            for note in report.notes:
                out.write(f"  note: {note}\n")
    return viewed
