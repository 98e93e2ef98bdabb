"""Per-block checks of the Pi0.5 building blocks against their published formulas or independent implementations.

Tolerances: float32 blocks agree to 1e-5 absolute (1e-6 where the computation is a handful of operations).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from policy_server.model.config import SiglipConfig, preset
from policy_server.model.layers import (
    MASKED_LOGIT,
    AdaptiveRMSNorm,
    GatedMLP,
    RMSNorm,
    apply_rope,
    attention,
    attention_bias,
    block_attention_mask,
    rope_cos_sin,
    sinusoidal_time_embedding,
)
from policy_server.model.pi05 import Pi05Model
from policy_server.model.rtc import guidance_weight, soft_mask
from policy_server.model.siglip import SiglipEncoderLayer

torch.manual_seed(0)


@pytest.fixture(autouse=True)
def no_grad() -> Iterator[None]:
    with torch.no_grad():
        yield


def test_rmsnorm_formula() -> None:
    norm = RMSNorm(8, eps=1e-6)
    with torch.no_grad():
        norm.weight.normal_()
    x = torch.randn(2, 3, 8)
    y, gate = norm(x)
    xn, w = x.numpy().astype(np.float64), norm.weight.detach().numpy().astype(np.float64)
    expected = xn / np.sqrt((xn**2).mean(-1, keepdims=True) + 1e-6) * (1 + w)
    np.testing.assert_allclose(y.numpy(), expected, atol=1e-5)
    assert gate is None


def test_adaptive_rmsnorm_formula() -> None:
    norm = AdaptiveRMSNorm(8, cond_dim=4, eps=1e-6)
    with torch.no_grad():
        norm.dense.weight.normal_()
        norm.dense.bias.normal_()
    x, c = torch.randn(2, 5, 8), torch.randn(2, 4)
    y, gate = norm(x, c)
    mod = c.numpy() @ norm.dense.weight.detach().numpy().T + norm.dense.bias.detach().numpy()
    scale, shift, g = mod[:, None, :8], mod[:, None, 8:16], mod[:, None, 16:]
    xn = x.numpy()
    expected = xn / np.sqrt((xn**2).mean(-1, keepdims=True) + 1e-6) * (1 + scale) + shift
    np.testing.assert_allclose(y.numpy(), expected, atol=1e-5)
    assert gate is not None
    np.testing.assert_allclose(np.broadcast_to(gate.numpy(), (2, 5, 8)), np.broadcast_to(g, (2, 5, 8)), atol=1e-6)


def test_adaptive_rmsnorm_is_identity_rms_at_init() -> None:
    # Zero-initialised dense: scale = shift = gate = 0, so y = rms(x) and the residual branch is closed.
    norm = AdaptiveRMSNorm(8, cond_dim=4, eps=1e-6)
    nn.init.zeros_(norm.dense.bias)
    x = torch.randn(1, 2, 8)
    y, gate = norm(x, torch.randn(1, 4))
    np.testing.assert_allclose(y, x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6), atol=1e-6)
    assert gate is not None and torch.count_nonzero(gate) == 0


def test_norms_refuse_the_wrong_conditioning() -> None:
    with pytest.raises(ValueError, match="takes no conditioning"):
        RMSNorm(4, 1e-6)(torch.randn(1, 4), torch.randn(1, 4))
    with pytest.raises(ValueError, match="needs the time conditioning"):
        AdaptiveRMSNorm(4, 4, 1e-6)(torch.randn(1, 4))


def test_gated_mlp_formula() -> None:
    mlp = GatedMLP(6, 10)
    x = torch.randn(3, 6)
    g, u, d = (m.weight.detach().numpy() for m in (mlp.gate_proj, mlp.up_proj, mlp.down_proj))
    a = x.numpy() @ g.T
    gelu = 0.5 * a * (1 + np.tanh(math.sqrt(2 / math.pi) * (a + 0.044715 * a**3)))
    np.testing.assert_allclose(mlp(x).detach().numpy(), (gelu * (x.numpy() @ u.T)) @ d.T, atol=1e-5)


def test_rope_matches_complex_rotation() -> None:
    # Rotate-half RoPE pairs dimension i with i + d/2 and rotates the pair by pos * base^(-2i/d).
    d, base = 8, 10_000.0
    pos = torch.tensor([[0, 1, 5, 17]])
    x = torch.randn(1, 2, 4, d)
    cos, sin = rope_cos_sin(pos, d, base, torch.float32)
    out = apply_rope(x, cos, sin).numpy()
    z = x.numpy()[..., : d // 2] + 1j * x.numpy()[..., d // 2 :]
    theta = pos.numpy()[0][:, None] * base ** (-np.arange(0, d, 2) / d)
    rotated = z * np.exp(1j * theta)
    np.testing.assert_allclose(out[..., : d // 2], rotated.real, atol=1e-5)
    np.testing.assert_allclose(out[..., d // 2 :], rotated.imag, atol=1e-5)


def test_rope_is_relative() -> None:
    # q.k after RoPE depends only on the position difference.
    d = 16
    q, k = torch.randn(1, 1, 1, d), torch.randn(1, 1, 1, d)

    def score(pq: int, pk: int) -> float:
        cq, sq = rope_cos_sin(torch.tensor([[pq]]), d, 10_000.0, torch.float32)
        ck, sk = rope_cos_sin(torch.tensor([[pk]]), d, 10_000.0, torch.float32)
        return float((apply_rope(q, cq, sq) * apply_rope(k, ck, sk)).sum())

    assert score(7, 3) == pytest.approx(score(104, 100), abs=1e-4)


def test_attention_matches_softmax_formula_with_grouped_heads() -> None:
    q, k, v = torch.randn(2, 4, 3, 5), torch.randn(2, 1, 6, 5), torch.randn(2, 1, 6, 5)
    allowed = torch.rand(2, 3, 6) > 0.3
    allowed[..., 0] = True
    out = attention(q, k, v, attention_bias(allowed), 0.5).numpy()
    for b in range(2):
        for h in range(4):
            logits = q[b, h].numpy() @ k[b, 0].numpy().T * 0.5
            logits = np.where(allowed[b].numpy(), logits, -np.inf)
            w = np.exp(logits - logits.max(-1, keepdims=True))
            w /= w.sum(-1, keepdims=True)
            np.testing.assert_allclose(out[b, :, h * 5 : (h + 1) * 5], w @ v[b, 0].numpy(), atol=1e-5)


def test_fully_masked_rows_stay_finite() -> None:
    # A padded query row with no allowed key must not produce NaN (the masked logit is finite).
    q, k, v = torch.randn(1, 1, 2, 4), torch.randn(1, 1, 3, 4), torch.randn(1, 1, 3, 4)
    allowed = torch.tensor([[[True, True, False], [False, False, False]]])
    out = attention(q, k, v, attention_bias(allowed), 1.0)
    assert torch.isfinite(out).all()
    assert MASKED_LOGIT > -3.4e38  # representable in bfloat16 and float32


def test_block_mask_examples_from_big_vision() -> None:
    pad = torch.ones(1, 6, dtype=torch.bool)
    causal = block_attention_mask(pad, torch.tensor([[1, 1, 1, 1, 1, 1]]))[0]
    assert torch.equal(causal, torch.tril(torch.ones(6, 6, dtype=torch.bool)))
    prefix_lm = block_attention_mask(pad, torch.tensor([[0, 0, 0, 1, 1, 1]]))[0]
    expected = torch.tril(torch.ones(6, 6, dtype=torch.bool))
    expected[:3, :3] = True
    assert torch.equal(prefix_lm, expected)
    pad[0, 2] = False
    padded = block_attention_mask(pad, torch.zeros(1, 6, dtype=torch.long))[0]
    assert not padded[:, 2].any() and not padded[2, :].any() and padded[0, 1]


def test_time_embedding_formula() -> None:
    t = torch.tensor([0.0, 0.5, 1.0])
    emb = sinusoidal_time_embedding(t, 8, 4e-3, 4.0).numpy()
    periods = 4e-3 * (4.0 / 4e-3) ** (np.arange(4) / 3)
    angles = 2 * np.pi * t.numpy().astype(np.float64)[:, None] / periods
    np.testing.assert_allclose(emb, np.concatenate([np.sin(angles), np.cos(angles)], 1), atol=1e-6)
    assert emb.dtype == np.float32


def test_siglip_layer_matches_torch_transformer_encoder_layer() -> None:
    cfg = SiglipConfig(width=16, num_heads=4, mlp_dim=32)
    ours = SiglipEncoderLayer(cfg).eval()
    ref = nn.TransformerEncoderLayer(16, 4, dim_feedforward=32, dropout=0.0, batch_first=True, norm_first=True,
                                     layer_norm_eps=1e-6, activation=lambda x: F.gelu(x, approximate="tanh")).eval()
    a = ours.self_attn
    with torch.no_grad():
        ref.self_attn.in_proj_weight.copy_(torch.cat([a.q_proj.weight, a.k_proj.weight, a.v_proj.weight]))
        ref.self_attn.in_proj_bias.copy_(torch.cat([a.q_proj.bias, a.k_proj.bias, a.v_proj.bias]))
        ref.self_attn.out_proj.weight.copy_(a.out_proj.weight)
        ref.self_attn.out_proj.bias.copy_(a.out_proj.bias)
        for src, dst in ((ours.layer_norm1, ref.norm1), (ours.layer_norm2, ref.norm2),
                         (ours.mlp.fc1, ref.linear1), (ours.mlp.fc2, ref.linear2)):
            dst.weight.copy_(src.weight)
            dst.bias.copy_(src.bias)
    x = torch.randn(2, 7, 16)
    with torch.no_grad():
        np.testing.assert_allclose(ours(x).numpy(), ref(x).numpy(), atol=1e-5)


def test_full_size_parameter_counts() -> None:
    # Built on the meta device: no memory. Figures from the published architecture.
    with torch.device("meta"):
        model = Pi05Model(preset("pi05"))
    pw = model.paligemma_with_expert

    def count(module: nn.Module) -> int:
        return sum(p.numel() for p in module.parameters())

    vocab, width = 257152, 2048
    ada = sum(count(m) for m in pw.expert.modules() if m.__class__.__name__ == "AdaptiveRMSNorm")
    assert ada == 37 * (1024 * 3072 + 3072)  # two adaRMSNorms per layer plus the final one
    assert count(pw.expert) - ada == pytest.approx(311e6, rel=0.01)  # Gemma 300M
    assert count(pw.llm) - vocab * width == pytest.approx(1.98e9, rel=0.01)  # Gemma 2B without embeddings
    assert count(pw.vision_tower) == pytest.approx(412e6, rel=0.01)  # SigLIP So400m/14
    assert model.cfg.prefix_len == 3 * 256 + 200


def test_rtc_soft_mask_example() -> None:
    # d = 2, H - s = 6, H = 10 -> 1, 1, 4/5, 3/5, 2/5, 1/5, 0, 0, 0, 0
    w = soft_mask(10, 2, 4).numpy()
    np.testing.assert_allclose(w, [1, 1, 0.8, 0.6, 0.4, 0.2, 0, 0, 0, 0], atol=1e-6)
    np.testing.assert_allclose(soft_mask(10, 2, 4, "zeros").numpy(), [1, 1] + [0] * 8)
    exp = soft_mask(10, 2, 4, "exp").numpy()
    assert exp[0] == pytest.approx(1.0) and exp[3] == pytest.approx(0.6 * (math.exp(0.6) - 1) / (math.e - 1))


def test_rtc_guidance_weight() -> None:
    assert guidance_weight(1.0, 5.0) == 5.0
    assert guidance_weight(0.0, 5.0) == 0.0
    t = 0.3
    assert guidance_weight(t, 100.0) == pytest.approx((t / (1 - t)) * (t**2 + (1 - t) ** 2) / t**2)
    assert guidance_weight(0.9, 2.0) == 2.0
