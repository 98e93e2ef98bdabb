"""The model behind the server changes mid-run: noticed on the next chunk, the arm holds, the episode is aborted.

Real pieces throughout: policy servers on loopback (one stopped and another started on the same port, as a restart
with another checkpoint), the MuJoCo arms, the servo loop, `python -m robot_client run` as a process, recordings
in tmp dirs. The "other model" is the dataset policy over a copy of the sample dataset under another name: its
fingerprint (the dataset policy's weight_hash) differs while its actions are the same, so only the identity check
can tell the two apart. Faults start from the episode's own chunks (tests/test_faults.py: fault_while_executing).
Also here: a first-action refusal, a robot fault and a lost server end their episode as aborted, without a
traceback.
"""

from __future__ import annotations

import itertools
import logging
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from policy_server.core import InferenceCore
from policy_server.dataset_policy import DatasetPolicy, DatasetPolicyConfig
from policy_server.pi05_policy import Pi05Policy, Pi05ServeOptions
from policy_server.policy import Policy, PolicyOutput, canonical_digest
from policy_server.server import PolicyServer, ServerConfig
from policy_server.validate import ObservationInput
from protos import policy_pb2 as pb
from robodata.dataset import DatasetError
from robodata.recording import EPISODE_ABORTED, EPISODE_COMPLETED, RecordingDataset, RecordingSpec, RecordingWriter
from robot_client.chunking import ChunkingConfig
from robot_client.config import RobotConfig, load_robot_config
from robot_client.control_loop import TickRecord
from robot_client.policy_client import GrpcPolicy, ModelChangedError
from robot_client.policy_worker import ChunkRecord
from robot_client.rig import Rig
from robot_client.robot import RobotFault
from robot_client.runner import EpisodeOptions, EpisodeReport, PolicyLostError, run_episode
from robot_client.sim.camera_service import SimCameraService
from robot_client.sim.clock import SimClock
from robot_client.sim.robot import SimConfig, SimRobot
from tests.pi05_helpers import make_servable_checkpoint
from tests.test_faults import fault_while_executing
from tests.wire_helpers import REPO_ROOT, SAMPLE_DATASET, observation_for, running_server, sample_dataset

CONFIG: RobotConfig = load_robot_config("bimanual_yam")
PERIOD = 1.0 / CONFIG.servo_hz
CAMERAS = ("top", "left_wrist")
PROMPT = "pick up the red cube with the left arm"


@pytest.fixture(scope="module")
def first_state() -> np.ndarray:
    return np.array(sample_dataset().episode(0).states[0], dtype=np.float64)


@pytest.fixture(scope="module")
def retrained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample dataset under another name: another fingerprint, the same actions."""
    path = tmp_path_factory.mktemp("other") / "sample_yam_retrained"
    shutil.copytree(SAMPLE_DATASET, path)
    return path


def dataset_policy(path: Path = SAMPLE_DATASET) -> DatasetPolicy:
    return DatasetPolicy(DatasetPolicyConfig(dataset=path, action_horizon=30))


class TriggerPolicy(DatasetPolicy):
    """The dataset policy, calling `on_request(n)` before answering its n-th request: a fault started from the
    episode's own chunks when the client runs in another process."""

    def __init__(self, path: Path, on_request: Callable[[int], None]) -> None:
        super().__init__(DatasetPolicyConfig(dataset=path, action_horizon=30))
        self._count = itertools.count(1)
        self._on_request = on_request

    def infer(self, obs: ObservationInput, noise_seed: int | None = None) -> PolicyOutput:
        self._on_request(next(self._count))
        return super().infer(obs, noise_seed)


class ServerSwap:
    """Server A on a free port; `swap()` stops it and starts server B on the same port (a restart, possibly with
    another model); `kill()` stops A for good."""

    def __init__(self, first: Policy, second: Policy) -> None:
        self.first = PolicyServer(first, ServerConfig(host="127.0.0.1", port=0)).start()
        self.port = self.first.port
        self._second_policy = second
        self.second: PolicyServer | None = None

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def swap(self) -> None:
        self.first.stop(grace=0.0)
        self.second = PolicyServer(self._second_policy, ServerConfig(host="127.0.0.1", port=self.port)).start()

    def swap_in_background(self) -> None:
        threading.Thread(target=self.swap, name="server-swap").start()

    def kill(self) -> None:
        threading.Thread(target=lambda: self.first.stop(grace=0.0), name="server-kill").start()

    def close(self) -> None:
        self.first.stop(grace=0.0)
        if self.second is not None:
            self.second.stop(grace=0.0)


def make_rig(start: np.ndarray) -> Rig:
    robot = SimRobot(CONFIG, SimConfig(initial_positions=tuple(start)))
    robot.connect()
    service = SimCameraService(robot.world, CAMERAS)
    rig = Rig(robot=robot, clock=SimClock(robot, pace=1.0), capture_images=service.capture, camera_names=CAMERAS)
    rig._closers += [robot.close, service.close]
    robot.enable()
    return rig


def options(seconds: float, refill: int = 15, **kw: Any) -> EpisodeOptions:
    return EpisodeOptions(chunking=ChunkingConfig(mode="async", fps=30.0, refill_threshold=refill),
                          duration_s=seconds, prompt=PROMPT, **kw)


def run_swapped(swap: ServerSwap, first_state: np.ndarray, ticks: list[TickRecord], chunks: list[ChunkRecord],
                *, allow_model_swap: bool = False, seconds: float = 3.0) -> EpisodeReport:
    """One episode in the sim; the swap starts once the episode executes (second chunk)."""
    start = fault_while_executing(swap.swap_in_background, lambda: None)

    def on_chunk(record: ChunkRecord) -> None:
        chunks.append(record)
        start(record)

    rig = make_rig(first_state)
    try:
        with GrpcPolicy(target=swap.target, streaming=True, timeout_s=0.5, retries=3, backoff_initial_s=0.05,
                        allow_model_swap=allow_model_swap) as policy:
            # Refill early: ~0.8 s of queued actions plus the deadline keep the arm running while the client
            # reconnects, so the stop is the identity check's, not a hold for lack of actions.
            return run_episode(rig, policy, options(seconds, refill=25), 0, on_tick=ticks.append,
                               on_chunk=on_chunk, raise_on_abort=False)
    finally:
        rig.close()
        swap.close()


# ---- the identity on the wire -------------------------------------------------------------------------------


def test_canonical_digest_ignores_key_order() -> None:
    assert canonical_digest({"a": 1, "b": [1, 2]}) == canonical_digest({"b": [1, 2], "a": 1})
    assert canonical_digest({"a": 1}) != canonical_digest({"a": 2})


def test_every_response_and_the_metadata_carry_the_identity(retrained: Path) -> None:
    ds = sample_dataset()
    policy = dataset_policy()
    first, second = InferenceCore(policy, max_request_bytes=1 << 24), InferenceCore(policy, max_request_bytes=1 << 24)
    # Two servers of the same model differ only by their instance id.
    assert first.identity.server_instance_id != second.identity.server_instance_id
    for name in ("weight_hash", "policy_config_digest", "norm_stats_digest"):
        assert getattr(first.identity, name) == getattr(second.identity, name)
    assert first.identity.weight_hash == policy.spec.weight_hash
    assert first.identity.norm_stats_digest == first.metadata.norm_stats.digest != ""
    assert first.metadata.identity == first.identity
    # Another dataset is another model; another horizon is another serving config.
    assert InferenceCore(dataset_policy(retrained), max_request_bytes=1).identity.weight_hash != policy.spec.weight_hash
    shorter = DatasetPolicy(DatasetPolicyConfig(dataset=SAMPLE_DATASET, action_horizon=20))
    assert shorter.identity().policy_config_digest != policy.identity().policy_config_digest
    with running_server(websocket_port=0) as server:
        with GrpcPolicy(target=f"127.0.0.1:{server.port}") as client:
            assert client.metadata.identity == server.core.identity
            out = client.infer(observation_for(ds, 0, 3))
            assert out["model_identity"]["weight_hash"] == server.core.identity.weight_hash
        from openpi_client.websocket_client_policy import WebsocketClientPolicy

        assert server.websocket is not None
        ws = WebsocketClientPolicy(host="127.0.0.1", port=server.websocket.port)
        assert ws.get_server_metadata()["identity"]["server_instance_id"] == server.core.identity.server_instance_id
        reply = ws.infer(observation_for(ds, 0, 3))
        assert reply["model_identity"]["server_instance_id"] == server.core.identity.server_instance_id
        assert {"actions", "server_timing", "policy_timing"} <= set(reply)  # openpi's keys are still there


def test_pi05_identity_names_weights_config_and_stats(tmp_path: Path) -> None:
    a = Pi05Policy(Pi05ServeOptions(checkpoint=make_servable_checkpoint(tmp_path / "a", seed=0), device="cpu",
                                    warmup=False))
    b = Pi05Policy(Pi05ServeOptions(checkpoint=make_servable_checkpoint(tmp_path / "b", seed=1), device="cpu",
                                    warmup=False))
    ia, ib = a.identity(), b.identity()
    assert ia.weight_hash == a.spec.weight_hash and ia.weight_hash != ib.weight_hash
    assert ia.policy_config_digest == canonical_digest(a.config.to_dict()) == ib.policy_config_digest
    assert ia.norm_stats_digest == a.pipeline.digest() == ib.norm_stats_digest


def test_client_checks_every_chunk(caplog: pytest.LogCaptureFixture) -> None:
    """Without any reconnect: the same server starts answering with another identity."""
    ds = sample_dataset()
    obs = observation_for(ds, 0, 3)
    with running_server(horizon=30) as server:
        original = pb.ModelIdentity()
        original.CopyFrom(server.core.identity)
        # A new instance of the same model: logged, accepted.
        restarted = pb.ModelIdentity()
        restarted.CopyFrom(original)
        restarted.server_instance_id = "0123456789abcdef"
        other = pb.ModelIdentity()
        other.CopyFrom(original)
        other.weight_hash = "f" * 64
        for streaming in (False, True):
            server.core.identity = original
            with GrpcPolicy(target=f"127.0.0.1:{server.port}", streaming=streaming) as client:
                client.infer(obs)
                server.core.identity = restarted
                with caplog.at_level(logging.INFO, logger="robot_client.policy_client"):
                    client.infer(obs)
                assert any("0123456789abcdef serves the same model" in r.message for r in caplog.records)
                server.core.identity = other
                with pytest.raises(ModelChangedError) as err:
                    client.infer(obs)
                assert original.weight_hash in str(err.value) and "f" * 64 in str(err.value)
                assert err.value.changed == ("weight_hash",)
            with GrpcPolicy(target=f"127.0.0.1:{server.port}", streaming=streaming, allow_model_swap=True) as client:
                client.infer(obs)  # connected to `other`
                server.core.identity = original
                client.infer(obs)
                assert client.identity.weight_hash == original.weight_hash  # the swap became the reference


# ---- episodes ----------------------------------------------------------------------------------------------


def test_restart_with_other_weights_holds_within_one_period(first_state: np.ndarray, retrained: Path) -> None:
    a, b = dataset_policy(), dataset_policy(retrained)
    swap = ServerSwap(a, b)
    ticks: list[TickRecord] = []
    chunks: list[ChunkRecord] = []
    report = run_swapped(swap, first_state, ticks, chunks)
    assert report.aborted and isinstance(report.error, ModelChangedError), report.summary()
    assert a.spec.weight_hash in report.reason and b.spec.weight_hash in report.reason
    assert "--allow-model-swap" in report.reason
    # Not one chunk of the other model was used.
    assert all(c.response["model_identity"]["weight_hash"] == a.spec.weight_hash for c in chunks)
    changed_at = report.worker.aborted_at
    assert changed_at is not None
    # It stopped a running arm (old actions were still queued) ...
    before = [t for t in ticks if t.time <= changed_at]
    assert before and not before[-1].holding, report.events.log
    # ... within one control period: every later tick holds (the loop's own hold), and the arm comes to rest.
    after = [t for t in ticks if t.time > changed_at + PERIOD + 1e-9]
    assert after and all(t.holding for t in after), report.events.log
    assert any("hold: no target" in line for line in report.events.log)
    assert np.abs(ticks[-1].command.velocity).max() < 1e-3
    assert ticks[-1].time - changed_at < 2.0 + PERIOD  # it ended the episode instead of holding to its end


def test_allowed_model_swap_continues(first_state: np.ndarray, retrained: Path) -> None:
    a, b = dataset_policy(), dataset_policy(retrained)
    ticks: list[TickRecord] = []
    chunks: list[ChunkRecord] = []
    report = run_swapped(ServerSwap(a, b), first_state, ticks, chunks, allow_model_swap=True)
    assert report.outcome == EPISODE_COMPLETED, report.summary()
    served = [c.response["model_identity"]["weight_hash"] for c in chunks]
    assert served[0] == a.spec.weight_hash and served[-1] == b.spec.weight_hash
    assert not ticks[-1].holding or ticks[-1].time > ticks[0].time + 3.0


def test_restart_of_the_same_model_continues(first_state: np.ndarray, caplog: pytest.LogCaptureFixture) -> None:
    policy = dataset_policy()
    swap = ServerSwap(policy, policy)
    ticks: list[TickRecord] = []
    chunks: list[ChunkRecord] = []
    with caplog.at_level(logging.INFO, logger="robot_client.policy_client"):
        report = run_swapped(swap, first_state, ticks, chunks)
    assert report.outcome == EPISODE_COMPLETED and report.error is None, report.summary()
    instances = {c.response["model_identity"]["server_instance_id"] for c in chunks}
    assert len(instances) == 2  # both servers answered
    assert any("serves the same model" in r.message for r in caplog.records)


def test_server_lost_past_the_hold_timeout_aborts(first_state: np.ndarray) -> None:
    swap = ServerSwap(dataset_policy(), dataset_policy())
    ticks: list[TickRecord] = []
    rig = make_rig(first_state)
    try:
        with GrpcPolicy(target=swap.target, streaming=True, timeout_s=0.3, retries=1,
                        backoff_initial_s=0.05) as policy:
            report = run_episode(rig, policy, options(4.0, hold_timeout_s=0.5), 0, on_tick=ticks.append,
                                 on_chunk=fault_while_executing(swap.kill, lambda: None), raise_on_abort=False)
    finally:
        rig.close()
        swap.close()
    assert report.aborted and isinstance(report.error, PolicyLostError), report.summary()
    assert "no usable chunk" in report.reason and "PolicyServerUnavailable" in report.reason
    assert ticks[-1].holding and np.abs(ticks[-1].command.velocity).max() < 1e-3


def test_robot_fault_ends_the_episode_as_aborted(first_state: np.ndarray) -> None:
    with running_server(horizon=30) as server:
        rig = make_rig(first_state)
        sim = rig.robot
        assert isinstance(sim, SimRobot)
        try:
            with GrpcPolicy(target=f"127.0.0.1:{server.port}", streaming=True) as policy:
                fault = fault_while_executing(lambda: sim.inject_fault("left_joint2", code="tracking_error",
                                                                       message="tracking error 0.6 rad"),
                                              lambda: None)
                report = run_episode(rig, policy, options(3.0), 0, on_chunk=fault, raise_on_abort=False)
        finally:
            rig.close()
    assert report.aborted and isinstance(report.error, RobotFault), report.summary()
    assert "left_joint2" in report.reason and "tracking_error" in report.reason


# ---- recordings ----------------------------------------------------------------------------------------------


def test_recording_marks_aborted_episodes(tmp_path: Path) -> None:
    spec = RecordingSpec(fps=30.0, state_names=("a", "b"), action_names=("a", "b"))
    path = tmp_path / "rec.zarr"
    with RecordingWriter(path, spec) as writer:
        for outcome, reason in ((EPISODE_COMPLETED, ""), (EPISODE_ABORTED, "the model changed")):
            writer.start_episode("task")
            for i in range(3):
                writer.append(float(i) / 30, np.zeros(2, np.float32), np.zeros(2, np.float32), {})
            summary = writer.end_episode(outcome=outcome, reason=reason)
            assert summary.outcome == outcome and summary.complete
        writer.start_episode("task")  # aborted before any frame: not listed, still named
        writer.end_episode(outcome=EPISODE_ABORTED, reason="first action refused")
        writer.start_episode("task")
        writer.append(0.0, np.zeros(2, np.float32), np.zeros(2, np.float32), {})
        with pytest.raises(DatasetError, match="aborted episode needs a non-empty reason"):
            writer.end_episode(outcome=EPISODE_ABORTED)
        with pytest.raises(DatasetError, match="outcome must be one of"):
            writer.end_episode(outcome="crashed", reason="x")
        writer.end_episode()
    ds = RecordingDataset(path)
    assert ds.episode_indices() == [0, 1, 3]
    assert not ds.episode_outcome(0).aborted and ds.episode_outcome(3).outcome == EPISODE_COMPLETED
    assert ds.episode_outcome(1).aborted and ds.episode_outcome(1).reason == "the model changed"
    assert ds.aborted == {1: "the model changed", 2: "first action refused"}
    assert any("episode 1: the model changed" in n for n in ds.info.notes)
    assert ds.episode_attrs(1)["outcome"] == EPISODE_ABORTED
    assert len(ds.episode(1)) == 3  # the data is still readable


# ---- `python -m robot_client run` ----------------------------------------------------------------------------


def _run_cli(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "robot_client", "run", "--robot", "sim", *args], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=240,
                          env={**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")})


@pytest.mark.parametrize("allow", [False, True])
def test_run_cli_aborts_on_a_model_swap(tmp_path: Path, retrained: Path, allow: bool) -> None:
    holder: list[ServerSwap] = []

    def on_request(n: int) -> None:
        if n == 2:  # the worker's first refill: the episode executes
            holder[0].swap_in_background()

    first = TriggerPolicy(SAMPLE_DATASET, on_request)
    second = dataset_policy(retrained)
    holder.append(ServerSwap(first, second))
    record = tmp_path / "run.zarr"
    try:
        result = _run_cli(["--server", holder[0].target, "--seconds", "3.0", "--allow-far-start", "--prompt", PROMPT,
                           "--record", str(record), *(["--allow-model-swap"] if allow else [])])
    finally:
        holder[0].close()
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    ds = RecordingDataset(record)
    if allow:
        assert result.returncode == 0, result.stderr[-3000:]
        assert ds.episode_outcome(0).outcome == EPISODE_COMPLETED and ds.aborted == {}
        return
    assert result.returncode == 3, result.stderr[-3000:]
    assert "episode 0 aborted" in result.stderr
    for text in (result.stdout, result.stderr):
        assert first.spec.weight_hash in text and second.spec.weight_hash in text
    outcome = ds.episode_outcome(0)
    assert outcome.aborted and first.spec.weight_hash in outcome.reason and second.spec.weight_hash in outcome.reason


def test_run_cli_first_action_refusal_is_an_aborted_episode(tmp_path: Path) -> None:
    record = tmp_path / "run.zarr"
    with running_server(horizon=30) as server:
        # The sim's default start is far from the dataset's first action, and --allow-far-start is not given.
        result = _run_cli(["--server", f"127.0.0.1:{server.port}", "--seconds", "2.0", "--episodes", "2",
                           "--prompt", PROMPT, "--record", str(record)])
    assert result.returncode == 3, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    for i in (0, 1):  # a refusal only skips its episode: the next one was tried too
        assert f"episode {i} aborted: first action is farther than" in result.stderr
    aborted = RecordingDataset(record).aborted
    assert sorted(aborted) == [0, 1] and all("--allow-far-start" in r for r in aborted.values())
