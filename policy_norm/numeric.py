"""The numeric core: normalization formulas, their epsilons, action masks and state discretization.

Why one module: the server, the oracle, the stats tool and the doctor must agree to the last bit on what
"normalized" means, so every formula lives here once. All arithmetic is float64; callers cast at their edges.

Two epsilon conventions exist and give slightly different numbers:

- "openpi" (eps = 1e-6, always added to the denominator):
  quantile  n = 2 (x - q01) / (q99 - q01 + eps) - 1        x = (n + 1) / 2 (q99 - q01 + eps) + q01
  z-score   n = (x - mean) / (std + eps)                   x = n (std + eps) + mean
- "lerobot" (eps = 1e-8):
  quantile  d = q99 - q01, replaced by eps only where d == 0;  n = 2 (x - q01) / d - 1;  x = (n + 1) d / 2 + q01
  z-score   n = (x - mean) / (std + eps)                   x = n std + mean   (no eps on the way back)

For a dimension with range d the two quantile results differ by a relative ~1e-6 / d, so a checkpoint must be
served with the convention it was trained with. LeRobot's z-score is not an exact inverse (relative error
eps / std); both conventions blow up on degenerate dimensions (d or std ~ 0), which is why those are detected
and handled by policy before any formula runs (see `resolve.py`).

Each mode's formulas, the stats they read and what makes those stats unusable sit in one table, `MODE_FORMULAS`
(keyed by `modes.NormMode`); everything that normalizes dispatches through it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from policy_norm.modes import NormMode, parse_mode

F64 = npt.NDArray[np.float64]

EpsilonConvention = Literal["openpi", "lerobot"]
EPSILON_CONVENTIONS: tuple[str, ...] = ("openpi", "lerobot")
OPENPI_EPS = 1e-6
LEROBOT_EPS = 1e-8

# Pi0.5 discretizes each normalized state value into 256 bins over [-1, 1] for the prompt.
PI05_STATE_BINS = 256


def make_bool_mask(*dims: int) -> tuple[bool, ...]:
    """openpi's mask shorthand: n > 0 gives n x True, n < 0 gives |n| x False.

    make_bool_mask(6, -1, 6, -1) is the ALOHA/YAM delta mask: 6 joints relative, gripper absolute, per arm.
    """
    out: list[bool] = []
    for d in dims:
        if not isinstance(d, int) or isinstance(d, bool) or d == 0:
            raise ValueError(f"make_bool_mask: each entry must be a non-zero integer, got {d!r}")
        out.extend([d > 0] * abs(d))
    return tuple(out)


def _eps(convention: str) -> float:
    if convention == "openpi":
        return OPENPI_EPS
    if convention == "lerobot":
        return LEROBOT_EPS
    raise ValueError(f"epsilon convention must be one of {EPSILON_CONVENTIONS}, got {convention!r}")


def quantile_span(q01: F64, q99: F64, convention: str) -> F64:
    """The denominator of the quantile formula under a convention (see the module docstring)."""
    eps = _eps(convention)
    d = np.asarray(q99, dtype=np.float64) - np.asarray(q01, dtype=np.float64)
    if convention == "openpi":
        return d + eps
    return np.where(d == 0.0, eps, d)


def quantile_normalize(x: npt.ArrayLike, q01: F64, q99: F64, convention: str) -> F64:
    """Map [q01, q99] to [-1, 1] (no clipping: values beyond the quantiles land outside)."""
    span = quantile_span(q01, q99, convention)
    return np.asarray(2.0 * (np.asarray(x, dtype=np.float64) - q01) / span - 1.0, dtype=np.float64)


def quantile_unnormalize(n: npt.ArrayLike, q01: F64, q99: F64, convention: str) -> F64:
    span = quantile_span(q01, q99, convention)
    return np.asarray((np.asarray(n, dtype=np.float64) + 1.0) / 2.0 * span + q01, dtype=np.float64)


def zscore_normalize(x: npt.ArrayLike, mean: F64, std: F64, convention: str) -> F64:
    eps = _eps(convention)
    return np.asarray((np.asarray(x, dtype=np.float64) - mean) / (std + eps), dtype=np.float64)


def zscore_unnormalize(n: npt.ArrayLike, mean: F64, std: F64, convention: str) -> F64:
    eps = _eps(convention)
    scale = std + eps if convention == "openpi" else std
    return np.asarray(np.asarray(n, dtype=np.float64) * scale + mean, dtype=np.float64)


def _identity(x: npt.ArrayLike, a: F64, b: F64, convention: str) -> F64:
    return np.array(x, dtype=np.float64)


def _first(bad: npt.NDArray[np.bool_]) -> int | None:
    hits = np.flatnonzero(bad)
    return int(hits[0]) if hits.size else None


def _quantile_problem(a: F64, b: F64, label: str, names: Sequence[str] | None) -> str | None:
    i = _first(b < a)
    if i is None:
        return None
    return (f"{label}.q99 < {label}.q01 at {label}[{i}] ({names[i] if names else i}): "
            f"q01={a[i]:.6g}, q99={b[i]:.6g}")


def _zscore_problem(a: F64, b: F64, label: str, names: Sequence[str] | None) -> str | None:
    i = _first(b < 0)
    return None if i is None else f"{label}.std[{i}] is negative ({b[i]:.6g})"


@dataclass(frozen=True)
class ModeFormulas:
    """Everything the arithmetic of one mode needs, so callers dispatch on the mode in one table, not by name.

    stats: the (a, b) stat keys the formulas read (q01/q99, mean/std); None = the mode reads no stats.
    normalize / unnormalize: x <-> n with (a, b) under an epsilon convention.
    spread: a dim's width in robot units (q99 - q01, std); ~0 marks a degenerate dim, and it scales round-trip
    tolerances. center: the value a degenerate dim pinned to 0 in model space is emitted as.
    problem: what is wrong with (a, b) (e.g. q99 < q01), naming the first bad dim; None when they are usable.
    """

    stats: tuple[str, str] | None
    normalize: Callable[[npt.ArrayLike, F64, F64, str], F64]
    unnormalize: Callable[[npt.ArrayLike, F64, F64, str], F64]
    spread: Callable[[F64, F64], F64]
    center: Callable[[F64, F64], F64]
    problem: Callable[[F64, F64, str, Sequence[str] | None], str | None]

    def describe_stats(self, a: float, b: float) -> str:
        """'q01 -0.5, q99 1.2' / 'mean 0.1, std 0.3' / 'identity' (one dim's stats, for messages)."""
        if self.stats is None:
            return "identity"
        return f"{self.stats[0]} {a:.4g}, {self.stats[1]} {b:.4g}"


MODE_FORMULAS: dict[NormMode, ModeFormulas] = {
    NormMode.QUANTILE: ModeFormulas(
        ("q01", "q99"), quantile_normalize, quantile_unnormalize,
        spread=lambda a, b: b - a, center=lambda a, b: (a + b) / 2.0, problem=_quantile_problem,
    ),
    NormMode.ZSCORE: ModeFormulas(
        ("mean", "std"), zscore_normalize, zscore_unnormalize,
        spread=lambda a, b: b, center=lambda a, b: a, problem=_zscore_problem,
    ),
    NormMode.IDENTITY: ModeFormulas(
        None, _identity, _identity,
        spread=lambda a, b: np.full(np.shape(a), np.inf), center=lambda a, b: np.zeros(np.shape(a)),
        problem=lambda a, b, label, names: None,
    ),
}


def formulas(mode: str) -> ModeFormulas:
    """The formulas of `mode` (a NormMode or its string); an unknown mode raises ValueError naming the modes."""
    return MODE_FORMULAS[parse_mode(mode, "mode")]


def normalize(x: npt.ArrayLike, mode: str, a: F64, b: F64, convention: str) -> F64:
    """Normalize with (a, b) = (q01, q99) in quantile mode or (mean, std) in z-score mode."""
    return formulas(mode).normalize(x, a, b, convention)


def unnormalize(n: npt.ArrayLike, mode: str, a: F64, b: F64, convention: str) -> F64:
    return formulas(mode).unnormalize(n, a, b, convention)


def bin_edges(bins: int = PI05_STATE_BINS) -> F64:
    """Left edges of the state bins: linspace(-1, 1, bins + 1)[:-1], as Pi0.5's tokenizer uses."""
    if bins < 2:
        raise ValueError(f"state bins must be >= 2, got {bins}")
    return np.linspace(-1.0, 1.0, bins + 1)[:-1]


def state_bin_range(bins: int = PI05_STATE_BINS) -> tuple[int, int]:
    """The prompt bins the trainers can emit: -1 (a value below -1) up to bins - 1 (at or above the top edge)."""
    return -1, bins - 1


def discretize_state(
    normalized: npt.ArrayLike, bins: int = PI05_STATE_BINS
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
    """Pi0.5 state bins exactly as both trainers compute them: k = digitize(s, linspace(-1, 1, bins + 1)[:-1]) - 1.

    Nothing is clipped (openpi's `PaligemmaTokenizer.tokenize` and LeRobot's
    `Pi05PrepareStateTokenizerProcessorStep` clip nothing either): s < -1 gives k = -1, written into the prompt
    as the text "-1"; s >= 1 - 2/bins gives the top bin. With quantile stats about 1% of training frames per joint
    lie below q01, so "-1" is part of what the model saw in training; clipping it to 0 would hand the model a
    prompt it never saw. Returns (bins, below, above): `below` marks s < -1 (bin -1), `above` marks s > 1 (top
    bin, sharing it with the values just inside); callers report both, with the value.
    """
    s = np.asarray(normalized, dtype=np.float64)
    k = (np.digitize(s, bin_edges(bins)) - 1).astype(np.int64)
    below = s < -1.0
    above = s > 1.0
    return k, below, above
