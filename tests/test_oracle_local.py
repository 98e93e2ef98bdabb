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


def test_the_local_model_validates_like_the_server_and_answers_alike(checkpoint: Path) -> None:
    """Frames go through the server's request validation: a bad frame gets the error the server sends over gRPC
    (same field, same message), a good one the same chunk."""
    from dataclasses import replace

    from policy_server.pi05_policy import Pi05Policy, Pi05ServeOptions
    from policy_server.server import PolicyServer, ServerConfig
    from replay.oracle.core import observation
    from replay.oracle.sources import ServerSource

    ep = sample_dataset().episode(1)
    good = observation(ep, 20, range(14))
    nan_state = good.state.copy()
    nan_state[3] = np.nan
    bad = [replace(good, state=nan_state),
           replace(good, images={"top": good.images["top"]}),
           replace(good, images={**good.images, "overhead": good.images["top"]})]
    policy = Pi05Policy(Pi05ServeOptions(checkpoint=checkpoint, device="cpu", warmup=False))
    server = PolicyServer(policy, ServerConfig(host="127.0.0.1", port=0)).start()
    local = LocalModelSource(checkpoint, noise_seed=3)
    try:
        remote = ServerSource(f"127.0.0.1:{server.port}", noise_seed=3)
        try:
            served, here = remote.infer_batch([good, *bad]), local.infer_batch([good, *bad])
        finally:
            remote.close()
    finally:
        local.close()
        server.stop(grace=0.1)
    assert served[0].chunk is not None and here[0].chunk is not None
    np.testing.assert_array_equal(here[0].chunk, served[0].chunk)
    assert here[0].warnings == served[0].warnings
    fields = ["observation.state[3] (left_joint4)", "observation.images[left_wrist]", "observation.images[overhead]"]
    for field, s, h in zip(fields, served[1:], here[1:], strict=True):
        assert s.chunk is None and h.chunk is None and s.error is not None and h.error is not None
        assert h.error.startswith("WireError: ") and s.error.startswith("PolicyRequestError: ")
        assert h.error.split(": ", 1)[1] == s.error.split(": ", 1)[1], (h.error, s.error)
        assert h.error.split(": ", 1)[1].startswith(f"{field}: "), h.error
