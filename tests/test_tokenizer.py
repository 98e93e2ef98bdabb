"""Prompt tokenizer: exact Pi0/Pi0.5 formats, padding and truncation, and every refusal that guards the model."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policy_server.tokenizer import (
    PALIGEMMA_VOCAB_SIZE,
    TOKENIZER_SEARCH_PATHS,
    PromptTokenizer,
    SpecialIds,
    TokenizerError,
    check_ids_in_vocab,
    clean_task_text,
    find_tokenizer_model,
)
from policy_server.tokenizer_build import build_sentencepiece_model, build_sentencepiece_model_bytes

ROOT = Path(__file__).resolve().parents[1]
BOS, PAD = 2, 0


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_sentencepiece_model(tmp_path_factory.mktemp("tok") / "tokenizer.model")


@pytest.fixture(scope="module")
def tok(model_path: Path) -> PromptTokenizer:
    return PromptTokenizer.from_file(model_path)


# --- builder ---------------------------------------------------------------------------------------------------


def test_built_model_has_paligemma_layout_and_compact_bins(tok: PromptTokenizer, model_path: Path) -> None:
    assert tok.vocab_size == 1024
    assert tok.special_ids == SpecialIds(pad=0, eos=1, bos=2, unk=3)
    assert tok.digest == hashlib.sha256(model_path.read_bytes()).hexdigest()
    assert tok.source == str(model_path)
    # Every state bin after a space is one piece, so a 14-dim state costs 14 tokens.
    assert all(len(tok.encode(f" {k}")) == 1 for k in range(256))
    assert tok.tokenize_pi05("fold the towel", list(range(14))).num_tokens < 30


def test_builder_is_deterministic(tmp_path: Path) -> None:
    a = build_sentencepiece_model(tmp_path / "a" / "m.model").read_bytes()
    b = build_sentencepiece_model(tmp_path / "b" / "m.model").read_bytes()
    assert a == b
    assert build_sentencepiece_model_bytes() == a
    assert build_sentencepiece_model_bytes(vocab_size=800) != a
    assert build_sentencepiece_model_bytes(extra_text=["grab the purple octopus plushie"] * 50) != a
    # Another interpreter with another hash seed builds the same bytes.
    code = (
        "import hashlib; from policy_server.tokenizer_build import build_sentencepiece_model_bytes as b; "
        "print(hashlib.sha256(b()).hexdigest())"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONHASHSEED": "12345"})
    assert out.stdout.strip() == hashlib.sha256(a).hexdigest()


def test_builder_refuses_bad_arguments() -> None:
    with pytest.raises(TokenizerError, match="vocab_size"):
        build_sentencepiece_model_bytes(vocab_size=100)
    with pytest.raises(TokenizerError, match="empty"):
        build_sentencepiece_model_bytes(seed_text=["", "  "])


# --- prompt formats --------------------------------------------------------------------------------------------


def test_pi05_prompt_string_is_exact() -> None:
    text = PromptTokenizer.build_pi05_prompt("  Pick_up the RED cup\nthen stop \n", [0, 128, 255])
    assert text == "Task: Pick up the RED cup then stop, State: 0 128 255;\nAction: "
    # strip happens before "_" -> " ", so a leading underscore leaves a leading space (as in training).
    assert clean_task_text("_wipe_table_") == " wipe table "
    assert PromptTokenizer.build_pi05_prompt("x", np.array([3, 4], dtype=np.uint8)) == "Task: x, State: 3 4;\nAction: "


def test_pi05_tokens_bos_first_padded_and_masked(tok: PromptTokenizer) -> None:
    out = tok.tokenize_pi05("Pick_up the RED cup", [1, 2, 250])
    assert out.text == "Task: Pick up the RED cup, State: 1 2 250;\nAction: "
    assert out.tokens.dtype == np.int64 and out.tokens.shape == (200,)
    assert out.mask.dtype == np.bool_ and out.mask.shape == (200,)
    n = out.num_tokens
    assert out.truncated_tokens == 0 and not out.truncated
    assert out.tokens[0] == BOS and np.count_nonzero(out.tokens[1:n] == BOS) == 0
    assert out.tokens[:n].tolist() == tok.encode(out.text, add_bos=True)
    assert tok.decode(out.tokens[:n].tolist()) == out.text  # case and whitespace survive, ends in "Action: "
    assert out.mask[:n].all() and not out.mask[n:].any() and int(out.mask.sum()) == n
    assert (out.tokens[n:] == PAD).all()


def test_pi0_format(tok: PromptTokenizer) -> None:
    out = tok.tokenize_pi0(" Fold_the Towel\n")
    assert out.text == "Fold the Towel\n"
    expected = [BOS, *tok.encode("Fold the Towel"), *tok.encode("\n")]
    assert out.tokens[: out.num_tokens].tolist() == expected
    assert out.tokens.shape == (48,) and int(out.mask.sum()) == len(expected)


def test_truncation_is_reported_and_strict_raises(tok: PromptTokenizer) -> None:
    task = "pick up the red cup and place it on the plate " * 10
    full = tok.tokenize_pi05(task, [7] * 14, max_len=1000)
    assert full.truncated_tokens == 0
    cut = tok.tokenize_pi05(task, [7] * 14, max_len=20)
    assert cut.num_tokens == 20 and cut.truncated_tokens == full.num_tokens - 20 and cut.truncated
    assert cut.tokens.tolist() == full.tokens[:20].tolist() and cut.mask.all()
    with pytest.raises(TokenizerError, match=rf"{full.num_tokens} tokens.*max_len 20"):
        tok.tokenize_pi05(task, [7] * 14, max_len=20, strict=True)
    exact = tok.tokenize_pi05(task, [7] * 14, max_len=full.num_tokens, strict=True)
    assert exact.truncated_tokens == 0 and exact.mask.all()
    with pytest.raises(TokenizerError, match="max_len"):
        tok.tokenize_pi0(task, max_len=5, strict=True)
    assert tok.tokenize_pi0(task, max_len=5).truncated_tokens > 0


@pytest.mark.parametrize("bad", [256, -2, 3.0, True, "5", np.float32(2), None])
def test_bad_state_bin_is_refused_naming_its_index(tok: PromptTokenizer, bad: object) -> None:
    with pytest.raises(TokenizerError, match=r"state_bins\[2\].*\[-1, 255\]"):
        tok.tokenize_pi05("task", [0, 255, bad, 9999])  # type: ignore[list-item]


def test_bad_arguments_are_refused(tok: PromptTokenizer) -> None:
    with pytest.raises(TokenizerError, match="max_len"):
        tok.tokenize_pi05("task", [1], max_len=0)
    with pytest.raises(TokenizerError, match="task must be a str"):
        tok.tokenize_pi0(b"bytes")  # type: ignore[arg-type]


# --- model checks ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ids", "message"),
    [
        (SpecialIds(pad=-1, eos=2, bos=1, unk=0), "pad id -1, expected 0"),
        (SpecialIds(pad=0, eos=1, bos=3, unk=2), "bos id 3, expected 2"),
        (SpecialIds(pad=0, eos=3, bos=2, unk=1), "eos id 3, expected 1"),
    ],
)
def test_model_with_other_special_ids_is_refused(ids: SpecialIds, message: str) -> None:
    data = build_sentencepiece_model_bytes(vocab_size=400, special_ids=ids)
    with pytest.raises(TokenizerError, match=message):
        PromptTokenizer.from_bytes(data)
    assert PromptTokenizer.from_bytes(data, expected_ids=ids).special_ids == ids


def test_unreadable_models_are_refused(tmp_path: Path) -> None:
    with pytest.raises(TokenizerError, match="not a valid SentencePiece model"):
        PromptTokenizer.from_bytes(b"definitely not a model")
    with pytest.raises(TokenizerError, match="empty"):
        PromptTokenizer.from_bytes(b"")
    with pytest.raises(TokenizerError, match="does not exist.*--tokenizer PATH"):
        PromptTokenizer.from_file(tmp_path / "missing.model")


def test_tokenizer_larger_than_model_vocab_is_refused(model_path: Path) -> None:
    with pytest.raises(TokenizerError, match=r"vocab size 1024.*only 1000 rows"):
        PromptTokenizer.from_file(model_path, model_vocab_size=1000)
    assert PromptTokenizer.from_file(model_path, model_vocab_size=1024).model_vocab_size == 1024
    PromptTokenizer.from_file(model_path, model_vocab_size=PALIGEMMA_VOCAB_SIZE)


def test_check_ids_in_vocab() -> None:
    import torch  # imported here so collecting the other tests stays fast

    check_ids_in_vocab(np.array([0, 2, 1023]), 1024)
    check_ids_in_vocab(np.zeros((2, 0), dtype=np.int64), 1024)
    with pytest.raises(TokenizerError, match=r"token id 1024 at position 2 .*\[0, 1024\)"):
        check_ids_in_vocab([2, 5, 1024, 7], 1024)
    with pytest.raises(TokenizerError, match=r"token id -1 at position 0"):
        check_ids_in_vocab(np.array([-1, 5]), 1024)
    with pytest.raises(TokenizerError, match=r"token id 5000 at position \(1, 3\)"):
        check_ids_in_vocab(torch.tensor([[2, 3, 4, 5], [2, 3, 4, 5000]]), 1024)
    with pytest.raises(TokenizerError, match="integers"):
        check_ids_in_vocab(np.array([1.0, 2.0]), 1024)


def test_tokenizer_checks_against_the_vocab_it_was_loaded_for(model_path: Path) -> None:
    tok = PromptTokenizer.from_file(model_path, model_vocab_size=1024)
    tok.check_ids_in_vocab(tok.tokenize_pi05("task", [1, 2]).tokens)
    with pytest.raises(TokenizerError, match="position 1"):
        tok.check_ids_in_vocab(np.array([2, 1024]))
    with pytest.raises(TokenizerError, match="no model_vocab_size"):
        PromptTokenizer.from_file(model_path).check_ids_in_vocab(np.array([2]))


# --- locating the model ----------------------------------------------------------------------------------------


def test_find_tokenizer_model_search_order(tmp_path: Path, model_path: Path) -> None:
    ckpt = tmp_path / "ckpt"
    order = ["assets/tokenizer.model", "assets/paligemma_tokenizer.model", "tokenizer.model",
             "paligemma_tokenizer.model", "assets/a_robot/paligemma_tokenizer.model",
             "assets/b_robot/paligemma_tokenizer.model"]
    for rel in order:
        (ckpt / rel).parent.mkdir(parents=True, exist_ok=True)
        (ckpt / rel).write_bytes(b"x")
    for rel in order:
        assert find_tokenizer_model(ckpt) == ckpt / rel
        (ckpt / rel).unlink()
    (ckpt / "tokenizer.model").write_bytes(b"x")
    assert find_tokenizer_model(ckpt, explicit=model_path) == model_path  # explicit wins
    with pytest.raises(TokenizerError, match="--tokenizer .*missing.model is not a file"):
        find_tokenizer_model(ckpt, explicit=tmp_path / "missing.model")  # never falls back to the checkpoint


def test_find_tokenizer_model_error_lists_every_path(tmp_path: Path) -> None:
    with pytest.raises(TokenizerError) as info:
        find_tokenizer_model(tmp_path)
    message = str(info.value)
    for rel in TOKENIZER_SEARCH_PATHS:
        assert str(tmp_path / rel) in message
    assert "--tokenizer PATH" in message and "gs://big_vision/paligemma_tokenizer.model" in message


# --- concurrency and properties --------------------------------------------------------------------------------


def test_concurrent_tokenization_matches_single_threaded(tok: PromptTokenizer) -> None:
    jobs = [(f"task number {i} pick_up block {i % 7}", [(i * 13 + j) % 256 for j in range(14)]) for i in range(300)]
    expected = [tok.tokenize_pi05(task, bins).tokens.tolist() for task, bins in jobs]
    start = threading.Barrier(8)

    def worker(offset: int) -> list[tuple[int, list[int]]]:
        start.wait()
        order = [(offset + 37 * k) % len(jobs) for k in range(len(jobs))]
        return [(i, tok.tokenize_pi05(*jobs[i]).tokens.tolist()) for i in order]

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(worker, range(8)))
    for per_thread in results:
        for i, tokens in per_thread:
            assert tokens == expected[i]


@settings(max_examples=60, deadline=None)
@given(task=st.text(max_size=60), bins=st.lists(st.integers(-1, 255), max_size=20))
def test_any_text_round_trips_without_unk(tok: PromptTokenizer, task: str, bins: list[int]) -> None:
    out = tok.tokenize_pi05(task, bins, max_len=1024)
    ids = out.tokens[: out.num_tokens].tolist()
    assert tok.special_ids.unk not in ids  # byte fallback covers every character
    assert tok.decode(ids) == out.text
    assert out.text == f"Task: {clean_task_text(task)}, State: {' '.join(map(str, bins))};\nAction: "
