"""Is every file of a dataset readable? One quick pass (`Dataset.verify_files`) shown the same way by `replay info`
(a `files` section, exit 2 when one is broken) and the doctor (one error per broken file).

Why: readers open data and video files lazily, so a truncated parquet or a missing or cut mp4 used to go
unnoticed until the episode that needs it was read, deep inside a training run or a replay. Footers,
containers and the frames at both ends of each video are enough to name the broken file in seconds.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from replay.doctor.findings import Finding
from robodata.dataset import Dataset, DatasetError, FileCheck


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def _episodes(episodes: tuple[int, ...]) -> str:
    if not episodes:
        return ""
    if len(episodes) == 1:
        return f"episode {episodes[0]}"
    if episodes == tuple(range(episodes[0], episodes[-1] + 1)):
        return f"episodes {episodes[0]}..{episodes[-1]}"
    return f"episodes {', '.join(str(e) for e in episodes[:8])}{' ...' if len(episodes) > 8 else ''}"


def check_files(ds: Dataset, full: bool = False) -> list[FileCheck]:
    """`ds.verify_files(full)`, with a reader's refusal turned into one broken entry instead of an exception."""
    try:
        checks = ds.verify_files(full)
    except DatasetError as err:
        checks = [FileCheck(Path(ds.info.path), "dataset", "-", str(err))]
    # Library messages may span lines (Arrow's do); one line per file keeps the listing and the errors readable.
    return [replace(c, problem=" ".join(c.problem.split())) if c.problem else c for c in checks]


def file_lines(checks: list[FileCheck], root: Path) -> list[str]:
    """One line per file: path, what it holds, and OK or what is wrong with it."""
    if not checks:
        return ["  (this format keeps nothing outside what was already read)"]
    width = min(64, max(len(_relative(c.path, root)) for c in checks))
    out = []
    for check in checks:
        status = "ok" if check.ok else f"BROKEN: {check.problem}"
        out.append(f"  {_relative(check.path, root):<{width}s}  {check.kind:<18s} {check.detail:<36s} {status}")
    return out


def broken_summary(checks: list[FileCheck], root: Path) -> list[str]:
    """"path (kind, episodes a..b): problem" for each broken file."""
    return [f"{_relative(c.path, root)} ({c.kind}{', ' + _episodes(c.episodes) if c.episodes else ''}): {c.problem}"
            for c in checks if not c.ok]


def file_findings(ds: Dataset) -> list[Finding]:
    """The doctor's view: an error per unreadable file (video, data parquet, zarr array), naming the episodes
    whose frames or pictures it holds."""
    root = Path(ds.info.path)
    out = []
    for check in check_files(ds):
        if check.ok:
            continue
        where = _relative(check.path, root)
        video = check.kind.startswith("video")
        held = ("camera frames" if video else "frames") + f" of {_episodes(check.episodes)}"
        episodes = f" (holds the {held})" if check.episodes else ""
        code = "unreadable_video" if video else "unreadable_file"
        out.append(Finding("error", code, where, f"{check.kind}: {check.problem}{episodes}"))
    return out
