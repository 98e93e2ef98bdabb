"""Converting openpi JAX (orbax) training steps without JAX: parity with openpi's own JAX actions, sizes read off
the tree, every refusal named, and the serve path's conversion cache.

The golden fixture (`tests/golden/openpi/`, see its README) was written by openpi's own training checkpoint code
and its `Pi0.sample_actions`; other trees here are written by our orbax-layout writer from our own models.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from policy_server.checkpoint.loader import load_checkpoint
from policy_server.checkpoint.openpi_convert import (
    ConvertError,
    ConvertOptions,
    convert_openpi_step,
    ensure_converted,
    read_tree,
)
from policy_server.checkpoint.openpi_jax import OpenpiTreeError
from policy_server.checkpoint.orbax_reader import OrbaxError
from policy_server.checkpoint.writer import randomize
from policy_server.cli import build_parser, build_policy, main, resolve_openpi_checkpoint
from policy_server.model.config import GemmaConfig, Pi05Config, SiglipConfig, preset
from policy_server.model.dtype_policy import DtypePolicy
from policy_server.model.pi05 import ModelInputs, Pi05Model
from policy_server.tokenizer_build import build_sentencepiece_model_bytes
from tests.openpi_tree_helpers import jax_tree_from_state, to_pi0_tree, write_jax_tree

GOLDEN = Path(__file__).parent / "golden" / "openpi"
STEP = GOLDEN / "pi05_small" / "29999"
PI0_STEP = GOLDEN / "pi0_small" / "29999"
SPEC = json.loads((GOLDEN / "pi05_small" / "model_spec.json").read_text())
# The fixture's training config values that the weights do not record.
OPTIONS = ConvertOptions(action_horizon=SPEC["action_horizon"], max_token_len=SPEC["max_token_len"])


@pytest.fixture(scope="module")
def expected() -> dict[str, np.ndarray[Any, Any]]:
    with np.load(GOLDEN / "pi05_small" / "expected.npz") as z:
        return {k: z[k] for k in z.files}


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("converted")
    return {dtype: convert_openpi_step(STEP, root / dtype, ConvertOptions(
        dtype=dtype, action_horizon=OPTIONS.action_horizon, max_token_len=OPTIONS.max_token_len)).out_dir
        for dtype in ("float32", "bfloat16")}


def _inputs(z: dict[str, np.ndarray[Any, Any]], cfg: Pi05Config, prefix: str) -> ModelInputs:
    return ModelInputs(
        images=[torch.from_numpy(z[f"{prefix}image_{s}"]).permute(0, 3, 1, 2).contiguous() for s in cfg.image_keys],
        image_masks=[torch.from_numpy(z[f"{prefix}image_mask_{s}"]) for s in cfg.image_keys],
        tokens=torch.from_numpy(z[f"{prefix}tokenized_prompt"]).long(),
        token_masks=torch.from_numpy(z[f"{prefix}tokenized_prompt_mask"]),
    )


@pytest.mark.parametrize("prefix", ["", "b2_"])
def test_converted_fixture_reproduces_openpi_jax_actions_fp32(converted: dict[str, Path],
                                                               expected: dict[str, Any], prefix: str) -> None:
    model = load_checkpoint(converted["float32"]).model
    actions = model.sample_actions(_inputs(expected, model.cfg, prefix), torch.from_numpy(expected[f"{prefix}noise"]))
    np.testing.assert_allclose(actions.numpy(), expected[f"{prefix}actions"], atol=2e-4, rtol=0)


@pytest.mark.parametrize("prefix", ["", "b2_"])
def test_bfloat16_conversion_reproduces_openpi_bf16_actions(converted: dict[str, Path],
                                                            expected: dict[str, Any], prefix: str) -> None:
    loaded = load_checkpoint(converted["bfloat16"], dtype_policy=DtypePolicy.BFLOAT16)
    stored = loaded.report.stored_dtypes
    assert stored.get("float32", 0) > 0 and stored.get("bfloat16", 0) > 0, stored  # openpi's rule, not "cast all"
    model = loaded.model
    actions = model.sample_actions(_inputs(expected, model.cfg, prefix), torch.from_numpy(expected[f"{prefix}noise"]))
    np.testing.assert_allclose(actions.float().numpy(), expected[f"{prefix}actions_bf16"], atol=5e-2, rtol=0)


def test_bfloat16_keeps_openpi_float32_parts(converted: dict[str, Path]) -> None:
    from policy_server.checkpoint.safetensors_io import read_index

    entries = read_index(converted["bfloat16"] / "model.safetensors").entries
    fp32 = {n for n, e in entries.items() if e.dtype == torch.float32}
    assert any("input_layernorm.dense" in n for n in fp32) and any("patch_embedding" in n for n in fp32)
    assert any(n.endswith("language_model.norm.weight") for n in fp32)
    assert all(e.dtype == torch.bfloat16 for n, e in entries.items() if "mlp.gate_proj" in n or "q_proj" in n)


def test_inferred_sizes_equal_the_fixture_spec(converted: dict[str, Path]) -> None:
    _, sizes = read_tree(STEP)
    llm, expert, vision = SPEC["llm"], SPEC["action_expert"], SPEC["vision"]
    assert sizes.vocab_size == llm["vocab_size"] and sizes.action_dim == SPEC["action_dim"]
    for got, want in ((sizes.llm, llm), (sizes.expert, expert)):
        assert {k: v for k, v in asdict(got).items() if k in want} == {k: v for k, v in want.items()
                                                                       if k != "vocab_size"}
    assert (sizes.vision.width, sizes.vision.depth, sizes.vision.mlp_dim, sizes.vision.num_heads,
            sizes.vision.patch_size, sizes.vision.image_size, sizes.vision.num_patches) == (
        vision["width"], vision["depth"], vision["mlp_dim"], vision["num_heads"], vision["patch_size"],
        vision["image_size"], vision["num_image_tokens"])
    assert "Dense_0" in sizes.detected_by
    cfg = load_checkpoint(converted["float32"]).info.config
    assert cfg.llm == sizes.llm and cfg.expert == sizes.expert and cfg.vision == sizes.vision
    assert (converted["float32"] / "assets" / SPEC["asset_id"] / "norm_stats.json").read_bytes() == (
        STEP / "assets" / SPEC["asset_id"] / "norm_stats.json").read_bytes()


def test_pi0_tree_is_refused_naming_why(tmp_path: Path) -> None:
    with pytest.raises(OpenpiTreeError, match="Pi0 tree, not Pi0.5.*state_proj.*no AdaRMS Dense_0"):
        convert_openpi_step(PI0_STEP, tmp_path / "out", OPTIONS)
    assert not (tmp_path / "out").exists()


def test_truncated_params_directory_is_refused_naming_the_file(tmp_path: Path) -> None:
    step = tmp_path / "step"
    shutil.copytree(STEP, step)
    largest = max((p for p in (step / "params").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    with largest.open("r+b") as f:
        f.truncate(largest.stat().st_size // 2)
    with pytest.raises(OrbaxError, match=f"{largest.name}|damaged or truncated"):
        convert_openpi_step(step, tmp_path / "out", OPTIONS)
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.partial-*"))


def test_missing_metadata_is_refused(tmp_path: Path) -> None:
    step = tmp_path / "step"
    shutil.copytree(STEP, step)
    (step / "params" / "_METADATA").unlink()
    with pytest.raises(ConvertError, match="no orbax params"):
        convert_openpi_step(step, tmp_path / "out", OPTIONS)


def test_missing_norm_stats_is_refused_unless_asked(tmp_path: Path) -> None:
    step = tmp_path / "step"
    shutil.copytree(STEP, step)
    shutil.rmtree(step / "assets")
    with pytest.raises(ConvertError, match="missing norm_stats.json.*--no-norm-stats"):
        convert_openpi_step(step, tmp_path / "out", OPTIONS)
    report = convert_openpi_step(step, tmp_path / "out", ConvertOptions(
        allow_no_norm_stats=True, action_horizon=OPTIONS.action_horizon, max_token_len=OPTIONS.max_token_len))
    assert report.norm_stats is None and "NONE" in report.text()


def test_several_asset_ids_need_a_choice(tmp_path: Path) -> None:
    step = tmp_path / "step"
    shutil.copytree(STEP, step)
    shutil.copytree(step / "assets" / SPEC["asset_id"], step / "assets" / "other")
    with pytest.raises(ConvertError, match=r"several asset ids.*\['other', 'yam_demo'\].*--asset-id"):
        convert_openpi_step(step, tmp_path / "out", OPTIONS)
    with pytest.raises(ConvertError, match="--asset-id nope"):
        convert_openpi_step(step, tmp_path / "out", ConvertOptions(asset_id="nope"))
    with pytest.raises(ConvertError, match=r"--asset-id \.\./other: asset_id must be a single folder name"):
        convert_openpi_step(step / "params", tmp_path / "out", ConvertOptions(asset_id="../other"))
    report = convert_openpi_step(step, tmp_path / "out", ConvertOptions(
        asset_id="other", action_horizon=OPTIONS.action_horizon, max_token_len=OPTIONS.max_token_len))
    assert (report.out_dir / "assets" / "other" / "norm_stats.json").is_file()


def test_norm_stats_the_server_would_refuse_are_refused_at_conversion(tmp_path: Path) -> None:
    step = tmp_path / "step"
    shutil.copytree(STEP, step)
    (step / "assets" / SPEC["asset_id"] / "norm_stats.json").write_text('{"norm_stats": {"state": {"mean": [0.0]}}}')
    with pytest.raises(ConvertError, match=r"norm stats to carry: .*norm_stats.json.*std"):
        convert_openpi_step(step, tmp_path / "out", OPTIONS)
    assert not (tmp_path / "out").exists()


def _small_cfg(kv_heads: int) -> Pi05Config:
    """Sizes no named variant has, with heads x head_dim != width, and `kv_heads` (== heads: Gemma's qkv_einsum)."""
    return preset("dummy").with_(
        paligemma_variant="custom", action_expert_variant="custom", vision_variant="custom", vocab_size=300,
        action_dim=8, max_token_len=16,
        llm_sizes=GemmaConfig(width=24, depth=2, mlp_dim=40, num_heads=4, num_kv_heads=kv_heads, head_dim=8),
        expert_sizes=GemmaConfig(width=20, depth=2, mlp_dim=36, num_heads=4, num_kv_heads=kv_heads, head_dim=8),
        vision_sizes=SiglipConfig(image_size=28, patch_size=14, width=12, depth=2, mlp_dim=20, num_heads=2),
    )


def _write_step(step: Path, model: Pi05Model, tree: dict[str, Any] | None = None, ocdbt: bool = True) -> Path:
    write_jax_tree(step / "params", tree if tree is not None else jax_tree_from_state(model.state_dict(), model.cfg),
                   ocdbt=ocdbt)
    shutil.copytree(STEP / "assets", step / "assets")
    return step


@pytest.mark.parametrize(("kv_heads", "ocdbt"), [(2, True), (4, True), (1, False)])
def test_round_trip_any_sizes_is_exact(tmp_path: Path, kv_heads: int, ocdbt: bool) -> None:
    cfg = _small_cfg(kv_heads)
    model = randomize(Pi05Model(cfg), seed=kv_heads)
    step = _write_step(tmp_path / "step", model, ocdbt=ocdbt)
    report = convert_openpi_step(step, tmp_path / "out", ConvertOptions(action_horizon=cfg.action_horizon,
                                                                        max_token_len=cfg.max_token_len))
    assert report.sizes.llm == cfg.llm and report.sizes.expert == cfg.expert and report.sizes.vision == cfg.vision
    loaded = load_checkpoint(tmp_path / "out").model
    assert loaded.cfg == cfg
    original, back = model.state_dict(), loaded.state_dict()
    assert set(original) == set(back)
    for name, tensor in original.items():
        assert torch.equal(tensor, back[name]), name


def test_pi0_tree_of_our_writer_is_refused(tmp_path: Path) -> None:
    cfg = _small_cfg(2)
    model = randomize(Pi05Model(cfg))
    step = _write_step(tmp_path / "step", model, to_pi0_tree(jax_tree_from_state(model.state_dict(), cfg), cfg))
    with pytest.raises(OpenpiTreeError, match="Pi0 tree"):
        convert_openpi_step(step, tmp_path / "out")


def test_unknown_tree_layout_is_refused_listing_expected_and_found(tmp_path: Path) -> None:
    cfg = _small_cfg(2)
    model = randomize(Pi05Model(cfg))
    tree = jax_tree_from_state(model.state_dict(), cfg)
    del tree["PaliGemma/img/head/bias"]
    tree["PaliGemma/llm/layers/attn/q_einsum/lora_a"] = np.zeros((2, 3), np.float32)
    step = _write_step(tmp_path / "step", model, tree)
    with pytest.raises(OpenpiTreeError, match=r"unknown Pi0.5 tree layout: missing \['PaliGemma/img/head/bias'\]; "
                                              r"not expected \['PaliGemma/llm/layers/attn/q_einsum/lora_a'\] "
                                              r"\(LoRA.*expected the groups"):
        convert_openpi_step(step, tmp_path / "out")
    other = {"encoder/" + k: v for k, v in jax_tree_from_state(model.state_dict(), cfg).items()}
    step2 = _write_step(tmp_path / "step2", model, other)
    with pytest.raises(OpenpiTreeError, match=r"not a Pi0.5 tree of a known layout: expected top-level groups "
                                              r"\['PaliGemma', .*found top-level \['encoder'\]"):
        convert_openpi_step(step2, tmp_path / "out")


def test_convert_command_line_writes_a_servable_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    code = main(["convert", "--openpi-params", str(STEP), "--out", str(out), "--action-horizon",
                 str(SPEC["action_horizon"]), "--max-token-len", str(SPEC["max_token_len"])])
    printed = capsys.readouterr().out
    assert code == 1  # converted; the draft and the tokenizer have values to confirm
    assert "Pi0.5 detected by: AdaRMS" in printed and "sha256: " in printed and "keys: 91" in printed
    assert (out / "model.safetensors").is_file() and (out / "policy_config.json").is_file()
    assert main(["convert", "--openpi-params", str(STEP), "--out", str(out)]) == 2  # never overwrites
    assert "exists" in capsys.readouterr().err


def test_serve_converts_into_the_cache_once_and_reuses_it(tmp_path: Path) -> None:
    step = tmp_path / "run" / "29999"
    shutil.copytree(STEP, step)
    tokenizer = step / "assets" / "tokenizer.model"
    tokenizer.write_bytes(build_sentencepiece_model_bytes(vocab_size=1024))
    assert main(["convert", "--openpi-params", str(step), "--out", str(tmp_path / "draft"), "--action-horizon",
                 "10", "--max-token-len", "32"]) == 1
    shutil.copyfile(tmp_path / "draft" / "policy_config.json", step / "policy_config.json")
    cache = tmp_path / "cache"
    refuse = build_parser().parse_args(["serve", "--checkpoint", str(step), "--convert-cache", str(cache),
                                        "--no-convert"])
    with pytest.raises(ConvertError, match=f"python -m policy_server convert --openpi-params {step} --out"):
        resolve_openpi_checkpoint(refuse)
    assert not cache.exists() or not any(cache.iterdir())

    args = build_parser().parse_args(["serve", "--checkpoint", str(step), "--convert-cache", str(cache),
                                      "--no-warmup"])
    resolve_openpi_checkpoint(args)
    converted = args.checkpoint
    assert converted.parent == cache and (converted / "assets" / "tokenizer.model").is_file()
    assert [p.name for p in cache.iterdir()] == [converted.name]  # no partial directory left behind
    # The chunk length comes from the step's policy config (drafted from the converted config.json).
    assert json.loads((converted / "config.json").read_text())["action_horizon"] == SPEC["action_horizon"]
    policy = build_policy(args)
    assert policy.spec.policy_type == "pi05"
    mtime = (converted / "model.safetensors").stat().st_mtime_ns
    again, report = ensure_converted(step, ConvertOptions(action_horizon=SPEC["action_horizon"]), cache_root=cache)
    assert again == converted and report is None
    assert (converted / "model.safetensors").stat().st_mtime_ns == mtime
