"""Reading the joints at the zero pose, and re-zeroing the motors, on one arm (`YamArm`, motor units).

Why the motors are read *disabled* (limp) rather than enabled holding their position: the point of the procedure
is that the zero offsets may be wrong, and the driver's enable path refuses joints that read outside their limits
and needs a calibrated gripper. A disabled motor still answers every frame with its position, so the safest read
is to send the disable command and take the position from the reply: no torque is ever applied, nothing can move
because of us, and no MIT frame is sent. At the zero pose the arm rests folded on the lower stops of joints 2 and
3, so it stays put limp; a joint that sags or is moved shows up as unsteady readings and is refused.

Re-zeroing (`save_motor_zero_and_verify`) sends the motors' save-zero command (0xFE, written to motor flash),
again with every motor disabled, then reads back and requires |reading| < 0.01 rad per joint, as the vendor's
tool does. The gripper motor is never re-zeroed: its zero is arbitrary and its calibrated closed/open positions
are stored in that motor's units, so moving its zero would invalidate them.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from calibration.joints_zero import JointReading, ZeroPoseError, summarize
from robot_client.yam.arm import YamArm

SAVE_ZERO_TOLERANCE = 0.01  # rad: |reading| after save-zero (i2rt's set_zero check)


def read_zero_pose(arm: YamArm, samples: int, interval_s: float,
                   sleep: Callable[[float], None] = time.sleep) -> tuple[JointReading, ...]:
    """`samples` limp readings of the arm's joints (gripper excluded), `interval_s` apart, summarized."""
    if samples < 2:
        raise ValueError(f"need at least 2 samples to judge steadiness, got {samples}")
    rows = []
    for i in range(samples):
        rows.append(arm.read_limp()[:arm.gripper_index])
        if interval_s > 0 and i + 1 < samples:
            sleep(interval_s)
    return summarize(arm.config.joints, np.array(rows))


def save_motor_zero_and_verify(arm: YamArm, samples: int, interval_s: float,
                               sleep: Callable[[float], None] = time.sleep) -> tuple[JointReading, ...]:
    """Re-zero every joint motor where it stands (arm at the zero pose), then read back; returns the new readings.

    Raises ZeroPoseError naming each joint that does not read within SAVE_ZERO_TOLERANCE afterwards.
    """
    arm.read_limp()  # every motor disabled before its zero moves
    arm.save_motor_zero(arm.config.joints)
    after = read_zero_pose(arm, samples, interval_s, sleep)
    bad = [f"{r.joint}: reads {r.mean:+.4f} rad after save-zero (expected |reading| < {SAVE_ZERO_TOLERANCE})"
           for r in after if abs(r.mean) >= SAVE_ZERO_TOLERANCE]
    if bad:
        raise ZeroPoseError(f"arm '{arm.config.name}': save-zero did not take:\n  " + "\n  ".join(bad))
    return after
