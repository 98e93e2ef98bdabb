"""Read an .rrd back as plain Python: which entities it holds, and a component's rows with their times.

Why: checking what a view wrote (tests, or "why is my plot empty?") should not need a viewer. rerun 0.41
reads files through `rerun.chunk.RrdReader`; this flattens its chunks into per-entity rows, with `step` as an
int and `time` (and rerun's own `log_time`) as seconds, and tells static from temporal data.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
from rerun.chunk import RrdReader

from replay.view import layout


@dataclass
class EntityRows:
    """Everything logged to one entity: static components, and temporal rows (one dict per row)."""

    static: dict[str, Any] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)

    def values(self, component: str) -> list[Any]:
        """The component's value in each temporal row that has it, ordered by (step, time)."""
        ordered = sorted(self.rows, key=lambda r: (r.get(layout.STEP, 0), r.get(layout.TIME, 0.0)))
        return [r[component] for r in ordered if r.get(component) is not None]

    def times(self, component: str, timeline: str = layout.TIME) -> list[Any]:
        ordered = sorted(self.rows, key=lambda r: (r.get(layout.STEP, 0), r.get(layout.TIME, 0.0)))
        return [r.get(timeline) for r in ordered if r.get(component) is not None]


@dataclass
class RrdContent:
    entities: dict[str, EntityRows]
    recordings: list[str]
    blueprints: int

    def __contains__(self, path: str) -> bool:
        return path in self.entities

    def __getitem__(self, path: str) -> EntityRows:
        return self.entities[path]

    def under(self, prefix: str) -> list[str]:
        """Entity paths at or below `prefix`."""
        return sorted(p for p in self.entities if p == prefix or p.startswith(prefix.rstrip("/") + "/"))


def _column(batch: pa.RecordBatch, name: str) -> list[Any]:
    col = batch.column(name)
    if pa.types.is_duration(col.type) or pa.types.is_timestamp(col.type):
        return [None if v is None else v / 1e9 for v in col.cast(pa.int64()).to_pylist()]
    return list(col.to_pylist())


def read_rrd(path: str | Path) -> RrdContent:
    reader = RrdReader(Path(path))
    entities: dict[str, EntityRows] = defaultdict(EntityRows)
    for chunk in reader.stream().to_chunks():
        batch = chunk.to_record_batch()
        names = [n for n in batch.schema.names if n != "rerun.controls.RowId"]
        columns = {n: _column(batch, n) for n in names}
        entity = entities[str(chunk.entity_path)]
        for i in range(chunk.num_rows):
            row = {n: columns[n][i] for n in names}
            if chunk.is_static:
                entity.static.update({k: v for k, v in row.items() if v is not None})
            else:
                entity.rows.append(row)
    return RrdContent(
        entities=dict(entities),
        recordings=[r.recording_id for r in reader.recordings()],
        blueprints=len(reader.blueprints()),
    )
