"""The normalization modes, as one enum: the only place the list of modes lives.

Why an enum: a mode used to be a bare string checked in many modules, so a typo compared unequal silently and a
new mode meant hunting for every comparison. `NormMode` is a `StrEnum`, so a member still equals (and serializes
as) its string: JSON files, protos and command lines keep their "quantile" / "zscore" / "identity". Strings from
users and files go through `parse_mode`, which names the field and the allowed modes when it refuses one.

Adding a mode: one member here plus its formulas in `numeric.MODE_FORMULAS` (a test checks every member has them).
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum


class NormMode(StrEnum):
    """How robot units map to model space (see numeric.py for the formulas)."""

    QUANTILE = "quantile"  # [q01, q99] -> [-1, 1]: Pi0.5, pi0-FAST
    ZSCORE = "zscore"  # (x - mean) / std: Pi0
    IDENTITY = "identity"  # values pass unchanged


MODE_NAMES: tuple[str, ...] = tuple(m.value for m in NormMode)


def parse_mode(
    value: object, field: str = "mode", error: Callable[[str], Exception] = ValueError, extra: str = ""
) -> NormMode:
    """`value` (a NormMode or its string) as a NormMode; anything else raises `error` naming `field`, the allowed
    modes and what was given. `extra` is appended to the allowed list (e.g. " (or null = from the checkpoint)")."""
    if isinstance(value, str):
        try:
            return NormMode(value)
        except ValueError:
            pass
    raise error(f"{field} must be one of {MODE_NAMES}{extra}, got {value!r}")


def parse_optional_mode(
    value: object, field: str = "mode", error: Callable[[str], Exception] = ValueError, extra: str = ""
) -> NormMode | None:
    """`parse_mode`, with None passed through (a mode left to be read from elsewhere)."""
    return None if value is None else parse_mode(value, field, error, extra)
