"""What the real arms take from the rig calibration file: zero offsets, gripper limits and gravity factors,
checked first.

The robot config may name a calibration file (`[robot] calibration = "path"`, relative to the config file;
`python -m robot_client run --calibration FILE` overrides it). Before any motor is touched, the file is loaded
and checked against the config (`robot_client.calfile.check_against_config`): another rig's file, offsets for
joints the arm lacks or a collapsed gripper span refuse the robot (nothing moves); missing or stale sections are
logged as warnings.

Precedence, and why: a measured gripper range in the file overrides `gripper_limits` pinned in the config, since
the file is rewritten by the procedure and dated while pinned numbers go stale silently; a log line says which
one each arm uses. Arms without zero offsets use the motors' own zeros (offset 0), also logged. A gripper with
neither is refused when the arm is enabled (`gripper_map_for` names the command to run). Gravity factors fitted
on the arm (`python -m calibration gravity`) likewise override the config's `gravity_factors` (the maker's
defaults), logged either way.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

from robot_client.calfile import CalibrationError, RigCalibration, check_against_config, load_calibration
from robot_client.config import ArmConfig, RobotConfig
from robot_client.robot import RobotError

log = logging.getLogger(__name__)


class RigCalibrationError(RobotError):
    """The rig calibration file cannot be used with this robot; the message names the file and the field."""


@dataclass(frozen=True)
class ArmCalibration:
    """One arm as the driver runs it: its config with the gripper limits in force, and its joints' zero offsets."""

    config: ArmConfig
    zero_offsets: tuple[float, ...]  # motor rad per joint (gripper excluded), joint angle = reading - offset


def load_robot_calibration(config: RobotConfig) -> RigCalibration | None:
    """The calibration file the config names (None when it names none)."""
    if not config.calibration:
        return None
    try:
        return load_calibration(config.calibration)
    except CalibrationError as exc:
        raise RigCalibrationError(f"rig calibration: {exc}") from exc


def resolve_calibration(config: RobotConfig, calibration: RigCalibration | None, source: str = "") -> \
        tuple[ArmCalibration, ...]:
    """Check `calibration` against `config` and return every arm as the driver should run it.

    Raises RigCalibrationError listing every error; logs warnings. `source` names the file in messages.
    """
    where = source or config.calibration or "the rig calibration"
    if calibration is None:
        log.warning("no rig calibration file (set [robot] calibration in %s or pass --calibration): motor zeros "
                    "are used as they are", config.source or "the robot config")
        for arm in config.arms:
            if arm.gripper_limits is not None:
                log.info("%s: gripper limits closed=%.3f open=%.3f from the robot config's gripper_limits",
                         arm.gripper, *arm.gripper_limits)
        return tuple(ArmCalibration(arm, (0.0,) * len(arm.joints)) for arm in config.arms)
    fit = check_against_config(calibration, config.name, [(a.name, a.joints) for a in config.arms],
                               [c.name for c in config.cameras])
    for warning in fit.warnings:
        log.warning("%s: %s", where, warning)
    if fit.errors:
        raise RigCalibrationError(f"{where} does not fit robot config {config.source or config.name!r}; nothing was "
                                  f"moved:\n  " + "\n  ".join(fit.errors))
    arms = []
    for arm in config.arms:
        zero = calibration.zero.get(arm.name)
        offsets = tuple(zero.offsets[j] for j in arm.joints) if zero is not None else (0.0,) * len(arm.joints)
        if zero is None:
            log.warning("arm '%s': no zero offsets in %s: motor zeros are used as they are", arm.name, where)
        else:
            log.info("arm '%s': zero offsets from %s (measured %s): %s", arm.name, where, zero.measured.measured_at,
                     ", ".join(f"{j} {o:+.4f}" for j, o in zip(arm.joints, offsets, strict=True)))
        grip = calibration.gripper.get(arm.name)
        if grip is not None:
            pinned = "" if arm.gripper_limits is None else \
                f" (overriding the robot config's gripper_limits {list(arm.gripper_limits)})"
            log.info("%s: gripper limits closed=%.3f open=%.3f from %s (measured %s, %s)%s", arm.gripper,
                     grip.closed, grip.open, where, grip.measured.measured_at, grip.measured.method, pinned)
            arm = replace(arm, gripper_limits=(grip.closed, grip.open))
        elif arm.gripper_limits is not None:
            log.info("%s: gripper limits closed=%.3f open=%.3f from the robot config's gripper_limits (no gripper "
                     "section in %s)", arm.gripper, *arm.gripper_limits, where)
        grav = calibration.gravity.get(arm.name)
        if grav is not None:
            factors = tuple(grav.factors[j] for j in arm.joints)
            log.info("arm '%s': gravity factors from %s (measured %s, overriding the robot config's %s): %s",
                     arm.name, where, grav.measured.measured_at, list(arm.gravity_factors),
                     ", ".join(f"{j} {f:.3f}" for j, f in zip(arm.joints, factors, strict=True)))
            try:
                arm = replace(arm, gravity_factors=factors)
            except ValueError as exc:
                raise RigCalibrationError(f"{where}: arm.{arm.name}.gravity: {exc}") from exc
        elif arm.gravity_compensation:
            log.info("arm '%s': gravity factors %s from the robot config (no gravity section in %s)", arm.name,
                     list(arm.gravity_factors), where)
        arms.append(ArmCalibration(arm, offsets))
    return tuple(arms)
