"""Read LeRobot datasets (v3.0, v2.1, v2.0) as `robodata.dataset.Dataset`.

Why our own reader: the stack must not depend on `lerobot` (heavy, pins torch/datasets versions) just to
read files, and it must fail loudly where LeRobot's loaders would silently misbehave (e.g. AV1 video through
OpenCV giving 0 frames). State is `observation.state`, action is `action` (both overridable), cameras are
every video- or image-dtype feature (usually `observation.images.*`; LeRobot's own rule is the dtype, and
custom-feature datasets such as openpi's LIBERO use `image` / `wrist_image`). Video is decoded with PyAV and
matched to the frame timestamps; the number of decoded frames must equal the episode length.

v3.0 layout: episodes are rows `[dataset_from_index, dataset_to_index)` of a shared data parquet and the
segment `[from_timestamp, to_timestamp)` of a shared per-camera mp4, both found through
`meta/episodes/chunk-*/file-*.parquet`. v2.x: one parquet and one mp4 per episode under `chunk-{idx//1000}`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from robodata.arrow_columns import column_float64, column_int64, column_matrix, image_column
from robodata.dataset import (
    CameraInfo,
    Dataset,
    DatasetError,
    DatasetInfo,
    Episode,
    EpisodeMeta,
    FeatureSpec,
    FileCheck,
    ImageArray,
    check_fps,
)
from robodata.lerobot_meta import (
    ACTION_KEY,
    DEFAULT_CHUNKS_SIZE,
    INFO_PATH,
    STATE_KEY,
    STATS_PATH,
    V2_EPISODES_PATH,
    V2_TASKS_PATH,
    V3_TASKS_PATH,
    V20,
    V21,
    V21_EPISODES_STATS_PATH,
    V30,
    find_cameras,
    format_template,
    load_json,
    parse_features,
    read_fps,
    read_jsonl,
    read_tasks_parquet,
    require,
    require_int,
    vector_names,
)
from robodata.stats import Stats, aggregate_stats, has_quantiles, stats_from_json
from robodata.video import check_video_file, decode_video_frames

SUPPORTED_VERSIONS = (V30, V21, V20)


@dataclass(frozen=True)
class LeRobotOptions:
    """How to read a LeRobot dataset.

    episodes: the episode indices to expose (any subset, not necessarily contiguous); None = all.
    video_tolerance_s: max |decoded frame time - frame timestamp|; None = half a frame period.
    strict_video_frame_count: require the decoded frame count of an episode's segment to equal its length.
    """

    episodes: tuple[int, ...] | None = None
    state_key: str = STATE_KEY
    action_key: str = ACTION_KEY
    video_tolerance_s: float | None = None
    strict_video_frame_count: bool = True


@dataclass(frozen=True)
class _VideoSegment:
    path: Path
    # [from, to) seconds inside a concatenated file (v3); None = the whole file (v2.x).
    segment: tuple[float, float] | None


@dataclass(frozen=True)
class _EpisodeRecord:
    index: int
    length: int
    tasks: tuple[str, ...]
    data_file: Path
    videos: Mapping[str, _VideoSegment] = field(default_factory=dict)
    stats: Mapping[str, Mapping[str, npt.NDArray[np.float64]]] | None = None


def _as_int_tuple(episodes: Iterable[int] | None) -> tuple[int, ...] | None:
    return None if episodes is None else tuple(int(e) for e in episodes)


class LeRobotDataset(Dataset):
    """A LeRobot v3.0 / v2.1 / v2.0 dataset directory (the folder holding `meta/info.json`)."""

    def __init__(self, root: str | Path, options: LeRobotOptions | None = None) -> None:
        self.root = Path(root)
        self.options = options or LeRobotOptions()
        info_path = self.root / INFO_PATH
        self._info_where = str(info_path)
        raw = load_json(info_path)
        if not isinstance(raw, dict):
            raise DatasetError(f"{info_path}: expected a JSON object")
        self._raw_info: dict[str, Any] = raw
        version = require(raw, "codebase_version", self._info_where, f"one of {list(SUPPORTED_VERSIONS)}")
        if version not in SUPPORTED_VERSIONS:
            raise DatasetError(
                f"{info_path}: codebase_version '{version}' is not supported; expected one of "
                f"{list(SUPPORTED_VERSIONS)}"
            )
        self.version: str = str(version)
        self.fps = check_fps(read_fps(raw, self._info_where), self._info_where)
        self.features: dict[str, FeatureSpec] = parse_features(raw, self._info_where)
        notes: list[str] = []
        opts = self.options
        state_names, note = vector_names(self.features, opts.state_key, self._info_where)
        notes += [note] if note else []
        action_names, note = vector_names(self.features, opts.action_key, self._info_where)
        notes += [note] if note else []
        self.cameras: tuple[CameraInfo, ...] = find_cameras(self.features, self._info_where)
        self._tolerance = opts.video_tolerance_s if opts.video_tolerance_s is not None else 0.5 / self.fps
        if self._tolerance <= 0:
            raise DatasetError(f"video_tolerance_s must be positive, got {self._tolerance}")

        if self.version == V30:
            self._task_table = read_tasks_parquet(self.root / V3_TASKS_PATH)
            all_records = self._load_v3_episodes()
        else:
            self._task_table = self._load_v2_tasks()
            all_records = self._load_v2_episodes()
        selected = self._select(all_records, notes)
        self._records: dict[int, _EpisodeRecord] = {r.index: r for r in selected}
        stats = self._load_stats(selected, all_records, notes)

        total = raw.get("total_episodes")
        if isinstance(total, int) and total != len(all_records):
            notes.append(
                f"info.json total_episodes={total} but the episode metadata lists {len(all_records)}"
            )
        # The data file read last, with each episode's row range when its episodes lie in contiguous runs.
        self._data_cache: tuple[Path, pa.Table, dict[int, tuple[int, int]] | None] | None = None
        self.info = DatasetInfo(
            format=f"lerobot-{self.version}",
            path=self.root,
            fps=self.fps,
            num_episodes=len(selected),
            num_frames=sum(r.length for r in selected),
            state_names=state_names,
            action_names=action_names,
            cameras=self.cameras,
            tasks=tuple(self._task_table[k] for k in sorted(self._task_table)),
            robot_type=raw.get("robot_type") if isinstance(raw.get("robot_type"), str) else None,
            features=self.features,
            stats=stats,
            notes=tuple(notes),
        )

    # ---- metadata -------------------------------------------------------------------------------------

    def _template(self, key: str) -> str:
        value = require(self._raw_info, key, self._info_where, "a path template string")
        if not isinstance(value, str):
            raise DatasetError(
                f"{self._info_where}: field '{key}' must be a path template string, got {value!r}"
            )
        return value

    def _video_keys(self) -> list[str]:
        return [c.source_key for c in self.cameras if self.features[c.source_key].dtype == "video"]

    def _load_v3_episodes(self) -> list[_EpisodeRecord]:
        files = sorted((self.root / "meta" / "episodes").glob("chunk-*/file-*.parquet"))
        if not files:
            raise DatasetError(
                f"{self.root / 'meta/episodes'}: no episode metadata files (expected chunk-XXX/file-XXX.parquet)"
            )
        data_template = self._template("data_path")
        video_keys = self._video_keys()
        video_template = self._template("video_path") if video_keys else ""
        records: list[_EpisodeRecord] = []
        for path in files:
            where = str(path)
            try:
                schema = pq.read_schema(path)
            except (pa.ArrowInvalid, OSError) as err:
                raise DatasetError(f"{where}: cannot read parquet: {err}") from err
            needed = ["episode_index", "length", "data/chunk_index", "data/file_index"]
            for key in video_keys:
                needed += [
                    f"videos/{key}/{s}"
                    for s in ("chunk_index", "file_index", "from_timestamp", "to_timestamp")
                ]
            missing = [c for c in needed if c not in schema.names]
            if missing:
                raise DatasetError(f"{where}: missing episode metadata columns {missing}")
            optional = [c for c in ("tasks",) if c in schema.names]
            # Per-episode stats are only needed when meta/stats.json is missing (they can be large).
            stat_cols = (
                [c for c in schema.names if c.startswith("stats/")]
                if not (self.root / STATS_PATH).is_file()
                else []
            )
            try:
                table = pq.read_table(path, columns=needed + optional + stat_cols)
            except (pa.ArrowException, OSError) as err:
                raise DatasetError(f"{where}: cannot read parquet: {err}") from err
            rows = table.to_pylist()
            for i, row in enumerate(rows):
                rw = f"{where} row {i}"
                ep = require_int(row, "episode_index", rw)
                length = require_int(row, "length", rw)
                data_rel = format_template(
                    data_template,
                    self._info_where,
                    chunk_index=require_int(row, "data/chunk_index", rw),
                    file_index=require_int(row, "data/file_index", rw),
                )
                videos: dict[str, _VideoSegment] = {}
                for key in video_keys:
                    rel = format_template(
                        video_template,
                        self._info_where,
                        video_key=key,
                        chunk_index=require_int(row, f"videos/{key}/chunk_index", rw),
                        file_index=require_int(row, f"videos/{key}/file_index", rw),
                    )
                    start = row[f"videos/{key}/from_timestamp"]
                    end = row[f"videos/{key}/to_timestamp"]
                    if not isinstance(start, int | float) or not isinstance(end, int | float) or end <= start:
                        raise DatasetError(
                            f"{rw}: videos/{key}/from_timestamp={start!r}, to_timestamp={end!r} "
                            f"must be numbers with from < to"
                        )
                    videos[key] = _VideoSegment(self.root / rel, (float(start), float(end)))
                tasks_raw = row.get("tasks")
                tasks = tuple(str(t) for t in tasks_raw) if isinstance(tasks_raw, list) else ()
                ep_stats = _episode_stats_from_columns(row, stat_cols, rw) if stat_cols else None
                records.append(_EpisodeRecord(ep, length, tasks, self.root / data_rel, videos, ep_stats))
        return records

    def _load_v2_tasks(self) -> dict[int, str]:
        path = self.root / V2_TASKS_PATH
        out: dict[int, str] = {}
        for i, row in enumerate(read_jsonl(path)):
            rw = f"{path} line {i + 1}"
            idx = require_int(row, "task_index", rw)
            text = require(row, "task", rw, "the task text")
            out[idx] = str(text)
        return out

    def _load_v2_episodes(self) -> list[_EpisodeRecord]:
        path = self.root / V2_EPISODES_PATH
        chunks_size = self._raw_info.get("chunks_size", DEFAULT_CHUNKS_SIZE)
        if not isinstance(chunks_size, int) or chunks_size <= 0:
            raise DatasetError(f"{self._info_where}: field 'chunks_size' must be a positive integer")
        data_template = self._template("data_path")
        video_keys = self._video_keys()
        video_template = self._template("video_path") if video_keys else ""
        records: list[_EpisodeRecord] = []
        for i, row in enumerate(read_jsonl(path)):
            rw = f"{path} line {i + 1}"
            ep = require_int(row, "episode_index", rw)
            length = require_int(row, "length", rw)
            tasks_raw = row.get("tasks", [])
            tasks = tuple(str(t) for t in tasks_raw) if isinstance(tasks_raw, list) else (str(tasks_raw),)
            chunk = ep // chunks_size
            data_rel = format_template(data_template, self._info_where, episode_chunk=chunk, episode_index=ep)
            videos = {
                key: _VideoSegment(
                    self.root
                    / format_template(
                        video_template, self._info_where, episode_chunk=chunk, video_key=key, episode_index=ep
                    ),
                    None,
                )
                for key in video_keys
            }
            records.append(_EpisodeRecord(ep, length, tasks, self.root / data_rel, videos))
        return records

    def _select(self, records: list[_EpisodeRecord], notes: list[str]) -> list[_EpisodeRecord]:
        by_index: dict[int, _EpisodeRecord] = {}
        for rec in records:
            if rec.index in by_index:
                raise DatasetError(
                    f"{self.root}: episode {rec.index} is listed twice in the episode metadata"
                )
            if rec.length <= 0:
                raise DatasetError(f"{self.root}: episode {rec.index} has length {rec.length}")
            by_index[rec.index] = rec
        wanted = _as_int_tuple(self.options.episodes)
        if wanted is None:
            return [by_index[i] for i in sorted(by_index)]
        missing = [i for i in wanted if i not in by_index]
        if missing:
            raise DatasetError(
                f"{self.root}: episodes {missing} are not in the dataset; it has {len(by_index)} episodes "
                f"({_describe_indices(sorted(by_index))})"
            )
        chosen = sorted(set(wanted))
        notes.append(f"reading {len(chosen)} of {len(by_index)} episodes: {_describe_indices(chosen)}")
        return [by_index[i] for i in chosen]

    def _load_stats(
        self, selected: list[_EpisodeRecord], all_records: list[_EpisodeRecord], notes: list[str]
    ) -> Stats | None:
        stats_path = self.root / STATS_PATH
        if self.version == V21:
            path = self.root / V21_EPISODES_STATS_PATH
            if not path.is_file():
                if stats_path.is_file():
                    notes.append(f"{V21_EPISODES_STATS_PATH} missing; using {STATS_PATH}")
                    return stats_from_json(load_json(stats_path), str(stats_path))
                notes.append("no stored statistics (neither episodes_stats.jsonl nor stats.json)")
                return None
            wanted = {r.index for r in selected}
            per_episode: dict[int, Stats] = {}
            for i, row in enumerate(read_jsonl(path)):
                rw = f"{path} line {i + 1}"
                ep = require_int(row, "episode_index", rw)
                per_episode[ep] = stats_from_json(require(row, "stats", rw, "an object of feature stats"), rw)
            lacking = sorted(wanted - set(per_episode))
            if lacking:
                raise DatasetError(f"{path}: no stats for episodes {_describe_indices(lacking)}")
            stats = aggregate_stats([per_episode[i] for i in sorted(wanted)])
            scope = "the selected episodes" if len(wanted) < len(all_records) else "all episodes"
            notes.append(f"stats aggregated from {V21_EPISODES_STATS_PATH} over {scope}")
            if not has_quantiles(stats):
                notes.append(
                    "stored stats have no quantiles (q01/q99 absent); LeRobot v2.1 does not store them"
                )
            return stats
        if stats_path.is_file():
            stats = stats_from_json(load_json(stats_path), str(stats_path))
            if not has_quantiles(stats):
                notes.append(f"{STATS_PATH} has no quantiles (q01/q99 absent)")
            return stats
        with_stats = [r.stats for r in all_records if r.stats]
        if with_stats and len(with_stats) == len(all_records):
            notes.append(
                f"{STATS_PATH} missing; stats aggregated from the per-episode stats columns "
                "(quantiles are count-weighted means of episode quantiles, an approximation)"
            )
            return aggregate_stats([s for s in with_stats if s is not None])
        notes.append(f"no stored statistics ({STATS_PATH} missing)")
        return None

    # ---- file checks ----------------------------------------------------------------------------------

    def verify_files(self, full: bool = False) -> list[FileCheck]:
        """Every data parquet (its footer: row count and columns; `full`: every page of the numeric columns) and
        every video file (container, first and last frames, frame count and duration against the episode index;
        `full`: every frame) of the selected episodes."""
        data_files: dict[Path, list[_EpisodeRecord]] = {}
        video_files: dict[tuple[str, Path], list[tuple[_EpisodeRecord, _VideoSegment]]] = {}
        for rec in self._records.values():
            data_files.setdefault(rec.data_file, []).append(rec)
            for key, video in rec.videos.items():
                video_files.setdefault((key, video.path), []).append((rec, video))
        checks = [self._check_data_file(path, recs, full) for path, recs in sorted(data_files.items())]
        names = {c.source_key: c.name for c in self.cameras}
        for (key, path), entries in sorted(video_files.items(), key=lambda kv: (kv[0][0], str(kv[0][1]))):
            episodes = tuple(sorted(rec.index for rec, _ in entries))
            expected = sum(rec.length for rec, _ in entries)
            ends = [v.segment[1] for _, v in entries if v.segment is not None]
            found = check_video_file(path, expected_frames=expected, min_duration_s=max(ends) if ends else None,
                                     exact=self.options.episodes is None or self.version != V30, full=full)
            detail = (f"{found.frames} frames, {found.duration_s:.2f} s, {found.width}x{found.height}"
                      if found.frames else "-")
            checks.append(FileCheck(path, f"video {names.get(key, key)}", detail, found.problem, episodes))
        return checks

    def _check_data_file(self, path: Path, recs: list[_EpisodeRecord], full: bool = False) -> FileCheck:
        episodes = tuple(sorted(r.index for r in recs))
        expected = sum(r.length for r in recs)
        if not path.is_file():
            return FileCheck(path, "data", "-", "file not found", episodes)
        try:
            meta = pq.read_metadata(path)
            names = set(meta.schema.to_arrow_schema().names)
        except (pa.ArrowInvalid, OSError) as err:
            return FileCheck(path, "data", "-", f"cannot read the parquet footer: {err}", episodes)
        detail = f"{meta.num_rows} rows, {meta.num_row_groups} row group(s)"
        wanted = [self.options.state_key, self.options.action_key, "timestamp", "episode_index", "frame_index"]
        missing = [c for c in wanted if c not in names]
        if missing:
            return FileCheck(path, "data", detail, f"missing columns {missing}", episodes)
        exact = self.options.episodes is None or self.version != V30  # a v3.0 file also holds unselected episodes
        if meta.num_rows < expected or (exact and meta.num_rows != expected):
            return FileCheck(path, "data", detail, f"holds {meta.num_rows} rows but the episode index puts "
                                                   f"{expected} in it (episodes {_describe_indices(list(episodes))})",
                             episodes)
        if full:
            try:
                pq.read_table(path, columns=wanted)
            except (pa.ArrowException, OSError) as err:
                return FileCheck(path, "data", detail, f"a data page cannot be read: {err}", episodes)
        return FileCheck(path, "data", detail, None, episodes)

    # ---- episodes -------------------------------------------------------------------------------------

    def episode_indices(self) -> list[int]:
        return sorted(self._records)

    def episode_meta(self, index: int) -> EpisodeMeta:
        rec = self._records.get(int(index))
        if rec is not None and len(rec.tasks) == 1:
            return EpisodeMeta(index=rec.index, length=rec.length, task=rec.tasks[0])
        return super().episode_meta(index)

    def _numeric_table(self, path: Path) -> pa.Table:
        if self._data_cache is not None and self._data_cache[0] == path:
            return self._data_cache[1]
        self._data_cache = None  # drop the previous file before reading the next: one file in memory at a time
        if not path.is_file():
            raise DatasetError(f"{path}: data file not found")
        try:
            schema = pq.read_schema(path)
        except (pa.ArrowInvalid, OSError) as err:
            raise DatasetError(f"{path}: cannot read parquet: {err}") from err
        wanted = [
            self.options.state_key,
            self.options.action_key,
            "timestamp",
            "episode_index",
            "frame_index",
        ]
        missing = [c for c in wanted if c not in schema.names]
        if missing:
            raise DatasetError(f"{path}: missing columns {missing}; columns are {schema.names}")
        optional = [c for c in ("task_index", "index") if c in schema.names]
        try:
            table = pq.read_table(path, columns=wanted + optional)
        except (pa.ArrowException, OSError) as err:  # footer fine, a data page damaged
            raise DatasetError(f"{path}: cannot read parquet: {err}") from err
        self._data_cache = (path, table, _episode_ranges(table, str(path)))
        return table

    def _episode_rows(self, rec: _EpisodeRecord, table: pa.Table) -> pa.Table:
        where = str(rec.data_file)
        cache = self._data_cache
        ranges = cache[2] if cache is not None and cache[1] is table else None
        if ranges is not None:
            # A slice, not a filter: filtering scans the whole file for each of its (often hundreds of) episodes.
            start, stop = ranges.get(rec.index, (0, 0))
            rows = table.slice(start, stop - start)
        else:
            mask = pc.equal(
                table.column("episode_index"), pa.scalar(rec.index, table.schema.field("episode_index").type)
            )
            rows = table.filter(mask)
        if rows.num_rows != rec.length:
            raise DatasetError(
                f"{where}: episode {rec.index} has {rows.num_rows} rows but its metadata says length {rec.length}"
            )
        frame_index = column_int64(rows, "frame_index", where)
        order = np.argsort(frame_index, kind="stable")
        if not np.array_equal(frame_index[order], np.arange(rec.length)):
            raise DatasetError(f"{where}: episode {rec.index} frame_index is not 0..{rec.length - 1}")
        if not np.array_equal(order, np.arange(rec.length)):
            rows = rows.take(pa.array(order))
        return rows

    def episode(self, index: int) -> Episode:
        rec = self._records.get(int(index))
        if rec is None:
            raise DatasetError(
                f"{self.root}: episode {index} is not readable here; episodes are "
                f"{_describe_indices(self.episode_indices())}"
            )
        where = str(rec.data_file)
        rows = self._episode_rows(rec, self._numeric_table(rec.data_file))
        states = column_matrix(rows, self.options.state_key, len(self.info.state_names), where)
        actions = column_matrix(rows, self.options.action_key, len(self.info.action_names), where)
        timestamps = column_float64(rows, "timestamp", where)
        if not np.all(np.isfinite(timestamps)):
            raise DatasetError(f"{where}: episode {rec.index} column 'timestamp' has non-finite values")
        if rec.length > 1 and not np.all(np.diff(timestamps) > 0):
            bad = int(np.flatnonzero(np.diff(timestamps) <= 0)[0])
            raise DatasetError(
                f"{where}: episode {rec.index} column 'timestamp' is not increasing at frame {bad + 1}"
            )
        task = self._episode_task(rec, rows)
        return Episode(
            index=rec.index,
            task=task,
            timestamps=timestamps,
            states=states,
            actions=actions,
            camera_names=tuple(c.name for c in self.cameras),
            image_loader=lambda cam: self._load_images(rec, cam, timestamps),
        )

    def _episode_task(self, rec: _EpisodeRecord, rows: pa.Table) -> str:
        where = str(rec.data_file)
        if "task_index" in rows.column_names:
            task_idx = column_int64(rows, "task_index", where)
            first = int(task_idx[0])
            if first not in self._task_table:
                raise DatasetError(
                    f"{where}: episode {rec.index} task_index {first} is not in the tasks table "
                    f"(task indices {sorted(self._task_table)})"
                )
            return self._task_table[first]
        if rec.tasks:
            return rec.tasks[0]
        raise DatasetError(
            f"{where}: episode {rec.index} has no task_index column and no tasks in its metadata"
        )

    def _load_images(
        self, rec: _EpisodeRecord, camera: str, timestamps: npt.NDArray[np.float64]
    ) -> ImageArray:
        cam = self.info.camera(camera)
        spec = self.features[cam.source_key]
        if spec.dtype == "video":
            video = rec.videos.get(cam.source_key)
            if video is None:
                raise DatasetError(f"{self.root}: episode {rec.index} has no video for '{cam.source_key}'")
            offset = video.segment[0] if video.segment is not None else 0.0
            frames = decode_video_frames(
                video.path,
                timestamps + offset,
                self._tolerance,
                video.segment,
                strict_count=self.options.strict_video_frame_count,
                label=f"episode {rec.index}, camera '{cam.name}'",
            )
        else:
            frames = self._image_column(rec, cam.source_key)
        if frames.shape[1:3] != (cam.height, cam.width):
            raise DatasetError(
                f"{self.root}: episode {rec.index} camera '{cam.name}' frames are "
                f"{frames.shape[1]}x{frames.shape[2]}, info.json declares {cam.height}x{cam.width}"
            )
        return frames

    def _image_column(self, rec: _EpisodeRecord, key: str) -> ImageArray:
        where = str(rec.data_file)
        try:
            table = pq.read_table(
                rec.data_file,
                columns=[key, "episode_index", "frame_index"],
                filters=[("episode_index", "=", rec.index)],
            )
        except (pa.ArrowInvalid, OSError, KeyError) as err:
            raise DatasetError(f"{where}: cannot read image column '{key}': {err}") from err
        rows = self._episode_rows(rec, table)
        return image_column(rows, key, self.root, f"{where} episode {rec.index}")


def _episode_stats_from_columns(row: Mapping[str, Any], stat_cols: list[str], where: str) -> Stats | None:
    """Per-episode stats from flattened `stats/<feature>/<stat>` columns (feature names may contain '/')."""
    out: Stats = {}
    for col in stat_cols:
        value = row.get(col)
        if value is None:
            continue
        feature, _, stat = col[len("stats/") :].rpartition("/")
        if not feature:
            raise DatasetError(f"{where}: column '{col}' is not of the form stats/<feature>/<stat>")
        try:
            out.setdefault(feature, {})[stat] = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError) as err:
            raise DatasetError(f"{where}: column '{col}' is not numeric: {err}") from err
    return out or None


def _episode_ranges(table: pa.Table, where: str) -> dict[int, tuple[int, int]] | None:
    """Row range [start, stop) of each episode of a data file whose episodes are contiguous runs of rows (LeRobot
    writes them so), or None when an episode is split over several runs or the column cannot be read (then rows
    are found by filtering, and a damaged column is reported when an episode is read)."""
    try:
        ep = column_int64(table, "episode_index", where)
    except DatasetError:
        return None
    if ep.size == 0:
        return {}
    change = np.flatnonzero(np.diff(ep)) + 1
    starts = np.concatenate([[0], change])
    stops = np.concatenate([change, [ep.size]])
    keys = ep[starts]
    if np.unique(keys).size != keys.size:
        return None
    return {int(k): (int(a), int(b)) for k, a, b in zip(keys, starts, stops, strict=True)}


def _describe_indices(indices: list[int]) -> str:
    if not indices:
        return "none"
    if len(indices) <= 12:
        return ", ".join(str(i) for i in indices)
    return f"{indices[0]}..{indices[-1]} ({len(indices)} total)"


def open_lerobot(root: str | Path, episodes: Iterable[int] | None = None, **options: Any) -> LeRobotDataset:
    """Convenience constructor: `open_lerobot(path, episodes=[0, 3], video_tolerance_s=0.01)`."""
    opts = replace(LeRobotOptions(), episodes=_as_int_tuple(episodes), **options)
    return LeRobotDataset(root, opts)
