"""Prompt tokenization for Pi0 / Pi0.5 policies, with the PaliGemma SentencePiece conventions made explicit.

Why this module exists: a policy silently degrades when its prompt is tokenized differently from training
(lower-cased text, a missing BOS, another pad id, a tokenizer from a different checkpoint whose ids overrun the
embedding table). Every one of those is checked here and reported as a `TokenizerError` that names the cause and
what to do, instead of producing plausible-looking but wrong token ids.

Formats (as in openpi's PaliGemma tokenizer):

* Pi0.5: ``f"Task: {text}, State: {bins};\\nAction: "`` encoded with BOS first, where ``text`` is the stripped
  prompt with ``_`` and ``\\n`` replaced by spaces (case kept) and ``bins`` the discretized state, -1..255 each
  (-1 for a normalized value below -1: both trainers write it so, and so does this tokenizer).
* Pi0: BOS + tokens of ``text`` + tokens of ``"\\n"``; no state.

Both are right-padded with the pad id (0) and a False mask to ``max_len``. A longer prompt is cut to its first
``max_len`` tokens; how many were dropped is returned as data (`TokenizedPrompt.truncated_tokens`) so the caller
decides whether to log, count or refuse, and ``strict=True`` turns it into an error.

Thread safety: a `PromptTokenizer` is immutable after construction. The SentencePiece processor is loaded once
and never reconfigured; encoding is a const operation on the loaded model in SentencePiece's C++ core (the Python
binding only reads the processor's stored defaults), and every call here passes its options explicitly (BOS, EOS,
no sampling) rather than relying on those defaults, so concurrent server threads cannot observe each other's
settings. Each call returns freshly allocated arrays, so no result is shared between requests. No lock is needed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import sentencepiece as spm

from policy_norm.numeric import PI05_STATE_BINS, state_bin_range

PALIGEMMA_VOCAB_SIZE = 257152
PALIGEMMA_TOKENIZER_URL = "gs://big_vision/paligemma_tokenizer.model"
PI05_MAX_LEN = 200
PI0_MAX_LEN = 48
STATE_BIN_MIN, STATE_BIN_MAX = state_bin_range(PI05_STATE_BINS)  # -1 .. 255: what the trainers emit

# Relative to the checkpoint directory, in search order. Globs are expanded in sorted order.
TOKENIZER_SEARCH_PATHS: tuple[str, ...] = (
    "assets/tokenizer.model",
    "assets/paligemma_tokenizer.model",
    "tokenizer.model",
    "paligemma_tokenizer.model",
    "assets/*/paligemma_tokenizer.model",
)


class TokenizerError(ValueError):
    """The tokenizer, a prompt or token ids cannot be used as given; the message says why and what to do."""


@dataclass(frozen=True)
class SpecialIds:
    """Ids of the special pieces. The PaliGemma values are what Pi0/Pi0.5 checkpoints were trained with."""

    pad: int = 0
    eos: int = 1
    bos: int = 2
    unk: int = 3


PALIGEMMA_SPECIAL_IDS = SpecialIds()


@dataclass(frozen=True)
class TokenizedPrompt:
    """One tokenized prompt, padded to a fixed length so it can be batched without further work.

    tokens: int64 [max_len], pad id after the real tokens. mask: bool [max_len], True on real tokens.
    num_tokens: real tokens kept (== mask.sum()). truncated_tokens: tokens dropped to fit max_len (0 if none).
    text: the full prompt string that was encoded.
    """

    tokens: npt.NDArray[np.int64]
    mask: npt.NDArray[np.bool_]
    num_tokens: int
    truncated_tokens: int
    text: str

    @property
    def truncated(self) -> bool:
        return self.truncated_tokens > 0


def clean_task_text(task: str) -> str:
    """Normalize a task the way Pi0/Pi0.5 training did: strip, then ``_`` and ``\\n`` to spaces; case is kept."""
    if not isinstance(task, str):
        raise TokenizerError(f"task must be a str, got {type(task).__name__}")
    return task.strip().replace("_", " ").replace("\n", " ")


def _check_state_bins(state_bins: Sequence[int] | npt.NDArray[np.integer[Any]]) -> list[int]:
    """Return the bins as Python ints, refusing anything the trainers cannot emit: an integer outside [-1, 255].

    -1 is what openpi and LeRobot write for a normalized value below -1, so it is accepted; -2 or 256 cannot come
    out of their binning. Bools and floats are refused even when they look integral: they mean discretization was
    skipped upstream.
    """
    bins: list[int] = []
    for i, k in enumerate(state_bins):
        is_int = isinstance(k, int | np.integer) and not isinstance(k, bool | np.bool_)
        if not is_int or not STATE_BIN_MIN <= int(k) <= STATE_BIN_MAX:
            raise TokenizerError(
                f"state_bins[{i}] = {k!r} ({type(k).__name__}): every state bin must be an integer in "
                f"[{STATE_BIN_MIN}, {STATE_BIN_MAX}] (digitize(s, linspace(-1, 1, 257)[:-1]) - 1 of the normalized "
                f"state, as the trainers compute it) before tokenizing"
            )
        bins.append(int(k))
    return bins


def _check_max_len(max_len: int) -> None:
    if isinstance(max_len, bool) or not isinstance(max_len, int) or max_len < 1:
        raise TokenizerError(f"max_len must be a positive int, got {max_len!r}")


def _as_numpy_ids(tokens: Any) -> npt.NDArray[Any]:
    """Accept numpy arrays, sequences and torch tensors (on any device) without importing torch here."""
    detach = getattr(tokens, "detach", None)
    if callable(detach):
        tokens = detach()
    cpu = getattr(tokens, "cpu", None)
    if callable(cpu):
        tokens = cpu()
    return np.asarray(tokens)


def check_ids_in_vocab(tokens: npt.ArrayLike, model_vocab_size: int) -> None:
    """Refuse any token id outside [0, model_vocab_size) before it reaches an embedding lookup.

    An out-of-range id would otherwise be a device-side assert, or, worse, with some kernels a read of whatever
    memory follows the table. Accepts arrays of any shape (e.g. a [batch, len] batch) and torch tensors.
    """
    if isinstance(model_vocab_size, bool) or not isinstance(model_vocab_size, int) or model_vocab_size < 1:
        raise TokenizerError(f"model_vocab_size must be a positive int, got {model_vocab_size!r}")
    ids = _as_numpy_ids(tokens)
    if ids.size == 0:
        return
    if not np.issubdtype(ids.dtype, np.integer) or ids.dtype == np.bool_:
        raise TokenizerError(f"token ids must be integers, got dtype {ids.dtype}")
    bad = (ids < 0) | (ids >= model_vocab_size)
    if not bad.any():
        return
    first = tuple(int(i) for i in np.argwhere(bad)[0])
    position: int | tuple[int, ...] = first[0] if len(first) == 1 else first
    raise TokenizerError(
        f"token id {int(ids[first])} at position {position} is outside the model's embedding table "
        f"[0, {model_vocab_size}) ({int(bad.sum())} such ids in all): the tokenizer does not match the checkpoint; "
        "use the tokenizer the checkpoint was trained with"
    )


class PromptTokenizer:
    """A loaded SentencePiece model plus the Pi0/Pi0.5 prompt formats. Immutable and safe to share across threads.

    Construction checks the special ids against `expected_ids` (PaliGemma: pad 0, eos 1, bos 2) because padding
    and the BOS prefix are hard-coded into how the model reads prompts, and, when `model_vocab_size` is given,
    that every id the tokenizer can produce has a row in the model's embedding table.
    """

    def __init__(
        self,
        model_bytes: bytes,
        *,
        source: str = "<bytes>",
        model_vocab_size: int | None = None,
        expected_ids: SpecialIds = PALIGEMMA_SPECIAL_IDS,
    ) -> None:
        if not isinstance(model_bytes, bytes | bytearray | memoryview):
            raise TokenizerError(f"tokenizer model from {source} must be bytes, got {type(model_bytes).__name__}")
        data = bytes(model_bytes)
        if not data:
            raise TokenizerError(f"tokenizer model {source} is empty; pass a SentencePiece .model file")
        processor = spm.SentencePieceProcessor()
        try:
            processor.LoadFromSerializedProto(data)
        except (RuntimeError, OSError) as exc:
            raise TokenizerError(
                f"tokenizer model {source} is not a valid SentencePiece model ({exc}); "
                "pass the .model file the checkpoint was trained with"
            ) from exc
        self._sp = processor
        self.source = source
        self.digest = hashlib.sha256(data).hexdigest()
        self.vocab_size = int(processor.GetPieceSize())
        self.special_ids = SpecialIds(
            pad=int(processor.pad_id()),
            eos=int(processor.eos_id()),
            bos=int(processor.bos_id()),
            unk=int(processor.unk_id()),
        )
        self._check_special_ids(expected_ids)
        self.model_vocab_size = model_vocab_size
        if model_vocab_size is not None:
            self._check_fits_model(model_vocab_size)

    def __repr__(self) -> str:
        return f"PromptTokenizer(source={self.source!r}, vocab_size={self.vocab_size}, sha256={self.digest[:12]})"

    @classmethod
    def from_file(
        cls, path: Path | str, *, model_vocab_size: int | None = None,
        expected_ids: SpecialIds = PALIGEMMA_SPECIAL_IDS,
    ) -> PromptTokenizer:
        path = Path(path)
        try:
            data = path.read_bytes()
        except FileNotFoundError as exc:
            raise TokenizerError(
                f"tokenizer model {path} does not exist; pass --tokenizer PATH to the SentencePiece model "
                f"(PaliGemma: {PALIGEMMA_TOKENIZER_URL})"
            ) from exc
        except OSError as exc:
            raise TokenizerError(f"cannot read tokenizer model {path}: {exc}") from exc
        return cls(data, source=str(path), model_vocab_size=model_vocab_size, expected_ids=expected_ids)

    @classmethod
    def from_bytes(
        cls, data: bytes, *, model_vocab_size: int | None = None, expected_ids: SpecialIds = PALIGEMMA_SPECIAL_IDS
    ) -> PromptTokenizer:
        return cls(data, source="<bytes>", model_vocab_size=model_vocab_size, expected_ids=expected_ids)

    def _check_special_ids(self, expected: SpecialIds) -> None:
        for name in ("pad", "eos", "bos"):
            got, want = getattr(self.special_ids, name), getattr(expected, name)
            if got != want:
                raise TokenizerError(
                    f"tokenizer model {self.source} has {name} id {got}, expected {want} "
                    f"(PaliGemma layout pad={expected.pad}, eos={expected.eos}, bos={expected.bos}); "
                    "this is not the tokenizer the policy was trained with, pass the checkpoint's tokenizer"
                )

    def _check_fits_model(self, model_vocab_size: int) -> None:
        if isinstance(model_vocab_size, bool) or not isinstance(model_vocab_size, int) or model_vocab_size < 1:
            raise TokenizerError(f"model_vocab_size must be a positive int, got {model_vocab_size!r}")
        if self.vocab_size > model_vocab_size:
            raise TokenizerError(
                f"tokenizer {self.source} has vocab size {self.vocab_size} but the model's embedding table has "
                f"only {model_vocab_size} rows: ids >= {model_vocab_size} would have no embedding; "
                "use the tokenizer the checkpoint was trained with"
            )

    def encode(self, text: str, *, add_bos: bool = False) -> list[int]:
        """Plain encoding with every option explicit (no EOS, no sampling), independent of processor defaults."""
        ids = self._sp.Encode(
            text, out_type=int, add_bos=add_bos, add_eos=False, reverse=False, emit_unk_piece=False,
            enable_sampling=False,
        )
        return [int(i) for i in ids]

    def decode(self, ids: Sequence[int]) -> str:
        """Inverse of `encode` for debugging and logs; special ids decode to nothing."""
        return str(self._sp.Decode([int(i) for i in ids]))

    @staticmethod
    def build_pi05_prompt(task: str, state_bins: Sequence[int] | npt.NDArray[np.integer[Any]]) -> str:
        """The exact Pi0.5 prompt string; `state_bins` are the discretized state, integers in [-1, 255]."""
        bins = _check_state_bins(state_bins)
        return f"Task: {clean_task_text(task)}, State: {' '.join(str(k) for k in bins)};\nAction: "

    def tokenize_pi05(
        self,
        task: str,
        state_bins: Sequence[int] | npt.NDArray[np.integer[Any]],
        max_len: int = PI05_MAX_LEN,
        strict: bool = False,
    ) -> TokenizedPrompt:
        _check_max_len(max_len)
        text = self.build_pi05_prompt(task, state_bins)
        return self._pad(self.encode(text, add_bos=True), text, max_len, strict)

    def tokenize_pi0(self, task: str, max_len: int = PI0_MAX_LEN, strict: bool = False) -> TokenizedPrompt:
        """BOS + task tokens + tokens of "\\n". The newline is encoded separately, as in training, so `text`
        (task plus newline) is what was read, not necessarily what one `encode` of it would give."""
        _check_max_len(max_len)
        cleaned = clean_task_text(task)
        ids = self.encode(cleaned, add_bos=True) + self.encode("\n")
        return self._pad(ids, cleaned + "\n", max_len, strict)

    def _pad(self, ids: list[int], text: str, max_len: int, strict: bool) -> TokenizedPrompt:
        dropped = max(0, len(ids) - max_len)
        if dropped and strict:
            raise TokenizerError(
                f"prompt is {len(ids)} tokens, longer than max_len {max_len} by {dropped}; "
                "shorten the task text or raise max_len"
            )
        kept = ids[:max_len]
        tokens = np.full(max_len, self.special_ids.pad, dtype=np.int64)
        tokens[: len(kept)] = kept
        mask = np.zeros(max_len, dtype=np.bool_)
        mask[: len(kept)] = True
        return TokenizedPrompt(tokens=tokens, mask=mask, num_tokens=len(kept), truncated_tokens=dropped, text=text)

    def check_ids_in_vocab(self, tokens: npt.ArrayLike, model_vocab_size: int | None = None) -> None:
        """Module-level `check_ids_in_vocab` against `model_vocab_size`, defaulting to the one given at load."""
        size = model_vocab_size if model_vocab_size is not None else self.model_vocab_size
        if size is None:
            raise TokenizerError("no model_vocab_size given here or when the tokenizer was loaded")
        check_ids_in_vocab(tokens, size)


def _expand(checkpoint_dir: Path, pattern: str) -> list[Path]:
    if "*" in pattern:
        return sorted(checkpoint_dir.glob(pattern))
    return [checkpoint_dir / pattern]


def find_tokenizer_model(checkpoint_dir: Path, explicit: Path | None = None) -> Path:
    """Locate the tokenizer model: an explicit path wins, else the usual places inside the checkpoint.

    An explicit path that does not exist is an error rather than a fallback, so a typo never silently picks up
    another tokenizer. The model cannot be downloaded at serve time, so the error lists every place tried.
    """
    if explicit is not None:
        explicit = Path(explicit)
        if explicit.is_file():
            return explicit
        raise TokenizerError(
            f"--tokenizer {explicit} is not a file; pass --tokenizer PATH to the SentencePiece model "
            f"(PaliGemma: {PALIGEMMA_TOKENIZER_URL}, copy it to this machine beforehand)"
        )
    checkpoint_dir = Path(checkpoint_dir)
    tried: list[str] = []
    for pattern in TOKENIZER_SEARCH_PATHS:
        for candidate in _expand(checkpoint_dir, pattern):
            if candidate.is_file():
                return candidate
        tried.append(str(checkpoint_dir / pattern))
    listing = "\n  ".join(tried)
    raise TokenizerError(
        f"no tokenizer model found in checkpoint {checkpoint_dir}; tried:\n  {listing}\n"
        f"pass --tokenizer PATH to the SentencePiece model (PaliGemma: {PALIGEMMA_TOKENIZER_URL}); "
        "it is not downloaded at runtime, so copy it to this machine beforehand"
    )
