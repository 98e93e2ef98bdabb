"""Generate (or check) the committed Python code for `protos/policy.proto`.

The generated modules are committed so that a deploy machine needs no protoc. `--check` regenerates into a
temporary directory and fails if anything differs, so CI catches a .proto edited without regenerating.

Run from the repository root: `python -m protos.generate [--check]`.
"""

from __future__ import annotations

import argparse
import filecmp
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

PROTO_DIR = Path(__file__).resolve().parent
REPO_ROOT = PROTO_DIR.parent
PROTO_FILES = ("policy.proto",)
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")


def _plugin_dir() -> str:
    """Directory holding protoc-gen-mypy (installed next to the running interpreter)."""
    return str(Path(sys.executable).parent)


def generate(out_root: Path) -> list[Path]:
    """Run protoc for every proto file, writing `protos/<name>_pb2*.py[i]` under `out_root`."""
    (out_root / "protos").mkdir(parents=True, exist_ok=True)
    args = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"-I{REPO_ROOT}",
        f"--python_out={out_root}",
        f"--grpc_python_out={out_root}",
        f"--mypy_out={out_root}",
        f"--mypy_grpc_out={out_root}",
        *[str(PROTO_DIR / name) for name in PROTO_FILES],
    ]
    env_path = _plugin_dir() + os.pathsep + os.environ.get("PATH", "")
    result = subprocess.run(args, capture_output=True, text=True, env={"PATH": env_path})
    if result.returncode != 0:
        raise RuntimeError(f"protoc failed ({result.returncode}):\n{result.stderr}")
    outputs: list[Path] = []
    for name in PROTO_FILES:
        stem = name.removesuffix(".proto")
        outputs.extend(out_root / "protos" / f"{stem}{suffix}" for suffix in GENERATED_SUFFIXES)
    missing = [p for p in outputs if not p.exists()]
    if missing:
        raise RuntimeError(f"protoc did not produce: {missing}")
    return outputs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if committed code differs from the .proto")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        produced = generate(Path(tmp))
        stale = []
        for path in produced:
            committed = PROTO_DIR / path.name
            if args.check:
                if not committed.exists() or not filecmp.cmp(path, committed, shallow=False):
                    stale.append(committed.name)
            else:
                shutil.copyfile(path, committed)
    if args.check:
        if stale:
            print(
                f"generated code is stale: {', '.join(stale)}; run `python -m protos.generate`",
                file=sys.stderr,
            )
            return 1
        print("generated protobuf code matches protos/*.proto")
        return 0
    print(f"wrote {len(produced)} files to {PROTO_DIR}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
