"""Do a policy's joint names match the robot's, name for name and in order?

Why one comparison for every side: a policy's state and action dims are positional, so a reordered or renamed
joint sends joint3's action to joint4 without any error downstream. The robot client checks the served policy
at connect, the server checks its policy config against a robot config at start, and the policy config draft
checks a dataset against the robot; all three say the same thing, naming the first joint that differs, so the
message reads the same wherever the mismatch is caught. It lives on the ground floor because the server and
the robot client must not import each other.

Datasets often name the same joints another way (LeRobot's bimanual recordings `left_joint_0..5`, the YAM config
`left_joint1..6`). A `NameMap` renames them explicitly (dataset name -> robot name; never a reorder, so a
reordered dataset is still refused): from a file (TOML `[names]` table or a JSON object) or a flag
(`left_joint_0=left_joint1,...`), plus the shorthand `index+1` for the common index shift, resolved against the
robot's own names and refused where it is ambiguous. Every refusal of mismatched names says which map would fix
it (`suggest_name_map`), so the user copies one line instead of writing fourteen pairs.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path


def first_name_mismatch(robot_names: Sequence[str], other_names: Sequence[str]) -> int | None:
    """Index of the first position where the two name lists differ (a missing name counts); None if equal."""
    robot, other = tuple(robot_names), tuple(other_names)
    if robot == other:
        return None
    for i, (a, b) in enumerate(zip(robot, other, strict=False)):
        if a != b:
            return i
    return min(len(robot), len(other))


def joint_name_mismatch(robot_names: Sequence[str], other_names: Sequence[str], what: str,
                        other: str = "policy", hint_flag: str | None = None) -> str | None:
    """None when `other_names` are the robot's joint names in the robot's order; else what differs, starting
    with the first mismatch, e.g. "state names do not match the robot config: first mismatch at state[3]:
    policy 'left_joint5', robot 'left_joint4'; same names, different order: ...".

    `what` names the feature ("state", "action"); `other` names whose names they are ("policy", "dataset").
    When a rename would make them match, the message ends with that map: as the option to pass when the caller
    accepts one (`hint_flag`, e.g. "--name-map"), else as the renaming itself.
    """
    index = first_name_mismatch(robot_names, other_names)
    if index is None:
        return None
    robot, theirs = tuple(robot_names), tuple(other_names)

    def at(names: tuple[str, ...]) -> str:
        return repr(names[index]) if index < len(names) else "nothing (too few names)"

    first = f"first mismatch at {what}[{index}]: {other} {at(theirs)}, robot {at(robot)}"
    missing = [n for n in theirs if n not in robot]
    extra = [n for n in robot if n not in theirs]
    detail = f"{other} {what} names missing on the robot: {missing}; robot joints the {other} lacks: {extra}" \
        if missing or extra else f"same names, different order: {other} {list(theirs)}, robot {list(robot)}"
    hint = name_map_hint(robot, theirs, other, hint_flag)
    return f"{what} names do not match the robot config: {first}; {detail}{f'; {hint}' if hint else ''}"


# ---- name maps -------------------------------------------------------------------------------------------

NAME_MAP_FLAG = "--name-map"
_SHIFT = re.compile(r"^index\s*([+-]\s*\d+)$")
_INDEXED = re.compile(r"^(?P<base>.*?)[_.\-]?(?P<index>\d+)$")
# Shifts tried when suggesting a map (dataset index + shift = robot index).
_SUGGESTED_SHIFTS = (1, 0, -1, 2, -2)


class NameMapError(ValueError):
    """A name map that cannot be read or applied; the message names the entry, file or name."""


@dataclass(frozen=True)
class NameMap:
    """Dataset (or policy) joint name -> robot joint name; names not mapped keep their name.

    pairs: explicit renames, applied first. shift: the `index+N` shorthand: a name ending in an index k
    (`left_joint_0`, `joint.3`) becomes the robot name with the same stem and index k + N (`left_joint1`), when
    exactly one robot name is that; a name that already is a robot name is left alone. source: where the map
    came from, for messages.
    """

    pairs: tuple[tuple[str, str], ...] = ()
    shift: int | None = None
    source: str = ""

    def __post_init__(self) -> None:
        keys = [a for a, _ in self.pairs]
        twice = sorted({k for k in keys if keys.count(k) > 1})
        if twice:
            raise NameMapError(f"name map{self._where()}: {twice} mapped more than once")

    def _where(self) -> str:
        return f" ({self.source})" if self.source else ""

    @property
    def empty(self) -> bool:
        return not self.pairs and self.shift is None

    def resolve(self, names: Sequence[str], robot_names: Sequence[str]) -> dict[str, str]:
        """old -> new for every name in `names` that the map changes."""
        explicit = dict(self.pairs)
        robot = tuple(robot_names)
        out: dict[str, str] = {}
        for name in names:
            if name in explicit:
                if explicit[name] != name:
                    out[name] = explicit[name]
            elif self.shift is not None and name not in robot:
                target = _shifted(name, self.shift, robot, self.source)
                if target is not None:
                    out[name] = target
        return out

    def apply(self, names: Sequence[str], robot_names: Sequence[str], what: str = "names") -> tuple[str, ...]:
        """`names` renamed, in their own order; raises NameMapError when two names end up the same."""
        mapping = self.resolve(names, robot_names)
        renamed = tuple(mapping.get(n, n) for n in names)
        clashes = sorted({n for n in renamed if renamed.count(n) > 1})
        if clashes:
            sources = {c: [n for n in names if mapping.get(n, n) == c] for c in clashes}
            raise NameMapError(f"name map{self._where()} gives two {what} the same name: "
                               + "; ".join(f"{sorted(v)} -> {k!r}" for k, v in sources.items()))
        return renamed

    def check_entries(self, *name_lists: Sequence[str]) -> None:
        """Every explicit entry must name something: a typo in a map is refused, not ignored."""
        known = {n for names in name_lists for n in names}
        unknown = [a for a, _ in self.pairs if a not in known]
        if unknown:
            raise NameMapError(f"name map{self._where()}: {unknown} name no joint here; the names are "
                               f"{sorted(known)}")

    def spec(self) -> str:
        """The map as one `--name-map` value (shorthand first, then explicit pairs)."""
        parts = [f"index{self.shift:+d}"] if self.shift is not None else []
        parts += [f"{a}={b}" for a, b in self.pairs]
        return ",".join(parts)

    def describe(self, names: Sequence[str], robot_names: Sequence[str], limit: int = 4) -> str:
        """"left_joint_0 -> left_joint1, ..., right_joint_5 -> right_joint6" for the names it changes."""
        items = [f"{a} -> {b}" for a, b in self.resolve(names, robot_names).items()]
        if len(items) > limit:
            items = [*items[: limit - 1], "...", items[-1]]
        return ", ".join(items) or "no name changes"


def _split_indexed(name: str) -> tuple[str, int] | None:
    match = _INDEXED.match(name)
    return (match["base"], int(match["index"])) if match else None


def _shifted(name: str, shift: int, robot_names: Sequence[str], source: str) -> str | None:
    parts = _split_indexed(name)
    if parts is None:
        return None
    base, index = parts
    hits = [r for r in robot_names if _split_indexed(r) == (base, index + shift)]
    if len(hits) > 1:
        raise NameMapError(f"name map index{shift:+d}{f' ({source})' if source else ''} is ambiguous for "
                           f"{name!r}: robot joints {hits} all fit; give {name}=<robot name> explicitly")
    return hits[0] if hits else None


def parse_name_map(spec: str) -> NameMap:
    """A map from a `--name-map` value: a file (.toml / .json) or `a=b,c=d` pairs and/or `index+N`."""
    text = spec.strip()
    if not text:
        raise NameMapError(f"{NAME_MAP_FLAG} is empty; give a file or pairs like left_joint_0=left_joint1")
    path = Path(text)
    if path.suffix.lower() in {".toml", ".json"} or path.is_file():
        return load_name_map(path)
    pairs: list[tuple[str, str]] = []
    shift: int | None = None
    for item in (i.strip() for i in text.split(",")):
        if not item:
            continue
        shorthand = _SHIFT.match(item)
        if shorthand:
            if shift is not None:
                raise NameMapError(f"{NAME_MAP_FLAG} {text!r}: more than one index shift")
            shift = int(shorthand[1].replace(" ", ""))
            continue
        name, sep, robot = item.partition("=")
        if not sep or not name.strip() or not robot.strip():
            raise NameMapError(f"{NAME_MAP_FLAG} item {item!r}: expected DATASET_NAME=ROBOT_NAME or index+N "
                               "(or a .toml/.json file)")
        pairs.append((name.strip(), robot.strip()))
    return NameMap(tuple(pairs), shift, source=f"{NAME_MAP_FLAG} {text}")


def load_name_map(path: Path) -> NameMap:
    """A map file: TOML with a `[names]` table (dataset name = "robot name") and optional `index_shift = N`, or
    a JSON object of the same shape (or a flat object of names)."""
    if not path.is_file():
        raise NameMapError(f"{path}: name map file not found")
    try:
        text = path.read_text()
        raw: object = json.loads(text) if path.suffix.lower() == ".json" else tomllib.loads(text)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, tomllib.TOMLDecodeError) as err:
        raise NameMapError(f"{path}: cannot read the name map: {err}") from err
    if not isinstance(raw, Mapping):
        raise NameMapError(f"{path}: expected a table of dataset name -> robot name")
    table = raw.get("names", raw if "index_shift" not in raw else {})
    if not isinstance(table, Mapping):
        raise NameMapError(f"{path}: 'names' must be a table of dataset name -> robot name")
    pairs = []
    for key, value in table.items():
        if not isinstance(value, str) or not value:
            raise NameMapError(f"{path}: entry {key!r} must map to a robot joint name (a string), got {value!r}")
        pairs.append((str(key), value))
    shift = raw.get("index_shift")
    if shift is not None and (isinstance(shift, bool) or not isinstance(shift, int)):
        raise NameMapError(f"{path}: index_shift must be an integer, got {shift!r}")
    return NameMap(tuple(pairs), shift, source=str(path))


def suggest_name_map(robot_names: Sequence[str], other_names: Sequence[str]) -> tuple[NameMap, bool] | None:
    """A map that turns `other_names` into `robot_names` exactly (same order), and whether it pairs by position
    only (True: no naming rule explains it, so the user must check the order). None when the lists cannot be
    made equal by renaming (different lengths, or the same names in another order)."""
    robot, other = tuple(robot_names), tuple(other_names)
    if len(robot) != len(other) or robot == other or sorted(robot) == sorted(other):
        return None
    for shift in _SUGGESTED_SHIFTS:
        candidate = NameMap(shift=shift)
        try:
            if candidate.apply(other, robot) == robot:
                return candidate, False
        except NameMapError:
            continue
    changed = tuple((a, b) for a, b in zip(other, robot, strict=True) if a != b)
    if any(a in robot for a, _ in changed):
        return None  # a name the robot has would have to become another one: a reorder, not a renaming
    return NameMap(changed), True


def name_map_hint(robot_names: Sequence[str], other_names: Sequence[str], other: str = "dataset",
                  flag: str | None = NAME_MAP_FLAG) -> str | None:
    """The map that would fix a mismatch, as the option to pass (or, with flag None, as the renaming)."""
    found = suggest_name_map(robot_names, other_names)
    if found is None:
        return None
    name_map, positional = found
    renaming = name_map.describe(other_names, robot_names)
    caveat = f" (pairs by position: check that the {other}'s order is the robot's)" if positional else ""
    if flag is None:
        return f"renaming {renaming} would match them{caveat}"
    return f"to map the names pass {flag} {name_map.spec()} ({renaming}){caveat}"
