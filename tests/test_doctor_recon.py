"""The doctor's action reconstruction error against a real server on loopback and a checkpoint loaded locally.

The dataset policy served on the dataset itself must reconstruct it exactly (error 0 on every joint, through
the wire with camera images); served on a copy with one joint shifted, the error is that shift on that joint
only. A servable random-weight Pi0.5 checkpoint loaded with --local-model gives finite, nonzero errors per
joint, written to the report and findings.json.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from replay.cli import build_parser
from replay.doctor.command import DoctorOptions, _recon_request, run_doctor
from replay.doctor.raw import load_episodes
from replay.doctor.recon import ReconRequest, sample_frames
from robodata.open import open_dataset
from tests.pi05_helpers import make_servable_checkpoint
from tests.test_doctor_fixtures import run_cli, write_lerobot, yam_episodes
from tests.wire_helpers import SAMPLE_DATASET, running_server


def _lines(out: str, code: str) -> list[str]:
    return [line for line in out.splitlines() if f" {code} " in f" {line} "]


def test_sampling_covers_every_episode_within_the_cap() -> None:
    episodes, _ = load_episodes(open_dataset(SAMPLE_DATASET))
    strided = sample_frames(episodes, stride=10, max_frames=10_000)
    assert strided == [(ep.index, t) for ep in episodes for t in range(0, len(ep), 10)]
    capped = sample_frames(episodes, stride=1, max_frames=12)
    assert len(capped) == 12 and {e for e, _ in capped} == {ep.index for ep in episodes}


def test_dataset_policy_over_the_wire_reconstructs_exactly(tmp_path: Path) -> None:
    with running_server(SAMPLE_DATASET, horizon=16) as server:
        target = f"127.0.0.1:{server.port}"
        result = run_doctor(open_dataset(SAMPLE_DATASET), DoctorOptions(
            plots=False, recon=ReconRequest(server=target, stride=3, max_frames=24)))
        rc, out = run_cli("doctor", "--dataset", str(SAMPLE_DATASET), "--server", target, "--stride", "25",
                          "--max-frames", "10", "--out", str(tmp_path / "r"))
    recon = result.recon
    assert recon is not None and recon.horizon == 16 and recon.frames == 24
    for values in (recon.chunk_l1, recon.chunk_rms, recon.first_l1, recon.first_rms, recon.step_l1):
        assert np.all(values == 0.0), values
    assert result.exit_code == 0, [f.line() for f in result.findings if f.severity != "info"]
    per_joint = [f for f in result.findings if f.code == "reconstruction_error"]
    assert [f.where for f in per_joint] == [f"action {n}" for n in open_dataset(SAMPLE_DATASET).info.action_names]
    assert "chunk_padded" in next(f.message for f in result.findings if f.code == "reconstruction_policy_warnings")
    assert rc == 0, out
    assert any("left_joint1" in line and "first action L1 0 / RMS 0" in line
               for line in _lines(out, "reconstruction_error")), out
    report = (tmp_path / "r" / "report.md").read_text()
    assert "## Action reconstruction error" in report and "| right_gripper | 0 | 0 | 0 | 0 |" in report
    assert (tmp_path / "r" / "plots" / "reconstruction_error.png").read_bytes()[:4] == b"\x89PNG"


def test_a_shifted_joint_shows_up_as_its_own_error(tmp_path: Path) -> None:
    eps = yam_episodes(num=3)
    ds = write_lerobot(tmp_path / "ds", eps)
    shifted = eps.copy()
    for a in shifted.actions:
        a[:, 2] += 0.25
    served = write_lerobot(tmp_path / "served", shifted)
    with running_server(served, horizon=8) as server:
        result = run_doctor(open_dataset(ds), DoctorOptions(
            plots=False, recon=ReconRequest(server=f"127.0.0.1:{server.port}", stride=5)))
    recon = result.recon
    assert recon is not None
    np.testing.assert_allclose(recon.first_l1[2], 0.25, atol=1e-6)
    np.testing.assert_allclose(recon.chunk_rms[2], 0.25, atol=1e-6)
    assert np.all(np.delete(recon.chunk_l1, 2) == 0.0)
    (high,) = [f for f in result.findings if f.code == "reconstruction_error_high"]
    assert high.severity == "warning" and high.where == "action left_joint3" and "threshold 0.1" in high.message
    assert recon.worst[0].joint == "left_joint3"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_servable_checkpoint(tmp_path_factory.mktemp("ckpt") / "pi05_dummy")


def test_local_random_checkpoint_gives_finite_nonzero_errors(tmp_path: Path, checkpoint: Path) -> None:
    out_dir = tmp_path / "r"
    args = build_parser().parse_args(["doctor", "--dataset", str(SAMPLE_DATASET), "--checkpoint", str(checkpoint),
                                      "--local-model", "--stride", "40", "--max-frames", "4", "--out", str(out_dir)])
    request = _recon_request(args)
    assert request == ReconRequest(local_model=True, checkpoint=checkpoint, stride=40, max_frames=4)
    result = run_doctor(open_dataset(SAMPLE_DATASET), DoctorOptions(checkpoint=checkpoint, out=out_dir, plots=False,
                                                                    recon=request))
    assert result.errors == 0, [f.line() for f in result.findings if f.severity == "error"]
    recon = result.recon
    assert recon is not None and recon.frames == 4 and recon.horizon == 10
    for values in (recon.chunk_l1, recon.chunk_rms, recon.first_l1, recon.first_rms):
        assert values.shape == (14,) and np.all(np.isfinite(values)) and np.all(values > 0), values
    assert np.all(recon.chunk_rms >= recon.chunk_l1 - 1e-12)

    findings = json.loads((out_dir / "findings.json").read_text())
    per_joint = [f for f in findings if f["code"] in ("reconstruction_error", "reconstruction_error_high")]
    names = open_dataset(SAMPLE_DATASET).info.action_names
    assert [f["where"] for f in per_joint] == [f"action {n}" for n in names]
    summary = next(f for f in findings if f["code"] == "reconstruction_summary")
    assert summary["where"].startswith(f"local model {checkpoint}") and "4 frame(s)" in summary["message"]
    assert "## Action reconstruction error" in (out_dir / "report.md").read_text()
