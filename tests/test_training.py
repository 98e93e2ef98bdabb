"""The demo-policy pipeline: scripted task and expert, a few training steps, checkpoint served, NaN detection.

The full training (minutes) and the closed-loop evaluation are commands (training.train, training.evaluate);
here every stage runs at toy size so the wiring is checked in well under a minute.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from policy_server.model.config import preset
from policy_server.model.pi05 import Pi05Model
from robot_client.config import load_robot_config
from robot_client.sim.robot import SimConfig, SimRobot
from robot_client.sim.tasks import (
    HOVER_TASKS,
    ExpertConfig,
    SceneSnapshot,
    TaskMonitor,
    evaluate_hover,
    expert_plan,
    find_task,
    hover_goal,
    hover_ik,
    snapshot,
)
from tests.model_helpers import random_inputs
from training.demos import DemoConfig, record_demos, write_demos
from training.train import (
    TrainConfig,
    Trainer,
    TrainingDivergedError,
    build_model,
    prepare,
    train,
)

CONFIG = load_robot_config("bimanual_yam")
LEFT, RIGHT = HOVER_TASKS


@pytest.fixture(scope="module")
def robot() -> SimRobot:
    r = SimRobot(CONFIG, SimConfig(seed=0))
    r.connect()
    return r


@pytest.fixture(scope="module")
def demos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two scenes x two prompts recorded by the expert (the first scene is training, the second held out)."""
    config = DemoConfig(scenes=2)
    out = tmp_path_factory.mktemp("demos") / "hover"
    write_demos(out, config, record_demos(config))
    return out


def test_prompts_name_tasks() -> None:
    assert find_task("  Move the LEFT gripper  above the red cube.") == LEFT
    assert find_task("move the right gripper above the blue cube") == RIGHT
    assert find_task("pick up the red cube") is None


def test_expert_ik_reaches_every_cube_position_from_a_clear_path(robot: SimRobot) -> None:
    """Over many layouts: IK converges inside the joint ranges, and the straight joint-space move keeps the
    gripper well above the table and the cubes."""
    world = robot.world
    start = np.zeros(len(CONFIG.joint_names))
    for seed in range(40):
        robot.reset(seed=seed)
        for task in HOVER_TASKS:
            goal = hover_goal(world, task, start)
            plan = expert_plan(start, goal, 10.0, 40)
            heights = []
            for q in plan[::3]:
                world.set_joint_positions(q)
                heights.append(world.site_position(f"{task.arm}_grasp")[2])
            cube = np.asarray(world.object_pose(task.target).position)
            assert abs(heights[-1] - (cube[2] + ExpertConfig().hover_height)) < 2e-3
            assert min(heights) > 0.085
    with pytest.raises(ValueError, match="no IK solution"):
        hover_ik(world, "left", np.array([1.5, 0.0, 0.1]))


def test_the_success_check_reads_the_prompt(robot: SimRobot) -> None:
    robot.reset(seed=3)
    world = robot.world
    start = snapshot(world)
    at_home = evaluate_hover(LEFT, start, start)
    assert not at_home.success and "left gripper" in at_home.reasons[0]
    goal = hover_goal(world, LEFT, world.positions())
    world.set_joint_positions(goal)
    there = snapshot(world)
    assert evaluate_hover(LEFT, start, there).success
    wrong_arm = evaluate_hover(RIGHT, start, there)
    assert not wrong_arm.success and any("the left arm moved" in r for r in wrong_arm.reasons)
    pushed = SceneSnapshot({**there.objects, "red_cube": there.objects["red_cube"] + (0.03, 0.0, 0.0)},
                           there.grasp)
    assert not evaluate_hover(LEFT, start, pushed).success
    monitor = TaskMonitor(world)
    assert monitor.success(LEFT.prompt) is None  # no episode started
    monitor.start()
    assert monitor.success(LEFT.prompt) is True
    assert monitor.success("wave hello") is None


def test_the_expert_solves_every_task_in_the_servo_loop(demos: Path) -> None:
    manifest = json.loads((demos / "demos.json").read_text())
    assert manifest["recorded"] == 4 and manifest["expert_successes"] == 4
    assert {e["prompt"] for e in manifest["episodes"]} == {t.prompt for t in HOVER_TASKS}


def test_compute_loss_cached_equals_the_joint_forward() -> None:
    model = build_model(preset("dummy"), seed=0)
    cfg = model.cfg
    inputs = random_inputs(cfg, batch=2)
    gen = torch.Generator().manual_seed(0)
    actions = torch.randn(2, cfg.action_horizon, cfg.action_dim, generator=gen)
    noise = torch.randn(2, cfg.action_horizon, cfg.action_dim, generator=gen)
    t = Pi05Model.sample_time(2, generator=gen)
    assert bool(((t > 0.0) & (t <= 1.0)).all())
    cached = model.compute_loss(inputs, actions, noise, t, use_cache=True)
    joint = model.compute_loss(inputs, actions, noise, t, use_cache=False)
    assert cached.shape == (2, cfg.action_horizon, cfg.action_dim)
    torch.testing.assert_close(cached, joint, rtol=1e-4, atol=1e-5)


def test_a_few_steps_reduce_the_loss_and_the_checkpoint_serves(demos: Path, tmp_path: Path) -> None:
    from policy_server.pi05_policy import Pi05Policy, Pi05ServeOptions
    from policy_server.server import PolicyServer, ServerConfig
    from robot_client.policy_client import GrpcPolicy

    out = tmp_path / "ckpt"
    config = TrainConfig(steps=40, batch_size=16, warmup_steps=5, heldout_fraction=0.5, log_every=10, eval_stride=10)
    result = train(demos, out, config, log=lambda _: None)
    metrics = result.metrics
    losses = [float(r.split(",")[1]) for r in (out / "training" / "loss.csv").read_text().splitlines()[1:]]
    assert len(losses) == 4 and losses[-1] < 0.7 * losses[0]
    assert metrics["heldout_reconstruction"]["frames"] > 0 and np.isfinite(metrics["heldout_reconstruction"]["l1"])
    assert metrics["served_check"]["inputs_equal"] is True  # served model inputs equal training's, tensor for tensor
    assert metrics["served_check"]["max_action_diff"] < 1e-4  # the server's preprocessing is training's
    assert (out / "training" / "grad_norms.csv").read_text().splitlines()[0].count("llm.layers") == 4
    for name in ("model.safetensors", "config.json", "policy_config.json", "assets/tokenizer.model",
                 "assets/yam_sim_hover/norm_stats.json"):
        assert (out / name).is_file(), name
    assert metrics["checkpoint_bytes"] < 20e6

    policy = Pi05Policy(Pi05ServeOptions(checkpoint=out, device="cpu", dtype="float32"))
    server = PolicyServer(policy, ServerConfig(host="127.0.0.1", port=0)).start()
    try:
        with GrpcPolicy(target=f"127.0.0.1:{server.port}") as client:
            assert [c.name for c in client.metadata.cameras] == ["top"]
            frame = np.zeros((240, 320, 3), np.uint8)  # resized by the client to the model's 96x96
            response = client.infer({"images": {"top": frame}, "state": np.zeros(14, np.float32),
                                     "prompt": LEFT.prompt})
            assert response["actions"].shape == (10, 14)
    finally:
        server.stop(grace=0.1)
        policy.close()


def test_nan_is_caught_and_named(demos: Path, tmp_path: Path) -> None:
    config = TrainConfig(steps=5, batch_size=4, heldout_fraction=0.5)
    prep = prepare(demos, tmp_path, config, log=lambda _: None)
    model = build_model(prep.cfg, seed=0)
    layer = "paligemma_with_expert.paligemma.model.language_model.layers.2.mlp.down_proj"
    weight = model.get_submodule(layer).weight
    assert isinstance(weight, torch.Tensor)
    with torch.no_grad():
        weight[0, 0] = float("nan")
    with pytest.raises(TrainingDivergedError, match="loss is nan") as err:
        Trainer(model, prep.train, config).train_step()
    assert err.value.layer == layer

    model = build_model(prep.cfg, seed=0)
    param = model.get_submodule("paligemma_with_expert.gemma_expert.model.layers.1.mlp.up_proj").weight
    assert isinstance(param, torch.Tensor)
    param.register_hook(lambda g: torch.full_like(g, float("inf")))  # type: ignore[no-untyped-call]
    with pytest.raises(TrainingDivergedError, match="non-finite gradients") as err:
        Trainer(model, prep.train, config).train_step()
    assert err.value.layer == "paligemma_with_expert.gemma_expert.model.layers.1.mlp.up_proj.weight"


def test_recording_and_training_are_deterministic(demos: Path, tmp_path: Path) -> None:
    """Same config, same numbers: an expert episode recorded twice, and a few training steps run twice."""
    from training.demos import DemoRecorder

    recorder = DemoRecorder(DemoConfig(scenes=1))
    try:
        first, again = recorder.record(1), recorder.record(1)
    finally:
        recorder.close()
    np.testing.assert_array_equal(first.states, again.states)
    np.testing.assert_array_equal(first.actions, again.actions)
    np.testing.assert_array_equal(first.images, again.images)

    config = TrainConfig(steps=3, batch_size=4, heldout_fraction=0.5)
    prep = prepare(demos, tmp_path, config, log=lambda _: None)
    weights = []
    for _ in range(2):
        trainer = Trainer(build_model(prep.cfg, seed=config.seed), prep.train, config)
        losses = [trainer.train_step()["loss"] for _ in range(config.steps)]
        weights.append((losses, {n: p.detach().clone() for n, p in trainer.model.named_parameters()}))
    assert weights[0][0] == weights[1][0]
    for name, value in weights[0][1].items():
        assert torch.equal(value, weights[1][1][name]), name
