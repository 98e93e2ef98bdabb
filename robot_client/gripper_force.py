"""Gripper force limiting with stall ("clog") detection, in motor space.

Why: the gripper motor runs the MIT law tau = kp (p_des - p) + kd (v_des - v) + tau_ff. Closing on an object
leaves a large position error, so kp x error pushes into the object up to the motor's torque range (10 N m on
a DM4310): about ten times the maker's 50 N grasp limit, enough to crush the object and to trip the motor's
over-current / overload protection. The maker's driver watches the gripper: when the mean effort over a short
window is high while the motor barely moves, the gripper is stalled on something, and from then on the gripper is
driven with the force cap (plus the friction the mechanism eats) instead. Opening (a target on the other side of the
measured position), the push fading, or the jaws running on past where they stalled releases it.

How the cap is sent: while grasping, the gripper's frames run pure torque, kp = kd = 0 and tau_ff = the cap toward
the object (`GripperForceLimiter.law_to_send`; kp x (target - position) when that is less: a target brought close to
the jaws presses less, and the grasp then releases as the push fades). Why not a position target placed where the
motor's law gives the cap, as the maker's driver does: the motor runs its law between two frames (4 ms at the
driver's 250 Hz sender) at the position and speed of the moment, and the frame was built from a reading one frame
old. At detection the jaws have been pressed at up to the motor's full range for a whole detection window; once the
push drops to the cap, the squeezed pads (and the object) spring back at several rad/s at the motor. With the
configured kd the damping term kd (0 - v) adds to the cap against that opening motion: in the MuJoCo sim 2.4 / 3.3
N m against a 1.03 N m cap with frames every 3.3 / 5 ms, even with the frame's target placed for the damping at the
speed last measured. With kd = 0 in grasping frames the spring term still grows by kp x the distance the jaws open
within a frame: 1.30 / 1.51 N m (+26% / +46%). Pure torque adds nothing between frames, whatever the jaws do, and
the motor reports the cap within a torque quantisation step at every frame period (docs/benchmarks.md).
The cost: nothing in a grasping frame holds a position, so if the object gives way (or is taken) the cap runs the
jaws on toward the target. That is the third release rule: the jaws more than give_way_rad past where they stalled,
moving on faster than clog_speed; the ordinary law (with its damping) then takes over.

Everything here is in motor units (rad, rad/s, N m) and knows nothing of CAN or MuJoCo, so the real driver, the
emulator tests and the simulator share it.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass


class GripperForceConfigError(ValueError):
    """A force-limit setting that cannot be used (names the field and its range)."""


@dataclass(frozen=True)
class GripperForceConfig:
    """Force cap and stall detection of one gripper (defaults: the maker's linear_4310 gripper)."""

    max_force_n: float = 50.0  # i2rt's limit
    stroke_m: float = 0.096  # linear_4310 full stroke
    motor_stroke_rad: float = 6.57  # motor travel over that stroke
    friction_nm: float = 0.3  # torque the mechanism eats before any force reaches the jaws
    clog_effort_nm: float = 0.5  # clogged: mean effort toward the target over window_s above this ...
    clog_speed: float = 0.3  # ... while |speed| (motor rad/s) below this
    window_s: float = 0.1
    smoothing: float = 0.1  # low-pass alpha (per update) of the capped push
    release_effort_nm: float = 0.2  # clogged and mean effort toward the target below this: the object is gone
    give_way_rad: float = 0.1  # clogged and the jaw this far past where the stall was detected, still moving on
    # toward the target faster than clog_speed: the object gave way (about 1.5 mm of a linear gripper's jaw travel)

    def __post_init__(self) -> None:
        positive = {"max_force_n": self.max_force_n, "stroke_m": self.stroke_m,
                    "motor_stroke_rad": self.motor_stroke_rad, "clog_effort_nm": self.clog_effort_nm,
                    "clog_speed": self.clog_speed, "window_s": self.window_s, "give_way_rad": self.give_way_rad}
        for name, value in positive.items():
            if not (math.isfinite(value) and value > 0):
                raise GripperForceConfigError(f"gripper force {name} must be a finite number > 0, got {value}")
        if not (math.isfinite(self.friction_nm) and self.friction_nm >= 0):
            raise GripperForceConfigError(f"gripper force friction_nm must be >= 0, got {self.friction_nm}")
        if not (math.isfinite(self.smoothing) and 0 < self.smoothing <= 1):
            raise GripperForceConfigError(f"gripper force smoothing must lie in (0, 1], got {self.smoothing}")
        if not (math.isfinite(self.release_effort_nm) and 0 <= self.release_effort_nm < self.clog_effort_nm):
            raise GripperForceConfigError(
                f"gripper force release_effort_nm must lie in [0, clog_effort_nm={self.clog_effort_nm}), "
                f"got {self.release_effort_nm}")

    @property
    def max_torque_nm(self) -> float:
        """Motor torque that presses the jaws with max_force_n: F x stroke / motor stroke, plus friction."""
        return self.max_force_n * self.stroke_m / self.motor_stroke_rad + self.friction_nm


# Stroke (m) over motor travel (rad) and stall speed threshold per gripper type (YAM fact sheet section 5). The
# crank gripper's force-to-torque ratio varies with the crank angle; its mean over the stroke is used (inferred
# travel 2.7 rad, the span of its former hard-coded limits).
GRIPPER_GEOMETRY: dict[str, tuple[float, float, float]] = {
    "linear_4310": (0.096, 6.57, 0.3),
    "linear_3507": (0.096, 6.57, 0.3),
    "flexible_4310": (0.096, 6.57, 0.3),
    "crank_4310": (0.071, 2.7, 0.2),
}


def force_config_for(gripper_type: str, max_force_n: float = 50.0) -> GripperForceConfig:
    """The limiter settings of a gripper type with the given jaw-force cap."""
    try:
        stroke_m, motor_stroke_rad, clog_speed = GRIPPER_GEOMETRY[gripper_type]
    except KeyError:
        raise GripperForceConfigError(f"gripper_type {gripper_type!r} has no force-limit geometry; known "
                                      f"{sorted(GRIPPER_GEOMETRY)}") from None
    return GripperForceConfig(max_force_n=max_force_n, stroke_m=stroke_m, motor_stroke_rad=motor_stroke_rad,
                              clog_speed=clog_speed)


@dataclass(frozen=True)
class GripperLaw:
    """The gains of one gripper frame and the torque it adds to the frame's feed-forward (motor units)."""

    kp: float
    kd: float
    torque_nm: float


class GripperForceLimiter:
    """Per-gripper stall detector and force limiter; call `update` every time a command frame is built, then build
    the gripper's frame with the target it returns and `law_to_send()`'s gains and torque.

    Not thread-safe: one caller (the frame builder) owns it."""

    def __init__(self, config: GripperForceConfig, kp: float, kd: float) -> None:
        """`kp`, `kd`: the gains the gripper motor runs its MIT law with (the ones the driver sends)."""
        if not (math.isfinite(kp) and kp > 0):
            raise GripperForceConfigError(f"gripper kp must be > 0 for force limiting, got {kp}")
        if not (math.isfinite(kd) and kd >= 0):
            raise GripperForceConfigError(f"gripper kd must be a finite number >= 0 for force limiting, got {kd}")
        self.config = config
        self.kp = float(kp)
        self.kd = float(kd)
        self._efforts: deque[tuple[float, float]] = deque()
        self._sum = 0.0
        self._first_t: float | None = None
        self._grasping = False
        self._direction = 0.0  # sign of (target - position) when the stall was detected
        self._push: float | None = None  # low-passed capped push (N m, signed) while grasping
        self._stalled_at = 0.0  # motor position where the stall was detected
        self.peak_effort_nm = 0.0  # largest |effort| seen since reset
        self.peak_grasp_effort_nm = 0.0  # largest |effort| seen while grasping (after a detection)
        self.grasps = 0  # stalls detected since reset

    @property
    def grasping(self) -> bool:
        """True while a stall has been detected and the target is being capped."""
        return self._grasping

    @property
    def mean_effort_nm(self) -> float:
        """|mean effort| over the last window_s (0 before any sample)."""
        return abs(self._sum / len(self._efforts)) if self._efforts else 0.0

    def reset(self) -> None:
        """Forget history and any grasp (on enable, or when the gripper is commanded afresh)."""
        self._efforts.clear()
        self._sum = 0.0
        self._first_t = None
        self._grasping = False
        self._direction = 0.0
        self._push = None
        self.peak_effort_nm = 0.0
        self.peak_grasp_effort_nm = 0.0
        self.grasps = 0

    def law_to_send(self) -> GripperLaw:
        """What the gripper's frame carries besides the target `update` returned: the configured kp and kd with no
        added torque, or while grasping kp = kd = 0 and the capped push as torque (pure torque control)."""
        if self._grasping and self._push is not None:
            return GripperLaw(0.0, 0.0, self._push)
        return GripperLaw(self.kp, self.kd, 0.0)

    def update(self, t: float, position: float, velocity: float, effort: float, target: float) -> float:
        """Motor-space target to send: `target`, or while grasping the measured position (the frame then runs pure
        torque, see `law_to_send`). All in motor units (rad, rad/s, N m); t in seconds (monotonic)."""
        for name, value in (("t", t), ("position", position), ("velocity", velocity), ("effort", effort),
                            ("target", target)):
            if not math.isfinite(value):
                raise ValueError(f"gripper force limiter: {name} must be finite, got {value}")
        cfg = self.config
        self._remember(t, effort)
        self.peak_effort_nm = max(self.peak_effort_nm, abs(effort))
        mean = self._sum / len(self._efforts)
        wanted = math.copysign(1.0, target - position) if target != position else 0.0
        if self._grasping:
            # This reading answers a capped frame: it is what the cap achieves.
            self.peak_grasp_effort_nm = max(self.peak_grasp_effort_nm, abs(effort))
            # Released by opening (a target on the other side), by the push fading (a target brought close to the
            # jaws), or by the jaws running on toward the target past where they stalled: the object gave way or
            # was taken, and a pure torque would otherwise push them on at the cap until they hit something.
            if (wanted != self._direction or mean * self._direction < cfg.release_effort_nm
                    or ((position - self._stalled_at) * self._direction > cfg.give_way_rad
                        and velocity * self._direction > cfg.clog_speed)):
                self._grasping = False
                self._push = None
                # A fresh window: the grasp's pushing must not count toward a new stall once the jaws arrive.
                self._efforts.clear()
                self._sum = 0.0
                self._first_t = None
        # Stalled: pushing toward the target (not braking on arrival) for a whole window, without moving.
        elif (self._first_t is not None and t - self._first_t >= cfg.window_s and wanted != 0.0
              and mean * wanted > cfg.clog_effort_nm and abs(velocity) < cfg.clog_speed):
            self._grasping = True
            self._direction = wanted
            self._push = None
            self._stalled_at = position
            self.grasps += 1
        if not self._grasping:
            return target
        cap = cfg.max_torque_nm
        # The spring the motor would run, capped: a target brought close to the jaws presses less (and then fades).
        push = max(-cap, min(cap, self.kp * (target - position)))
        # First frame after detection jumps straight to the cap (the stall is already pressing); later frames are
        # low-passed so sensor noise on the measured position does not shake the jaws. A mean of values within
        # +-cap stays within it.
        self._push = push if self._push is None else self._push + cfg.smoothing * (push - self._push)
        return position

    def _remember(self, t: float, effort: float) -> None:
        if self._first_t is None:
            self._first_t = t
        self._efforts.append((t, effort))
        self._sum += effort
        horizon = t - self.config.window_s
        while len(self._efforts) > 1 and self._efforts[0][0] <= horizon:
            self._sum -= self._efforts.popleft()[1]
