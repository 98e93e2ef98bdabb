"""The openpi golden fixture (tests/golden/openpi, written by openpi's own JAX code with make_golden.py) is
coherent on its own: the recorded inputs and outputs have the shapes model_spec.json gives, the params/ dirs
carry orbax's OCDBT files with the tree openpi training writes, and norm_stats.json reads with the project's
openpi stats reader. No converter is involved; the parity test against our model lives with the converter.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from policy_norm import find_openpi_norm_stats, read_openpi_norm_stats

GOLDEN = Path(__file__).parent / "golden" / "openpi"
MODELS = ["pi05_small", "pi0_small"]
# What orbax's PyTreeCheckpointHandler (OCDBT) writes for openpi's params item.
ORBAX_PARAMS_FILES = ["_METADATA", "_sharding", "manifest.ocdbt", "array_metadatas/process_0", "ocdbt.process_0"]


@cache
def spec(model: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads((GOLDEN / model / "model_spec.json").read_text())
    return result


def step_dir(model: str) -> Path:
    return GOLDEN / model / str(spec(model)["step"])


@cache
def expected() -> dict[str, np.ndarray]:
    with np.load(GOLDEN / "pi05_small" / "expected.npz", allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


@cache
def param_shapes(model: str) -> dict[tuple[str, ...], tuple[int, ...]]:
    """Key path -> shape of every array in params/, read from orbax's _METADATA (JSON) without orbax."""
    meta = json.loads((step_dir(model) / "params" / "_METADATA").read_text())
    out = {}
    for entry in meta["tree_metadata"].values():
        path = tuple(k["key"] for k in entry["key_metadata"])
        out[path] = tuple(entry["value_metadata"]["write_shape"])
    return out


def param(model: str, *path: str) -> tuple[int, ...]:
    return param_shapes(model)[("params", *path, "value")]


@pytest.mark.parametrize("model", MODELS)
def test_params_dir_is_openpi_training_layout(model: str) -> None:
    root = step_dir(model)
    for name in ORBAX_PARAMS_FILES:
        assert (root / "params" / name).exists(), f"{root / 'params' / name} missing"
    handlers = json.loads((root / "_CHECKPOINT_METADATA").read_text())["item_handlers"]
    assert set(handlers) == {"assets", "params", "train_state"}, handlers
    paths = list(param_shapes(model))
    # save_state stores {"params": nnx.State}: every leaf path starts with "params" and ends with nnx's "value".
    assert paths and all(p[0] == "params" and p[-1] == "value" for p in paths)


def test_pi05_param_shapes_match_spec() -> None:
    s = spec("pi05_small")
    llm, ex, vis = s["llm"], s["action_expert"], s["vision"]
    assert param("pi05_small", "PaliGemma", "llm", "embedder", "input_embedding") == (llm["vocab_size"], llm["width"])
    assert llm["num_heads"] * llm["head_dim"] != llm["width"], "the fixture must exercise heads*head_dim != width"
    layers = ("PaliGemma", "llm", "layers")
    assert param("pi05_small", *layers, "attn", "q_einsum", "w") == (
        llm["depth"], llm["num_heads"], llm["width"], llm["head_dim"])
    assert param("pi05_small", *layers, "attn", "kv_einsum_1", "w") == (
        ex["depth"], 2, ex["num_kv_heads"], ex["width"], ex["head_dim"])
    assert param("pi05_small", *layers, "mlp", "gating_einsum") == (llm["depth"], 2, llm["width"], llm["mlp_dim"])
    assert param("pi05_small", *layers, "mlp_1", "linear") == (ex["depth"], ex["mlp_dim"], ex["width"])
    # Pi0.5: adaRMS modulation Dense (scale, shift, gate) on the expert's norms, and the time MLP.
    assert param("pi05_small", *layers, "pre_attention_norm_1", "Dense_0", "kernel") == (
        ex["depth"], ex["width"], 3 * ex["width"])
    final_norm_1 = ("PaliGemma", "llm", "final_norm_1", "Dense_0", "kernel")
    assert param("pi05_small", *final_norm_1) == (ex["width"], 3 * ex["width"])
    assert param("pi05_small", "time_mlp_in", "kernel") == (ex["width"], ex["width"])
    assert param("pi05_small", "action_in_proj", "kernel") == (s["action_dim"], ex["width"])
    img = ("PaliGemma", "img")
    assert param("pi05_small", *img, "embedding", "kernel") == (vis["patch_size"], vis["patch_size"], 3, vis["width"])
    assert param("pi05_small", *img, "pos_embedding") == (1, vis["num_image_tokens"], vis["width"])
    assert param("pi05_small", *img, "Transformer", "encoderblock", "MlpBlock_0", "Dense_0", "kernel") == (
        vis["depth"], vis["width"], vis["mlp_dim"])
    assert param("pi05_small", *img, "head", "kernel") == (vis["width"], vis["projection_width"])


def test_pi0_tree_is_pi0() -> None:
    s = spec("pi0_small")
    assert s["model"] == "pi0"
    shapes = param_shapes("pi0_small")
    assert ("params", "state_proj", "kernel", "value") in shapes
    assert not any("time_mlp_in" in p or ("final_norm_1" in p and "Dense_0" in p) for p in shapes)
    assert param("pi0_small", "PaliGemma", "llm", "embedder", "input_embedding") == (
        s["llm"]["vocab_size"], s["llm"]["width"])


@pytest.mark.parametrize("prefix,batch", [("", 1), ("b2_", 2)])
def test_expected_npz_matches_spec(prefix: str, batch: int) -> None:
    s, z = spec("pi05_small"), expected()
    size = s["vision"]["image_size"]
    for key in s["image_keys"]:
        image = z[f"{prefix}image_{key}"]
        assert image.shape == (batch, size, size, 3) and image.dtype == np.float32, key
        assert image.min() >= -1.0 and image.max() <= 1.0, key
        assert z[f"{prefix}image_mask_{key}"].shape == (batch,) and z[f"{prefix}image_mask_{key}"].dtype == bool
    assert not z[f"{prefix}image_mask_right_wrist_0_rgb"][0], "the first example masks its right wrist camera out"
    tokens, mask = z[f"{prefix}tokenized_prompt"], z[f"{prefix}tokenized_prompt_mask"]
    assert tokens.shape == mask.shape == (batch, s["max_token_len"]) and tokens.dtype == np.int32
    assert tokens.min() >= 0 and tokens.max() < s["llm"]["vocab_size"]
    for row in mask:  # valid tokens first, then padding, and some of each
        n = int(row.sum())
        assert 0 < n < s["max_token_len"] and row[:n].all()
    assert (tokens[:, 0] == 2).all(), "each prompt starts with BOS"
    assert z[f"{prefix}state"].shape == (batch, s["action_dim"])
    assert z[f"{prefix}raw_state"].shape == (batch, s["state_dim"])
    np.testing.assert_array_equal(z[f"{prefix}state"][:, : s["state_dim"]], z[f"{prefix}raw_state"])
    assert z[f"{prefix}prompt"].shape == (batch,)
    for key in ("noise", "actions", "actions_bf16"):
        arr = z[f"{prefix}{key}"]
        assert arr.shape == (batch, s["action_horizon"], s["action_dim"]) and arr.dtype == np.float32, key
        assert np.isfinite(arr).all(), key
    # bf16 is a different run of the same model: close to fp32, not equal.
    diff = np.abs(z[f"{prefix}actions"] - z[f"{prefix}actions_bf16"])
    assert 0 < diff.max() < 0.1


def test_batch_one_is_row_zero_of_batch_two() -> None:
    z = expected()
    for key in ("tokenized_prompt", "state", "noise", "image_base_0_rgb"):
        np.testing.assert_array_equal(z[key], z[f"b2_{key}"][:1])
    np.testing.assert_allclose(z["actions"], z["b2_actions"][:1], atol=1e-4)


def test_intermediates_match_spec() -> None:
    s, z = spec("pi05_small"), expected()
    prefix_len = len(s["image_keys"]) * s["vision"]["num_image_tokens"] + s["max_token_len"]
    assert z["prefix_embs"].shape == (1, prefix_len, s["llm"]["width"])
    assert z["prefix_mask"].shape == (1, prefix_len) and z["prefix_ar_mask"].shape == (prefix_len,)
    assert z["suffix_embs_t1"].shape == (1, s["action_horizon"], s["action_expert"]["width"])
    assert z["adarms_cond_t1"].shape == (1, s["action_expert"]["width"])


@pytest.mark.parametrize("model", MODELS)
def test_norm_stats_read_with_project_reader(model: str) -> None:
    s = spec(model)
    path = find_openpi_norm_stats(step_dir(model))
    assert path.parent.name == s["asset_id"]
    stats = read_openpi_norm_stats(path)
    for feat in (stats.state, stats.actions):
        for key in ("mean", "std", "q01", "q99"):
            arr = getattr(feat, key)
            assert arr is not None and arr.shape == (s["state_dim"],), key
        assert feat.std is not None and (feat.std > 0).all()
