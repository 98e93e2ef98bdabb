"""Checkpoint loading through the real loaders, on files written in the openpi and LeRobot layouts."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from policy_server.checkpoint.layouts import EMBED_TOKENS, EXPERT_LM_HEAD, TIED_LM_HEAD, CheckpointError
from policy_server.checkpoint.loader import load_checkpoint
from policy_server.checkpoint.writer import WriteOptions, write_checkpoint
from policy_server.model.dtype_policy import DtypePolicy, DtypePolicyError
from policy_server.model.pi05 import Pi05Model
from tests.model_helpers import random_inputs, random_model


@pytest.fixture(scope="module")
def model() -> Pi05Model:
    return random_model("dummy", seed=11)


def _edit_weights(path: Path, edit: object) -> None:
    weights = path / "model.safetensors"
    state = load_file(str(weights))
    edit(state)  # type: ignore[operator]
    save_file(state, str(weights))


def test_both_layouts_load_and_give_identical_outputs(model: Pi05Model, tmp_path: Path) -> None:
    write_checkpoint(model, tmp_path / "openpi", WriteOptions(layout="openpi", include_expert_lm_head=True))
    write_checkpoint(model, tmp_path / "lerobot", WriteOptions(layout="lerobot", tied_embedding="lm_head"))
    a = load_checkpoint(tmp_path / "openpi")
    b = load_checkpoint(tmp_path / "lerobot")
    assert (a.report.layout, b.report.layout) == ("openpi", "lerobot")
    assert EXPERT_LM_HEAD in a.report.ignored
    assert any("tied embedding restored from paligemma.lm_head" in n for n in b.report.notes)
    assert b.info.config.image_keys == tuple(f"observation.images.{k}" for k in model.cfg.image_keys)
    inputs = random_inputs(model.cfg)
    reference = model.sample_actions(inputs, seed=4)
    assert torch.equal(a.model.sample_actions(inputs, seed=4), reference)
    assert torch.equal(b.model.sample_actions(inputs, seed=4), reference)


def test_weight_hash_is_the_file_sha256(model: Pi05Model, tmp_path: Path) -> None:
    write_checkpoint(model, tmp_path)
    loaded = load_checkpoint(tmp_path)
    assert loaded.report.weight_hash == hashlib.sha256((tmp_path / "model.safetensors").read_bytes()).hexdigest()


@pytest.mark.parametrize("layout", ["openpi", "lerobot"])
def test_missing_extra_and_misshaped_keys_are_named(model: Pi05Model, tmp_path: Path, layout: str) -> None:
    prefix = "model." if layout == "lerobot" else ""
    victim = prefix + "paligemma_with_expert.gemma_expert.model.layers.1.mlp.up_proj.weight"
    cases = {
        "missing keys (1): paligemma_with_expert.gemma_expert.model.layers.1.mlp.up_proj.weight":
            lambda s: s.pop(victim),
        f"unexpected keys (1): {prefix}action_in_proj.extra":
            lambda s: s.__setitem__(prefix + "action_in_proj.extra", torch.zeros(3)),
        f"mis-shaped keys (1): {prefix}action_out_proj.bias [31] (model expects [32])":
            lambda s: s.__setitem__(prefix + "action_out_proj.bias", torch.zeros(31)),
    }
    for i, (message, edit) in enumerate(cases.items()):
        directory = tmp_path / str(i)
        write_checkpoint(model, directory, WriteOptions(layout=layout))  # type: ignore[arg-type]
        _edit_weights(directory, edit)
        with pytest.raises(CheckpointError) as err:
            load_checkpoint(directory)
        assert message in str(err.value), str(err.value)


def test_lerobot_key_fixes_are_applied_and_reported(model: Pi05Model, tmp_path: Path) -> None:
    write_checkpoint(model, tmp_path, WriteOptions(layout="lerobot"))

    def to_legacy(state: dict[str, torch.Tensor]) -> None:
        for name in [k for k in state if k.startswith("model.time_mlp_")]:
            state[name.replace("model.time_mlp_", "model.action_time_mlp_")] = state.pop(name)
        state["model.state_proj.weight"] = torch.zeros(4, 4)
        state["model.paligemma_with_expert.gemma_expert.model.layers.0.input_layernorm.weight"] = torch.zeros(64)

    _edit_weights(tmp_path, to_legacy)
    loaded = load_checkpoint(tmp_path)
    assert ("model.action_time_mlp_in.weight", "time_mlp_in.weight") in loaded.report.renamed
    assert "model.state_proj.weight" in loaded.report.ignored
    assert any("input_layernorm.weight" in k for k in loaded.report.ignored)
    inputs = random_inputs(model.cfg)
    assert torch.equal(loaded.model.sample_actions(inputs, seed=1), model.sample_actions(inputs, seed=1))


def test_untied_lm_head_is_reported(model: Pi05Model, tmp_path: Path) -> None:
    write_checkpoint(model, tmp_path, WriteOptions(tied_embedding="both"))
    _edit_weights(tmp_path, lambda s: s.__setitem__(TIED_LM_HEAD, s[EMBED_TOKENS] + 1))
    loaded = load_checkpoint(tmp_path)
    assert any("DIFFERENT from embed_tokens" in n for n in loaded.report.notes)


def test_pi0_checkpoint_is_refused(model: Pi05Model, tmp_path: Path) -> None:
    write_checkpoint(model, tmp_path)

    def to_pi0(state: dict[str, torch.Tensor]) -> None:
        for name in [k for k in state if ".dense." in k and "gemma_expert" in k]:
            state[name.split(".dense.")[0] + ".weight"] = torch.zeros(64)
            del state[name]
        state["state_proj.weight"] = torch.zeros(64, 32)

    _edit_weights(tmp_path, to_pi0)
    with pytest.raises(CheckpointError, match="is a Pi0 checkpoint"):
        load_checkpoint(tmp_path)


def test_bf16_checkpoint_under_both_policies(model: Pi05Model, tmp_path: Path) -> None:
    write_checkpoint(model, tmp_path, WriteOptions(store_dtype="bfloat16"))
    fp32 = load_checkpoint(tmp_path, dtype_policy=DtypePolicy.FLOAT32)
    bf16 = load_checkpoint(tmp_path, dtype_policy=DtypePolicy.BFLOAT16)
    assert fp32.report.stored_dtypes == {"bfloat16": len(load_file(str(tmp_path / "model.safetensors")))}
    assert all(p.dtype == torch.float32 for p in fp32.model.parameters())
    emb = bf16.model.paligemma_with_expert.vision_tower.vision_model.embeddings
    assert emb.patch_embedding.weight.dtype == torch.float32
    assert bf16.model.paligemma_with_expert.llm.layers[0].self_attn.q_proj.weight.dtype == torch.bfloat16
    inputs = random_inputs(model.cfg)
    diff = (fp32.model.sample_actions(inputs, seed=0) - bf16.model.sample_actions(inputs, seed=0)).abs().max()
    assert 0 < float(diff) < 0.05
    bf16.model.half()  # a conversion after load is caught at the next inference
    with pytest.raises(DtypePolicyError, match="loaded with dtype policy 'bfloat16'"):
        bf16.model.sample_actions(inputs, seed=0)


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({}, "no model.safetensors"),
        ({"model.safetensors": b"\x08\x00\x00\x00\x00\x00\x00\x00{broken}"}, "config.json is missing"),
        ({"model.safetensors": b"12345678", "config.json": b"{}"}, "header of"),
        ({"model.safetensors": b"\x00" * 8, "config.json": b"[1]"}, "expected a JSON object"),
    ],
)
def test_broken_checkpoint_directories(tmp_path: Path, files: dict[str, bytes], message: str) -> None:
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    with pytest.raises(Exception, match=message):
        load_checkpoint(tmp_path)


def test_unknown_variant_and_lerobot_type_are_named(model: Pi05Model, tmp_path: Path) -> None:
    write_checkpoint(model, tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["paligemma_variant"] = "gemma_7b"
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="paligemma_variant 'gemma_7b' is unknown"):
        load_checkpoint(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"type": "pi0"}))
    with pytest.raises(CheckpointError, match="LeRobot policy type is 'pi0'; only 'pi05'"):
        load_checkpoint(tmp_path)
