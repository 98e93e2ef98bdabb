"""Golden small Pi0.5 (and Pi0) checkpoints and sample_actions outputs made by openpi's own JAX code.

    tests/golden/openpi/setup_oracle_env.sh /tmp/openpi-venv "$OPENPI_SRC"
    /tmp/openpi-venv/bin/python tests/golden/openpi/make_golden.py tests/golden/openpi

Why small: a stock Pi0.5 is 3.3B parameters. openpi's size tables are patched here (nothing in openpi's files is
edited) so the same model code builds a model of a few hundred kilobytes plus PaliGemma's real 257152-row
vocabulary table, which is what a converter must cope with in a real checkpoint:
- `gemma.get_config` answers two extra variant names (the LLM of width 8 with 2 heads of head_dim 8, so
  num_heads * head_dim != width, and an action expert of width 16 with the same heads);
- `siglip.decode_variant` answers "So400m/14", the variant Pi0 hard-codes, with a 2-block, width-32 ViT;
- for the Pi0 (pi05=False) tree only, `gemma.PALIGEMMA_VOCAB_SIZE` is patched down (it exists only so a
  converter can be checked to refuse Pi0).

Writes, under OUT:
- `pi05_small/<step>/params/` and `pi05_small/<step>/assets/<asset_id>/norm_stats.json` (plus the rest of what
  `openpi.training.checkpoints.save_state` writes: `_CHECKPOINT_METADATA` and a `train_state/` item), written by
  openpi's own `initialize_checkpoint_dir` + `save_state`; the params are the whole `nnx.state(model)` after a
  seeded init and a seeded perturbation of every leaf (so zero-initialized weights such as the adaRMS
  modulation Dense layers and RMSNorm scales are non-zero and a converter that drops them fails the parity);
- `pi05_small/expected.npz`: every model input and openpi's `Pi0.sample_actions` output in float32
  (`actions`) and in bfloat16 as openpi inference runs it (`actions_bf16`), batch 1 and batch 2 (`b2_*`);
- `pi05_small/model_spec.json`: every size, for tests only (a converter must infer sizes from the tree);
- `pi0_small/<step>/...`: a Pi0 tree made the same way (small vocabulary, no outputs).

Prompt tokens: openpi's `PaligemmaTokenizer.tokenize` (the Pi0.5 "Task: ..., State: ...;\\nAction: " format
with the discretized state) and `transforms.TokenizePrompt` run unchanged, but the PaliGemma sentencepiece
model needs a download, so the text-to-id lookup is a stand-in (`StandInSentencePiece`): ids are what the
model sees, and they are recorded.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import types
import zlib
from pathlib import Path
from typing import Any

import numpy as np

# openpi.training.checkpoints imports openpi.training.data_loader, which imports LeRobot and torch datasets;
# save_state only calls `data_loader.data_config()`, so an empty module stands in for the import.
sys.modules.setdefault("openpi.training.data_loader", types.ModuleType("openpi.training.data_loader"))

import flax.nnx as nnx  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import openpi.models.gemma as _gemma  # noqa: E402
import openpi.models.model as _model  # noqa: E402
import openpi.models.siglip as _siglip  # noqa: E402
import openpi.models.tokenizer as _tokenizer  # noqa: E402
import openpi.shared.normalize as _normalize  # noqa: E402
import openpi.training.checkpoints as _checkpoints  # noqa: E402
import openpi.training.utils as _training_utils  # noqa: E402
import openpi.transforms as _transforms  # noqa: E402
import optax  # noqa: E402
from openpi.models import pi0_config  # noqa: E402

OPENPI_COMMIT = "15a9616"
SEED = 20240917
STEP = 29999
ASSET_ID = "yam_demo"
NUM_STEPS = 10
ACTION_DIM = 32
ACTION_HORIZON = 10
MAX_TOKEN_LEN = 32
STATE_DIM = 14  # YAM bimanual: 2 x (6 joints + gripper), before openpi's PadStatesAndActions to ACTION_DIM
PERTURB_STD = 0.1
PI0_VOCAB = 1024

LLM = _gemma.Config(width=8, depth=2, mlp_dim=16, num_heads=2, num_kv_heads=1, head_dim=8)
EXPERT = _gemma.Config(width=16, depth=2, mlp_dim=32, num_heads=2, num_kv_heads=1, head_dim=8)
VISION = {"width": 32, "depth": 2, "mlp_dim": 64, "num_heads": 2, "patch_size": (14, 14)}
VARIANTS = {"golden_llm": LLM, "golden_expert": EXPERT}
IMAGE_KEYS = _model.IMAGE_KEYS  # base_0_rgb, left_wrist_0_rgb, right_wrist_0_rgb


def _patch_openpi_sizes() -> None:
    """Make openpi's size tables answer the small variants (module globals looked up at model build time)."""
    stock_get_config = _gemma.get_config
    stock_decode_variant = _siglip.decode_variant

    def get_config(variant: str) -> _gemma.Config:
        return dataclasses.replace(VARIANTS[variant]) if variant in VARIANTS else stock_get_config(variant)

    def decode_variant(variant: str | None) -> dict[str, Any]:
        return dict(VISION) if variant == "So400m/14" else stock_decode_variant(variant)

    _gemma.get_config = get_config
    _siglip.decode_variant = decode_variant


class StandInSentencePiece:
    """Text-to-id lookup standing in for the PaliGemma sentencepiece model (which needs a download).

    Whitespace-separated pieces map to 256 + crc32(piece) % 256000 (inside PaliGemma's 257152 rows, away from
    the special ids); BOS is Gemma's id 2. Only `encode(text, add_bos=...)` is used by openpi's tokenize().
    """

    BOS = 2

    def encode(self, text: str, add_bos: bool = False) -> list[int]:
        ids = [256 + zlib.crc32(piece.encode()) % 256_000 for piece in text.split()]
        return [self.BOS, *ids] if add_bos else ids


def make_tokenizer(max_len: int) -> _tokenizer.PaligemmaTokenizer:
    """openpi's PaligemmaTokenizer with the stand-in lookup instead of the downloaded model."""
    tok = object.__new__(_tokenizer.PaligemmaTokenizer)
    tok._max_len = max_len
    tok._tokenizer = StandInSentencePiece()
    return tok


def scene(seed: int) -> np.ndarray:
    """A smooth 224x224 RGB frame in [-1, 1] on the uint8 grid (compresses well in the npz)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:224, 0:224].astype(np.float64)
    chans = []
    for c in range(3):
        a, b, p = 5 + 20 * rng.random(), 5 + 20 * rng.random(), 6.28 * rng.random()
        chans.append(127.5 + 120 * np.sin(x / a + p + c) * np.cos(y / b - c))
    u8 = np.clip(np.rint(np.stack(chans, axis=-1)), 0, 255).astype(np.uint8)
    return (u8.astype(np.float32) / 255.0 * 2.0 - 1.0).astype(np.float32)


@dataclasses.dataclass
class Example:
    """One raw example as openpi's data pipeline sees it before the model transforms."""

    prompt: str
    state: np.ndarray  # normalized, STATE_DIM
    masks: dict[str, bool]
    seed: int


def model_inputs(examples: list[Example]) -> dict[str, np.ndarray]:
    """Run openpi's TokenizePrompt (Pi0.5 discrete state) and PadStatesAndActions; stack into a batch."""
    tokenize = _transforms.TokenizePrompt(make_tokenizer(MAX_TOKEN_LEN), discrete_state_input=True)
    pad = _transforms.PadStatesAndActions(ACTION_DIM)
    rows = []
    for ex in examples:
        data = pad(tokenize({"prompt": ex.prompt, "state": ex.state}))
        for j, key in enumerate(IMAGE_KEYS):
            data[f"image_{key}"] = scene(ex.seed * 10 + j)
            data[f"image_mask_{key}"] = np.bool_(ex.masks[key])
        rows.append(data)
    out = {k: np.stack([r[k] for r in rows]) for k in rows[0]}
    out["prompt"] = np.array([ex.prompt for ex in examples])  # unicode array: loads without pickle
    out["raw_state"] = np.stack([ex.state for ex in examples]).astype(np.float32)  # before tokenize/pad
    out["tokenized_prompt"] = out["tokenized_prompt"].astype(np.int32)
    out["tokenized_prompt_mask"] = out["tokenized_prompt_mask"].astype(bool)
    out["state"] = out["state"].astype(np.float32)
    return out


def observation(inputs: dict[str, np.ndarray]) -> _model.Observation:
    return _model.Observation.from_dict(
        {
            "image": {k: jnp.asarray(inputs[f"image_{k}"]) for k in IMAGE_KEYS},
            "image_mask": {k: jnp.asarray(inputs[f"image_mask_{k}"]) for k in IMAGE_KEYS},
            "state": jnp.asarray(inputs["state"]),
            "tokenized_prompt": jnp.asarray(inputs["tokenized_prompt"]),
            "tokenized_prompt_mask": jnp.asarray(inputs["tokenized_prompt_mask"]),
        }
    )


def perturbed_state(model: nnx.Module, seed: int) -> nnx.State:
    """nnx.state(model) with N(0, PERTURB_STD) added to every leaf, so no weight stays at its zero init."""
    state = nnx.state(model)
    leaves, treedef = jax.tree_util.tree_flatten(state)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    noisy = [
        (leaf + PERTURB_STD * jax.random.normal(k, leaf.shape, jnp.float32)).astype(leaf.dtype)
        for leaf, k in zip(leaves, keys, strict=True)
    ]
    return jax.tree_util.tree_unflatten(treedef, noisy)


def norm_stats() -> dict[str, _normalize.NormStats]:
    rng = np.random.default_rng(SEED + 7)

    def stats(dim: int) -> _normalize.NormStats:
        mean = rng.normal(0.0, 0.5, dim)
        std = 0.05 + rng.random(dim)
        return _normalize.NormStats(mean=mean, std=std, q01=mean - 2.3 * std, q99=mean + 2.3 * std)

    return {"state": stats(STATE_DIM), "actions": stats(STATE_DIM)}


class _AssetsSource:
    """What save_state reads from the data loader: `data_config().norm_stats` and `.asset_id`."""

    def __init__(self, stats: dict[str, _normalize.NormStats]) -> None:
        self._config = types.SimpleNamespace(norm_stats=stats, asset_id=ASSET_ID)

    def data_config(self) -> types.SimpleNamespace:
        return self._config


def save_checkpoint(root: Path, model: nnx.Module, params: nnx.State) -> Path:
    """openpi training's own save path: initialize_checkpoint_dir + save_state (params item {"params": state}).

    The optimizer is stateless (optax.sgd) so `train_state/` stays tiny; a real run's train_state holds the
    AdamW moments, which inference and the converter never read.
    """
    mngr, _ = _checkpoints.initialize_checkpoint_dir(root, keep_period=None, overwrite=True, resume=False)
    tx = optax.sgd(1e-3)
    state = _training_utils.TrainState(
        step=STEP, params=params, model_def=nnx.graphdef(model), opt_state=tx.init(params), tx=tx, ema_decay=None
    )
    _checkpoints.save_state(mngr, state, _AssetsSource(norm_stats()), STEP)  # type: ignore[arg-type]
    mngr.wait_until_finished()
    mngr.close()
    return root / str(STEP)


def build(config: pi0_config.Pi0Config, seed: int) -> tuple[nnx.Module, nnx.State]:
    model = config.create(jax.random.key(seed))
    params = perturbed_state(model, seed + 1)
    nnx.update(model, params)
    return model, params


def check_round_trip(params_dir: Path, params: nnx.State) -> None:
    restored = _model.restore_params(params_dir, restore_type=np.ndarray)
    expected = params.to_pure_dict()
    flat_r = jax.tree_util.tree_flatten_with_path(restored)[0]
    flat_e = jax.tree_util.tree_flatten_with_path(expected)[0]
    assert [p for p, _ in flat_r] == [p for p, _ in flat_e], "restored key paths differ"
    for (path, a), (_, b) in zip(flat_r, flat_e, strict=True):
        assert a.dtype == b.dtype and np.array_equal(a, np.asarray(b)), jax.tree_util.keystr(path)


def sample(config: pi0_config.Pi0Config, params_dir: Path, inputs: dict[str, np.ndarray], dtype: Any) -> np.ndarray:
    """openpi inference: config.model.load(restore_params(params, dtype=...)) then sample_actions."""
    model = config.load(_model.restore_params(params_dir, dtype=dtype))
    actions = model.sample_actions(
        jax.random.key(0), observation(inputs), num_steps=NUM_STEPS, noise=jnp.asarray(inputs["noise"])
    )
    return np.asarray(actions.astype(jnp.float32))


def intermediates(config: pi0_config.Pi0Config, params_dir: Path, inputs: dict[str, np.ndarray]) -> dict[str, Any]:
    """fp32 prefix embeddings and the t=1 suffix embeddings / adaRMS condition (cheap, help locate a mismatch)."""
    model = config.load(_model.restore_params(params_dir))
    obs = _model.preprocess_observation(None, observation(inputs), train=False)
    prefix, prefix_mask, prefix_ar = model.embed_prefix(obs)
    b = inputs["noise"].shape[0]
    suffix, _, _, cond = model.embed_suffix(obs, jnp.asarray(inputs["noise"]), jnp.ones((b,), jnp.float32))
    return {
        "prefix_embs": np.asarray(prefix, np.float32),
        "prefix_mask": np.asarray(prefix_mask),
        "prefix_ar_mask": np.asarray(prefix_ar),
        "suffix_embs_t1": np.asarray(suffix, np.float32),
        "adarms_cond_t1": np.asarray(cond, np.float32),
    }


def spec(config: pi0_config.Pi0Config, vocab: int, batch_sizes: list[int]) -> dict[str, Any]:
    def gemma(c: _gemma.Config) -> dict[str, int]:
        return {k: getattr(c, k) for k in ("width", "depth", "mlp_dim", "num_heads", "num_kv_heads", "head_dim")}

    return {
        "model": "pi05" if config.pi05 else "pi0",
        "llm": {**gemma(LLM), "vocab_size": vocab},
        "action_expert": gemma(EXPERT),
        "vision": {
            "width": VISION["width"],
            "depth": VISION["depth"],
            "mlp_dim": VISION["mlp_dim"],
            "num_heads": VISION["num_heads"],
            "patch_size": VISION["patch_size"][0],
            "image_size": _model.IMAGE_RESOLUTION[0],
            "num_image_tokens": (_model.IMAGE_RESOLUTION[0] // VISION["patch_size"][0]) ** 2,
            "projection_width": LLM.width,
        },
        "image_keys": list(IMAGE_KEYS),
        "action_dim": config.action_dim,
        "action_horizon": config.action_horizon,
        "max_token_len": config.max_token_len,
        "state_dim": STATE_DIM,
        "num_steps": NUM_STEPS,
        "step": STEP,
        "asset_id": ASSET_ID,
        "openpi_commit": OPENPI_COMMIT,
        "seed": SEED,
        "perturb_std": PERTURB_STD,
        "param_dtype": "float32",
        "batch_sizes": batch_sizes,
        "tokenizer": "stand-in: BOS=2, whitespace pieces -> 256 + crc32(piece) % 256000",
        "vocab_note": (
            "openpi's real PaliGemma vocabulary" if vocab == _gemma.PALIGEMMA_VOCAB_SIZE
            else f"vocabulary patched from {_gemma.PALIGEMMA_VOCAB_SIZE} to {vocab} rows to keep the file small"
        ),
    }


def make_pi05(out: Path) -> None:
    root = out / "pi05_small"
    config32 = pi0_config.Pi0Config(
        pi05=True, dtype="float32", paligemma_variant="golden_llm", action_expert_variant="golden_expert",  # type: ignore[arg-type]
        action_dim=ACTION_DIM, action_horizon=ACTION_HORIZON, max_token_len=MAX_TOKEN_LEN,
    )
    config16 = dataclasses.replace(config32, dtype="bfloat16")
    model, params = build(config32, SEED)
    step_dir = save_checkpoint(root, model, params)
    check_round_trip(step_dir / "params", params)

    rng = np.random.default_rng(SEED + 3)
    first = Example("pick up the red cube", np.clip(rng.normal(0, 0.6, STATE_DIM), -1.2, 1.2).astype(np.float32),
                    {"base_0_rgb": True, "left_wrist_0_rgb": True, "right_wrist_0_rgb": False}, seed=1)
    second = Example("put the cube in the bowl and then return home", rng.uniform(-1, 1, STATE_DIM).astype(np.float32),
                     {"base_0_rgb": True, "left_wrist_0_rgb": False, "right_wrist_0_rgb": True}, seed=2)
    noise = np.asarray(jax.random.normal(jax.random.key(SEED + 1), (2, ACTION_HORIZON, ACTION_DIM)), np.float32)
    arrays: dict[str, np.ndarray] = {}
    for prefix, examples in (("", [first]), ("b2_", [first, second])):
        inputs = model_inputs(examples)
        inputs["noise"] = noise[: len(examples)]  # batch 1 is row 0 of batch 2
        inputs["actions"] = sample(config32, step_dir / "params", inputs, None)
        inputs["actions_bf16"] = sample(config16, step_dir / "params", inputs, jnp.bfloat16)
        if not prefix:
            inputs.update(intermediates(config32, step_dir / "params", inputs))
        arrays.update({prefix + k: v for k, v in inputs.items()})
    np.savez_compressed(root / "expected.npz", **arrays)
    (root / "model_spec.json").write_text(
        json.dumps(spec(config32, _gemma.PALIGEMMA_VOCAB_SIZE, [1, 2]), indent=2) + "\n"
    )
    a, b = arrays["actions"], arrays["actions_bf16"]
    print(f"pi05_small: actions |max| {np.abs(a).max():.4f}, bf16 vs fp32 max abs diff {np.abs(a - b).max():.4f}, "
          f"batch-1 vs batch-2 row 0 max abs diff {np.abs(a[0] - arrays['b2_actions'][0]).max():.2e}")


def make_pi0(out: Path) -> None:
    root = out / "pi0_small"
    stock_vocab = _gemma.PALIGEMMA_VOCAB_SIZE
    _gemma.PALIGEMMA_VOCAB_SIZE = PI0_VOCAB
    try:
        config = pi0_config.Pi0Config(
            pi05=False, dtype="float32", paligemma_variant="golden_llm", action_expert_variant="golden_expert",  # type: ignore[arg-type]
            action_dim=ACTION_DIM, action_horizon=ACTION_HORIZON, max_token_len=MAX_TOKEN_LEN,
        )
        model, params = build(config, SEED + 100)
        step_dir = save_checkpoint(root, model, params)
        check_round_trip(step_dir / "params", params)
    finally:
        _gemma.PALIGEMMA_VOCAB_SIZE = stock_vocab
    (root / "model_spec.json").write_text(json.dumps(spec(config, PI0_VOCAB, []), indent=2) + "\n")
    print(f"pi0_small: written to {step_dir}")


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parent)
    jax.config.update("jax_platforms", "cpu")
    _patch_openpi_sizes()
    make_pi05(out)
    make_pi0(out)


if __name__ == "__main__":
    main()
