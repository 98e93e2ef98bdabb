"""Standing promises of the repository: no pickle, generated code in sync, no machine-specific paths."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ["protos", "robodata", "policy_norm", "policy_server", "robot_client", "replay", "calibration", "training"]


def _python_files() -> list[Path]:
    return [p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")]


def test_no_pickle_or_eval_in_packages() -> None:
    offenders = []
    pattern = re.compile(r"^\s*(import pickle|from pickle |import dill|import cloudpickle)|"
                         r"(?<![.\w])eval\(|(?<![.\w])exec\(|"
                         r"torch\.load\(", re.M)
    for path in _python_files():
        for match in pattern.finditer(path.read_text()):
            offenders.append(f"{path.relative_to(ROOT)}: {match.group(0).strip()}")
    assert not offenders, offenders


def test_generated_protobuf_code_matches_proto() -> None:
    result = subprocess.run([sys.executable, "-m", "protos.generate", "--check"], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_no_machine_specific_paths_in_tracked_files() -> None:
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    # Split literals so this file does not match itself.
    pattern = re.compile("/(home|root|Users)/[A-Za-z]|" + "/wo" + "rk/|" + "/opt" + "/wheels")
    offenders = []
    for name in tracked:
        path = ROOT / name
        if path.suffix in {".py", ".md", ".toml", ".sh", ".proto", ".json", ".txt", ".yaml", ".yml", ""} \
                and path.is_file() and path.stat().st_size < 2_000_000:
            text = path.read_text(errors="ignore")
            if pattern.search(text):
                offenders.append(name)
    assert not offenders, offenders
