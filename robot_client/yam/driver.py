"""`YamRobot`: the `Robot` backend for real YAM arms, one CAN bus per arm.

Joint order is `config.joint_names` (each arm's joints then its gripper, arms in config order). A command cycle
sends every arm's frames before collecting any reply, so two arms on two buses cost one round trip, not two.

Calibration: before any bus is opened, the rig calibration file the config names (or the one passed in) is
checked against the config and its zero offsets and gripper limits are handed to the arms
(`robot_client.yam.rig_calibration`); a file that does not fit refuses the robot before anything moves.

A fault on any arm stops the whole robot: that arm holds its healthy motors and disables the faulted ones, the
other arms hold where they are. Commands stay refused until `clear_faults()` and `enable()`: a bimanual task
with one arm down is not something to carry on with unattended.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

import can
import numpy as np

from robot_client.config import ArmConfig, RobotConfig
from robot_client.robot import F64, JointState, Robot, RobotCommandError, RobotError, RobotFault, RobotStatus
from robot_client.yam.arm import FaultsLatched, FeedForward, YamArm, YamOptions
from robot_client.yam.bus import open_bus
from robot_client.yam.rig_calibration import load_robot_calibration, resolve_calibration
from robot_client.yam.transport import Exchange

if TYPE_CHECKING:
    from robot_client.calfile import RigCalibration

BusFactory = Callable[[ArmConfig], can.BusABC]


class YamRobot(Robot):
    """Real bimanual (or single) YAM robot. Thread-safe: calls are serialized by a lock.

    `calibration`: the rig calibration to apply; None = the file `config.calibration` names (if any).
    """

    def __init__(self, config: RobotConfig, *, options: YamOptions | None = None,
                 bus_factory: BusFactory = open_bus, feedforward: FeedForward | None = None,
                 calibration: RigCalibration | None = None) -> None:
        self.config = config
        self._calibration = calibration
        self.options = options or YamOptions()
        self._bus_factory = bus_factory
        self._feedforward = feedforward
        self._buses: list[can.BusABC] = []
        self._arms: list[YamArm] = []
        self._slices: list[slice] = []
        self._lock = threading.RLock()

    @property
    def arms(self) -> tuple[YamArm, ...]:
        return tuple(self._arms)

    # -- lifecycle -----------------------------------------------------------------------------------------------
    def connect(self) -> None:
        """Check the rig calibration, open every arm's bus and program the motor watchdogs. Motors are not
        enabled. A calibration that does not fit raises RigCalibrationError before any bus is opened."""
        with self._lock:
            if self._arms:
                return
            calibration = self._calibration if self._calibration is not None else load_robot_calibration(self.config)
            arms = resolve_calibration(self.config, calibration)
            try:
                start = 0
                for cal in arms:
                    arm_cfg = cal.config
                    bus = self._bus_factory(arm_cfg)
                    self._buses.append(bus)
                    self._arms.append(YamArm(arm_cfg, bus, self.config.limits, self.options, self._feedforward,
                                             zero_offsets=cal.zero_offsets))
                    self._slices.append(slice(start, start + len(arm_cfg.names)))
                    start += len(arm_cfg.names)
                for arm in self._arms:
                    arm.configure_watchdog()
            except BaseException:
                self._shutdown_buses(raise_errors=False)
                raise

    def enable(self) -> None:
        """Enable every arm holding its current pose. Refused while faults are latched."""
        with self._lock:
            self._require_connected()
            self._refuse_if_faulted("enable")
            for i, arm in enumerate(self._arms):
                try:
                    arm.enable()
                except RobotFault:
                    self._halt_others(i)
                    raise

    def disable(self) -> None:
        """All motors limp. Safe after faults and repeatedly; silent motors are not an error here."""
        with self._lock:
            for arm in self._arms:
                arm.disable()

    def close(self) -> None:
        with self._lock:
            try:
                self.disable()
            finally:
                self._shutdown_buses(raise_errors=True)

    def clear_faults(self) -> None:
        """Forget latched faults (after the cause is fixed). Call `enable()` afterwards to drive again."""
        with self._lock:
            for arm in self._arms:
                arm.clear_faults()

    # -- cycle ---------------------------------------------------------------------------------------------------
    def command(self, positions: F64) -> None:
        with self._lock:
            self._require_connected()
            self._refuse_if_faulted("command")
            arr = self.check_command(positions)
            requests = [arm.prepare(arr[sl]) for arm, sl in zip(self._arms, self._slices, strict=True)]
            self._cycle([arm.post(reqs) for arm, reqs in zip(self._arms, requests, strict=True)])

    def hold(self) -> None:
        """Command every motor's measured position (no limit check: a joint resting on a stop may read just
        outside its limits, and holding it there is exactly right)."""
        with self._lock:
            self._require_connected()
            self._refuse_if_faulted("hold")
            requests = [arm.prepare_hold() for arm in self._arms]
            self._cycle([arm.post(reqs) for arm, reqs in zip(self._arms, requests, strict=True)])

    def read_state(self) -> JointState:
        with self._lock:
            self._require_connected()
            self._refuse_if_faulted("read_state")
            parts = [arm.state() for arm in self._arms]
            return JointState(
                positions=np.concatenate([p[0] for p in parts]),
                velocities=np.concatenate([p[1] for p in parts]),
                efforts=np.concatenate([p[2] for p in parts]),
                timestamp=min(p[3] for p in parts),
                names=self.joint_names,
            )

    def status(self) -> RobotStatus:
        with self._lock:
            temps: dict[str, float] = {}
            for arm in self._arms:
                temps.update(arm.temperatures())
            return RobotStatus(
                enabled=bool(self._arms) and all(arm.enabled for arm in self._arms),
                faults=tuple(f for arm in self._arms for f in arm.faults),
                temperatures_c=temps,
            )

    # -- internals -----------------------------------------------------------------------------------------------
    def _cycle(self, exchanges: list[Exchange]) -> None:
        """Collect every arm's replies; on any fault stop the other arms too, then raise the first fault."""
        first: RobotFault | None = None
        faulted: set[int] = set()
        for i, (arm, ex) in enumerate(zip(self._arms, exchanges, strict=True)):
            try:
                arm.finish(ex)
            except RobotFault as fault:
                first = first or fault
                faulted.add(i)
        if first is not None:
            for i, arm in enumerate(self._arms):
                if i not in faulted:
                    arm.halt()
            raise first

    def _halt_others(self, faulted: int) -> None:
        for i, arm in enumerate(self._arms):
            if i != faulted:
                arm.halt()

    def _refuse_if_faulted(self, what: str) -> None:
        for arm in self._arms:
            if arm.faults:
                first = arm.faults[0]
                raise FaultsLatched(first.joint, first.code,
                                    f"{what} refused: fault latched ({first.message}); call clear_faults() and "
                                    f"then enable()")

    def _require_connected(self) -> None:
        if not self._arms:
            raise RobotCommandError("YamRobot is not connected (call connect())")

    def _shutdown_buses(self, raise_errors: bool) -> None:
        errors = []
        for bus in self._buses:
            try:
                bus.shutdown()
            except (can.CanError, OSError) as exc:
                errors.append(exc)
        self._buses.clear()
        self._arms.clear()
        self._slices.clear()
        if errors and raise_errors:
            raise RobotError(f"closing CAN buses failed: {errors}")


@contextmanager
def open_arm(config: RobotConfig, arm_name: str, *, zero_offsets: Sequence[float] | None = None,
             options: YamOptions | None = None, bus_factory: BusFactory = open_bus) -> Iterator[YamArm]:
    """One arm alone on its bus, watchdog programmed, motors not enabled; disabled (limp) and closed on exit.

    For the calibration procedures, which work arm by arm in motor units and must not depend on the calibration
    they are measuring (so no rig calibration is applied here; `zero_offsets` only when the caller wants them).
    """
    arm_cfg = next((a for a in config.arms if a.name == arm_name), None)
    if arm_cfg is None:
        raise RobotCommandError(f"no arm {arm_name!r} in {config.source or config.name} (arms: "
                                f"{[a.name for a in config.arms]})")
    bus = bus_factory(arm_cfg)
    try:
        arm = YamArm(arm_cfg, bus, config.limits, options, zero_offsets=zero_offsets)
        try:
            arm.configure_watchdog()
            yield arm
        finally:
            arm.disable()
    finally:
        bus.shutdown()
