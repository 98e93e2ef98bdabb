"""The servo loop and the motor sender in a process of their own, at real-time priority where the OS allows it.

Why: in the deploy process the 200 Hz servo loop shares the interpreter lock with cameras, encoding, the policy
client and logging, and the machine's cores with whatever else runs; a tick then waits for a busy thread or a busy
process and the loop misses its period (2.7 ms p99 error and 38 overruns in 30 s beside two busy processes on 2
cores). Here the robot backend (for the YAM: the CAN driver), the jerk-limited servo and the loop live in a child
process that holds no other work, asks for SCHED_FIFO (else a negative nice; pinned to `cpu` when given), and reads
what to do from shared memory (`robot_client.servo_shm`) without ever waiting on its parent. The YAM driver's
frames go out from its 250 Hz sender thread (or, `yam_send_mode = "tick"`, from the loop's own thread each tick);
either way the motor watchdog and the servo deadline hold as in the deploy process.

What the parent sends is a plan, not a tick-by-tick target: the next `horizon` joint targets (with the planned
velocities) sampled every `dt` from the chunk scheduler. The servo interpolates it at its own ticks; a parent that
stalls for less than the plan's length costs nothing, and one that stalls longer leaves the servo with an exhausted
plan, which it treats exactly as the in-process loop treats a late policy: after `deadline_s` it stops jerk-limited
and holds. No heartbeat for `parent_timeout_s`: hold. Parent gone: come to rest, disable, exit. E-stop and shutdown
are modes of the same block.

    python -m robot_client.servo_process --spec JSON --shm NAME      (started by `ServoProcess`, not by hand)
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from typing import IO, Any, NoReturn

import numpy as np
import numpy.typing as npt

from robot_client.backends import SIM_ACTUATIONS
from robot_client.config import RobotConfig, load_robot_config
from robot_client.control_loop import ServoLoop, WallClock
from robot_client.robot import JointState, Robot
from robot_client.servo import JerkLimitedServo, ServoLimits
from robot_client.servo_shm import (
    MODE_ESTOP,
    MODE_HOLD,
    MODE_SHUTDOWN,
    MODE_TRACK,
    RT_FIFO,
    RT_NAMES,
    RT_NICE,
    RT_NONE,
    Layout,
    Plan,
    ServoShm,
    ServoShmError,
    TickRow,
)
from robot_client.yam.arm import SEND_MODES, YamOptions

log = logging.getLogger(__name__)
F64 = npt.NDArray[np.float64]
BACKENDS = ("sim", "emulator", "yam")
KEEP_TIMINGS = 2000  # tick periods the servo process's loop keeps before starting its lists afresh


class ServoProcessError(RuntimeError):
    """The servo process could not start, died, or reported a fault (the message carries its cause)."""


@dataclass(frozen=True)
class ServoProcessConfig:
    """What the servo process builds and how it runs. Plain values only: it crosses the process boundary as JSON."""

    robot_config: str  # a robot config name (robot_client/configs) or a TOML path
    backend: str = "yam"  # "yam" (CAN), "sim" (MuJoCo, MIT law), "emulator" (the YAM driver against emulated motors)
    deadline_s: float = 0.5  # plan exhausted this long: stop and hold (the in-process loop's server deadline)
    parent_timeout_s: float = 0.5  # no heartbeat this long: hold; the parent process gone: rest, disable, exit
    horizon: int = 512  # plan samples the block holds (a policy chunk of 50 at 30 Hz sampled every 5 ms: 334)
    ring: int = 8192  # tick records the block holds (41 s at 200 Hz)
    rt_priority: int = 80  # SCHED_FIFO priority to ask for (1..99); 0 = do not ask
    cpu: int | None = None  # pin the servo process to this core (None: any)
    startup_timeout_s: float = 30.0
    switch_interval_s: float = 0.0005  # sys.setswitchinterval in the servo process (see `serve`)
    dry_run: bool = False  # everything computed and reported, nothing sent to the motors (they hold)
    calibration: str | None = None  # rig calibration file replacing the config's (`run --calibration`)
    # sim backend: how the joints are driven (robot_client.backends.SIM_ACTUATIONS).
    sim_actuation: str = "mit"
    # sim and emulator backends: initial joint positions by joint name (the rest 0).
    initial_positions: dict[str, float] = field(default_factory=dict)
    # yam and emulator backends: who sends the MIT frames (`YamOptions.send_mode`). "thread": the driver's 250 Hz
    # sender beside the loop; "tick": the loop's own thread each tick, the sender filling only gaps. Measured
    # (docs/benchmarks.md, two CPU burners, 3 x 30 s pinned): thread 2 overruns in all, tick 8, the bare timer
    # floor 7: the tick's own bus work (~1.5 ms of Python) leaves it more exposed to this VM's vCPU stalls.
    yam_send_mode: str = "thread"

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ServoProcessError(f"servo process backend {self.backend!r} unknown; known {list(BACKENDS)}")
        if self.sim_actuation not in SIM_ACTUATIONS:
            raise ServoProcessError(f"sim_actuation {self.sim_actuation!r} unknown; known {list(SIM_ACTUATIONS)}")
        if self.yam_send_mode not in SEND_MODES:
            raise ServoProcessError(f"yam_send_mode {self.yam_send_mode!r} unknown; known {list(SEND_MODES)}")
        if not 0 <= self.rt_priority <= 99:
            raise ServoProcessError(f"rt_priority must lie in [0, 99], got {self.rt_priority}")
        if self.cpu is not None and self.cpu not in os.sched_getaffinity(0):
            raise ServoProcessError(f"cpu must be one of the cores this process may run on "
                                    f"{sorted(os.sched_getaffinity(0))} (or None: any core), got {self.cpu}")
        for name in ("deadline_s", "parent_timeout_s", "startup_timeout_s", "switch_interval_s"):
            value = getattr(self, name)
            if not (np.isfinite(value) and value > 0):
                raise ServoProcessError(f"{name} must be a finite number > 0, got {value}")

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ServoProcessConfig:
        return cls(**json.loads(text))


# -- the servo process ---------------------------------------------------------------------------------------------
def build_robot(spec: ServoProcessConfig, config: RobotConfig) -> tuple[Robot, RobotConfig, list[Any]]:
    """(robot, the config it runs with, things to stop after it) for the spec's backend."""
    if spec.backend == "sim":
        from robot_client.sim.robot import Actuation, SimConfig, SimRobot

        start = tuple(spec.initial_positions.get(n, 0.0) for n in config.joint_names)
        actuation: Actuation = "position" if spec.sim_actuation == "position" else "mit"
        return SimRobot(config, SimConfig(actuation=actuation, initial_positions=start)), config, []
    from robot_client.yam.driver import YamRobot

    options = YamOptions(send_mode=spec.yam_send_mode)
    if spec.backend == "yam":
        return YamRobot(config, options=options), config, []
    from robot_client.yam.emulator import MotorEmulator

    pid = os.getpid()
    arms = tuple(replace(a, can_interface="virtual", can_channel=f"servo-{pid}-{a.name}") for a in config.arms)
    config = replace(config, arms=arms)
    emulators = [MotorEmulator.for_arm(a, positions={n: spec.initial_positions.get(n, 0.0) for n in a.names})
                 for a in arms]
    for emu in emulators:
        emu.start()
    return YamRobot(config, options=options), config, emulators


def ask_for_realtime(priority: int, cpu: int | None) -> float:
    """SCHED_FIFO at `priority` where permitted, else nice -10, else nothing; pin to `cpu` when given. Returns
    the RT_* code obtained (reported to the parent: a servo that could not get priority must say so)."""
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    if priority > 0:
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
            return RT_FIFO
        except (PermissionError, OSError) as exc:
            log.warning("servo process: SCHED_FIFO %d refused (%s); trying nice -10", priority, exc)
        try:
            os.setpriority(os.PRIO_PROCESS, 0, -10)
            return RT_NICE
        except (PermissionError, OSError) as exc:
            log.warning("servo process: nice -10 refused (%s); running at normal priority", exc)
    return RT_NONE


class PlanFollower:
    """The loop's target source over the shared block: one snapshot per tick, interpolated at the tick's time."""

    def __init__(self, block: ServoShm, spec: ServoProcessConfig, loop: ServoLoop) -> None:
        self.block = block
        self.spec = spec
        self.loop = loop
        self.mode = MODE_HOLD
        self.plan: Plan | None = None
        self.parent_quiet = False
        self._scale = 1.0
        self._velocity: F64 | None = None  # the plan's velocity at the tick `target` was asked for

    def refresh(self, now: float) -> None:
        try:
            heartbeat, mode, scale, plan = self.block.control()
        except ServoShmError:
            return  # the parent is mid-write: this tick keeps the previous snapshot (the heartbeat ages)
        self.mode, self.plan = mode, plan
        quiet = now - heartbeat > self.spec.parent_timeout_s
        if quiet and not self.parent_quiet:
            self.loop.events.add(now, f"parent silent for {now - heartbeat:.3f} s: holding")
        self.parent_quiet = quiet
        if mode == MODE_ESTOP and not self.loop.estop.active:
            self.loop.estop.trigger("e-stop from the deploy process")
        if scale != self._scale and np.isfinite(scale) and 0 < scale <= 1:
            self.loop.servo.set_velocity_scale(scale)
            self._scale = scale

    def target(self, t: float) -> F64 | None:
        """The plan at `t` (the loop asks once per tick, first); its velocity is kept for `velocity(t)`."""
        self.refresh(t)
        self._velocity = None
        if self.mode != MODE_TRACK or self.parent_quiet or self.plan is None:
            return None
        position, self._velocity = self.plan.at(t)
        return position

    def exhausted_since(self, t: float) -> float:
        if self.plan is None:
            return float("inf")
        return max(0.0, t - self.plan.end)

    def velocity(self, t: float) -> F64 | None:
        return self._velocity


def serve(spec: ServoProcessConfig, block: ServoShm) -> int:
    """The servo process's life: build, enable, loop until shutdown or the parent is gone, rest, disable."""
    parent = os.getppid()
    rt = ask_for_realtime(spec.rt_priority, spec.cpu)
    # The loop and the motor sender are this process's only threads; a short switch interval bounds how long one
    # waits for the interpreter lock the other holds (Python's default 5 ms is a whole servo period).
    sys.setswitchinterval(spec.switch_interval_s)
    config = load_robot_config(spec.robot_config)
    if spec.calibration is not None:
        config = replace(config, calibration=spec.calibration)
    robot, config, extras = build_robot(spec, config)
    try:
        with robot:
            robot.enable()
            servo = JerkLimitedServo(ServoLimits.from_config(config), 1.0 / config.servo_hz)
            loop = ServoLoop(robot, servo, WallClock(), deadline_s=spec.deadline_s, dry_run=spec.dry_run)
            follower = PlanFollower(block, spec, loop)
            gc.collect()
            gc.freeze()  # what setup allocated is never scanned again: shorter collections inside ticks
            state = loop.start()  # after the collection: the first ticks do not start late and catch up
            _publish_state(block, state)
            block.write_status(ready=1.0, rt=rt, pid=float(os.getpid()))
            ticks = 0
            while True:
                record = loop.tick(follower.target, follower.exhausted_since, follower.velocity)
                ticks += 1
                period = loop.timing.periods[-1] if loop.timing.periods else 0.0
                if len(loop.timing.periods) >= KEEP_TIMINGS:
                    # The parent reads the periods from the ring; here they would only grow with every tick.
                    loop.timing.periods.clear()
                    loop.timing.work.clear()
                s = record.state
                block.append_row(record.time, period, record.holding, s.positions, s.velocities, s.efforts,
                                 record.target, record.command.position)
                block.write_state(s.positions, s.velocities, s.efforts, time=record.time,
                                  ticks=float(ticks), overruns=float(loop.timing.overruns),
                                  holding=float(record.holding))
                gone = os.getppid() != parent
                if gone:
                    loop.events.add(record.time, "parent process gone: coming to rest")
                if follower.mode == MODE_SHUTDOWN or gone:
                    _come_to_rest(loop)
                    break
        return 0
    finally:
        for extra in extras:
            extra.stop()


def _publish_state(block: ServoShm, state: JointState) -> None:
    block.write_state(state.positions, state.velocities, state.efforts, time=time.monotonic(), ticks=0.0,
                      overruns=0.0, holding=1.0)


def _come_to_rest(loop: ServoLoop, timeout_s: float = 3.0) -> None:
    end = time.monotonic() + timeout_s
    loop.servo.stop()
    while time.monotonic() < end:
        loop.tick(lambda t: None, lambda t: float("inf"))
        if loop.servo.is_still():
            break


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m robot_client.servo_process", description=__doc__.splitlines()[0])
    parser.add_argument("--spec", required=True, help="ServoProcessConfig as JSON")
    parser.add_argument("--shm", required=True, help="name of the shared block the parent created")
    parser.add_argument("--dof", type=int, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="servo[%(process)d] %(levelname)s %(message)s")
    spec = ServoProcessConfig.from_json(args.spec)
    block = ServoShm.attach(args.shm, Layout(args.dof, spec.horizon, spec.ring))
    code = 1
    try:
        code = serve(spec, block)
    except BaseException as exc:  # every way out is reported to the parent, named
        block.write_fault(f"{type(exc).__name__}: {exc}")
        log.exception("servo process failed")
        raise
    finally:
        block.write_status(exited=1.0, exit_code=float(code))
        block.close()
    return code


# -- the parent's handle -------------------------------------------------------------------------------------------
@dataclass
class ServoTiming:
    """Tick periods the parent drained from the ring, and rows lost to the ring's size."""

    periods: list[float] = field(default_factory=list)
    lost: int = 0

    def summary(self, nominal: float, overruns: int) -> str:
        if not self.periods:
            return "no ticks"
        p = np.asarray(self.periods)
        err = np.abs(p - nominal)
        return (f"{len(p)} ticks, period p50 {np.percentile(p, 50) * 1e3:.3f} ms, p99 {np.percentile(p, 99) * 1e3:.3f}"
                f" ms (|error| p99 {np.percentile(err, 99) * 1e3:.3f} ms, max {err.max() * 1e3:.3f} ms), "
                f"overruns {overruns}")


class ServoProcess:
    """Starts the servo process and talks to it through the shared block. Use as a context manager."""

    def __init__(self, spec: ServoProcessConfig) -> None:
        self.spec = spec
        self.config = load_robot_config(spec.robot_config)
        unknown = sorted(set(spec.initial_positions) - set(self.config.joint_names))
        if unknown:
            raise ServoProcessError(f"initial_positions names joints {unknown} that {self.config.name} does not "
                                    f"have (joints: {list(self.config.joint_names)})")
        self.layout = Layout(self.config.dof, spec.horizon, spec.ring)
        self.block: ServoShm | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        # The servo's log goes to a file, never a pipe: a pipe nobody drains would block the servo once full.
        self._log: IO[bytes] | None = None
        self.timing = ServoTiming()
        self._read = 0
        self._mode = MODE_HOLD

    def start(self) -> ServoProcess:
        self.block = ServoShm.create(self.layout)
        self.block.publish(mode=MODE_HOLD)
        cmd = [sys.executable, "-m", "robot_client.servo_process", "--spec", self.spec.to_json(),
               "--shm", self.block.name, "--dof", str(self.config.dof)]
        self._log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=self._log)
        end = time.monotonic() + self.spec.startup_timeout_s
        while True:
            self.block.publish(mode=MODE_HOLD)
            status = self.block.status()
            if status["ready"]:
                return self
            if self.proc.poll() is not None or status["exited"]:
                self._fail("servo process exited during start-up")
            if time.monotonic() > end:
                self._fail(f"servo process not ready within {self.spec.startup_timeout_s:g} s")
            time.sleep(0.01)

    @property
    def realtime(self) -> str:
        """The priority the servo process obtained: 'SCHED_FIFO', 'nice -10' or 'none'."""
        return RT_NAMES[self._block().status()["rt"]]

    def track(self, plan: Plan) -> None:
        """Follow `plan` from now on (also the heartbeat: publish at least every parent_timeout_s)."""
        self._check_alive()
        self._mode = MODE_TRACK
        self._block().publish(mode=MODE_TRACK, plan=plan)

    def hold(self) -> None:
        self._check_alive()
        self._mode = MODE_HOLD
        self._block().publish(mode=MODE_HOLD)

    def heartbeat(self) -> None:
        self._check_alive()
        self._block().publish(mode=self._mode)

    def estop(self) -> None:
        """Latched e-stop in the servo process: jerk-limited stop and hold until shutdown."""
        self._mode = MODE_ESTOP
        self._block().publish(mode=MODE_ESTOP)

    def set_velocity_scale(self, scale: float) -> None:
        if not 0 < scale <= 1:
            raise ServoProcessError(f"velocity scale must lie in (0, 1], got {scale}")
        self._block().publish(mode=self._mode, velocity_scale=scale)

    def state(self) -> JointState:
        """The latest measured state the servo process published."""
        self._check_alive()
        block = self._block()
        s = block.state()
        return JointState(s[0], s[1], s[2], block.status()["time"], self.config.joint_names)

    def status(self) -> dict[str, float]:
        return self._block().status()

    def drain(self) -> list[TickRow]:
        """Tick rows since the last drain (their periods also go to `timing`)."""
        rows, self._read, lost = self._block().rows(self._read)
        self.timing.lost += lost
        self.timing.periods.extend(r.period for r in rows if r.period > 0)
        return rows

    def stop(self, timeout_s: float = 10.0) -> int:
        """Shutdown: the servo comes to rest, disables and exits; returns its exit code (raises on a fault)."""
        if self.proc is None or self.block is None:
            return 0
        try:
            if self.proc.poll() is None:
                self.block.publish(mode=MODE_SHUTDOWN)
                try:
                    self.proc.wait(timeout_s)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
                    raise ServoProcessError(f"servo process did not shut down within {timeout_s:g} s; killed") from None
                self.drain()
            code = self.proc.returncode
            fault = self.block.fault()
            if code != 0 or fault:
                raise ServoProcessError(f"servo process exited with code {code}: {fault or self._stderr()}")
            return code
        finally:
            self.block.close()
            self.block = None
            if self._log is not None:
                self._log.close()
                self._log = None

    def __enter__(self) -> ServoProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.block is not None:
            try:
                self.stop()
            except ServoProcessError:
                if exc[0] is None:
                    raise

    def _block(self) -> ServoShm:
        if self.block is None:
            raise ServoProcessError("servo process not started")
        return self.block

    def _check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            self._fail("servo process is gone")

    def log_text(self) -> str:
        """What the servo process logged so far."""
        if self._log is None:
            return ""
        self._log.seek(0)
        return self._log.read().decode("utf-8", "replace")

    def _stderr(self) -> str:
        lines = [line for line in self.log_text().strip().splitlines() if line.strip()]
        return " | ".join(lines[-3:])

    def _fail(self, what: str) -> NoReturn:
        fault = self.block.fault() if self.block is not None else ""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        raise ServoProcessError(f"{what}: {fault or self._stderr() or 'no message'}")


if __name__ == "__main__":
    sys.exit(main())
