"""The oracle against a servable random-weight Pi0.5 checkpoint loaded in this process (--checkpoint).

Random weights reproduce nothing, so every joint's error is finite and nonzero. The normalized view is the
checkpoint's own pipeline (quantile, delta mask on the arm joints): prediction and ground truth are encoded
with the same state, so the delta cancels and each normalized error is the raw one times 2 / (q99 - q01 + eps)
of that joint's (delta) action stats.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from policy_norm.numeric import quantile_span
from replay.oracle.command import OracleOptions, run_oracle
from replay.oracle.sources import LocalModelSource, open_policy_source
from tests.pi05_helpers import make_servable_checkpoint
from tests.test_doctor_fixtures import run_cli
from tests.wire_helpers import SAMPLE_DATASET, sample_dataset


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_servable_checkpoint(tmp_path_factory.mktemp("ckpt") / "pi05_dummy")


def test_random_checkpoint_gives_finite_nonzero_errors_scaled_by_its_stats(checkpoint: Path) -> None:
    ds = sample_dataset()
    source = open_policy_source(checkpoint=checkpoint, noise_seed=3)
    assert isinstance(source, LocalModelSource)
    try:
        view, how = source.normalized_view()
        result = run_oracle(ds, source, OracleOptions(frames=((0, 0), (1, 60), (3, 127)), worst=2))
    finally:
        source.close()
    assert view is not None and "quantile" in how and "12 delta dim(s)" in how
    assert result.frames == 3 and result.horizon == 10 and list(result.valid) == [10, 10, 1]
    raw, norm = result.raw, result.normalized
    assert norm is not None
    for values in (raw.joint_l1, raw.joint_rms, raw.first_l1, norm.joint_l1, result.jump[0]):
        assert values.shape == (14,) and np.all(np.isfinite(values)) and np.all(values > 0), values
    assert np.all(raw.joint_rms >= raw.joint_l1 - 1e-12)
    actions = view.pipeline.resolved.actions
    scale = 2.0 / quantile_span(actions.a, actions.b, actions.epsilon)
    np.testing.assert_allclose(norm.step_joint_l1, raw.step_joint_l1 * scale, rtol=2e-3, atol=1e-5)
    assert len(result.worst_frames) == 2 and result.worst_frames[0].joint in result.action_names
    assert "## Per joint" in result.summary_markdown()


def test_cli_with_a_checkpoint_writes_the_outputs(tmp_path: Path, checkpoint: Path) -> None:
    out_dir = tmp_path / "r"
    rc, out = run_cli("oracle", "--dataset", str(SAMPLE_DATASET), "--checkpoint", str(checkpoint), "--stride", "60",
                      "--max-frames", "2", "--noise-seed", "1", "--out", str(out_dir), "--no-progress")
    assert rc == 0, out
    results = json.loads((out_dir / "results.json").read_text())
    assert results["frames"] == 2 and results["source"].startswith(f"local model {checkpoint}")
    for key in ("first_l1", "chunk_l1", "chunk_rms"):
        for stats in (results["raw"], results["normalized"]):
            assert all(v is not None and v > 0 for v in stats[key]), (key, stats[key])
    assert len(results["raw"]["step_joint_l1"]) == 10 and len(results["per_frame"]) == 2
    assert "## Per chunk step" in (out_dir / "report.md").read_text()
    assert {"error_vs_step.png", "error_over_frames.png", "worst_frame_1.png"} <= {
        p.name for p in (out_dir / "plots").iterdir()}
