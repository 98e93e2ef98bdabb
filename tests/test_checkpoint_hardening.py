"""Checkpoints that must not load: non-finite weights and misspelt config.json keys."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from policy_server.checkpoint.layouts import EMBED_TOKENS, EXPERT_LM_HEAD, CheckpointError
from policy_server.checkpoint.loader import load_checkpoint
from policy_server.checkpoint.safetensors_io import find_non_finite
from policy_server.checkpoint.writer import WriteOptions, write_checkpoint
from policy_server.model.config import ModelConfigError, Pi05Config
from policy_server.model.pi05 import Pi05Model
from tests.model_helpers import random_model


@pytest.fixture(scope="module")
def model() -> Pi05Model:
    return random_model("dummy", seed=5)


def _poison(directory: Path, name: str, cells: list[tuple[int, int]], value: float) -> None:
    weights = directory / "model.safetensors"
    state = load_file(str(weights))
    for row, col in cells:
        state[name][row, col] = value
    save_file(state, str(weights))


@pytest.mark.parametrize("store_dtype", ["float32", "bfloat16"])
def test_nan_in_an_embedding_row_refuses_the_load_naming_tensor_count_and_index(
        model: Pi05Model, tmp_path: Path, store_dtype: str) -> None:
    write_checkpoint(model, tmp_path, WriteOptions(store_dtype=store_dtype))  # type: ignore[arg-type]
    # A row of the embedding no warm-up prompt would touch: only a load-time scan can see it.
    _poison(tmp_path, EMBED_TOKENS, [(12, 7), (12, 9), (400, 0)], float("nan"))
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(tmp_path)
    assert f"model.safetensors: tensor '{EMBED_TOKENS}' has 3 NaN values (first at [12, 7]); refusing to serve" \
        in str(err.value)


def test_infinity_is_refused_and_the_lerobot_name_is_the_stored_one(model: Pi05Model, tmp_path: Path) -> None:
    write_checkpoint(model, tmp_path, WriteOptions(layout="lerobot"))
    _poison(tmp_path, "model.action_out_proj.weight", [(3, 1)], float("-inf"))
    with pytest.raises(CheckpointError, match=r"tensor 'model\.action_out_proj\.weight' has 1 infinite value "
                                              r"\(first at \[3, 1\]\)"):
        load_checkpoint(tmp_path)


def test_unused_tensors_are_not_refused(model: Pi05Model, tmp_path: Path) -> None:
    """The action expert's lm_head is ignored by Pi0.5 (left random by the converter): it cannot harm serving."""
    write_checkpoint(model, tmp_path, WriteOptions(include_expert_lm_head=True))
    _poison(tmp_path, EXPERT_LM_HEAD, [(0, 0)], float("nan"))
    assert EXPERT_LM_HEAD in load_checkpoint(tmp_path).report.ignored


def test_find_non_finite_counts_both_kinds_and_skips_integers() -> None:
    t = torch.zeros(2, 3, 4)
    t[1, 2, 3] = float("inf")
    t[1, 0, 1] = float("nan")
    found = find_non_finite(t)
    assert found is not None and (found.nan, found.inf, found.first) == (1, 1, (1, 0, 1))
    assert found.describe() == "1 NaN value and 1 infinite value (first at [1, 0, 1])"
    assert find_non_finite(torch.ones(5, dtype=torch.bfloat16)) is None
    assert find_non_finite(torch.zeros(0)) is None
    assert find_non_finite(torch.tensor([2**31 - 1], dtype=torch.int32)) is None


def _rewrite_config(directory: Path, **changes: object) -> None:
    path = directory / "config.json"
    config = json.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
    path.write_text(json.dumps(config))


def test_misspelt_openpi_key_is_refused_with_the_suggestion(model: Pi05Model, tmp_path: Path) -> None:
    write_checkpoint(model, tmp_path)
    variant = json.loads((tmp_path / "config.json").read_text())["paligemma_variant"]
    _rewrite_config(tmp_path, paligemma_variant=None, paligemma_varaint=variant)
    with pytest.raises(CheckpointError, match="'paligemma_varaint': did you mean 'paligemma_variant'\\?"):
        load_checkpoint(tmp_path)


def test_misspelt_lerobot_and_extension_keys_are_refused(model: Pi05Model, tmp_path: Path) -> None:
    write_checkpoint(model, tmp_path / "lerobot", WriteOptions(layout="lerobot"))
    _rewrite_config(tmp_path / "lerobot", tokenizer_max_len=48)
    with pytest.raises(CheckpointError, match="'tokenizer_max_len': did you mean 'tokenizer_max_length'\\?"):
        load_checkpoint(tmp_path / "lerobot")
    write_checkpoint(model, tmp_path / "openpi")
    ext = json.loads((tmp_path / "openpi" / "config.json").read_text())["model_extensions"]
    ext["vision_varient"] = ext.pop("vision_variant")
    _rewrite_config(tmp_path / "openpi", model_extensions=ext)
    with pytest.raises(CheckpointError, match="'model_extensions.vision_varient': did you mean 'vision_variant'\\?"):
        load_checkpoint(tmp_path / "openpi")


def test_unrelated_extra_keys_stay_a_warning(model: Pi05Model, tmp_path: Path,
                                             caplog: pytest.LogCaptureFixture) -> None:
    write_checkpoint(model, tmp_path)
    _rewrite_config(tmp_path, pi05=True, discrete_state_input=False, quantization={"mxu": "bf16"})
    with caplog.at_level(logging.WARNING, logger="policy_server.checkpoint.layouts"):
        loaded = load_checkpoint(tmp_path)
    assert "config.json keys not used for the model: ['quantization']" in loaded.report.notes
    assert any("quantization" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)


def test_model_config_from_dict_suggests_the_known_key() -> None:
    with pytest.raises(ModelConfigError, match="'action_horizen': did you mean 'action_horizon'\\?"):
        Pi05Config.from_dict({"action_horizen": 10})


def test_every_field_lerobot_writes_is_accepted_without_a_note(model: Pi05Model, tmp_path: Path) -> None:
    """The typo check against the real field list of LeRobot 0.6.1's PI05Config (tests/golden/lerobot, written by
    LeRobot's own dataclass): none of its fields is taken for a misspelling, none is reported unknown."""
    golden = Path(__file__).parent / "golden" / "lerobot" / "pi05_config_fields.json"
    fields = json.loads(golden.read_text())["fields"]
    write_checkpoint(model, tmp_path, WriteOptions(layout="lerobot"))
    present = json.loads((tmp_path / "config.json").read_text())
    _rewrite_config(tmp_path, **{name: None for name in fields if name not in present})
    loaded = load_checkpoint(tmp_path)
    assert not any("not used" in note for note in loaded.report.notes), loaded.report.notes
