"""Execution paths of Pi0.5 (fused attention, captured flow loop) against the eager reference.

Stated tolerances (as in test_model_pi05): float32 paths agree with the eager reference to 1e-5; bfloat16 to 0.05
absolute on outputs of unit scale. The compile test runs torch.compile on the dummy preset (tens of seconds on
2 CPU cores); the CUDA-graph test needs a CUDA device and says so when it has none.
"""

from __future__ import annotations

import pytest
import torch

from policy_server.model.dtype_policy import DtypePolicy, apply_dtype_policy
from policy_server.model.execution import ExecutionConfig, ExecutionConfigError
from policy_server.model.layers import attention, attention_bias, attention_mask, sdpa_attention
from policy_server.model.pi05 import ModelOutputError, Pi05Model, _raise_on_non_finite, flow_times
from tests.model_helpers import random_inputs, random_model

EAGER = ExecutionConfig(attention="eager", flow_capture="none")
SDPA = ExecutionConfig(attention="sdpa", flow_capture="none")


def _sample(model: Pi05Model, execution: ExecutionConfig, **kwargs: object) -> torch.Tensor:
    model.set_execution(execution)
    inputs = random_inputs(model.cfg, prompt_lengths=(5, 17),
                           present=(True, False, True)[: len(model.cfg.image_keys)] or None)
    noise = model.sample_noise(2, seed=3, device=torch.device("cpu"))
    return model.sample_actions(inputs, noise, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("kv_heads", [1, 2])  # one KV head: an expanded view; several: enable_gqa
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_sdpa_attention_equals_eager_with_grouped_heads_and_mask(dtype: torch.dtype, kv_heads: int) -> None:
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(2, 8, 7, 16, generator=gen).to(dtype)
    k = torch.randn(2, kv_heads, 11, 16, generator=gen).to(dtype)
    v = torch.randn(2, kv_heads, 11, 16, generator=gen).to(dtype)
    allowed = torch.rand(2, 7, 11, generator=gen) > 0.4
    allowed[..., 0] = True
    eager = attention(q, k, v, attention_mask(allowed, "eager"), 0.25)
    fused = sdpa_attention(q, k, v, attention_mask(allowed, "sdpa"), 0.25)
    assert fused.shape == eager.shape == (2, 7, 8 * 16) and fused.dtype == dtype
    tolerance = 1e-5 if dtype == torch.float32 else 0.05
    torch.testing.assert_close(fused.float(), eager.float(), atol=tolerance, rtol=0)


def test_sdpa_guards_fully_masked_rows() -> None:
    # A padding query with no allowed key: the guarded mask lets it see every key, so no kernel can give NaN
    # (which the next layer's keys/values would carry to valid tokens); allowed rows are untouched.
    allowed = torch.tensor([[[True, True, False], [False, False, False]]])
    mask = attention_mask(allowed, "sdpa")
    assert mask.shape == (1, 1, 2, 3)
    assert torch.equal(mask[0, 0, 0], allowed[0, 0]) and bool(mask[0, 0, 1].all())
    q, k, v = torch.randn(1, 2, 2, 4), torch.randn(1, 1, 3, 4), torch.randn(1, 1, 3, 4)
    out = sdpa_attention(q, k, v, mask, 0.5)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out[:, 0], attention(q, k, v, attention_bias(allowed), 0.5)[:, 0], atol=1e-6, rtol=0)


@pytest.mark.parametrize("preset_name", ["dummy", "demo", "tiny"])
def test_sdpa_model_equals_eager_on_padded_prompts(preset_name: str) -> None:
    model = random_model(preset_name, seed=5)
    eager = _sample(model, EAGER)
    fused = _sample(model, SDPA)
    assert torch.isfinite(fused).all()
    torch.testing.assert_close(fused, eager, atol=1e-5, rtol=0)


def test_sdpa_uncached_equals_eager_uncached() -> None:
    model = random_model("dummy", seed=6)
    torch.testing.assert_close(_sample(model, SDPA, use_cache=False), _sample(model, EAGER, use_cache=False),
                               atol=1e-5, rtol=0)


def test_sdpa_bf16_within_bf16_tolerance() -> None:
    reference = _sample(random_model("dummy", seed=4), EAGER)
    bf16 = random_model("dummy", seed=4)
    apply_dtype_policy(bf16, DtypePolicy.BFLOAT16)
    fused, eager = _sample(bf16, SDPA), _sample(bf16, EAGER)
    assert fused.dtype == torch.float32
    assert (fused - eager).abs().max() < 0.05, float((fused - eager).abs().max())
    assert (fused - reference).abs().max() < 0.05, float((fused - reference).abs().max())


def test_compiled_flow_equals_eager() -> None:
    """torch.compile on CPU (inductor, C++) of the flow step, batch of 2 with padding. The compiled prefix
    (`compile_prefix`) is held to the same reference by `bench/model.py paths` (its "max abs diff" column), not
    here: a second compile would double this test's time."""
    model = random_model("dummy", seed=7)
    eager = _sample(model, EAGER)
    compiled = _sample(model, ExecutionConfig(attention="sdpa", flow_capture="compile"))
    torch.testing.assert_close(compiled, eager, atol=1e-5, rtol=0)
    again = _sample(model, ExecutionConfig(attention="sdpa", flow_capture="compile"))
    torch.testing.assert_close(again, compiled, atol=0, rtol=0)  # the compiled step is reused, deterministic


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the CUDA-graph flow loop needs a CUDA device")
def test_cuda_graph_flow_equals_eager_per_batch_size() -> None:
    model = random_model("dummy", seed=8).to("cuda")
    for batch in (1, 2, 1):  # recorded per batch size; replaying batch 1 again reuses its graph
        inputs = random_inputs(model.cfg, batch=batch, prompt_lengths=(5, 17))
        inputs.images = [i.cuda() for i in inputs.images]
        inputs.image_masks = [m.cuda() for m in inputs.image_masks]
        inputs.tokens, inputs.token_masks = inputs.tokens.cuda(), inputs.token_masks.cuda()
        noise = model.sample_noise(batch, seed=batch, device=torch.device("cuda"))
        model.set_execution(EAGER)
        eager = model.sample_actions(inputs, noise)
        model.set_execution(ExecutionConfig(attention="sdpa", flow_capture="cuda_graph"))
        graphed = model.sample_actions(inputs, noise)
        torch.testing.assert_close(graphed, eager, atol=1e-4, rtol=0)  # TF32/kernel choice on GPU


def test_captured_flow_names_the_first_non_finite_step() -> None:
    times = flow_times(10, torch.device("cpu"))
    finite = torch.ones(10, dtype=torch.bool)
    _raise_on_non_finite(finite, times)
    finite[3:] = False
    with pytest.raises(ModelOutputError, match=r"after flow step 3 \(t = 0.700\)"):
        _raise_on_non_finite(finite, times)


def test_flow_times_follow_the_plain_loop() -> None:
    times = flow_times(10, torch.device("cpu"))
    expected, t, dt = [], torch.tensor(1.0), torch.tensor(-0.1)
    while t >= -dt / 2:
        expected.append(float(t))
        t = t + dt
    assert times.dtype == torch.float32 and times.tolist() == expected


def test_execution_config_refuses_by_name() -> None:
    with pytest.raises(ExecutionConfigError, match="attention must be one of"):
        ExecutionConfig(attention="flash")
    with pytest.raises(ExecutionConfigError, match="flow_capture must be one of"):
        ExecutionConfig(flow_capture="graph")
    with pytest.raises(ExecutionConfigError, match="'cuda_graph' needs a CUDA device"):
        ExecutionConfig(flow_capture="cuda_graph").resolve(torch.device("cpu"))
    assert ExecutionConfig(flow_capture="auto").resolve(torch.device("cpu")).flow_capture == "none"
    assert ExecutionConfig(flow_capture="auto").resolve(torch.device("cuda")).flow_capture == "cuda_graph"


def test_rtc_guided_sampling_runs_with_a_capture_set() -> None:
    # Guidance needs autograd through the expert: with a capture set it still runs (the plain loop).
    from policy_server.model.rtc import RtcGuidance, soft_mask

    model = random_model("dummy", seed=9)
    inputs = random_inputs(model.cfg, batch=1)
    noise = model.sample_noise(1, seed=0, device=torch.device("cpu"))
    h, a = model.cfg.action_horizon, model.cfg.action_dim
    rtc = RtcGuidance(previous=torch.zeros(1, h, a), weights=soft_mask(h, 2, 6, "exp"), max_guidance=5.0)
    model.set_execution(SDPA)
    plain = model.sample_actions(inputs, noise, rtc=rtc)
    model.set_execution(ExecutionConfig(attention="sdpa", flow_capture="compile"))
    captured_set = model.sample_actions(inputs, noise, rtc=rtc)
    torch.testing.assert_close(captured_set, plain, atol=0, rtol=0)


def test_serve_flags_reach_the_policy_request() -> None:
    from policy_server import cli

    args = cli.build_parser().parse_args(["serve", "--checkpoint", "c", "--device", "cpu", "--attention", "eager",
                                          "--flow-capture", "compile", "--compile-prefix", "--max-batch", "3"])
    request = cli.policy_request(args)
    assert (request.attention, request.flow_capture, request.compile_prefix) == ("eager", "compile", True)
    assert request.warmup_max_batch == 3  # captured loops are made for every batch size the server will run
    defaults = cli.policy_request(cli.build_parser().parse_args(["serve", "--checkpoint", "c", "--device", "cpu"]))
    assert (defaults.attention, defaults.flow_capture, defaults.compile_prefix) == ("sdpa", "auto", False)
    assert defaults.warmup_max_batch == 1


def test_policy_refuses_a_cuda_graph_on_cpu_before_loading() -> None:
    from pathlib import Path

    from policy_server.pi05_policy import Pi05Policy, Pi05ServeOptions
    from policy_server.policy_config import PolicyConfigError

    with pytest.raises(PolicyConfigError, match="flow_capture 'cuda_graph' needs a CUDA device"):
        Pi05Policy(Pi05ServeOptions(checkpoint=Path("no-such-checkpoint"), device="cpu", flow_capture="cuda_graph"))
