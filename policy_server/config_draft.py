"""`python -m policy_server config`: draft a checkpoint's `policy_config.json` and say where each value came from.

Why: neither public checkpoint layout records how a checkpoint is served on a robot (which robot camera feeds
which model slot, the joint names and order, the delta mask, the gripper convention, the normalization mode,
the image fitting method), so the file used to be written by hand, and a hand-written guess is exactly the
silent wrong choice this stack exists to prevent. The draft takes every value it can from a record: the
checkpoint (config.json, norm stats, processor files), the robot config (joint names and order, grippers,
cameras, position limits) and the training dataset (names, cameras, fps, and whether the checkpoint's action
stats fit its actions as deltas or as absolute positions). Every value the records do not settle is still
written, so the draft is a valid policy config, but marked CONFIRM in the report with what to check, and the
command exits 1.

Layering: this module drafts from data only. The robot config belongs to the robot client
(`robot_client/config.py` parses, validates and finds the bundled configs by name) and `policy_server` must not
import `robot_client`. A second, partial TOML reader on the ground floor would be two parsers of one file
that drift apart (the joint order rule, the bundled-name lookup, the validation), so instead the command line
(`policy_server.cli`, an entry module on the top floor like `robot_client.run_cli`) reads the robot config with
the robot client's own loader and hands this module a `RobotFacts`: names, grippers, cameras, rate and
position limits as plain data. `serve --robot-config` uses the same `RobotFacts` and the joint-name comparison
the robot client runs at connect (`policy_norm.joint_names`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from policy_norm.checkpoint import load_checkpoint_stats
from policy_norm.config import GripperConfig, NormalizationConfig
from policy_norm.datacheck import EpisodeArrays, check_data
from policy_norm.errors import NormalizationError
from policy_norm.joint_names import joint_name_mismatch
from policy_norm.lerobot_processor import LEROBOT_MODES
from policy_norm.modes import NormMode
from policy_norm.numeric import PI05_STATE_BINS
from policy_norm.pipeline import NormalizationPipeline
from policy_norm.stats import FeatureNormStats, NormStats
from policy_server.checkpoint.layouts import CheckpointInfo, inspect_checkpoint, layout_image_resize
from policy_server.policy_config import FILE_NAME, Pi05PolicyConfig
from policy_server.tokenizer import TokenizerError, find_tokenizer_model

CONFIRM = "CONFIRM"
LEROBOT_IMAGE_PREFIX = "observation.images."
# How far (robot units) gripper stats may sit outside the robot's gripper range and still be that range.
GRIPPER_RANGE_TOLERANCE = 0.05


class DraftError(ValueError):
    """The checkpoint cannot drive this robot at all (e.g. its stats have another number of joints)."""


@dataclass(frozen=True)
class RobotFacts:
    """What the draft and `serve --robot-config` need from a robot config, as plain data.

    joint_names: state/action order (arms in order, each arm's joints then its gripper).
    rate_hz: the servo rate: a control rate only as a last guess (marked CONFIRM).
    position_limits: {joint name: (lower, upper)} in robot units (grippers 0 = closed .. 1 = open on the YAM).
    """

    name: str
    source: str
    joint_names: tuple[str, ...]
    gripper_names: tuple[str, ...]
    camera_names: tuple[str, ...]
    rate_hz: float
    position_limits: Mapping[str, tuple[float, float]] = field(default_factory=dict)


@dataclass(frozen=True)
class FieldSource:
    """One drafted field: its value as shown, where it came from ("" = a default), and what to check when it is
    a guess (a default, or a recorded value another record contradicts)."""

    field: str
    value: str
    source: str
    confirm: str | None = None


@dataclass(frozen=True)
class PolicyConfigDraft:
    config: Pi05PolicyConfig
    fields: tuple[FieldSource, ...]
    notes: tuple[str, ...]
    checkpoint: Path
    layout: str

    @property
    def to_confirm(self) -> tuple[FieldSource, ...]:
        return tuple(f for f in self.fields if f.confirm is not None)

    def report(self) -> str:
        lines = [f"policy config draft for {self.checkpoint} ({self.layout} layout)", ""]
        for f in self.fields:
            lines.append(f"  {f.field}: {f.value}")
            if f.confirm is None:
                lines.append(f"      from: {f.source}")
            else:  # a guess: the default, or a recorded value that another record contradicts
                lines.append(f"      from: {f.source or 'default'}: {CONFIRM}")
        confirm = self.to_confirm
        if confirm:
            lines += ["", f"{CONFIRM} before serving (the draft holds a guess for each; edit the file):"]
            lines += [f"  - {f.field}: {f.confirm}" for f in confirm]
        else:
            lines += ["", "every field was inferred from the checkpoint, the robot config or the dataset"]
        if self.notes:
            lines += ["", "notes:"] + [f"  - {n}" for n in self.notes]
        return "\n".join(lines)


@dataclass(frozen=True)
class _Dataset:
    path: Path
    fps: float
    state_names: tuple[str, ...]
    action_names: tuple[str, ...]
    camera_names: tuple[str, ...]
    episodes: Sequence[EpisodeArrays]


class _Draft:
    """Collects the drafted fields and notes in report order."""

    def __init__(self) -> None:
        self.fields: list[FieldSource] = []
        self.notes: list[str] = []

    def add(self, name: str, value: str, source: str, confirm: str | None = None) -> None:
        self.fields.append(FieldSource(name, value, source, confirm))


def _open_dataset(path: Path) -> _Dataset:
    from policy_server.dataset_check import MAX_EPISODES
    from robodata.open import open_dataset

    ds = open_dataset(path)
    info = ds.info
    episodes = [ds.episode(i) for i in ds.episode_indices()[:MAX_EPISODES]]
    return _Dataset(path, info.fps, info.state_names, info.action_names, info.camera_names, episodes)


def _names_text(names: Sequence[str]) -> str:
    return f"{len(names)} names: {', '.join(names)}" if names else "none"


# ---- joint names -----------------------------------------------------------------------------------------


def _feature_dim(raw: Mapping[str, Any], group: str, key: str) -> int | None:
    feats = raw.get(group)
    entry = feats.get(key) if isinstance(feats, Mapping) else None
    shape = entry.get("shape") if isinstance(entry, Mapping) else None
    return int(shape[0]) if isinstance(shape, list) and len(shape) == 1 else None


def _check_dims(info: CheckpointInfo, stats: NormStats | None, robot: RobotFacts) -> list[str]:
    """What confirms the robot's joint count; raises DraftError when the checkpoint has another count."""
    dof = len(robot.joint_names)
    seen: list[str] = []
    dims: list[tuple[str, int | None]] = []
    if stats is not None:
        dims += [("state stats", stats.state.dim), ("action stats", stats.actions.dim)]
    if info.layout == "lerobot":
        dims += [("config.json input_features.observation.state",
                  _feature_dim(info.raw_config, "input_features", "observation.state")),
                 ("config.json output_features.action", _feature_dim(info.raw_config, "output_features", "action"))]
    for label, dim in dims:
        if dim is None:
            continue
        if dim != dof:
            raise DraftError(f"the checkpoint's {label} have {dim} dims but robot {robot.name} ({robot.source}) has "
                             f"{dof} joints ({', '.join(robot.joint_names)}): this checkpoint does not drive this "
                             f"robot")
        seen.append(label)
    return seen


def _draft_names(draft: _Draft, info: CheckpointInfo, stats: NormStats | None, robot: RobotFacts,
                 dataset: _Dataset | None) -> bool:
    """state_names / action_names: the robot's. Returns whether the dataset's names are the robot's."""
    names = robot.joint_names
    checks = _check_dims(info, stats, robot)
    confirm: list[str] = []
    if stats is not None:
        for what, feat in (("state", stats.state), ("action", stats.actions)):
            if feat.names is not None:
                problem = joint_name_mismatch(names, feat.names, what, other="checkpoint stats")
                if problem is None:
                    checks.append(f"{what} stats names")
                else:
                    confirm.append(problem)
    dataset_matches = False
    if dataset is not None:
        problems = [p for p in (joint_name_mismatch(names, dataset.state_names, "state", other="dataset"),
                                joint_name_mismatch(names, dataset.action_names, "action", other="dataset"))
                    if p is not None]
        if problems:
            confirm += [f"{p} (the checkpoint's stats follow the training data's order; the robot client refuses "
                        f"names that are not the robot's)" for p in problems]
        else:
            checks.append("dataset names")
            dataset_matches = True
    else:
        draft.notes.append("the joint order is the robot's; nothing in the checkpoint records the training order "
                           "(pass --dataset with the training data to check it)")
    checked = f", checked against {', '.join(checks)}" if checks else " (nothing in the checkpoint names them)"
    source = f"robot config {robot.source}{checked}"
    why = "; ".join(confirm) if confirm else None
    draft.add("normalization.state_names", _names_text(names), source, why)
    draft.add("normalization.action_names", _names_text(names), source, why)
    return dataset_matches


# ---- normalization mode ----------------------------------------------------------------------------------


def _lerobot_mode(raw: Mapping[str, Any]) -> tuple[NormMode | None, str]:
    mapping = raw.get("normalization_mapping")
    if not isinstance(mapping, Mapping):
        return None, "config.json has no normalization_mapping"
    found: dict[str, NormMode] = {}
    for kind in ("STATE", "ACTION"):
        value = str(mapping.get(kind, "")).split(".")[-1].upper()
        if value not in LEROBOT_MODES:
            return None, f"config.json normalization_mapping.{kind} is {mapping.get(kind)!r}, not one of " \
                         f"{sorted(LEROBOT_MODES)}"
        found[kind] = LEROBOT_MODES[value]
    if found["STATE"] != found["ACTION"]:
        return None, f"config.json normalizes STATE as {found['STATE']} but ACTION as {found['ACTION']}; the " \
                     f"server uses one mode for both"
    return found["STATE"], f"checkpoint config.json normalization_mapping (STATE and ACTION: {mapping['STATE']})"


def _has_quantiles(stats: NormStats) -> bool:
    return all(f.q01 is not None and f.q99 is not None for f in (stats.state, stats.actions))


def _draft_mode(draft: _Draft, info: CheckpointInfo, stats: NormStats | None) -> NormMode:
    if info.layout == "lerobot":
        mode, source = _lerobot_mode(info.raw_config)
        if mode is not None and stats is not None and stats.mode is not None and stats.mode != mode:
            draft.add("normalization.mode", str(mode), source,
                      f"{source} but the processor stats ({stats.source.describe()}) record '{stats.mode}'; the "
                      f"server refuses the conflict: find which one training used")
            return mode
        if mode is not None:
            draft.add("normalization.mode", str(mode), source)
            return mode
        if stats is not None and stats.mode is not None:
            draft.add("normalization.mode", str(stats.mode), f"checkpoint norm stats ({stats.source.describe()})")
            draft.notes.append(source)
            return stats.mode
        draft.add("normalization.mode", str(NormMode.QUANTILE), "",
                  f"{source} and the stats record no mode; 'quantile' is LeRobot's pi05 default")
        return NormMode.QUANTILE
    if stats is not None and stats.mode is not None:  # our own stats format records it
        draft.add("normalization.mode", str(stats.mode), f"checkpoint norm stats ({stats.source.describe()})")
        return stats.mode
    if stats is not None and _has_quantiles(stats):
        draft.add("normalization.mode", str(NormMode.QUANTILE),
                  "openpi's rule for Pi0.5 (quantile norm for every model but Pi0); the stats have q01/q99")
        return NormMode.QUANTILE
    if stats is not None:
        draft.add("normalization.mode", str(NormMode.ZSCORE), "",
                  "openpi trains Pi0.5 with quantile norm, but these stats have no q01/q99, so only 'zscore' can "
                  "serve them; check how the checkpoint was trained")
        return NormMode.ZSCORE
    draft.add("normalization.mode", str(NormMode.QUANTILE), "",
              "no norm stats to check; 'quantile' is openpi's rule for Pi0.5")
    return NormMode.QUANTILE


# ---- delta mask ------------------------------------------------------------------------------------------


def _recorded_mask(info: CheckpointInfo, stats: NormStats | None,
                   names: tuple[str, ...]) -> tuple[tuple[bool, ...], str] | None:
    """The delta mask where the checkpoint records one: our stats format, or LeRobot's relative actions."""
    if stats is not None and stats.action_delta_mask is not None and len(stats.action_delta_mask) == len(names):
        return stats.action_delta_mask, f"checkpoint norm stats ({stats.source.describe()})"
    raw = info.raw_config
    if info.layout == "lerobot" and isinstance(raw.get("use_relative_actions"), bool):
        if not raw["use_relative_actions"]:
            return (False,) * len(names), "checkpoint config.json use_relative_actions = false"
        exclude = raw.get("relative_exclude_joints", ["gripper"])
        excluded = [str(x) for x in exclude] if isinstance(exclude, list) else ["gripper"]
        mask = tuple(not any(x in n for x in excluded) for n in names)
        return mask, f"checkpoint config.json use_relative_actions = true, relative_exclude_joints = {excluded}"
    return None


def _dataset_mask(names: tuple[str, ...], stats: NormStats, mode: NormMode, horizon: int, model_dim: int,
                  dataset: _Dataset) -> tuple[list[bool | None], list[str]]:
    """Per action dim: True = the checkpoint's action stats fit the dataset's actions as deltas to the
    chunk-start state, False = as absolute positions, None = neither (or no spread to tell); plus notes."""
    probe = NormalizationConfig(
        state_names=names, action_names=names, action_delta_mask=(False,) * len(names), model_state_dim=model_dim,
        model_action_dim=model_dim, mode=mode, action_horizon=horizon, degenerate_policy="passthrough",
    )
    pipeline = NormalizationPipeline(probe, stats, "the draft")
    result = check_data(pipeline, dataset.episodes)
    verdict: list[bool | None] = [False] * len(names)
    notes: list[str] = []
    state_errors = [f for f in result.findings if f.feature == "state" and f.severity == "error"]
    if state_errors:
        notes.append(f"{dataset.path} does not fit the checkpoint's state stats ({state_errors[0].message}); its "
                     f"actions say nothing about the delta mask")
        return [None] * len(names), notes
    for f in result.findings:
        if f.feature != "actions" or f.index < 0:
            continue
        if f.code == "delta_mask_wrong":
            verdict[f.index] = True
        elif f.severity == "error" or f.code in ("constant_in_data", "constant_out_of_range"):
            verdict[f.index] = None
            notes.append(f"delta mask of {f.name}: {f.message}")
    for d in pipeline.degenerate:
        if d.feature == "actions":
            verdict[d.index] = None
            notes.append(f"delta mask of {d.name}: no spread in the stats to tell delta from absolute")
    return verdict, notes


def _mask_text(names: Sequence[str], mask: Sequence[bool]) -> str:
    delta = [n for n, m in zip(names, mask, strict=True) if m]
    absolute = [n for n, m in zip(names, mask, strict=True) if not m]
    if not delta:
        return f"all {len(names)} absolute"
    return f"delta: {', '.join(delta)}; absolute: {', '.join(absolute) or 'none'}"


def _draft_mask(draft: _Draft, info: CheckpointInfo, stats: NormStats | None, names: tuple[str, ...],
                grippers: Sequence[str], mode: NormMode, model_dim: int, dataset: _Dataset | None,
                dataset_names_match: bool) -> tuple[bool, ...]:
    recorded = _recorded_mask(info, stats, names)
    evidence: list[bool | None] | None = None
    if dataset is not None and dataset_names_match and stats is not None:
        try:
            evidence, notes = _dataset_mask(names, stats, mode, info.config.action_horizon, model_dim, dataset)
            draft.notes.extend(notes)
        except (NormalizationError, ValueError) as exc:
            draft.notes.append(f"the dataset check for the delta mask could not run: {exc}")
    field_name = "normalization.action_delta_mask"
    aloha_like = tuple(n not in grippers for n in names)
    pattern = " (joints delta, grippers absolute: openpi's ALOHA-style mask)" if grippers else ""
    if recorded is not None:
        mask, source = recorded
        disagree = [] if evidence is None else \
            [n for n, m, e in zip(names, mask, evidence, strict=True) if e is not None and e != m]
        confirm = None if not disagree else \
            f"{source} but the checkpoint's action stats fit the dataset's {disagree} the other way"
        draft.add(field_name, _mask_text(names, mask), source, confirm)
        return mask
    if evidence is not None and all(e is not None for e in evidence):
        mask = tuple(bool(e) for e in evidence)
        shape = pattern if mask == aloha_like else ""
        fit = "as deltas to the chunk-start state on the delta dims and as positions on the others" if any(mask) \
            else "as positions on every dim"
        draft.add(field_name, _mask_text(names, mask) + shape,
                  f"dataset {dataset.path if dataset else ''}: the checkpoint's action stats fit its actions {fit}")
        return mask
    mask = (False,) * len(names)
    if evidence is not None:
        unknown = [n for n, e in zip(names, evidence, strict=True) if e is None]
        why = f"the dataset does not settle {unknown} (see notes); the checkpoint records no delta mask"
    elif dataset is None:
        why = ("the checkpoint records no delta mask (openpi keeps it in training code); pass --dataset with the "
               "training data to tell from the stats, or set it by hand: openpi's ALOHA-style bimanual configs use "
               "joints delta, grippers absolute")
    elif not dataset_names_match:
        why = ("the checkpoint records no delta mask, and the dataset's joint names are not the robot's, so its "
               "actions were not compared with the stats")
    else:
        why = "the checkpoint records no delta mask and there are no norm stats to compare the dataset with"
    draft.add(field_name, _mask_text(names, mask), "", why)
    return mask


# ---- gripper ---------------------------------------------------------------------------------------------


def _stat_range(feat: FeatureNormStats, i: int) -> tuple[float, float] | None:
    for lo_key, hi_key in (("q01", "q99"), ("min", "max")):
        lo, hi = feat.get(lo_key), feat.get(hi_key)
        if lo is not None and hi is not None:
            return float(lo[i]), float(hi[i])
    return None


def _draft_gripper(draft: _Draft, names: tuple[str, ...], robot: RobotFacts, stats: NormStats | None,
                   mask: Sequence[bool]) -> GripperConfig:
    dims = tuple(names.index(g) for g in robot.gripper_names if g in names)
    by_name = tuple(i for i, n in enumerate(names) if "gripper" in n.lower())
    dims_field = None if by_name == dims else dims
    field_name = "normalization.gripper"
    if not dims:
        draft.add(field_name, "none", f"robot config {robot.source} (no gripper joints)")
        return GripperConfig(convention="none", dims=dims_field)
    gripper_names = [names[i] for i in dims]
    ranges = {names[i]: robot.position_limits.get(names[i]) for i in dims}
    robot_range = next(iter(ranges.values()))
    if robot_range is None or len(set(ranges.values())) != 1:
        draft.add(field_name, f"clip01 on {', '.join(gripper_names)}", "",
                  f"the robot config gives the grippers no single position range ({ranges})")
        return GripperConfig(convention="clip01", dims=dims_field)
    lo_r, hi_r = robot_range
    if (lo_r, hi_r) != (0.0, 1.0):
        draft.add(field_name, f"none on {', '.join(gripper_names)}", "",
                  f"the robot's gripper range is [{lo_r:g}, {hi_r:g}], not 0 (closed) .. 1 (open), which the "
                  f"clip01/affine01 conventions map onto; 'none' passes the model's values through")
        return GripperConfig(convention="none", dims=dims_field)
    delta = [names[i] for i in dims if mask[i]]
    if delta:
        draft.add(field_name, f"clip01 on {', '.join(gripper_names)}", "",
                  f"the delta mask makes {delta} deltas, so their stats are not positions; check the convention")
        return GripperConfig(convention="clip01", dims=dims_field)
    if stats is None:
        draft.add(field_name, f"clip01 on {', '.join(gripper_names)}", "",
                  f"no norm stats to compare with the robot's gripper range [{lo_r:g}, {hi_r:g}]")
        return GripperConfig(convention="clip01", dims=dims_field)
    spans = {names[i]: _stat_range(stats.actions, i) for i in dims}
    known = [s for s in spans.values() if s is not None]
    if len(known) != len(spans):
        draft.add(field_name, f"clip01 on {', '.join(gripper_names)}", "",
                  "the action stats have neither q01/q99 nor min/max for the grippers")
        return GripperConfig(convention="clip01", dims=dims_field)
    lo, hi = min(s[0] for s in known), max(s[1] for s in known)
    tol = GRIPPER_RANGE_TOLERANCE * (hi_r - lo_r)
    span_text = ", ".join(f"{n} [{s[0]:.3g}, {s[1]:.3g}]" for n, s in spans.items() if s is not None)
    if lo >= lo_r - tol and hi <= hi_r + tol:
        draft.add(field_name, f"clip01 on {', '.join(gripper_names)}",
                  f"checkpoint action stats ({span_text}) lie in the robot's gripper range [0, 1] "
                  f"(robot config {robot.source})")
        return GripperConfig(convention="clip01", dims=dims_field)
    if not hi > lo:
        draft.add(field_name, f"clip01 on {', '.join(gripper_names)}", "",
                  f"the grippers never move in the action stats ({span_text}): their units cannot be told")
        return GripperConfig(convention="clip01", dims=dims_field)
    draft.add(field_name, f"affine01 from [{lo:.4g}, {hi:.4g}] on {', '.join(gripper_names)}", "",
              f"the action stats ({span_text}) are not the robot's gripper range [{lo_r:g}, {hi_r:g}]: the model "
              f"was trained in other gripper units; set source_range to the units' closed/open values (the "
              f"stats' 1%/99% are only an estimate)")
    return GripperConfig(convention="affine01", dims=dims_field, source_range=(lo, hi))


# ---- cameras ---------------------------------------------------------------------------------------------


def camera_role(name: str) -> str | None:
    """"base", "left_wrist", "right_wrist", "wrist" or None, from a camera or slot name (top/high/overhead/base
    are the scene camera openpi's base_0_rgb slot takes)."""
    bare = name.removeprefix(LEROBOT_IMAGE_PREFIX).lower()
    tokens = set(re.split(r"[^a-z]+", bare)) - {""}
    if tokens & {"wrist", "hand", "gripper"}:
        if "left" in tokens:
            return "left_wrist"
        if "right" in tokens:
            return "right_wrist"
        return "wrist"
    if tokens & {"base", "top", "high", "overhead", "front", "scene", "exterior", "head", "main"}:
        return "base"
    return None


_ROLE_CAMERA = {"base": "top", "left_wrist": "left_wrist", "right_wrist": "right_wrist", "wrist": "wrist"}


def pair_cameras(cameras: Sequence[str], slots: Sequence[str]) -> tuple[dict[str, str], list[str], list[str], str]:
    """robot camera -> model slot: the same name first (LeRobot slots are `observation.images.<camera>`), then
    the same role (top ~ base_0_rgb, left_wrist ~ left_wrist_0_rgb) when exactly one camera has it.
    Returns (pairs, unpaired cameras, unpaired slots, how they were paired)."""
    pairs: dict[str, str] = {}
    how: list[str] = []
    free_slots = list(slots)
    for cam in cameras:
        for slot in free_slots:
            if slot.removeprefix(LEROBOT_IMAGE_PREFIX) == cam:
                pairs[cam] = slot
                free_slots.remove(slot)
                break
    if pairs:
        how.append("same name")
    by_role = 0
    for slot in list(free_slots):
        role = camera_role(slot)
        candidates = [c for c in cameras if c not in pairs and role is not None and camera_role(c) == role]
        if len(candidates) == 1:
            pairs[candidates[0]] = slot
            free_slots.remove(slot)
            by_role += 1
    if by_role:
        how.append("name heuristic (top/high/base = the scene camera, left/right wrist by side)")
    free_cams = [c for c in cameras if c not in pairs]
    ordered = {c: pairs[c] for c in cameras if c in pairs}
    return ordered, free_cams, free_slots, " and ".join(how)


def _draft_cameras(draft: _Draft, info: CheckpointInfo, robot: RobotFacts, dataset: _Dataset | None) -> dict[str, str]:
    slots = tuple(info.config.image_keys)
    if robot.camera_names:
        cameras, cam_source = robot.camera_names, f"robot config {robot.source} [[camera]] names"
        if dataset is not None:
            lacking = [c for c in dataset.camera_names if c not in cameras]
            if lacking:
                draft.notes.append(f"the dataset's cameras {lacking} are not in the robot config")
    elif dataset is not None and dataset.camera_names:
        cameras, cam_source = dataset.camera_names, f"dataset {dataset.path} cameras (the robot config has none)"
    else:
        cameras, cam_source = (), ""
    slot_source = f"checkpoint config.json image slots {list(slots)}"
    if not cameras:
        guessed = {_ROLE_CAMERA.get(camera_role(s) or "", s.removeprefix(LEROBOT_IMAGE_PREFIX)): s for s in slots}
        draft.add("cameras", _pairs_text(guessed), "",
                  f"no robot camera names (the robot config has no [[camera]] tables and no dataset was given); "
                  f"these names are made up from the slots {list(slots)}: use the robot's camera names")
        return guessed
    pairs, free_cams, free_slots, how = pair_cameras(cameras, slots)
    if not pairs:
        positional = dict(zip(cameras, slots, strict=False))
        draft.add("cameras", _pairs_text(positional), "",
                  f"no camera of {list(cameras)} ({cam_source}) matches a slot of {list(slots)} by name; paired "
                  f"in order")
        return positional
    confirm = None
    if free_cams and free_slots:
        confirm = (f"cameras {free_cams} and slots {free_slots} are left unpaired (no unique name match); pair them "
                   f"if the model was trained with them")
    else:
        if free_slots:
            draft.notes.append(f"model slots {free_slots} get no camera: the model sees them as absent images")
        if free_cams:
            draft.notes.append(f"cameras {free_cams} feed no model slot")
    draft.add("cameras", _pairs_text(pairs), f"{slot_source} paired with {cam_source} by {how}", confirm)
    return pairs


def _pairs_text(pairs: Mapping[str, str]) -> str:
    return ", ".join(f"{c} -> {s}" for c, s in pairs.items())


# ---- the rest --------------------------------------------------------------------------------------------


def _draft_resize(draft: _Draft, info: CheckpointInfo) -> str:
    method = layout_image_resize(info.layout)
    draft.add("image_resize", method, f"{info.layout} layout: its trainer fits camera frames with {method}")
    return method


def _draft_fps(draft: _Draft, robot: RobotFacts, dataset: _Dataset | None) -> float:
    if dataset is not None:
        draft.add("control_fps", f"{dataset.fps:g}", f"dataset {dataset.path}")
        return dataset.fps
    draft.add("control_fps", f"{robot.rate_hz:g}", "",
              f"the robot config's servo rate ({robot.rate_hz:g} Hz), not the rate the policy was trained at; use "
              f"the training dataset's fps (or pass --dataset)")
    return robot.rate_hz


def _draft_tokenizer(draft: _Draft, checkpoint: Path) -> str | None:
    try:
        found = find_tokenizer_model(checkpoint)
    except TokenizerError:
        draft.add("tokenizer", "null (search the usual places)", "nothing found in the checkpoint")
        draft.notes.append(f"no tokenizer model in {checkpoint}: `serve` needs --tokenizer PATH (or copy the "
                           f"PaliGemma tokenizer into the checkpoint as assets/tokenizer.model)")
        return None
    relative = str(found.relative_to(checkpoint))
    draft.add("tokenizer", relative, "checkpoint directory")
    return relative


def _load_stats(draft: _Draft, checkpoint: Path, asset_id: str | None) -> NormStats | None:
    try:
        stats = load_checkpoint_stats(checkpoint, asset_id)
    except NormalizationError as exc:
        draft.notes.append(f"no usable norm stats: {exc}; `serve` refuses the checkpoint until it has them")
        return None
    draft.notes.append(f"norm stats: {stats.source.describe()}")
    return stats


def draft_policy_config(checkpoint: Path, robot: RobotFacts, dataset: Path | None = None,
                        asset_id: str | None = None) -> PolicyConfigDraft:
    """Draft the policy config of `checkpoint` for `robot`, optionally informed by its training `dataset`.

    Raises ValueError (CheckpointError, DatasetError, DraftError) when the inputs cannot be read or the
    checkpoint cannot drive this robot; everything else ends up in the draft, guesses marked CONFIRM.
    """
    checkpoint = Path(checkpoint)
    info = inspect_checkpoint(checkpoint)
    draft = _Draft()
    draft.notes.extend(info.notes)
    stats = _load_stats(draft, checkpoint, asset_id)
    data = _open_dataset(dataset) if dataset is not None else None
    names = robot.joint_names
    cameras = _draft_cameras(draft, info, robot, data)
    dataset_names_match = _draft_names(draft, info, stats, robot, data)
    mode = _draft_mode(draft, info, stats)
    model_dim = info.config.action_dim
    state_dim = info.raw_config.get("max_state_dim", model_dim) if info.layout == "lerobot" else model_dim
    mask = _draft_mask(draft, info, stats, names, robot.gripper_names, mode, model_dim, data, dataset_names_match)
    gripper = _draft_gripper(draft, names, robot, stats, mask)
    limits = {n: robot.position_limits[n] for n in names if n in robot.position_limits}
    draft.add("normalization.joint_limits", f"{len(limits)} of {len(names)} joints clipped to their position limits",
              f"robot config {robot.source} [limits]",
              None if len(limits) == len(names) else
              f"the robot config has no position limits for {[n for n in names if n not in limits]}")
    draft.add("normalization.action_horizon", str(info.config.action_horizon), "checkpoint config.json")
    draft.add("normalization.model_state_dim / model_action_dim", f"{state_dim} / {model_dim}",
              "checkpoint config.json")
    norm_asset = stats.source.path if stats is not None and stats.source.kind == "openpi" else None
    norm = NormalizationConfig(
        state_names=names, action_names=names, action_delta_mask=mask, model_state_dim=int(state_dim),
        model_action_dim=model_dim, mode=mode, action_horizon=info.config.action_horizon,
        state_bins=PI05_STATE_BINS, gripper=gripper, joint_limits=limits or None,
        asset_id=Path(norm_asset).parent.name if norm_asset else None,
    )
    if norm.asset_id is not None:
        draft.add("normalization.asset_id", norm.asset_id, f"checkpoint assets/{norm.asset_id}/norm_stats.json")
    resize = _draft_resize(draft, info)
    fps = _draft_fps(draft, robot, data)
    tokenizer = _draft_tokenizer(draft, checkpoint)
    draft.add("default_prompt", "null (every observation must carry a prompt)", "default")
    config = Pi05PolicyConfig(cameras=cameras, normalization=norm, control_fps=fps, image_resize=resize,
                              tokenizer=tokenizer)
    config.check_slots(tuple(info.config.image_keys))
    if stats is not None:
        try:
            NormalizationPipeline(norm, stats, FILE_NAME)
        except NormalizationError as exc:
            draft.add("normalization (stats check)", "refused", "", f"the server would refuse these stats: {exc}")
    return PolicyConfigDraft(config, tuple(draft.fields), tuple(draft.notes), checkpoint, info.layout)


def write_draft(draft: PolicyConfigDraft, out: Path, force: bool = False) -> Path:
    """Write the draft to `out`; an existing file is kept unless `force` (it may be a confirmed config)."""
    if out.exists() and not force:
        raise FileExistsError(f"{out} exists; pass --force to overwrite it (or --out FILE)")
    draft.config.save(out)
    return out
