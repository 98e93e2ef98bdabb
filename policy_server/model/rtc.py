"""Real-time chunking (RTC) guidance math, in openpi's time convention (t = 1 noise, t = 0 data).

Black, Galliker, Levine (arXiv 2506.07339): while a chunk is being computed the robot keeps executing the
previous one, so the new chunk's first `d` actions are already committed. Guided denoising pulls the clean
estimate a_hat = x_t - t v towards the previous chunk's leftover Y with a soft mask W, using one
vector-Jacobian product per step:

    g = (W * (Y - a_hat))^T d a_hat / d x_t,   x <- x + dt (v - w g),   w = min(beta, (t/(1-t)) (t^2 + (1-t)^2) / t^2)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor


class RtcError(ValueError):
    """Inconsistent real-time chunking parameters (named in the message)."""


def soft_mask(horizon: int, delay: int, execution_horizon: int, schedule: str = "linear") -> Tensor:
    """W over the H chunk steps: 1 for i < d, linear decay to 0 at i = H - s, 0 afterwards.

    W_i = clip(1 - (i - d + 1) / (H - s - d + 1), 0, 1) for d <= i < H - s. `schedule="exp"` maps
    w -> w (e^w - 1) / (e - 1); `"zeros"` is the hard mask (1 for i < d, else 0).
    """
    h, d, s = horizon, delay, execution_horizon
    if not 0 <= d <= h:
        raise RtcError(f"inference delay d={d} must be in [0, H={h}]")
    if not d <= s <= h - d:
        raise RtcError(f"execution horizon s={s} must satisfy d={d} <= s <= H - d = {h - d}")
    i = torch.arange(h, dtype=torch.float64)
    w = torch.clamp(1 - (i - d + 1) / (h - s - d + 1), 0.0, 1.0)
    w = torch.where(i < d, torch.ones_like(w), w)
    w = torch.where(i >= h - s, torch.zeros_like(w), w)
    if schedule == "exp":
        w = w * (torch.exp(w) - 1) / (math.e - 1)
    elif schedule == "zeros":
        w = (i < d).to(torch.float64)
    elif schedule != "linear":
        raise RtcError(f"unknown RTC schedule '{schedule}'; expected linear, exp or zeros")
    return w.to(torch.float32)


def guidance_weight(t: float, max_guidance: float) -> float:
    """w(t) = min(beta, (t / (1 - t)) * (t^2 + (1 - t)^2) / t^2), with w = beta at t >= 1 (pure noise)."""
    if max_guidance < 0:
        raise RtcError(f"max guidance beta must be >= 0, got {max_guidance}")
    if t >= 1.0:
        return max_guidance
    if t <= 0.0:
        return 0.0
    value = (t / (1.0 - t)) * (t * t + (1.0 - t) ** 2) / (t * t)
    return min(max_guidance, value)


@dataclass(frozen=True)
class RtcGuidance:
    """Guidance inputs for one batch: Y [B, H, A] in normalized model space (zero beyond the leftover),
    W [H], and the clip beta."""

    previous: Tensor
    weights: Tensor
    max_guidance: float

    def validate(self, batch: int, horizon: int, action_dim: int) -> None:
        if tuple(self.previous.shape) != (batch, horizon, action_dim):
            raise RtcError(f"rtc previous chunk must be [{batch}, {horizon}, {action_dim}], "
                           f"got {list(self.previous.shape)}")
        if tuple(self.weights.shape) != (horizon,):
            raise RtcError(f"rtc weights must be [{horizon}], got {list(self.weights.shape)}")
        if not torch.isfinite(self.previous).all():
            raise RtcError("rtc previous chunk has non-finite values")
        if self.max_guidance < 0:
            raise RtcError(f"rtc max guidance must be >= 0, got {self.max_guidance}")
