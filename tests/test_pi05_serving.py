"""Pi0.5 served through the real wire: checkpoint dir -> server -> GrpcPolicy, and startup refusals by name."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from policy_norm.errors import SelfTestError
from policy_server.pi05_policy import Pi05Policy, Pi05ServeOptions
from policy_server.preflight import PreflightError
from policy_server.server import PolicyServer, ServerConfig
from robodata.dataset import Dataset
from robot_client.policy_client import GrpcPolicy, PolicyRequestError, PolicyServerError
from tests.pi05_helpers import make_servable_checkpoint
from tests.wire_helpers import REPO_ROOT, SAMPLE_DATASET, observation_for, sample_dataset


@pytest.fixture(scope="module")
def dataset() -> Dataset:
    return sample_dataset()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_servable_checkpoint(tmp_path_factory.mktemp("ckpt") / "pi05_dummy")


@pytest.fixture(scope="module")
def policy(checkpoint: Path) -> Pi05Policy:
    return Pi05Policy(Pi05ServeOptions(checkpoint=checkpoint, device="cpu"))


@pytest.fixture(scope="module")
def server(policy: Pi05Policy) -> Iterator[PolicyServer]:
    srv = PolicyServer(policy, ServerConfig(host="127.0.0.1", port=0, websocket_port=0)).start()
    yield srv
    srv.stop(grace=0.2)


def test_metadata_describes_the_checkpoint(server: PolicyServer, checkpoint: Path, dataset: Dataset) -> None:
    with GrpcPolicy(target=f"127.0.0.1:{server.port}") as client:
        md = client.metadata
    assert md.policy_type == "pi05"
    assert md.weight_hash == hashlib.sha256((checkpoint / "model.safetensors").read_bytes()).hexdigest()
    assert md.action_horizon == 10 and md.action_dim == 14 and md.state_dim == 14
    assert list(md.state_names) == list(dataset.info.state_names)
    assert [(c.name, c.height, c.width) for c in md.cameras] == [("top", 28, 28), ("left_wrist", 28, 28)]
    assert md.preprocessing.image_resize == "resize_with_pad" and md.preprocessing.state_bins == 256
    assert md.norm_stats.mode == "quantile" and len(md.norm_stats.state.q01) == 14
    assert list(md.action_delta_mask) == [True] * 6 + [False] + [True] * 6 + [False]
    assert md.supports_rtc


def test_round_trip_through_grpc_and_websocket(server: PolicyServer, policy: Pi05Policy, dataset: Dataset) -> None:
    obs = observation_for(dataset, 0, 20)
    obs["noise_seed"] = 3
    with GrpcPolicy(target=f"127.0.0.1:{server.port}", streaming=True) as client:
        out = client.infer(obs)  # 240x320 camera images are resized to 28x28 on the client
        again = client.infer(obs)
    actions = out["actions"]
    assert actions.shape == (10, 14) and actions.dtype == np.float32 and np.isfinite(actions).all()
    np.testing.assert_array_equal(actions, again["actions"])  # same seed, same chunk
    grippers = actions[:, [6, 13]]
    assert (grippers >= 0).all() and (grippers <= 1).all()
    report = out["norm_report"]
    assert report["mode"] == "quantile"
    assert report["steps"] == ["select_state", "normalize_state", "discretize_state", "pad_state", "unpad_actions",
                               "denormalize_actions", "delta_to_absolute", "gripper_convention", "robot_limits"]
    assert len(report["state"]) == 14 and len(report["actions"]) == 14
    assert out["server_timing"]["model_ms"] > 0 and out["server_timing"]["preprocess_ms"] > 0

    from openpi_client.websocket_client_policy import WebsocketClientPolicy

    assert server.websocket is not None
    ws = WebsocketClientPolicy(host="127.0.0.1", port=server.websocket.port)
    from openpi_client import image_tools

    ws_obs = dict(obs, images={k: image_tools.resize_with_pad(v, 28, 28) for k, v in obs["images"].items()})
    np.testing.assert_array_equal(ws.infer(ws_obs)["actions"], actions)


def test_rtc_request_continues_the_previous_chunk(server: PolicyServer, dataset: Dataset) -> None:
    obs = observation_for(dataset, 1, 30)
    obs["noise_seed"] = 1
    with GrpcPolicy(target=f"127.0.0.1:{server.port}") as client:
        plain = client.infer(obs)["actions"]
        previous = plain + 0.05
        obs_rtc = dict(obs, noise_seed=2, rtc={"previous_chunk_remainder": previous[3:], "inference_delay_steps": 2})
        guided = client.infer(obs_rtc)["actions"]
        unguided = client.infer(dict(obs, noise_seed=2))["actions"]
        # The committed steps follow the previous chunk's leftover much more closely with guidance.
        err_guided = np.abs(guided[:2] - previous[3:5]).mean()
        err_unguided = np.abs(unguided[:2] - previous[3:5]).mean()
        assert err_guided < 0.5 * err_unguided, (err_guided, err_unguided)
        with pytest.raises(PolicyRequestError, match="observation.rtc.execution_horizon"):
            client.infer(dict(obs, rtc={"previous_chunk_remainder": previous[8:], "inference_delay_steps": 1,
                                        "execution_horizon": 3}))


def test_state_far_outside_the_stats_is_reported_by_joint(server: PolicyServer, dataset: Dataset) -> None:
    obs = observation_for(dataset, 0, 5)
    obs["state"][2] += 2.0  # left_joint3 far beyond its q99
    with GrpcPolicy(target=f"127.0.0.1:{server.port}") as client:
        out = client.infer(obs)
    fields = [w["field"] for w in out["warnings"]]
    assert any("left_joint3" in f for f in fields), out["warnings"]


def test_strict_mode_rejects_out_of_range_state(tmp_path: Path, dataset: Dataset) -> None:
    ckpt = make_servable_checkpoint(tmp_path / "strict", strict=True)
    policy = Pi05Policy(Pi05ServeOptions(checkpoint=ckpt, device="cpu", warmup=False))
    with PolicyServer(policy, ServerConfig(host="127.0.0.1", port=0)) as srv, \
            GrpcPolicy(target=f"127.0.0.1:{srv.port}") as client:
        obs = observation_for(dataset, 0, 5)
        obs["state"][2] += 2.0
        with pytest.raises(PolicyRequestError, match=r"observation.state: .*left_joint3"):
            client.infer(obs)
        # Random weights put the chunk far outside the action stats: strict mode refuses to send it, by joint.
        with pytest.raises(PolicyServerError, match=r"INTERNAL: output normalization refused the chunk: .*"
                                                    r"actions\[\d+\] \(\w+\)"):
            client.infer(observation_for(dataset, 0, 5))
        client.reset_episode(0)  # still serving


def test_lerobot_layout_serves_the_same_chunks(tmp_path: Path, checkpoint: Path, policy: Pi05Policy,
                                                dataset: Dataset) -> None:
    lerobot = make_servable_checkpoint(tmp_path / "lerobot", layout="lerobot")
    other = Pi05Policy(Pi05ServeOptions(checkpoint=lerobot, device="cpu", warmup=False))
    assert other.load_report.layout == "lerobot"
    from policy_server.validate import ObservationInput

    frame = dataset.episode(0).frame(10)
    import cv2

    images = {k: cv2.resize(v, (28, 28), interpolation=cv2.INTER_AREA) for k, v in frame.images.items()}
    obs = ObservationInput(images=images, image_timestamps={}, state=frame.state, prompt=frame.task, timestamp=0.0,
                           episode_index=0, step_index=10)
    a = policy.infer(obs, noise_seed=5).actions
    b = other.infer(obs, noise_seed=5).actions
    # Same weights and stats; the two layouts differ only in the stats epsilon convention (1e-6 vs 1e-8).
    np.testing.assert_allclose(a, b, atol=1e-4)


def test_preflight_refuses_when_memory_is_short(checkpoint: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import policy_server.preflight as pf

    monkeypatch.setattr(pf, "available_bytes", lambda device: (10 * 2**20, 16 * 2**30))
    with pytest.raises(PreflightError, match=r"cpu: 0.01 GiB free of 16.00 GiB, but serving dummy/dummy .* needs"):
        Pi05Policy(Pi05ServeOptions(checkpoint=checkpoint, device="cpu"))


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda d: (d / "policy_config.json").unlink(), "policy_config.json not found"),
        (lambda d: (d / "assets" / "tokenizer.model").unlink(), "tokenizer"),
        (lambda d: (d / "assets" / "yam" / "norm_stats.json").unlink(), "norm_stats.json"),
        (lambda d: _set_json(d / "policy_config.json", ["cameras", "top"], "base_9_rgb"),
         "model slots \\['base_9_rgb'\\] do not exist"),
    ],
)
def test_startup_refusals_name_the_cause(tmp_path: Path, damage: object, message: str) -> None:
    ckpt = make_servable_checkpoint(tmp_path / "broken")
    damage(ckpt)  # type: ignore[operator]
    with pytest.raises(Exception, match=message):
        Pi05Policy(Pi05ServeOptions(checkpoint=ckpt, device="cpu", warmup=False))


def _set_json(path: Path, keys: list[str], value: object) -> None:
    data = json.loads(path.read_text())
    node = data
    for k in keys[:-1]:
        node = node[k]
    node[keys[-1]] = value
    path.write_text(json.dumps(data))


def test_dataset_check_refuses_unnormalized_stats(tmp_path: Path, policy: Pi05Policy) -> None:
    from policy_server.dataset_check import check_dataset_against_policy

    result = check_dataset_against_policy(policy.pipeline, SAMPLE_DATASET, allow_mismatch=False)
    assert result.ok
    # Stats from another "dataset": everything shifted by 1 rad.
    ckpt = make_servable_checkpoint(tmp_path / "shifted")
    path = ckpt / "assets" / "yam" / "norm_stats.json"
    stats = json.loads(path.read_text())
    for feature in ("state", "actions"):
        for key in ("mean", "q01", "q99"):
            stats["norm_stats"][feature][key] = [v + 1.0 for v in stats["norm_stats"][feature][key]]
    path.write_text(json.dumps(stats))
    shifted = Pi05Policy(Pi05ServeOptions(checkpoint=ckpt, device="cpu", warmup=False))
    with pytest.raises(SelfTestError, match="not normalized by these stats"):
        check_dataset_against_policy(shifted.pipeline, SAMPLE_DATASET, allow_mismatch=False)


def test_serve_cli_refuses_a_damaged_checkpoint_with_the_key(tmp_path: Path) -> None:
    ckpt = make_servable_checkpoint(tmp_path / "cli")
    from safetensors.torch import load_file, save_file

    state = load_file(str(ckpt / "model.safetensors"))
    state.pop("action_out_proj.bias")
    save_file(state, str(ckpt / "model.safetensors"))
    result = subprocess.run([sys.executable, "-m", "policy_server", "serve", "--checkpoint", str(ckpt), "--port", "0",
                             "--device", "cpu"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "missing keys (1): action_out_proj.bias" in result.stderr
