"""Behaviour of the whole Pi0.5 model: caching, masking, batching, flow integration, RTC, dtype policy.

Stated tolerances: cached vs uncached denoising agree to 1e-5 (float32); bfloat16 vs float32 on the same weights
agree to 0.05 absolute on outputs of unit scale (dummy and tiny sizes; bf16 has an 8-bit mantissa, ~0.4% per op).
"""

from __future__ import annotations

import pytest
import torch

from policy_server.model.dtype_policy import DtypePolicy, DtypePolicyError, apply_dtype_policy
from policy_server.model.pi05 import ModelInputError, ModelInputs, ModelOutputError, Pi05Model
from policy_server.model.rtc import RtcError, RtcGuidance, soft_mask
from tests.model_helpers import random_inputs, random_model


@pytest.fixture(scope="module")
def model() -> Pi05Model:
    return random_model("dummy")


def test_cached_and_uncached_denoising_agree(model: Pi05Model) -> None:
    inputs = random_inputs(model.cfg, present=(True, False, True))
    noise = model.sample_noise(2, seed=0, device=torch.device("cpu"))
    cached = model.sample_actions(inputs, noise)
    uncached = model.sample_actions(inputs, noise, use_cache=False)
    assert cached.shape == (2, model.cfg.action_horizon, model.cfg.action_dim)
    torch.testing.assert_close(cached, uncached, atol=1e-5, rtol=0)
    assert cached.abs().mean() > 0.1  # not a degenerate all-zero output


def test_seeded_noise_is_reproducible(model: Pi05Model) -> None:
    inputs = random_inputs(model.cfg)
    a = model.sample_actions(inputs, seed=7)
    b = model.sample_actions(inputs, seed=7)
    c = model.sample_actions(inputs, seed=8)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_batch_equals_individual_runs(model: Pi05Model) -> None:
    inputs = random_inputs(model.cfg, batch=2, prompt_lengths=(5, 21))
    noise = model.sample_noise(2, seed=3, device=torch.device("cpu"))
    batched = model.sample_actions(inputs, noise)
    for b in range(2):
        single = ModelInputs([i[b : b + 1] for i in inputs.images], [m[b : b + 1] for m in inputs.image_masks],
                             inputs.tokens[b : b + 1], inputs.token_masks[b : b + 1])
        torch.testing.assert_close(model.sample_actions(single, noise[b : b + 1]), batched[b : b + 1],
                                   atol=1e-5, rtol=0)


def test_padding_and_absent_cameras_are_invisible(model: Pi05Model) -> None:
    # Changing padded prompt tokens or the pixels of an absent camera must not change the actions.
    inputs = random_inputs(model.cfg, present=(True, False, True), prompt_lengths=(6, 6))
    noise = model.sample_noise(2, seed=1, device=torch.device("cpu"))
    base = model.sample_actions(inputs, noise)
    tokens = inputs.tokens.clone()
    tokens[:, 10:] = 77
    images = list(inputs.images)
    images[1] = torch.rand_like(images[1]) * 2 - 1
    changed = ModelInputs(images, inputs.image_masks, tokens, inputs.token_masks)
    torch.testing.assert_close(model.sample_actions(changed, noise), base, atol=1e-6, rtol=0)
    # ...while a visible token does change them.
    tokens[:, 3] = (tokens[:, 3] + 1) % model.cfg.vocab_size
    visible = ModelInputs(inputs.images, inputs.image_masks, tokens, inputs.token_masks)
    assert not torch.allclose(model.sample_actions(visible, noise), base, atol=1e-4)


def test_flow_integration_times_follow_openpi(model: Pi05Model, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[float] = []
    original = Pi05Model.expert_velocity

    def recording(self: Pi05Model, kv: object, ctx: object, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        seen.append(float(t[0]))
        return torch.ones_like(x)

    monkeypatch.setattr(Pi05Model, "expert_velocity", recording)
    inputs = random_inputs(model.cfg)
    noise = torch.zeros(2, model.cfg.action_horizon, model.cfg.action_dim)
    out = model.sample_actions(inputs, noise)
    expected_t = []
    t, dt = torch.tensor(1.0), torch.tensor(-0.1)
    while t >= -dt / 2:
        expected_t.append(float(t))
        t = t + dt
    assert seen == expected_t and len(seen) == 10
    torch.testing.assert_close(out, torch.full_like(out, -1.0), atol=1e-5, rtol=0)  # x_0 = eps - sum(v)/N
    monkeypatch.setattr(Pi05Model, "expert_velocity", original)


def test_nan_output_names_the_step(model: Pi05Model, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"n": 0}

    def bad(self: Pi05Model, kv: object, ctx: object, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        calls["n"] += 1
        return torch.full_like(x, float("nan")) if calls["n"] == 4 else torch.zeros_like(x)

    monkeypatch.setattr(Pi05Model, "expert_velocity", bad)
    with pytest.raises(ModelOutputError, match=r"after flow step 3 \(t = 0.700\)"):
        model.sample_actions(random_inputs(model.cfg), seed=0)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda i: i.tokens.__setitem__((0, 2), 10**6), "token id 1000000 at \\[0, 2\\] is outside the vocabulary"),
        (lambda i: i.tokens.__setitem__((1, 1), -1), "token id -1 at \\[1, 1\\]"),
        (lambda i: i.images.__setitem__(0, i.images[0] * 127.5 + 127.5), "looks like 0..255 pixels"),
        (lambda i: i.images.__setitem__(1, i.images[1][:, :, :-1]), "image 'left_wrist_0_rgb': expected float32"),
        (lambda i: i.image_masks.pop(), "expected 3 images and masks"),
        (lambda i: i.token_masks.__setitem__((0, 0), False), "must start with a valid token"),
    ],
)
def test_bad_inputs_are_refused_by_name(model: Pi05Model, change: object, message: str) -> None:
    inputs = random_inputs(model.cfg)
    change(inputs)  # type: ignore[operator]
    with pytest.raises(ModelInputError, match=message):
        model.sample_actions(inputs, seed=0)


def test_rtc_with_zero_guidance_equals_plain_sampling(model: Pi05Model) -> None:
    inputs = random_inputs(model.cfg)
    noise = model.sample_noise(2, seed=5, device=torch.device("cpu"))
    h, a = model.cfg.action_horizon, model.cfg.action_dim
    previous = torch.randn(2, h, a)
    rtc = RtcGuidance(previous=previous, weights=soft_mask(h, 2, 4), max_guidance=0.0)
    assert torch.equal(model.sample_actions(inputs, noise, rtc=rtc), model.sample_actions(inputs, noise))


def test_rtc_guidance_pulls_the_committed_actions_onto_the_previous_chunk() -> None:
    model = random_model("dummy", seed=3)
    inputs = random_inputs(model.cfg)
    h, d = model.cfg.action_horizon, 3
    noise = model.sample_noise(2, seed=9, device=torch.device("cpu"))
    plain = model.sample_actions(inputs, noise)
    previous = plain + 0.5 * torch.randn(plain.shape, generator=torch.Generator().manual_seed(0))
    rtc = RtcGuidance(previous=previous, weights=soft_mask(h, d, 4), max_guidance=10.0)
    guided = model.sample_actions(inputs, noise, rtc=rtc)
    err_plain = (plain[:, :d] - previous[:, :d]).abs().mean()
    err_guided = (guided[:, :d] - previous[:, :d]).abs().mean()
    assert err_guided < 0.2 * err_plain, (float(err_guided), float(err_plain))
    # Past the guided window the chunk is free: it is not forced onto the previous one.
    tail = slice(h - 4, h)
    assert (guided[:, tail] - previous[:, tail]).abs().mean() > 2 * err_guided
    with pytest.raises(RtcError, match="rtc previous chunk must be"):
        model.sample_actions(inputs, noise, rtc=RtcGuidance(previous[:, :5], soft_mask(h, d, 4), 1.0))


def test_dtype_policy_is_asserted_at_run_time(model: Pi05Model) -> None:
    m = random_model("dummy")
    m.paligemma_with_expert.llm.layers[0].mlp.up_proj.to(torch.bfloat16)  # converted behind the model's back
    with pytest.raises(DtypePolicyError, match=r"'paligemma_with_expert\..*up_proj.weight' is torch.bfloat16 .* "
                                               r"policy 'float32'"):
        m.sample_actions(random_inputs(m.cfg), seed=0)


def test_bf16_agrees_with_fp32_within_tolerance() -> None:
    fp32 = random_model("dummy", seed=4)
    bf16 = random_model("dummy", seed=4)
    apply_dtype_policy(bf16, DtypePolicy.BFLOAT16)
    assert bf16.paligemma_with_expert.llm.layers[0].mlp.up_proj.weight.dtype == torch.bfloat16
    assert bf16.paligemma_with_expert.expert.layers[0].input_layernorm.dense.weight.dtype == torch.float32
    assert bf16.action_out_proj.weight.dtype == torch.float32
    inputs = random_inputs(fp32.cfg)
    noise = fp32.sample_noise(2, seed=2, device=torch.device("cpu"))
    a, b = fp32.sample_actions(inputs, noise), bf16.sample_actions(inputs, noise)
    assert b.dtype == torch.float32
    assert (a - b).abs().max() < 0.05, float((a - b).abs().max())
    assert (a - b).abs().max() > 0  # really ran in bf16
