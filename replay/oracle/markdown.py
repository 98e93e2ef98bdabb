"""The oracle's markdown summary: what was compared, then per joint, per chunk step and the worst frames.

Why this order: the first question is "is the policy off from the first action, on which joint" (a
normalization or convention bug is off everywhere from step 0); the per-step table then tells a wrong
convention from a model that only drifts late in the chunk; the worst frames say where to look.
"""

from __future__ import annotations

import math

from replay.oracle.result import PADDED_EXCLUDE, OracleResult, jump_stats


def _f(value: float) -> str:
    return "-" if not math.isfinite(value) else f"{value:.4g}"


def _header(r: OracleResult) -> list[str]:
    failed = len(r.failures)
    padded = r.raw.padded_rows
    if r.padded_rows == PADDED_EXCLUDE:
        padding = (f"Ground truth past an episode's end repeats its last action; those {padded} padded row(s) are "
                   f"excluded from every statistic except the 'padded L1' column.")
    else:
        padding = (f"Ground truth past an episode's end repeats its last action; those {padded} padded row(s) count "
                   f"in every statistic (the 'padded L1' column has them alone).")
    lines = [
        "# Oracle comparison", "",
        f"Policy: {r.source}.  ", f"Dataset: {r.dataset}.  ",
        f"{r.frames} frame(s) compared of {r.sampled} sampled ({failed} failed); {r.horizon}-step chunks, "
        f"prediction minus the dataset's next {r.horizon} actions. {padding}", "",
        f"Normalized units: {r.normalization}.", "",
        f"**Mean first-action L1 {_f(r.raw.mean_first_l1)}**, mean chunk L1 {_f(r.raw.mean_chunk_l1)} (raw units: "
        f"rad, gripper 0..1)" + ("" if r.normalized is None else
                                  f"; normalized: first {_f(r.normalized.mean_first_l1)}, chunk "
                                  f"{_f(r.normalized.mean_chunk_l1)}") + ".", "",
    ]
    return lines


def _joints(r: OracleResult) -> list[str]:
    jump_mean, jump_max, truth_jump = jump_stats(r)
    lines = ["## Per joint", "",
             "L1 = mean |error|, RMS = root mean square, bias = mean signed error (raw units). Jump = |first "
             "action - current state| (policy; the dataset's own for comparison).", "",
             "| joint | first L1 | first RMS | chunk L1 | chunk RMS | bias | norm first L1 | norm chunk L1 | "
             "jump mean | jump max | dataset jump | padded L1 |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    raw, norm = r.raw, r.normalized
    bias = raw.joint_bias
    for j, name in enumerate(r.action_names):
        nf = "-" if norm is None else _f(float(norm.first_l1[j]))
        nc = "-" if norm is None else _f(float(norm.joint_l1[j]))
        lines.append(
            f"| {name} | {_f(float(raw.first_l1[j]))} | {_f(float(raw.first_rms[j]))} | {_f(float(raw.joint_l1[j]))} "
            f"| {_f(float(raw.joint_rms[j]))} | {_f(float(bias[j]))} | {nf} | {nc} | {_f(float(jump_mean[j]))} | "
            f"{_f(float(jump_max[j]))} | {_f(float(truth_jump[j]))} | {_f(float(raw.padded_joint_l1[j]))} |"
        )
    return lines + [""]


def _steps(r: OracleResult) -> list[str]:
    lines = ["## Per chunk step", "", "Over all joints and the frames with a counted row at that step.", "",
             "| step | frames | L1 | RMS | norm L1 |", "|---|---|---|---|---|"]
    for h in range(r.horizon):
        norm = "-" if r.normalized is None else _f(float(r.normalized.step_l1[h]))
        lines.append(f"| {h} | {int(r.raw.step_frames[h])} | {_f(float(r.raw.step_l1[h]))} | "
                     f"{_f(float(r.raw.step_rms[h]))} | {norm} |")
    return lines + [""]


def _worst(r: OracleResult) -> list[str]:
    if not r.worst_frames:
        return ["## Worst frames", "", "None: every compared chunk equals the ground truth.", ""]
    lines = ["## Worst frames", "", "Largest per-joint chunk L1 (raw units).", "",
             "| episode | frame | joint | chunk L1 | first action error | max error | at step |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {w.episode} | {w.frame} | {w.joint} | {_f(w.chunk_l1)} | {_f(w.first_error)} | "
              f"{_f(w.max_error)} | {w.max_step} |" for w in r.worst_frames]
    return lines + [""]


def _extras(r: OracleResult) -> list[str]:
    lines: list[str] = []
    if r.warning_counts:
        lines += ["## Policy warnings", ""]
        lines += [f"- {code}: {n}" for code, n in sorted(r.warning_counts.items(), key=lambda kv: -kv[1])]
        lines.append("")
    if r.failures:
        lines += ["## Failed frames", ""]
        lines += [f"- {f}" for f in r.failures[:20]]
        if len(r.failures) > 20:
            lines.append(f"- ... {len(r.failures) - 20} more")
        lines.append("")
    if r.notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in r.notes] + [""]
    return lines


def summary_markdown(r: OracleResult, per_step: bool = True) -> str:
    steps = _steps(r) if per_step else []
    return "\n".join(_header(r) + _joints(r) + steps + _worst(r) + _extras(r))
