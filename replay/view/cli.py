"""`python -m replay view PATH`: look at a dataset or a recording in rerun.

    python -m replay view PATH [--episode N ...] [--save FILE.rrd] [--serve [--bind IP] [--grpc-port P] [--web]]
        [--connect HOST:PORT] [--max-frames N] [--no-robot] [--jpeg-quality Q]

Without --save, --serve or --connect the view is saved to `<dataset name>.rrd` in the working directory (a
headless machine cannot open a viewer window); open it with `rerun FILE.rrd`. --serve keeps running until
Ctrl+C so that viewers can connect. Heavy imports (rerun, mujoco) happen only when the command runs, so the
other `python -m replay` commands do not pay for them.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any, TextIO

from replay.view.sink_options import add_sink_arguments, sink_from_args

DEFAULT_EPISODE = 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", type=Path, help="dataset folder (LeRobot, DP zarr) or recording")
    parser.add_argument("--episode", type=int, nargs="+", default=None,
                        help="episode indices to view (default: the first episode)")
    add_sink_arguments(parser)
    parser.add_argument("--max-frames", type=int, default=None, help="view at most this many frames per episode")
    parser.add_argument("--no-robot", action="store_true", help="skip the 3D arms")
    parser.add_argument("--jpeg-quality", type=int, default=80, help="image JPEG quality (1..100)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--fps", type=float, default=None, help="DP zarr only: control rate (default 10)")
    parser.add_argument("--include-incomplete", action="store_true",
                        help="recordings only: also view incomplete episodes")


def _open(args: argparse.Namespace) -> Any:
    from robodata.open import open_dataset

    options: dict[str, Any] = {}
    if args.fps is not None:
        options["fps"] = args.fps
    if args.include_incomplete:
        options["include_incomplete"] = True
    return open_dataset(args.path, **options)


def run(args: argparse.Namespace, out: TextIO) -> int:
    from replay.view.dataset_view import default_save_path, view_dataset
    from replay.view.episode import EpisodeViewConfig
    from replay.view.sinks import SinkError
    from robodata.dataset import DatasetError

    dataset = _open(args)
    available = dataset.episode_indices()
    episodes = tuple(args.episode) if args.episode else tuple(available[:1])
    missing = [e for e in episodes if e not in available]
    if missing or not episodes:
        raise DatasetError(f"{args.path}: episodes {missing or '(none)'} not readable here; episodes are "
                           f"{available[:20]}{' ...' if len(available) > 20 else ''}")
    try:
        sink = sink_from_args(args, default_save=default_save_path(args.path))
        assert sink is not None
        config = EpisodeViewConfig(max_frames=args.max_frames, jpeg_quality=args.jpeg_quality,
                                   robot=not args.no_robot, progress=not args.no_progress)
    except (SinkError, ValueError) as err:
        raise DatasetError(str(err)) from err
    try:
        viewed = view_dataset(dataset, episodes, sink, config, out)
    except SinkError as err:
        raise DatasetError(str(err)) from err
    files = [v.path for v in viewed if v.path is not None]
    if files:
        out.write("open with: rerun " + " ".join(str(f) for f in files) + "\n")
    if args.serve:
        out.write("serving; press Ctrl+C to stop\n")
        out.flush()
        try:
            while True:
                time.sleep(1.0)
        except KeyboardInterrupt:
            out.write("stopped\n")
    for v in viewed:
        v.stream.disconnect()
    return 0
