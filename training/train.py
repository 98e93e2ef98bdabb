"""Train the embedded demo policy: a small Pi0.5 (preset "demo") on the scripted hover demos, on the CPU.

    python -m training.train --out runs/demo_policy [--demos DATASET] [--steps N] [--seed S]

Steps: record or reuse the demos (training.demos, cached under .cache/demos/), split the scenes into training
and held-out ones, compute norm stats over the training episodes with the stats tool (replay.stats_tool, exact
quantiles; delta actions over chunks of the model's horizon), write them where the checkpoint keeps them and
build the normalization pipeline from there as the server does, build the tokenizer, prepare the samples
(training.data, through the server's own input transform policy_server.pi05_inputs), then train with flow
matching (Pi05Model.compute_loss), AdamW, warm-up + cosine learning rate, gradient clipping, fixed seeds, single
process.

Every step the loss and gradients are checked: a non-finite loss re-runs the forward with hooks and raises
TrainingDivergedError naming the first module whose output is non-finite; non-finite gradients raise naming
the parameters. Logs (under OUT/training/): loss.csv (step, loss, lr, gradient norm, seconds), grad_norms.csv
(per layer group), metrics.json (held-out action reconstruction L1/L2 in robot units, timings, sizes).

The checkpoint (openpi layout, via policy_server.checkpoint.bundle.write_servable_checkpoint): model.safetensors,
config.json, assets/<asset_id>/norm_stats.json, assets/tokenizer.model, policy_config.json. After writing, it
is loaded back as the server loads it and checked: same weights hash, same normalization digest, one held-out
observation gives the server the model inputs training gives the model (tensor for tensor), and served through
Pi05Policy.infer it gives the actions training's own path gives.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from policy_norm.checkpoint import build_pipeline
from policy_norm.config import NormalizationConfig
from policy_norm.formats import write_openpi_norm_stats
from policy_norm.modes import NormMode
from policy_norm.numeric import make_bool_mask
from policy_norm.pipeline import NormalizationPipeline
from policy_server.checkpoint.bundle import write_servable_checkpoint
from policy_server.model.config import Pi05Config, preset
from policy_server.model.pi05 import ModelInputs, Pi05Model
from policy_server.pi05_inputs import Pi05InputTransform, inputs_difference
from policy_server.policy_config import Pi05PolicyConfig
from policy_server.tokenizer import PromptTokenizer
from policy_server.tokenizer_build import build_sentencepiece_model_bytes
from replay.stats_tool import ComputedStats, StatsRequest, compute_norm_stats
from robodata.open import open_dataset
from robot_client.yam_limits import yam_limits
from training.data import Samples, build_samples
from training.demos import DEFAULT_CACHE, DemoConfig, ensure_demos, read_manifest

LOG_DIR = "training"
ASSET_ID = "yam_sim_hover"
CAMERAS = {"top": "base_0_rgb"}  # robot camera -> model slot


class TrainingDivergedError(RuntimeError):
    """The loss or a gradient became NaN/inf; `layer` names the first module (or parameter) where it appeared."""

    def __init__(self, message: str, layer: str) -> None:
        super().__init__(message)
        self.layer = layer


@dataclass(frozen=True)
class TrainConfig:
    preset: str = "demo"
    steps: int = 3000
    batch_size: int = 32
    lr: float = 1e-3
    warmup_steps: int = 100
    min_lr_ratio: float = 0.05
    weight_decay: float = 1e-4
    grad_clip: float = 1.0
    seed: int = 0
    threads: int = 2
    heldout_fraction: float = 0.1
    log_every: int = 25
    eval_stride: int = 3  # every n-th held-out frame is used for the reconstruction error
    asset_id: str = ASSET_ID
    delta_mask: tuple[int, ...] = (6, -1, 6, -1)  # make_bool_mask form: joints as deltas, grippers absolute
    # Weight of the auxiliary object-position probe on the image tokens (training only; 0 = off).
    aux_weight: float = 1.0
    # Stop early (and say so) when training would run past this wall-clock budget; None = run all steps.
    max_minutes: float | None = None
    # Std (in prompt bins) of the state noise behind each frame's second, jittered prompt; the trainer shows it
    # to half the samples (training.data explains why a rest pose on a quantile needs it). 0 = off.
    state_jitter_bins: float = 1.0


@dataclass
class TrainResult:
    out: Path
    steps: int
    final_loss: float
    metrics: dict[str, Any] = field(default_factory=dict)


# ---- model --------------------------------------------------------------------------------------------


def build_model(cfg: Pi05Config, seed: int) -> Pi05Model:
    """A freshly initialised model, deterministic in `seed`: PyTorch's default initialisation of linear and conv
    layers, norms and the zero-initialised adaRMSNorm kernels as constructed, and token embeddings N(0, 1/width)
    so that the sqrt(width)-scaled prompt tokens start at unit scale like the image tokens."""
    torch.manual_seed(seed)
    model = Pi05Model(cfg)
    for module in model.modules():
        if isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=module.embedding_dim ** -0.5)
    return model


def layer_group(name: str) -> str:
    """Layer group of a parameter name, for the gradient-norm log."""
    parts = name.split(".")
    if name.startswith("paligemma_with_expert.paligemma.model.vision_tower"):
        return "vision"
    if name.startswith("paligemma_with_expert.paligemma.model.multi_modal_projector"):
        return "projector"
    if name.startswith("paligemma_with_expert.paligemma.model.language_model"):
        rest = parts[4:]
        return f"llm.layers.{rest[1]}" if rest[0] == "layers" else f"llm.{rest[0]}"
    if name.startswith("paligemma_with_expert.gemma_expert.model"):
        rest = parts[3:]
        return f"expert.layers.{rest[1]}" if rest[0] == "layers" else f"expert.{rest[0]}"
    return parts[0].removesuffix("_in").removesuffix("_out") if parts[0].startswith("time_mlp") else parts[0]


def group_grad_norms(model: nn.Module) -> dict[str, float]:
    sums: dict[str, float] = {}
    for name, p in model.named_parameters():
        if p.grad is not None:
            group = layer_group(name)
            sums[group] = sums.get(group, 0.0) + float(p.grad.detach().double().pow(2).sum())
    return {g: math.sqrt(v) for g, v in sums.items()}


def first_nonfinite_module(model: nn.Module, forward: Callable[[], object]) -> str | None:
    """Re-run `forward` with hooks; the first module (in execution order) whose output holds NaN/inf."""
    found: list[str] = []

    def hook(name: str) -> Callable[[nn.Module, object, object], None]:
        def check(_module: nn.Module, _inputs: object, output: object) -> None:
            if found:
                return
            outputs = output if isinstance(output, tuple | list) else (output,)
            for t in outputs:
                if isinstance(t, torch.Tensor) and t.is_floating_point() and not bool(torch.isfinite(t).all()):
                    found.append(name)
                    return
        return check

    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules() if n]
    try:
        with torch.no_grad():
            forward()
    finally:
        for h in handles:
            h.remove()
    return found[0] if found else None


def nonfinite_parameters(model: nn.Module, attr: str = "grad") -> list[str]:
    """Names of parameters whose gradient (attr="grad") or value (attr="data") holds NaN/inf, in module order."""
    bad = []
    for name, p in model.named_parameters():
        t = p.grad if attr == "grad" else p.data
        if t is not None and not bool(torch.isfinite(t).all()):
            bad.append(name)
    return bad


class ObjectProbe(nn.Module):
    """Training-only auxiliary head: the table position of each task object, read from the image tokens the LLM
    receives (the projector's output). Per object, attention pooling over the tokens (a learned score per
    token) and a linear readout to (x, y). It is not part of the checkpoint: it only gives the vision tower a
    direct learning signal for where the cubes are, which the flow-matching loss alone provides too weakly for a
    model trained from scratch in minutes. Because the pooling weights see token features only, the tokens must
    carry where they are (SigLIP's position embedding), which is what the action expert's attention needs too."""

    def __init__(self, width: int, objects: int) -> None:
        super().__init__()
        self.objects = objects
        self.score = nn.Linear(width, objects)
        self.readout = nn.Parameter(torch.randn(objects, width, 2) * width ** -0.5)
        self.bias = nn.Parameter(torch.zeros(objects, 2))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        weights = torch.softmax(self.score(tokens.float()), dim=1)  # [B, N, K]
        pooled = torch.einsum("bnk,bnw->bkw", weights, tokens.float())
        xy = torch.einsum("bkw,kwo->bko", pooled, self.readout) + self.bias
        return xy.reshape(tokens.shape[0], 2 * self.objects)


# ---- data ---------------------------------------------------------------------------------------------


@dataclass
class Prepared:
    cfg: Pi05Config
    norm: NormalizationConfig
    pipeline: NormalizationPipeline
    stats: ComputedStats
    tokenizer_bytes: bytes
    tokenizer: PromptTokenizer
    policy_config: Pi05PolicyConfig
    train: Samples
    heldout: Samples
    train_episodes: list[int]
    heldout_episodes: list[int]
    prompts: tuple[str, ...]


def split_episodes(dataset_path: Path, heldout_fraction: float) -> tuple[list[int], list[int], dict[int, int]]:
    """Training / held-out dataset episodes, split by scene (the last scenes are held out with all prompts),
    and the scene seed of every dataset episode."""
    manifest = read_manifest(dataset_path)
    recorded = [e for e in manifest["episodes"] if e["success"]]  # the dataset holds these, in this order
    seeds = sorted({e["seed"] for e in recorded})
    n_held = max(1, int(round(len(seeds) * heldout_fraction))) if heldout_fraction > 0 else 0
    held_seeds = set(seeds[len(seeds) - n_held:])
    train = [i for i, e in enumerate(recorded) if e["seed"] not in held_seeds]
    held = [i for i, e in enumerate(recorded) if e["seed"] in held_seeds]
    return train, held, {i: int(e["seed"]) for i, e in enumerate(recorded)}


def prepare(dataset_path: Path, out: Path, config: TrainConfig, log: Callable[[str], None] = print) -> Prepared:
    cfg = preset(config.preset)
    train_eps, held_eps, scene_seeds = split_episodes(dataset_path, config.heldout_fraction)
    train_ds = open_dataset(dataset_path, episodes=train_eps)
    names = train_ds.info.state_names
    if train_ds.info.action_names != names:
        raise ValueError("the demo dataset's action names must equal its state names")
    mask = make_bool_mask(*config.delta_mask)
    stats = compute_norm_stats(train_ds, StatsRequest(delta_mask=mask, action_horizon=cfg.action_horizon,
                                                      progress=False))
    norm = NormalizationConfig(
        state_names=names, action_names=names, action_delta_mask=mask, model_state_dim=cfg.action_dim,
        model_action_dim=cfg.action_dim, mode=NormMode.QUANTILE, epsilon="openpi", action_horizon=cfg.action_horizon,
        joint_limits=yam_limits(names),
        # The grippers never move in these demos and joints 5-6 stay at 0: their spread is ~0. "zero" pins
        # them to 0 in model space and emits their constant value, instead of dividing by ~0.
        degenerate_policy="zero", asset_id=config.asset_id,
    )
    # Stats go where the checkpoint keeps them, and the pipeline is built from there, as the server builds it.
    write_openpi_norm_stats(out / "assets" / config.asset_id / "norm_stats.json", stats.feature("state"),
                            stats.feature("actions"))
    pipeline = build_pipeline(out, norm)
    for note in pipeline.degenerate:
        log(f"  {note.describe()}")
    prompts = tuple(sorted({train_ds.episode_meta(i).task for i in train_ds.episode_indices()}))
    tok_bytes = build_sentencepiece_model_bytes(vocab_size=cfg.vocab_size, extra_text=prompts)
    tokenizer = PromptTokenizer.from_bytes(tok_bytes, model_vocab_size=cfg.vocab_size)
    fps = open_dataset(dataset_path).info.fps
    policy_config = Pi05PolicyConfig(cameras=dict(CAMERAS), normalization=norm, control_fps=float(fps))
    transform = Pi05InputTransform.from_policy_config(cfg, policy_config, tokenizer, pipeline)
    full = open_dataset(dataset_path)
    train = build_samples(full, train_eps, transform, scene_seeds, state_jitter_bins=config.state_jitter_bins,
                          seed=config.seed + 3)
    held = build_samples(full, held_eps, transform, scene_seeds)
    return Prepared(cfg, norm, pipeline, stats, tok_bytes, tokenizer, policy_config, train, held, train_eps, held_eps,
                    prompts)


# ---- evaluation ---------------------------------------------------------------------------------------


def predict_robot_actions(model: Pi05Model, samples: Samples, index: npt.NDArray[np.int64],
                          pipeline: NormalizationPipeline, seed: int, batch: int = 64) -> npt.NDArray[np.float32]:
    """Sampled chunks in robot units [n, H, D] for samples[index] (noise seeded per batch), via pipeline.finish."""
    model.eval()
    out = []
    for k in range(0, len(index), batch):
        idx = index[k:k + batch]
        normalized = model.sample_actions(samples.inputs(idx), seed=seed + k).numpy()
        for row, i in enumerate(idx):
            actions, _ = pipeline.finish(normalized[row], samples.states[i])
            out.append(actions)
    return np.stack(out).astype(np.float32)


def reconstruction_errors(model: Pi05Model, samples: Samples, pipeline: NormalizationPipeline, stride: int,
                          seed: int, names: Sequence[str]) -> dict[str, Any]:
    """L1 / L2 between sampled chunks and the recorded chunks, robot units (rad; gripper 0..1)."""
    index = np.arange(0, len(samples), stride, dtype=np.int64)
    predicted = predict_robot_actions(model, samples, index, pipeline, seed)
    err = predicted - samples.robot_actions[index]
    per_joint_l1 = np.abs(err).mean(axis=(0, 1))
    return {
        "frames": int(len(index)),
        "l1": float(np.abs(err).mean()),
        "l2": float(np.sqrt((err ** 2).mean())),
        "first_action_l1": float(np.abs(err[:, 0]).mean()),
        "max_abs": float(np.abs(err).max()),
        "per_joint_l1": {n: float(v) for n, v in zip(names, per_joint_l1, strict=True)},
    }


def probe_error(model: Pi05Model, probe: ObjectProbe, samples: Samples, stride: int) -> dict[str, float]:
    """Mean distance (m) between the probe's object positions and the true ones, on every `stride`-th frame."""
    from policy_server.model.siglip import image_features
    from robot_client.sim.layout import SceneLayout
    from training.data import PROBE_OBJECTS

    assert samples.object_targets is not None
    index = np.arange(0, len(samples), stride, dtype=np.int64)
    spawns = {s.name: s for s in SceneLayout().spawns}
    half = np.array([[(spawns[n].x_range[1] - spawns[n].x_range[0]) / 2,
                      (spawns[n].y_range[1] - spawns[n].y_range[0]) / 2] for n in PROBE_OBJECTS])
    pw = model.paligemma_with_expert
    with torch.no_grad():
        errors = []
        for k in range(0, len(index), 128):
            idx = index[k:k + 128]
            tokens = image_features(pw.vision_tower, pw.projector, samples.inputs(idx).images[0])
            diff = (probe(tokens) - samples.object_targets[idx]).numpy().reshape(len(idx), -1, 2) * half
            errors.append(np.linalg.norm(diff, axis=2))
    err = np.concatenate(errors)
    return {name: float(err[:, i].mean()) for i, name in enumerate(PROBE_OBJECTS)}


# ---- training -----------------------------------------------------------------------------------------


def lr_at(step: int, config: TrainConfig) -> float:
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return config.lr * (config.min_lr_ratio + (1 - config.min_lr_ratio) * cosine)


class Trainer:
    """The optimisation loop, separated from data preparation so tests can drive a few steps."""

    def __init__(self, model: Pi05Model, samples: Samples, config: TrainConfig) -> None:
        self.model = model
        self.samples = samples
        self.config = config
        self.probe: ObjectProbe | None = None
        if config.aux_weight > 0 and samples.object_targets is not None:
            torch.manual_seed(config.seed + 2)
            self.probe = ObjectProbe(model.cfg.llm.width, samples.object_targets.shape[1] // 2)
        named = list(model.named_parameters())
        if self.probe is not None:
            named += [(f"probe.{n}", p) for n, p in self.probe.named_parameters()]
        decay = [p for n, p in named if p.ndim >= 2 and "embedding" not in n]
        no_decay = [p for n, p in named if not (p.ndim >= 2 and "embedding" not in n)]
        self.optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                                            {"params": no_decay, "weight_decay": 0.0}],
                                           lr=config.lr, betas=(0.9, 0.95), eps=1e-8)
        self.generator = torch.Generator().manual_seed(config.seed + 1)
        self.step = 0
        self._order = torch.empty(0, dtype=torch.int64)
        self._cursor = 0

    def next_batch(self) -> torch.Tensor:
        """Indices of the next batch: seeded random permutations, one epoch after another."""
        n, b = len(self.samples), self.config.batch_size
        if self._cursor + b > len(self._order):
            self._order = torch.randperm(n, generator=self.generator)
            self._cursor = 0
        idx = self._order[self._cursor:self._cursor + b]
        self._cursor += b
        return idx

    def train_step(self) -> dict[str, Any]:
        model, cfg = self.model, self.model.cfg
        model.train()
        idx = self.next_batch()
        jittered = None
        if self.samples.jittered_tokens is not None:
            jittered = torch.rand(len(idx), generator=self.generator) < 0.5
        inputs = self.samples.inputs(idx, jittered)
        actions = self.samples.actions[idx]
        shape = (len(idx), cfg.action_horizon, cfg.action_dim)
        noise = torch.randn(shape, generator=self.generator, dtype=torch.float32)
        t = Pi05Model.sample_time(len(idx), generator=self.generator)
        for group in self.optimizer.param_groups:
            group["lr"] = lr_at(self.step, self.config)
        all_targets = self.samples.object_targets
        targets = all_targets[idx] if self.probe is not None and all_targets is not None else None
        flow, aux = self._losses(inputs, actions, noise, t, targets)
        loss = flow + self.config.aux_weight * aux if aux is not None else flow
        if not bool(torch.isfinite(loss)):
            layer = first_nonfinite_module(model, lambda: self._losses(inputs, actions, noise, t, targets))
            bad = nonfinite_parameters(model, "data")
            if layer is None and self.probe is not None and nonfinite_parameters(self.probe, "data"):
                layer = "probe"
            where = layer or (bad[0] if bad else "the loss (no module output was non-finite)")
            raise TrainingDivergedError(
                f"step {self.step}: loss is {float(loss.detach())}; first non-finite output in module '{where}'"
                + (f"; non-finite weights: {bad[:5]}" if bad else ""), where)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        bad_grads = nonfinite_parameters(model, "grad")
        if self.probe is not None:
            bad_grads += [f"probe.{n}" for n in nonfinite_parameters(self.probe, "grad")]
        if bad_grads:
            raise TrainingDivergedError(
                f"step {self.step}: non-finite gradients in {len(bad_grads)} parameters, first "
                f"'{bad_grads[0]}' (layer group {layer_group(bad_grads[0])}): {bad_grads[:5]}", bad_grads[0])
        norms = group_grad_norms(model)
        params = list(model.parameters())
        if self.probe is not None:
            norms["probe"] = math.sqrt(sum(v * v for v in group_grad_norms(self.probe).values()))
            params += list(self.probe.parameters())
        total = float(torch.nn.utils.clip_grad_norm_(params, self.config.grad_clip))
        self.optimizer.step()
        self.step += 1
        return {"loss": float(flow.detach()), "aux_loss": float(aux.detach()) if aux is not None else float("nan"),
                "grad_norm": total, "lr": self.optimizer.param_groups[0]["lr"], "group_norms": norms}

    def _losses(self, inputs: ModelInputs, actions: torch.Tensor, noise: torch.Tensor, t: torch.Tensor,
                targets: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Flow-matching loss (mean) and, with the probe, the probe's MSE on the base camera's image tokens."""
        if self.probe is None or targets is None:
            return self.model.compute_loss(inputs, actions, noise, t).mean(), None
        captured: list[torch.Tensor] = []
        handle = self.model.paligemma_with_expert.projector.register_forward_hook(
            lambda _m, _i, out: captured.append(out))
        try:
            flow = self.model.compute_loss(inputs, actions, noise, t).mean()
        finally:
            handle.remove()
        aux = torch.nn.functional.mse_loss(self.probe(captured[0]), targets)
        return flow, aux


def train(dataset_path: Path, out: Path, config: TrainConfig, log: Callable[[str], None] = print) -> TrainResult:
    t_start = time.perf_counter()
    torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    np.random.seed(config.seed)
    out.mkdir(parents=True, exist_ok=True)
    logs = out / LOG_DIR
    logs.mkdir(exist_ok=True)
    log(f"preparing samples from {dataset_path}")
    prep = prepare(dataset_path, out, config, log)
    t_prepared = time.perf_counter()
    log(f"  {len(prep.train)} training frames ({len(prep.train_episodes)} episodes), {len(prep.heldout)} held-out "
        f"frames ({len(prep.heldout_episodes)} episodes); prompts {list(prep.prompts)}; "
        f"{t_prepared - t_start:.0f} s")
    model = build_model(prep.cfg, config.seed)
    n_params = sum(p.numel() for p in model.parameters())
    log(f"model preset '{config.preset}': {n_params / 1e6:.2f} M parameters")
    trainer = Trainer(model, prep.train, config)
    groups = sorted({layer_group(n) for n, _ in model.named_parameters()}) + (["probe"] if trainer.probe else [])
    deadline = t_prepared + 60 * config.max_minutes if config.max_minutes else math.inf
    losses: list[float] = []
    stopped_early = False
    with open(logs / "loss.csv", "w", newline="") as f_loss, open(logs / "grad_norms.csv", "w", newline="") as f_g:
        loss_csv, grad_csv = csv.writer(f_loss), csv.writer(f_g)
        loss_csv.writerow(["step", "loss", "aux_loss", "lr", "grad_norm", "seconds"])
        grad_csv.writerow(["step", *groups])
        window: list[float] = []
        aux_window: list[float] = []
        while trainer.step < config.steps:
            if time.perf_counter() > deadline:
                stopped_early = True
                log(f"stopping at step {trainer.step}: the {config.max_minutes} min budget is spent")
                break
            record = trainer.train_step()
            losses.append(record["loss"])
            window.append(record["loss"])
            aux_window.append(record["aux_loss"])
            step = trainer.step
            if step % config.log_every == 0 or step == config.steps:
                elapsed = time.perf_counter() - t_prepared
                loss_csv.writerow([step, f"{np.mean(window):.6f}", f"{np.mean(aux_window):.6f}",
                                   f"{record['lr']:.3e}", f"{record['grad_norm']:.4f}", f"{elapsed:.1f}"])
                grad_csv.writerow([step, *(f"{record['group_norms'].get(g, 0.0):.4e}" for g in groups)])
                f_loss.flush()
                f_g.flush()
                log(f"step {step:5d}  loss {np.mean(window):.4f}  aux {np.mean(aux_window):.4f}  lr {record['lr']:.2e}"
                    f"  grad {record['grad_norm']:.3f}  {elapsed:.0f} s")
                window, aux_window = [], []
    t_trained = time.perf_counter()
    names = prep.norm.action_names
    log("evaluating action reconstruction (robot units) ...")
    held = reconstruction_errors(model, prep.heldout, prep.pipeline, config.eval_stride, config.seed, names)
    seen = reconstruction_errors(model, prep.train, prep.pipeline, config.eval_stride * 10, config.seed, names)
    log(f"  held-out: L1 {held['l1']:.4f} rad, L2 {held['l2']:.4f}, first action L1 {held['first_action_l1']:.4f} "
        f"({held['frames']} frames); training frames: L1 {seen['l1']:.4f}")
    probe = None
    if trainer.probe is not None and len(prep.heldout):
        probe = probe_error(model, trainer.probe, prep.heldout, config.eval_stride)
        log("  auxiliary probe, held-out object position error: "
            + ", ".join(f"{k} {v * 100:.1f} cm" for k, v in probe.items()))
    write_servable_checkpoint(model, out, state_stats=prep.stats.feature("state"),
                              action_stats=prep.stats.feature("actions"), policy_config=prep.policy_config,
                              tokenizer_model=prep.tokenizer_bytes, asset_id=config.asset_id)
    served = check_served(out, model, prep)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file() and LOG_DIR not in p.relative_to(out).parts)
    tail = losses[-min(len(losses), 100):] if losses else [float("nan")]
    final_loss = float(np.mean(tail))
    seconds = {"prepare": t_prepared - t_start, "train": t_trained - t_prepared,
               "total": time.perf_counter() - t_start}
    metrics: dict[str, Any] = {
        "config": asdict(config),
        "dataset": str(dataset_path),
        "model": {"preset": config.preset, "parameters": n_params, **prep.cfg.to_dict()},
        "train_frames": len(prep.train), "heldout_frames": len(prep.heldout),
        "train_episodes": len(prep.train_episodes), "heldout_episodes": len(prep.heldout_episodes),
        "steps": trainer.step, "stopped_early": stopped_early,
        "first_loss": losses[0] if losses else None, "final_loss": final_loss,
        "heldout_reconstruction": held, "train_reconstruction": seen, "heldout_probe_error_m": probe,
        "seconds": seconds,
        "checkpoint_bytes": size,
        "served_check": served,
    }
    (logs / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    log(f"checkpoint {out} ({size / 1e6:.1f} MB) in {seconds['total']:.0f} s; served check {served}")
    return TrainResult(out, trainer.step, final_loss, metrics)


def check_served(out: Path, model: Pi05Model, prep: Prepared) -> dict[str, Any]:
    """Load the checkpoint as the server does and compare one held-out request with training's own path: the
    model inputs tensor for tensor (the server's transform is rebuilt from the written checkpoint: cameras,
    tokenizer, stats), then the actions."""
    from policy_server.pi05_policy import Pi05Policy, Pi05ServeOptions
    from policy_server.validate import ObservationInput

    policy = Pi05Policy(Pi05ServeOptions(checkpoint=out, device="cpu", dtype="float32", warmup=False))
    try:
        if policy.pipeline.digest() != prep.pipeline.digest():
            raise RuntimeError("the served normalization differs from the one used in training")
        samples = prep.heldout if len(prep.heldout) else prep.train
        i = len(samples) // 2
        obs = ObservationInput(
            images={cam: samples.images[prep.cfg.image_keys.index(slot)][i].numpy() for cam, slot in CAMERAS.items()},
            image_timestamps={}, state=samples.states[i], prompt=samples.prompts[i], timestamp=0.0,
            episode_index=0, step_index=0,
        )
        trained_inputs = samples.inputs([i])
        mismatch = inputs_difference(policy.transform(obs).inputs, trained_inputs)
        if mismatch is not None:
            raise RuntimeError(f"the server's model inputs differ from training's: {mismatch}")
        served = policy.infer(obs, noise_seed=7).actions
        model.eval()
        normalized = model.sample_actions(trained_inputs, seed=7)[0].numpy()
        ours, _ = prep.pipeline.finish(normalized, samples.states[i])
        diff = float(np.abs(served - ours).max())
        if diff > 1e-4:
            raise RuntimeError(f"served actions differ from training's path by {diff:.3g} (preprocessing mismatch)")
        return {"normalization_digest": prep.pipeline.digest(), "inputs_equal": True, "max_action_diff": diff,
                "weight_hash": policy.load_report.weight_hash}
    finally:
        policy.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.train", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="checkpoint folder to write")
    parser.add_argument("--demos", type=Path, help="demo dataset (default: record or reuse the cached one)")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="where recorded demos are cached")
    parser.add_argument("--scenes", type=int, default=DemoConfig.scenes, help="demo scenes (when recording)")
    parser.add_argument("--workers", type=int, default=2, help="demo recording processes")
    parser.add_argument("--steps", type=int, default=TrainConfig.steps)
    parser.add_argument("--batch-size", type=int, default=TrainConfig.batch_size)
    parser.add_argument("--lr", type=float, default=TrainConfig.lr)
    parser.add_argument("--seed", type=int, default=TrainConfig.seed)
    parser.add_argument("--threads", type=int, default=TrainConfig.threads)
    parser.add_argument("--aux-weight", type=float, default=TrainConfig.aux_weight,
                        help="weight of the auxiliary object-position probe (training only; 0 = off)")
    parser.add_argument("--max-minutes", type=float, default=None,
                        help="stop training early when this wall-clock budget is spent (breaks determinism)")
    parser.add_argument("--state-jitter-bins", type=float, default=TrainConfig.state_jitter_bins,
                        help="std in prompt bins of the state noise behind each frame's jittered prompt (0 = off)")
    args = parser.parse_args(argv)
    dataset = args.demos or ensure_demos(DemoConfig(scenes=args.scenes), args.cache, args.workers)
    config = TrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                         threads=args.threads, aux_weight=args.aux_weight, max_minutes=args.max_minutes,
                         state_jitter_bins=args.state_jitter_bins)
    train(dataset, args.out, config)
    return 0


if __name__ == "__main__":
    sys.exit(main())
