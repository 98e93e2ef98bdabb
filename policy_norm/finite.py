"""Where an array stops being finite: the first NaN/inf, located by index and named by joint, and how many there are.

Why one function: the server's request validation, its check of every action chunk it sends, and each step of the
normalization pipeline all refuse non-finite values and must say which joint holds one. Each caller keeps its own
error type and wording; the locating and naming (row-major first hit, last axis = the joint) lives here once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt


def dim_label(names: Sequence[str], i: int) -> str:
    """'[3] (left_joint4)' for a named dim, '[40] (padded dim)' past the names (the model's zero padding)."""
    return f"[{i}] ({names[i]})" if i < len(names) else f"[{i}] (padded dim)"


@dataclass(frozen=True)
class NonFinite:
    """The first non-finite entry of an array (row-major order), its value, and the count of all of them."""

    index: tuple[int, ...]
    value: float
    count: int

    @property
    def dim(self) -> int:
        """Index on the last axis: the joint / action dim."""
        return self.index[-1]

    @property
    def row(self) -> int | None:
        """Row (time step) of a 2-D array; None for a vector."""
        return self.index[0] if len(self.index) == 2 else None

    def where(self, what: str, names: Sequence[str] = ()) -> str:
        """'actions[4] (left_joint5) at row 2' with names, 'actions at (2, 4) at row 2' without."""
        out = f"{what}{dim_label(names, self.dim)}" if names else f"{what} at {self.index}"
        if self.row is not None:
            out += f" at row {self.row}"
        return out

    def describe(self, what: str, names: Sequence[str] = ()) -> str:
        """'actions[4] (left_joint5) at row 2 is inf (3 non-finite value(s))'."""
        return f"{self.where(what, names)} is {self.value} ({self.count} non-finite value(s))"


def first_non_finite(values: npt.ArrayLike) -> NonFinite | None:
    """The first NaN/inf of `values` (any shape), or None when every value is finite."""
    arr = np.asarray(values)
    bad = ~np.isfinite(arr)
    if not bad.any():
        return None
    hits = np.argwhere(bad)
    index = tuple(int(i) for i in hits[0])
    return NonFinite(index, float(arr[index]), len(hits))
