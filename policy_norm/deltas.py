"""Delta <-> absolute action conversion and the chunk samples norm stats are computed on.

Why here: a delta mask means three things that must agree: the model emits deltas for the masked dims (the
server adds the chunk-start state back), the norm stats of those dims are stats of deltas (openpi computes
them after DeltaActions, over every step of every chunk), and the doctor must compare data in that same
space. All three use these functions.

Convention (openpi DeltaActions / AbsoluteActions): for a masked action dim j and every chunk step k,
delta[k, j] = action[k, j] - state[s(j)], where state is the chunk-start state and s(j) the state dim of that
joint (same name when both are named, else the same index).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from policy_norm.errors import NormConfigError

F64 = npt.NDArray[np.float64]


def delta_state_indices(
    action_names: Sequence[str], state_names: Sequence[str], mask: Sequence[bool]
) -> tuple[int, ...]:
    """For each action dim, the state dim it is relative to (-1 where the mask says absolute).

    A masked action dim whose name is a state name uses that state dim; otherwise the same index, which
    must exist. Raises NormConfigError naming the dim when neither works.
    """
    if len(mask) != len(action_names):
        raise NormConfigError(
            f"action_delta_mask has {len(mask)} entries, expected one per action dim ({len(action_names)})"
        )
    out: list[int] = []
    for j, (name, delta) in enumerate(zip(action_names, mask, strict=True)):
        if not delta:
            out.append(-1)
        elif name in state_names:
            out.append(list(state_names).index(name))
        elif j < len(state_names):
            out.append(j)
        else:
            raise NormConfigError(
                f"action_delta_mask[{j}] ({name}) is delta but there is no state dim '{name}' and no state "
                f"dim {j} (state has {len(state_names)} dims)"
            )
    return tuple(out)


def _state_offsets(state: F64, indices: Sequence[int], width: int) -> F64:
    offsets = np.zeros(width, dtype=np.float64)
    for j, si in enumerate(indices):
        if si >= 0:
            offsets[j] = state[si]
    return offsets


def absolute_to_delta(actions: npt.ArrayLike, state: npt.ArrayLike, indices: Sequence[int]) -> F64:
    """actions [..., A] minus the chunk-start state on the masked dims; a new array (inputs untouched)."""
    a = np.array(actions, dtype=np.float64)
    s = np.asarray(state, dtype=np.float64)
    return np.asarray(a - _state_offsets(s, indices, a.shape[-1]), dtype=np.float64)


def delta_to_absolute(actions: npt.ArrayLike, state: npt.ArrayLike, indices: Sequence[int]) -> F64:
    """actions [..., A] plus the chunk-start state on the masked dims; a new array (inputs untouched)."""
    a = np.array(actions, dtype=np.float64)
    s = np.asarray(state, dtype=np.float64)
    return np.asarray(a + _state_offsets(s, indices, a.shape[-1]), dtype=np.float64)


def chunk_rows(length: int, horizon: int, starts: npt.NDArray[np.int64] | None = None) -> tuple[
    npt.NDArray[np.int64], npt.NDArray[np.int64]
]:
    """(start, row) index pairs of every step of every chunk of one episode.

    Chunk t covers rows t .. t + horizon - 1, clamped to the last row (LeRobot pads a chunk that runs past the
    episode end with the last frame), so every action of every chunk is counted as openpi's stats do.
    """
    if horizon < 1:
        raise ValueError(f"action horizon must be >= 1, got {horizon}")
    t = np.arange(length, dtype=np.int64) if starts is None else np.asarray(starts, dtype=np.int64)
    start = np.repeat(t, horizon)
    row = np.minimum(start + np.tile(np.arange(horizon, dtype=np.int64), len(t)), length - 1)
    return start, row


def chunk_action_values(
    states: npt.ArrayLike,
    actions: npt.ArrayLike,
    indices: Sequence[int],
    horizon: int,
    starts: npt.NDArray[np.int64] | None = None,
    offsets: npt.NDArray[np.int64] | None = None,
) -> F64:
    """Actions in the model's (pre-normalization) space for chunks of one episode, as rows [n, A].

    With `offsets` None every step of every chunk starting at `starts` (default: every frame) is returned;
    with `offsets` (one per start) only that step of each chunk, which samples the same distribution.
    """
    s = np.asarray(states, dtype=np.float64)
    a = np.asarray(actions, dtype=np.float64)
    n = a.shape[0]
    if offsets is None:
        start, row = chunk_rows(n, horizon, starts)
    else:
        start = np.asarray(starts if starts is not None else np.arange(n), dtype=np.int64)
        row = np.minimum(start + np.asarray(offsets, dtype=np.int64), n - 1)
    out = a[row].copy()
    for j, si in enumerate(indices):
        if si >= 0:
            out[:, j] -= s[start, si]
    return out
