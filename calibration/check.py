"""`python -m calibration check`: every rig-vs-dataset check, one list of findings, one exit code.

Why: a policy is only as good as the match between the rig it runs on and the rig that recorded its data;
each mismatch below has sunk a deployment somewhere, and all of them are visible before anything moves.
Findings reuse the doctor's type (replay.doctor.findings.Finding: severity, code, where, message), and `where`
names the joint, camera or calibration field. Exit code: 0 clean (info only), 1 warnings only, 2 any error.

Checks: joint names; ranges and episode start poses vs the config's limits; gripper convention (check_joints);
camera names, resolutions, frame rates (check_cameras); dataset fps vs the client's control rate, the
dataset's action-to-state lag vs the calibration's command-to-motion latency (check_timing); the calibration
file itself against the config (calfile.check_against_config: another rig's file, unknown joints, collapsed
gripper range are errors; missing or stale sections are warnings). On the simulated rig the calibration's
camera sections are not asked for (the sim's cameras are exact).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from calibration.check_cameras import check_cameras
from calibration.check_inputs import DataSummary, RigSpec
from calibration.check_joints import JointThresholds, check_grippers, check_names, check_ranges, check_start_poses
from calibration.check_timing import TimingThresholds, check_fps, check_lag
from replay.doctor.findings import Finding, count
from robot_client.calfile import check_against_config

EXIT_CLEAN = 0
EXIT_WARNINGS = 1
EXIT_ERRORS = 2


@dataclass(frozen=True)
class CheckThresholds:
    joints: JointThresholds = field(default_factory=JointThresholds)
    timing: TimingThresholds = field(default_factory=TimingThresholds)
    max_age_days: float = 90.0


@dataclass(frozen=True)
class CheckResult:
    rig: RigSpec
    data: DataSummary
    findings: list[Finding]

    @property
    def exit_code(self) -> int:
        if count(self.findings, "error"):
            return EXIT_ERRORS
        return EXIT_WARNINGS if count(self.findings, "warning") else EXIT_CLEAN

    def codes(self) -> set[str]:
        return {f.code for f in self.findings}


def check_calibration(rig: RigSpec, data: DataSummary, max_age_days: float) -> list[Finding]:
    if rig.calibration is None:
        return [Finding("info", "calibration_not_given", "calibration",
                        "no calibration file given (--calibration): zero offsets, gripper range and latency are not "
                        "checked")]
    config = rig.config
    cameras = () if rig.robot_kind == "sim" else tuple(
        c.name for c in data.cameras if rig.camera(c.name) is not None)
    fit = check_against_config(rig.calibration, config.name, [(a.name, a.joints) for a in config.arms], cameras,
                               max_age_days=max_age_days)
    out = []
    for severity, messages in (("error", fit.errors), ("warning", fit.warnings)):
        for message in messages:
            head, sep, rest = message.partition(": ")
            named = bool(sep) and " " not in head  # "arm.left.zero: ..." names its field
            out.append(Finding(severity, "calibration", f"calibration {head}" if named else "calibration",
                               rest if named else message))
    return out


def run_check(rig: RigSpec, data: DataSummary, thresholds: CheckThresholds | None = None) -> CheckResult:
    th = thresholds or CheckThresholds()
    findings: list[Finding] = []
    findings += check_names(rig, data)
    findings += check_ranges(rig, data, th.joints)
    findings += check_start_poses(rig, data, th.joints)
    findings += check_grippers(rig, data, th.joints)
    findings += check_cameras(rig, data)
    findings += check_fps(rig, data, th.timing)
    findings += check_lag(rig, data, th.timing)
    findings += check_calibration(rig, data, th.max_age_days)
    order = {"error": 0, "warning": 1, "info": 2}
    findings.sort(key=lambda f: order[f.severity])
    return CheckResult(rig, data, findings)
