"""Rewrite LeRobot 0.6.1's eight PEP-695 lines so it imports on Python 3.11 (no numeric code is touched).

Run once inside the LeRobot oracle environment: `python backport_pep695.py SITE_PACKAGES/lerobot`.
`type X = ...` becomes a plain alias; `class C[T](Base)` becomes `class C(Base, Generic[T])`;
`def f[T: B](...)` becomes a function over a module-level `TypeVar("T", bound=B)`.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

TYPE_ALIAS = re.compile(r"^type (\w+) = (.+)$", re.M)
GENERIC_CLASS = re.compile(r"^class (\w+)\[([\w, ]+)\]\((.*)\):", re.M)
GENERIC_CLASS_NO_BASE = re.compile(r"^class (\w+)\[([\w, ]+)\]:", re.M)
GENERIC_DEF = re.compile(r"^def (\w+)\[(\w+): (\w+)\]\(", re.M)


def backport(text: str) -> str:
    header: list[str] = []
    text = TYPE_ALIAS.sub(r"\1 = \2", text)

    def klass(match: re.Match[str], with_base: bool) -> str:
        names = [n.strip() for n in match.group(2).split(",")]
        header.extend(f'{n} = TypeVar("{n}")' for n in names)
        bases = f"{match.group(3)}, " if with_base and match.group(3) else ""
        return f"class {match.group(1)}({bases}Generic[{', '.join(names)}]):"

    text = GENERIC_CLASS.sub(lambda m: klass(m, True), text)
    text = GENERIC_CLASS_NO_BASE.sub(lambda m: klass(m, False), text)

    def func(match: re.Match[str]) -> str:
        header.append(f'{match.group(2)} = TypeVar("{match.group(2)}", bound="{match.group(3)}")')
        return f"def {match.group(1)}("

    text = GENERIC_DEF.sub(func, text)
    if header:
        lines = text.split("\n")
        # after the last top-level import
        last_import = max(i for i, line in enumerate(lines) if line.startswith(("import ", "from ")))
        while lines[last_import].rstrip().endswith(("(", ",")) or (
                last_import + 1 < len(lines) and lines[last_import + 1].startswith((" ", ")"))):
            last_import += 1
        lines[last_import + 1:last_import + 1] = ["from typing import Generic, TypeVar", *dict.fromkeys(header)]
        text = "\n".join(lines)
    return text


def main(root: Path) -> None:
    for rel in ("processor/pipeline.py", "motors/motors_bus.py", "datasets/streaming_dataset.py",
                "datasets/aggregate.py", "utils/io_utils.py"):
        path = root / rel
        path.write_text(backport(path.read_text()))
        print(f"backported {rel}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
