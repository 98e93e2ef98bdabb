"""`python -m robot_client run`: drive the sim or the real arms with a served policy.

    python -m robot_client run --server 127.0.0.1:50051 --robot sim --config bimanual_yam \
        [--chunking async|sync|ensemble|rtc] [--dry-run] [--record OUT.zarr] [--episodes N] [--prompt TEXT]

Before anything moves: the policy's joint and camera names are checked against the robot config, the first
action is checked against the measured state, and (real arms) `--robot yam` requires `--i-understand-this-moves-
the-arm` unless `--dry-run`. A status line is printed once a second; e-stop with `kill -USR1 <pid>` or by typing
'e' + Enter.

An episode that cannot go on (first action refused, another model answering, server lost past `--hold-timeout`,
a robot fault) ends with the arm holding, is recorded as aborted with its reason, and the reason is printed. A
refused first action only skips its episode (the arm never moved); any other abort ends the run. Exit status:
0 every episode completed, 1 e-stopped (or nothing ran), 3 an episode was aborted, 2 real arms not confirmed or
a refusal before anything moved (joint names that differ from the config's, with the `--name-map` that would
rename them; a config the rig cannot use).
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from policy_norm.joint_names import NAME_MAP_FLAG, NameMapError, parse_name_map
from protos import policy_pb2 as pb
from replay.view.sink_options import add_sink_arguments, sink_from_args
from robodata.dataset import DatasetError
from robodata.open import open_dataset
from robot_client.backends import SIM_ACTUATIONS, RigOptions, backend_names, get_backend
from robot_client.chunking import MODES, ChunkingConfig
from robot_client.config import RobotConfig, RobotConfigError, load_robot_config
from robot_client.control_loop import TickRecord
from robot_client.live_compare import LiveComparator, LiveComparison
from robot_client.policy_client import GrpcPolicy, GrpcPolicyConfig
from robot_client.policy_worker import ChunkRecord
from robot_client.rig import Rig, RigError, check_names
from robot_client.run_recorder import RecorderSpec, RunRecorder
from robot_client.runner import EpisodeOptions, EpisodeReport, run_episode
from robot_client.safety import EStop, FirstActionError

if TYPE_CHECKING:
    from replay.view.live import LiveLogger
    from robot_client.sim.robot import SimConfig

log = logging.getLogger("robot_client")

# Exit status of a run in which an episode was aborted (see the module docstring).
EXIT_ABORTED = 3


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--server", required=True, help="policy server HOST:PORT")
    parser.add_argument("--robot", choices=backend_names(), default="sim")
    parser.add_argument("--config", default="bimanual_yam", help="robot config TOML (or a bundled name)")
    parser.add_argument(NAME_MAP_FLAG, dest="name_map", default=None, metavar="MAP",
                        help="rename the policy's joint names to the config's: a .toml/.json file ([names] table), "
                             "pairs left_joint_0=left_joint1,..., and/or index+1; a rename, never a reorder")
    parser.add_argument("--calibration", type=Path, default=None,
                        help="rig calibration file (zero offsets, gripper limits); overrides the config's "
                             "[robot] calibration (real arms only)")
    parser.add_argument("--chunking", choices=MODES, default="async")
    parser.add_argument("--refill", type=int, default=None, help="async/rtc: query when this many actions remain")
    parser.add_argument("--blend", type=int, default=4, help="async: actions blended from old into new chunk")
    parser.add_argument("--execute", type=int, default=0, help="sync: actions executed per chunk (0 = all)")
    parser.add_argument("--episodes", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=20.0, help="episode length")
    parser.add_argument("--prompt", action="append", default=None,
                        help="task instruction sent with every observation; repeat it to cycle through several "
                             "(episode i uses the (i mod n)-th)")
    parser.add_argument("--dry-run", action="store_true", help="compute commands but never send them")
    parser.add_argument("--servo-cpu", type=int, default=None,
                        help="--robot yam-process: pin the servo process to this core (one no other busy process "
                             "uses; e.g. the last core, isolated with isolcpus=)")
    parser.add_argument("--allow-far-start", action="store_true",
                        help="ramp slowly to a first action beyond the safety threshold instead of refusing")
    parser.add_argument("--allow-model-swap", action="store_true",
                        help="keep going when the server starts answering with another model (other weights, "
                             "config or stats) instead of holding and aborting the episode")
    parser.add_argument("--hold-timeout", type=float, default=10.0,
                        help="abort the episode when the arm has held this many seconds past the deadline for "
                             "lack of a usable chunk (server lost)")
    parser.add_argument("--record", type=Path,
                        help="record the run (a dataset at the policy rate, with commands, chunks, reports) to zarr")
    parser.add_argument("--compare-dataset", type=Path,
                        help="compare every live chunk with the nearest demonstration of this dataset")
    parser.add_argument("--seed", type=int, default=0, help="sim: scene seed of episode 0")
    parser.add_argument("--pace", type=float, default=1.0, help="sim: simulated seconds per wall second")
    parser.add_argument("--sim-actuation", choices=SIM_ACTUATIONS, default="position",
                        help="sim: how the joints are driven: 'position' servos with gravity cancelled (default; "
                             "what the embedded demo policy was trained on) or 'mit', the real motors' law (gains, "
                             "torque limits, real gravity and the driver's gravity feed-forward, gripper force cap)")
    parser.add_argument("--token-file", type=Path, help="bearer token for the policy server")
    parser.add_argument("--tls-root-cert", type=Path, help="CA certificate of a TLS policy server")
    parser.add_argument("--i-understand-this-moves-the-arm", dest="confirmed", action="store_true",
                        help="required to command real arms (--robot yam) without --dry-run")
    # Live view in rerun: --rerun-save FILE.rrd, --rerun-serve [--rerun-bind IP], --rerun-connect HOST:PORT.
    add_sink_arguments(parser, prefix="rerun-")


class StatusLine:
    """Prints one line a second: time, chunks, delay, holds, tracking error."""

    def __init__(self) -> None:
        self.last = 0.0
        self.chunks = 0
        self.delays: list[float] = []
        self.holding = False
        self.error = 0.0

        self.live = ""

    def on_chunk(self, record: ChunkRecord, comparison: LiveComparison | None = None) -> None:
        self.chunks += 1
        self.delays.append(record.received_time - record.obs_time)
        if comparison is not None:
            worst = int(np.argmax(comparison.chunk_l1))
            self.live = (f"  vs demo ep{comparison.episode}:{comparison.frame} "
                         f"L1 max {comparison.chunk_l1[worst]:.3f} ({worst})")

    def on_tick(self, record: TickRecord) -> None:
        self.holding = record.holding
        self.error = float(np.max(np.abs(record.command.position - record.state.positions)))
        now = time.monotonic()
        if now - self.last >= 1.0:
            self.last = now
            delay = f"{1e3 * float(np.median(self.delays[-20:])):.0f} ms" if self.delays else "-"
            print(f"\r t={record.time:8.2f}  chunks {self.chunks:4d}  delay {delay:>7}  "
                  f"{'HOLD' if self.holding else 'run '}  tracking {self.error:.3f}{self.live}", end="", flush=True)


class ArmsNotConfirmed(ValueError):
    """Real arms were asked for without --dry-run or the explicit confirmation; nothing was connected."""


@dataclass
class SessionResult:
    """What a run did: one report per episode that ran (with its prompt), and whether the e-stop ended it."""

    reports: list[EpisodeReport] = field(default_factory=list)
    prompts: list[str] = field(default_factory=list)
    estopped: bool = False

    @property
    def aborted(self) -> list[EpisodeReport]:
        """The episodes that ended early, e-stopped ones included (each says why)."""
        return [r for r in self.reports if r.aborted]

    def exit_code(self) -> int:
        if not self.reports or self.estopped:
            return 1
        return EXIT_ABORTED if self.aborted else 0


def check_policy_names(robot_names: tuple[str, ...], state_names: Sequence[str], action_names: Sequence[str],
                       name_map: str | None) -> None:
    """The served policy's state and action names, renamed by `--name-map` when given, must be the config's
    joints in the config's order; raises RigError saying what differs and which map would fix it."""
    if name_map is not None:
        try:
            mapping = parse_name_map(name_map)
            mapping.check_entries(state_names, action_names)
            state_names = mapping.apply(state_names, robot_names, "state names")
            action_names = mapping.apply(action_names, robot_names, "action names")
        except NameMapError as err:
            raise RigError(str(err)) from err
    check_names(robot_names, state_names, "state", hint_flag=NAME_MAP_FLAG)
    check_names(robot_names, action_names, "action", hint_flag=NAME_MAP_FLAG)


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        result = run_session(args)
    except ArmsNotConfirmed as exc:
        print(exc, file=sys.stderr)
        return 2
    except (RigError, RobotConfigError, DatasetError) as exc:  # refused before anything moved
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for report in result.aborted:
        print(f"episode {report.index} aborted: {report.reason}", file=sys.stderr)
    return result.exit_code()


def run_session(args: argparse.Namespace) -> SessionResult:
    """The episodes `args` describe (parsed by `add_arguments`), recorded and viewed as asked."""
    backend = get_backend(args.robot)
    if backend.moves_real_hardware and not (args.dry_run or args.confirmed):
        raise ArmsNotConfirmed("refusing to move real arms: run once with --dry-run, then add "
                               "--i-understand-this-moves-the-arm")
    prompts: list[str] = list(args.prompt) if args.prompt else [""]
    config = load_robot_config(args.config)
    if args.calibration is not None:
        config = replace(config, calibration=str(args.calibration.resolve()))
    token = args.token_file.read_text().strip() if args.token_file else None
    policy = GrpcPolicy(GrpcPolicyConfig(target=args.server, streaming=True, token=token,
                                         tls_root_cert=args.tls_root_cert, allow_model_swap=args.allow_model_swap))
    md = policy.metadata
    try:
        check_policy_names(config.joint_names, md.state_names, md.action_names, args.name_map)
    except BaseException:
        policy.close()
        raise
    cameras = [c.name for c in md.cameras]
    try:
        rig = backend.build(config, cameras, RigOptions(seed=args.seed, pace=args.pace,
                                                        sim=_sim_config(args) if backend.simulated else None,
                                                        dry_run=args.dry_run, servo_cpu=args.servo_cpu))
    except ValueError as exc:  # the sim model's own check (SimModelError): a joint the model lacks, named
        policy.close()
        if backend.simulated:
            raise RigError(f"the simulated arms cannot be driven with robot config {args.config}: {exc}; the "
                           f"bundled bimanual_yam config has the model's joint names (rename the policy's names "
                           f"to them with {NAME_MAP_FLAG})") from exc
        raise
    chunking = ChunkingConfig(mode=args.chunking, fps=md.control_fps, execute_steps=args.execute,
                              refill_threshold=args.refill if args.refill is not None else md.action_horizon // 2,
                              blend_steps=args.blend)
    options = EpisodeOptions(chunking=chunking, duration_s=args.seconds, prompt=prompts[0],
                             dry_run=args.dry_run, allow_far_start=args.allow_far_start,
                             hold_timeout_s=args.hold_timeout)
    estop = EStop()
    if threading.current_thread() is threading.main_thread():
        estop.install_signal()
    estop.watch_keyboard()
    recorder = _recorder(args.record, config, md, rig) if args.record else None
    comparator = LiveComparator(open_dataset(args.compare_dataset)) if args.compare_dataset else None
    viewer: LiveLogger | None = None
    result = SessionResult()
    try:
        viewer = _live_view(args, config, md, rig)
        rig.robot.enable()
        for i in range(args.episodes):
            prompt = prompts[i % len(prompts)]
            rig.reset_episode(i)
            status = StatusLine()
            if recorder is not None:
                recorder.start_episode(prompt)
            if viewer is not None:
                viewer.log_event(rig.clock.now(), f"episode {i} starts" + (" (dry run)" if args.dry_run else "")
                                 + (f": {prompt}" if prompt else ""))
            started = time.monotonic()

            def on_chunk(record: ChunkRecord, status: StatusLine = status, started: float = started,
                         prompt: str = prompt) -> None:
                comparison = None
                if comparator is not None:
                    comparison = comparator.compare(record.state, record.actions, prompt,
                                                    time.monotonic() - started)
                status.on_chunk(record, comparison)
                if recorder is not None:
                    recorder.on_chunk(record, comparison)
                if viewer is not None:
                    viewer.log_chunk(record)

            def on_tick(record: TickRecord, status: StatusLine = status) -> None:
                status.on_tick(record)
                if recorder is not None:
                    recorder.on_tick(record)
                if viewer is not None:
                    viewer.log_tick(record)

            report = run_episode(rig, policy, replace(options, prompt=prompt), i, estop=estop, on_chunk=on_chunk,
                                 on_tick=on_tick, raise_on_abort=False)
            if recorder is not None:
                recorder.end_episode(report.outcome, report.reason)
            print()
            print(report.summary())
            result.reports.append(report)
            result.prompts.append(prompt)
            if estop.active:
                result.estopped = True
                break
            if report.aborted:
                print(f"episode {i} aborted: {report.reason}")
                if not isinstance(report.error, FirstActionError):  # the arm moved or the policy is unusable
                    break
    finally:
        if recorder is not None:
            recorder.close()
        if viewer is not None:
            print(viewer.close().summary())
        rig.close()
        policy.close()
    return result


def _sim_config(args: argparse.Namespace) -> SimConfig:
    """The simulation settings the sim options ask for (the scene seed is the rig's own)."""
    from robot_client.sim.robot import SimConfig

    return SimConfig(actuation=getattr(args, "sim_actuation", "position"))


def _live_view(args: argparse.Namespace, config: RobotConfig, md: pb.PolicyMetadata, rig: Rig) -> LiveLogger | None:
    """The rerun live view the --rerun-* options ask for (None without them); opened before the arms move, so
    a busy port fails the run here and not mid-episode."""
    sink = sink_from_args(args, prefix="rerun-")
    if sink is None:
        return None
    from replay.view.live import LiveConfig, LiveLogger

    return LiveLogger(LiveConfig(joint_names=config.joint_names, fps=float(md.control_fps), sink=sink,
                                 camera_names=rig.camera_names), out=sys.stdout)


def _recorder(path: Path, config: RobotConfig, md: pb.PolicyMetadata, rig: Rig) -> RunRecorder:
    frames = rig.capture_images()
    return RunRecorder(path, RecorderSpec(
        fps=float(md.control_fps), joint_names=config.joint_names,
        cameras={n: (int(rgb.shape[0]), int(rgb.shape[1])) for n, (rgb, _) in frames.items()},
        horizon=int(md.action_horizon), robot_type=config.name,
    ))
