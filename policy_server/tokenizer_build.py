"""Train a small, deterministic SentencePiece model with the PaliGemma special-id layout.

Why: the real PaliGemma tokenizer (257152 pieces) cannot be fetched at runtime and is too large to bundle with
tests or a demo checkpoint. A model trained here has the same conventions that matter to Pi0/Pi0.5 prompts
(pad 0, eos 1, bos 2, unk 3, no lower-casing, whitespace kept as is, byte fallback so no text ever becomes unk)
and a vocabulary fitted to robot prompts, so "Task: ..., State: 12 200 ...;\\nAction: " stays short; each state
bin 0..255 is a single piece.

Determinism: the corpus is built in a fixed order without any randomness, training is single-threaded and the
input is not shuffled, so the same arguments give byte-identical models (and the same sha256 digest).
"""

from __future__ import annotations

import io
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import sentencepiece as spm

from policy_server.tokenizer import PALIGEMMA_SPECIAL_IDS, STATE_BIN_MAX, SpecialIds, TokenizerError

_VERBS = (
    "pick up", "place", "put", "move", "push", "pull", "open", "close", "fold", "unfold", "stack", "unstack",
    "pour", "wipe", "hand over", "grasp", "release", "insert", "lift", "rotate", "flip", "slide", "press",
    "turn", "hang", "sort", "clean", "tidy up", "throw away", "take out", "drop", "hold", "carry", "transfer",
)
_OBJECTS = (
    "the red cup", "the blue block", "the green block", "the yellow ball", "the towel", "the drawer", "the lid",
    "the box", "the marker", "the bowl", "the plate", "the spoon", "the fork", "the sponge", "the bottle",
    "the cloth", "the shirt", "the bag", "the tape", "the screwdriver", "the cable", "the banana", "the apple",
    "the white mug", "the black pen", "the paper", "the napkin", "the toy", "the can", "the jar",
)
_PLACES = (
    "on the table", "into the bowl", "in the bin", "on the plate", "into the box", "on the shelf",
    "to the left", "to the right", "with the left arm", "with the right arm", "with both arms",
    "next to the cup", "onto the tray", "in the basket", "under the lid", "behind the box",
)
_EXTRA_LINES = (
    "Task: State: Action:",
    ". , ; : ! ? ' \" ( ) [ ] { } < > - _ / \\ | + = * & % # @ $ ^ ~ `",
    "A B C D E F G H I J K L M N O P Q R S T U V W X Y Z",
    "a b c d e f g h i j k l m n o p q r s t u v w x y z",
    "Pick up the cup. Place it on the table. Fold the towel in half. Open the drawer, then close it.",
    "left right up down front back top bottom inside outside slowly carefully gently quickly then and",
    "bimanual robot arm gripper joint state action task prompt episode step camera wrist base",
)
_STATE_BINS = STATE_BIN_MAX + 1
_STATE_DIMS = 14  # a bimanual arm state (2 x (6 joints + gripper)); the count only shapes the training text.


def default_corpus() -> tuple[str, ...]:
    """The built-in training text: robot task phrases, whole Pi0.5 prompts, the numbers 0..255 and punctuation.

    Generated from fixed tables with integer arithmetic only, so its order and content never vary.
    """
    lines: list[str] = list(_EXTRA_LINES)
    numbers = " ".join(str(k) for k in range(_STATE_BINS))
    lines.extend([numbers] * 4)
    tasks = [f"{verb} {obj}" for verb in _VERBS for obj in _OBJECTS]
    tasks.extend(f"{verb} {obj} {place}" for verb in _VERBS[:12] for obj in _OBJECTS[:8] for place in _PLACES)
    for i, task in enumerate(tasks):
        lines.append(task)
        lines.append(task.capitalize())
        bins = " ".join(str((31 * i + 17 * j + 7 * i * j) % _STATE_BINS) for j in range(_STATE_DIMS))
        # The newline before "Action: " is left out of training lines (each line is one sentence); byte
        # fallback encodes it as one piece, and "Action" still learns its line-start form.
        lines.append(f"Task: {task}, State: {bins};")
        lines.append("Action: ")
    return tuple(lines)



def build_sentencepiece_model_bytes(
    vocab_size: int = 1024,
    extra_text: Sequence[str] = (),
    seed_text: Sequence[str] | None = None,
    *,
    special_ids: SpecialIds = PALIGEMMA_SPECIAL_IDS,
) -> bytes:
    """Train and return the serialized model. `vocab_size` is an upper bound: a corpus too small to fill it
    gives fewer pieces rather than an error; the built-in corpus fills 1024.

    seed_text replaces the built-in corpus (None keeps it); extra_text is appended after it, in order. Text is
    split into sentences at newlines; a newline itself is always encoded through byte fallback.
    special_ids exists so tests can build a model with a non-PaliGemma layout; -1 disables a piece (not unk).
    """
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 300:
        raise TokenizerError(
            f"vocab_size must be an int >= 300 (256 byte pieces + specials + some merges), got {vocab_size!r}"
        )
    corpus = list(default_corpus() if seed_text is None else seed_text) + list(extra_text)
    sentences = [line for text in corpus for line in str(text).split("\n") if line.strip()]
    if not sentences:
        raise TokenizerError("the training text is empty; pass non-empty seed_text or extra_text")
    out = io.BytesIO()
    try:
        spm.SentencePieceTrainer.Train(
            sentence_iterator=iter(sentences),
            model_writer=out,
            # BPE rather than unigram: on this corpus it makes every bin " 0".." 255" a single piece.
            model_type="bpe",
            vocab_size=vocab_size,
            hard_vocab_limit=False,
            byte_fallback=True,
            character_coverage=1.0,
            pad_id=special_ids.pad,
            eos_id=special_ids.eos,
            bos_id=special_ids.bos,
            unk_id=special_ids.unk,
            # Keep text exactly as given (PaliGemma/Gemma style): no NFKC, no dummy prefix, spaces kept.
            normalization_rule_name="identity",
            add_dummy_prefix=False,
            remove_extra_whitespaces=False,
            split_digits=False,
            num_threads=1,
            shuffle_input_sentence=False,
            input_sentence_size=0,
            minloglevel=2,
        )
    except RuntimeError as exc:
        raise TokenizerError(f"SentencePiece training failed: {exc}") from exc
    return out.getvalue()


def build_sentencepiece_model(
    out_path: Path,
    vocab_size: int = 1024,
    extra_text: Sequence[str] = (),
    seed_text: Sequence[str] | None = None,
    *,
    special_ids: SpecialIds = PALIGEMMA_SPECIAL_IDS,
) -> Path:
    """Train a model (see `build_sentencepiece_model_bytes`) and write it to `out_path` atomically."""
    data = build_sentencepiece_model_bytes(
        vocab_size, extra_text, seed_text, special_ids=special_ids
    )
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=out_path.name + ".", suffix=".tmp", dir=out_path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, out_path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out_path
