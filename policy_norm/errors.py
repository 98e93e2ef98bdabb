"""Errors of the normalization layer.

Why a hierarchy: the server maps a bad request (strict range rejection) differently from a bad checkpoint
(refuse to start), and tools want to catch "anything normalization refused" in one place. Every message names
the field (file, feature, dimension by joint name) and what was expected.
"""

from __future__ import annotations


class NormalizationError(ValueError):
    """Base class: something about normalization is wrong; the message says what and where."""


class NormConfigError(NormalizationError):
    """A NormalizationConfig (or the 'normalization' object of a policy config) is invalid."""


class NormStatsError(NormalizationError):
    """Norm stats are missing, malformed, or do not fit the robot (dims, names, q99 <= q01, std ~ 0)."""


class StepError(NormalizationError):
    """A pipeline step got or produced a value of the wrong shape, dtype, or a non-finite value."""


class NormRangeError(NormalizationError):
    """Strict mode: a normalized value fell outside the configured range; the message names the joint."""


class SelfTestError(NormalizationError):
    """The startup self-test failed: round trip broken, or the data is not normalized by these stats."""
