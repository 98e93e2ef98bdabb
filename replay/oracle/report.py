"""Write an oracle result to a folder: report.md, results.json and the PNG plots (under plots/).

Why JSON next to markdown: the report is for people, results.json for scripts that track a checkpoint's
numbers across runs or compare two checkpoints; both come from the same `OracleResult`.
"""

from __future__ import annotations

import json
from pathlib import Path

from replay.oracle.result import OracleResult


def write_outputs(result: OracleResult, directory: Path, plots: bool = True) -> list[Path]:
    """The files written, report.md first."""
    directory.mkdir(parents=True, exist_ok=True)
    made: list[Path] = []
    if plots:
        # Imported here: matplotlib costs ~0.3 s, which a run without plots should not pay.
        from replay.oracle.plots import write_plots

        made = write_plots(result, directory / "plots")
    report = directory / "report.md"
    text = result.summary_markdown()
    if made:
        text += "\n## Plots\n\n" + "\n".join(f"![{p.stem}]({p.relative_to(directory).as_posix()})" for p in made)
        text += "\n"
    report.write_text(text)
    results = directory / "results.json"
    results.write_text(json.dumps(result.to_json(), indent=1, allow_nan=False) + "\n")
    return [report, results, *made]
