"""Servo benchmarks: loop timing at 200 Hz, and smoothness at chunk switches per chunking mode.

    python bench/servo.py timing [--seconds 30] [--robot emulator|sim] [--burners 2] [--modes ...]
                                 [--servo-cpu N] [--emulator-cpu N] [--link unix_link|udp_multicast]
        runs the real servo loop (ruckig on 14 DoF, wall clock) against a robot backend while the machine is busy
        (CPU-burning processes beside it, a busy pure-Python thread in the deploy process), one row per place the
        loop runs: in the deploy process (the baseline), in its own process (`robot_client.servo_process`) at
        normal priority, there with SCHED_FIFO (the YAM driver's frames from its 250 Hz sender thread, or with
        `process-rt-tick` from the loop each tick), and a bare SCHED_FIFO timer with no work (the machine's
        floor). emulator: the real YAM CAN driver against emulated Damiao motors in a process of their own (they
        stand in for hardware: SCHED_FIFO above the burners, below the servo) over a unix_link per arm; sim:
        MuJoCo arms. Reports tick period p50/p99, |period error| p99/max and overruns.
        Goal: p99 |period error| <= 1 ms at 200 Hz and no overrun.
    python bench/servo.py smoothness [--seconds 20]
        offline (simulated time): the same chunks, arriving after the same delays, through each chunking mode
        and the jerk-limited servo; reports the peak |jerk| right after chunk switches, against the baseline of
        naive switching (targets sent straight to the robot, no servo) in the same run.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from robot_client.chunking import MODES, ChunkingConfig  # noqa: E402
from robot_client.config import load_robot_config  # noqa: E402
from robot_client.offline_chunking import (  # noqa: E402
    finite_differences,
    run_offline,
    switch_jerk_peaks,
    switch_target_jumps,
)
from robot_client.robot import RobotFault  # noqa: E402
from robot_client.servo import ServoLimits  # noqa: E402


def smoothness(seconds: float) -> None:
    config = load_robot_config("bimanual_yam")
    limits = ServoLimits.from_config(config)
    fps, horizon, servo_hz = 30.0, 30, 200.0
    mid = (limits.lower + limits.upper) / 2
    span = (limits.upper - limits.lower) / 2

    def reference(t: float) -> np.ndarray:
        wave = mid + 0.25 * span * np.sin(0.8 * t + np.arange(14) * 0.7)
        return np.asarray(np.clip(wave, limits.lower, limits.upper), dtype=np.float64)

    print(f"{seconds:.0f} s per mode, policy {fps:g} Hz, chunks of {horizon}, servo {servo_hz:g} Hz, inference delay "
          "80 ms, per-chunk offset N(0, 0.05 rad) (consecutive chunks disagree as real policy chunks do); "
          "the first switch (start of motion) excluded\n")
    print("| mode | switches | target jump at switch, median / max (rad) | naive switching: peak jerk / limit, "
          "median | servo: peak jerk / limit, median / max | servo: mean jerk / limit after switches | "
          "tracking error vs reference, mean (rad) |")
    print("|---|---|---|---|---|---|---|")
    for mode in MODES:
        rng = np.random.default_rng(0)

        def source(now: float, rtc: dict[str, Any] | None, rng: np.random.Generator = rng) -> np.ndarray:
            offset = rng.normal(0, 0.05, 14)
            actions = np.stack([reference(now + i / fps) + offset for i in range(horizon)])
            if rtc is not None:
                d = rtc["inference_delay_steps"] + 1
                actions[:d] = rtc["previous_chunk_remainder"][:d]
            return actions

        cfg = ChunkingConfig(mode=mode, fps=fps, execute_steps=15, refill_threshold=12)
        run = run_offline(cfg, limits, source, reference(0.0), duration_s=seconds, servo_hz=servo_hz)
        dt = 1.0 / servo_hz
        ticks = run.switch_ticks[1:]
        servo_peaks = switch_jerk_peaks(run.positions, ticks, dt, limits.jerk)
        naive_peaks = switch_jerk_peaks(run.target_array, ticks, dt, limits.jerk)
        jumps = switch_target_jumps(run.target_array, ticks)
        ref = np.stack([reference(k * dt) for k in range(len(run.positions))])
        tracking = float(np.mean(np.abs(run.positions - ref)[int(servo_hz):]))
        _, _, jerk = finite_differences(run.positions, dt)
        rel = np.abs(jerk) / limits.jerk
        mean_after = float(np.mean([rel[t: t + 10].mean() for t in ticks if t + 10 < len(rel)]))
        print(f"| {mode} | {len(ticks)} | {np.median(jumps):.4f} / {np.max(jumps):.4f} | "
              f"{np.median(naive_peaks):.0f} | {np.median(servo_peaks):.3f} / {np.max(servo_peaks):.3f} | "
              f"{mean_after:.3f} | {tracking:.4f} |")


HOME = {"left_joint2": 1.0, "left_joint3": 1.0, "right_joint2": 1.0, "right_joint3": 1.0}
GROUPS = {"left": "239.74.163.11:43121", "right": "239.74.163.12:43122"}  # udp_multicast: own group and port
LINKS = ("unix_link", "udp_multicast")
# The sim robot's joints as position servos: a tick's physics then costs about what a real arm's driver call
# does (the MIT law's substeps with inverse dynamics cost 1.4 ms a tick in the MuJoCo sim).
SIM_ACTUATION: Literal["position", "mit"] = "position"


def link_config(tmp: Path, link: str = "unix_link") -> Path:
    """The bimanual YAM config with each arm on a bus to another process (the emulated motors run there): a
    unix_link of its own, or its own UDP multicast group and port; the grippers' travel pinned (no calibration
    file here)."""
    text = (REPO_ROOT / "robot_client/configs/bimanual_yam.toml").read_text()
    for arm, group in GROUPS.items():
        channel = group if link == "udp_multicast" else f"bench-{os.getpid()}-{arm}"
        text = text.replace(f'can_channel = "can_{arm}"\ncan_interface = "socketcan"',
                            f'can_channel = "{channel}"\ncan_interface = "{link}"')
    pinned = 'gripper_type = "linear_4310"\ngripper_limits = [0.0, -6.57]\n'
    text = text.replace('gripper_type = "linear_4310"\n', pinned)
    assert text.count(f'"{link}"') == 2 and text.count("gripper_limits = [0.0") == 2, "config layout changed"
    path = tmp / f"bimanual_yam_{link}.toml"
    path.write_text(text)
    return path


def emulate(config_path: str, priority: int, cpu: int | None) -> None:
    """(Child process) the emulated motors of every arm, until killed: they stand in for hardware (motor
    controllers with processors of their own), so they ask for real-time priority above the burners, and run on
    `cpu` when given."""
    import gc
    import signal

    from robot_client.servo_process import ask_for_realtime
    from robot_client.yam.emulator import MotorEmulator

    ask_for_realtime(priority, cpu)
    sys.setswitchinterval(0.0005)  # one thread per arm: neither waits 5 ms for the other's interpreter lock
    config = load_robot_config(config_path)
    emulators = [MotorEmulator.for_arm(a, positions={n: HOME.get(n, 0.0) for n in a.names}).start()
                 for a in config.arms]
    gc.collect()
    gc.freeze()  # as the servo process does: what setup allocated is never scanned again
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()
    for emu in emulators:
        emu.stop()


def floor(seconds: float, period: float) -> None:
    """(Child process) the same wall-clock wait as the servo loop's, at SCHED_FIFO, with no work at all: what the
    machine itself allows (a VM's vCPU may be descheduled by its host, which no priority inside it prevents).
    Prints the periods as JSON."""
    import json

    from robot_client.control_loop import WallClock
    from robot_client.servo_process import ask_for_realtime

    ask_for_realtime(80, None)
    clock = WallClock()
    nxt = time.monotonic()
    end = nxt + seconds
    starts = []
    while nxt < end:
        clock.sleep_until(nxt)
        starts.append(time.monotonic())
        nxt += period
    print(json.dumps(np.diff(starts).tolist()))


def timing_floor(seconds: float, period: float) -> tuple[list[float], int, str]:
    import json

    out = subprocess.run([sys.executable, __file__, "_floor", str(seconds), str(period)], capture_output=True,
                         text=True, check=True)
    periods = json.loads(out.stdout)
    late = int(sum(p > 1.5 * period for p in periods))
    return periods, late, "no loop: a bare SCHED_FIFO timer (this machine's floor)"


class Load:
    """What a busy deploy machine runs beside the servo: `burners` CPU-bound processes, and in the deploy process
    itself a thread doing pure-Python work (camera decoding, the policy client, logging hold the interpreter lock
    like this)."""

    def __init__(self, burners: int, busy_thread: bool) -> None:
        self.burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(burners)]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._busy, daemon=True) if busy_thread else None
        if self._thread is not None:
            self._thread.start()

    def _busy(self) -> None:
        while not self._stop.is_set():
            sum(i * i for i in range(20_000))

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        for p in self.burners:
            p.kill()
            p.wait()


def sweep(start: np.ndarray, t0: float) -> Any:
    """The target motion: a slow sine on joints 1-3 of each arm, a new target every tick (the hardest case for
    online trajectory generation)."""
    mask = (np.arange(14) % 7) < 3

    def target(t: float) -> np.ndarray:
        return np.asarray(start + 0.15 * np.sin(2.0 * (t - t0)) * mask, dtype=np.float64)

    def velocity(t: float) -> np.ndarray:
        return np.asarray(0.3 * np.cos(2.0 * (t - t0)) * mask, dtype=np.float64)

    return target, velocity


def timing_in_process(robot: Any, config: Any, seconds: float) -> tuple[list[float], int, str]:
    """The servo loop in this (the deploy) process: the baseline."""
    from robot_client.control_loop import ServoLoop, WallClock
    from robot_client.servo import JerkLimitedServo

    servo = JerkLimitedServo(ServoLimits.from_config(config), 1.0 / config.servo_hz)
    with robot:
        robot.enable()
        loop = ServoLoop(robot, servo, WallClock(), deadline_s=1.0)
        start = loop.start().positions
        t0 = time.monotonic()
        target, _ = sweep(start, t0)
        end = t0 + seconds
        where = "deploy process"
        try:
            while time.monotonic() < end:
                loop.tick(target, lambda t: 0.0)
        except RobotFault as fault:
            where += f" (stopped after {time.monotonic() - t0:.1f} s: {fault.joint} {fault.code})"
    return loop.timing.periods[1:], loop.timing.overruns, where


def timing_servo_process(config_path: str, backend: str, seconds: float, rt_priority: int,
                         send_mode: str = "thread", cpu: int | None = None) -> tuple[list[float], int, str]:
    """The servo loop in its own process, fed a 200 ms plan at 30 Hz from this one. `send_mode`: who sends the
    YAM driver's frames there (the loop's thread each tick, or the driver's 250 Hz sender thread)."""
    from robot_client.servo_process import ServoProcess, ServoProcessConfig
    from robot_client.servo_shm import Plan

    spec = ServoProcessConfig(robot_config=config_path, backend=backend, rt_priority=rt_priority,
                              initial_positions=HOME, sim_actuation=SIM_ACTUATION, yam_send_mode=send_mode,
                              cpu=cpu)
    with ServoProcess(spec) as proc:
        start = proc.state().positions.copy()
        t0 = time.monotonic()
        target, velocity = sweep(start, t0)
        end = t0 + seconds
        while time.monotonic() < end:
            now = time.monotonic()
            ts = now + np.arange(40) * 0.005
            proc.track(Plan(now, 0.005, np.stack([target(t) for t in ts]), np.stack([velocity(t) for t in ts])))
            proc.drain()
            time.sleep(1 / 30)
        overruns = int(proc.status()["overruns"])
        where = f"servo process ({proc.realtime})"
        if backend == "yam":
            where += ", frames sent " + ("by the loop each tick" if send_mode == "tick" else "by a 250 Hz thread")
    return proc.timing.periods[1:], overruns, where


def timing(seconds: float, robot_kind: str, burners: int, busy_thread: bool, modes: list[str],
           servo_cpu: int | None, emulator_priority: int, emulator_cpu: int | None, link: str) -> None:
    import tempfile

    config = load_robot_config("bimanual_yam")
    nominal = 1.0 / config.servo_hz
    print(f"{robot_kind} robot, {config.servo_hz:g} Hz, {seconds:.0f} s per row; load: {burners} CPU-burning "
          f"processes{', a busy pure-Python thread in the deploy process' if busy_thread else ''}; "
          f"{os.cpu_count()} CPUs\n")
    print("| servo loop in | ticks | period p50 / p99 (ms) | abs(period error) p99 / max (ms) | overruns | goal |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        emulator = None
        if robot_kind == "emulator":
            config_path = str(link_config(Path(tmp), link))
            emulator = subprocess.Popen([sys.executable, __file__, "_emulate", config_path, str(emulator_priority),
                                         str(-1 if emulator_cpu is None else emulator_cpu)])
            time.sleep(1.0)
        else:
            config_path = "bimanual_yam"
        try:
            for mode in modes:
                time.sleep(1.0)  # the emulated motors answer what the previous row's driver sent last, then rest
                load = Load(burners, busy_thread)
                try:
                    if mode == "floor":
                        periods, overruns, where = timing_floor(seconds, nominal)
                    elif mode == "in-process":
                        robot, run_config = make_robot(robot_kind, config_path)
                        periods, overruns, where = timing_in_process(robot, run_config, seconds)
                    else:
                        rt = 0 if mode == "process" else 80
                        backend = "yam" if robot_kind == "emulator" else "sim"
                        send_mode = "tick" if mode == "process-rt-tick" else "thread"
                        periods, overruns, where = timing_servo_process(config_path, backend, seconds, rt,
                                                                        send_mode, servo_cpu)
                finally:
                    load.stop()
                p = np.asarray(periods)
                err = np.abs(p - nominal)
                late = np.flatnonzero(p > 1.5 * nominal)
                if len(late):
                    print(f"  (late ticks at {[round(float(i) / len(p) * seconds, 2) for i in late[:10]]} s)")
                worst = int(np.argmax(err))
                print(f"  (largest error: tick {worst} of {len(p)}, period {p[worst] * 1e3:.3f} ms)")
                met = np.percentile(err, 99) <= 1e-3 and overruns == 0
                print(f"| {where} | {len(p)} | {np.percentile(p, 50) * 1e3:.3f} / {np.percentile(p, 99) * 1e3:.3f} | "
                      f"{np.percentile(err, 99) * 1e3:.3f} / {err.max() * 1e3:.3f} | {overruns} | "
                      f"{'met' if met else 'NOT met'} |", flush=True)
        finally:
            if emulator is not None:
                emulator.terminate()
                emulator.wait()
    print("\ngoal: p99 abs(period error) <= 1 ms and no overrun (a tick starting over half a period late)")


def make_robot(kind: str, config_path: str) -> tuple[Any, Any]:
    """(robot, config). sim: MuJoCo through the motors' MIT law, stepped inside each tick; emulator: the real CAN
    driver talking over a bus to another process (`--link`) to emulated Damiao motors there."""
    config = load_robot_config(config_path)
    if kind == "sim":
        from robot_client.sim.robot import SimConfig, SimRobot

        return SimRobot(config, SimConfig(actuation=SIM_ACTUATION)), config
    if kind == "emulator":
        from robot_client.yam.driver import YamRobot

        return YamRobot(config), config
    raise SystemExit(f"unknown robot kind {kind}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("timing")
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--robot", default="emulator", choices=["sim", "emulator"])
    p.add_argument("--burners", type=int, default=2, help="CPU-burning processes beside the servo")
    p.add_argument("--no-busy-thread", action="store_true", help="no busy thread in the deploy process")
    p.add_argument("--modes", default="in-process,process,process-rt,floor",
                   help="comma-separated rows: in-process (baseline), process (own process, normal priority), "
                        "process-rt (own process, SCHED_FIFO), process-rt-tick (the same, the YAM driver's "
                        "frames sent by the loop each tick instead of its 250 Hz thread), floor (a bare SCHED_FIFO "
                        "timer loop: what the machine allows)")
    p.add_argument("--servo-cpu", type=int, default=None, help="pin the servo process to this core")
    p.add_argument("--emulator-priority", type=int, default=70,
                   help="SCHED_FIFO priority of the emulated motors: above the burners, below the servo process's "
                        "80 (motor controllers have processors of their own: they never preempt the host's loop)")
    p.add_argument("--emulator-cpu", type=int, default=None, help="pin the emulated motors to this core")
    p.add_argument("--link", default="unix_link", choices=LINKS,
                   help="emulator: the bus between the driver and the emulated motors' process")
    p = sub.add_parser("smoothness")
    p.add_argument("--seconds", type=float, default=20.0)
    p = sub.add_parser("_emulate")
    p.add_argument("config")
    p.add_argument("priority", type=int)
    p.add_argument("cpu", type=int)
    p = sub.add_parser("_floor")
    p.add_argument("seconds", type=float)
    p.add_argument("period", type=float)
    args = parser.parse_args()
    if args.command == "timing":
        timing(args.seconds, args.robot, args.burners, not args.no_busy_thread, args.modes.split(","),
               args.servo_cpu, args.emulator_priority, args.emulator_cpu, args.link)
    elif args.command == "_emulate":
        emulate(args.config, args.priority, None if args.cpu < 0 else args.cpu)
    elif args.command == "_floor":
        floor(args.seconds, args.period)
    else:
        smoothness(args.seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
