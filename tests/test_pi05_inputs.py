"""The one Pi0.5 input transform: the served path and the training path give the model identical tensors.

The served side is the whole request path short of the socket (client-side fit, wire encoding, validation
against the spec, `Pi05Policy._prepare`) on the policy the server loads from the checkpoint; the training side
is `training.data.build_samples` with a transform built the way training builds it (its own pipeline and
tokenizer instances, read from the same files), on raw 240x320 dataset frames the model takes at 28x28.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from policy_norm.checkpoint import build_pipeline
from policy_norm.image_fit import fit_image
from policy_server.model.pi05 import ModelInputs
from policy_server.pi05_inputs import Pi05InputTransform, inputs_difference, model_pixels
from policy_server.pi05_policy import Pi05Policy, Pi05ServeOptions
from policy_server.policy_config import FILE_NAME, Pi05PolicyConfig
from policy_server.tokenizer import PromptTokenizer, TokenizerError, find_tokenizer_model
from policy_server.validate import ObservationInput, validate_request
from protos.dicts import request_from_dict
from tests.pi05_helpers import make_servable_checkpoint
from tests.wire_helpers import observation_for, sample_dataset
from training.data import Samples, build_samples, state_bin_width

EPISODE = 1


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two model slots, both fed by the sample dataset's cameras (training refuses a slot without a camera), and
    room for the sample tasks' prompts (training refuses to truncate one)."""
    changes: dict[str, object] = {"image_keys": ("base_0_rgb", "left_wrist_0_rgb"), "max_token_len": 96}
    return make_servable_checkpoint(tmp_path_factory.mktemp("ckpt") / "pi05_dummy", model_changes=changes)


@pytest.fixture(scope="module")
def policy(checkpoint: Path) -> Iterator[Pi05Policy]:
    policy = Pi05Policy(Pi05ServeOptions(checkpoint=checkpoint, device="cpu", warmup=False))
    yield policy
    policy.close()


@pytest.fixture(scope="module")
def training_transform(checkpoint: Path, policy: Pi05Policy) -> Pi05InputTransform:
    """Built as training builds it: pipeline from the checkpoint's stats, tokenizer from its model file."""
    config = Pi05PolicyConfig.load(checkpoint / FILE_NAME)
    cfg = policy.model.cfg
    tokenizer = PromptTokenizer.from_file(find_tokenizer_model(checkpoint), model_vocab_size=cfg.vocab_size)
    pipeline = build_pipeline(checkpoint, config.normalization)
    return Pi05InputTransform.from_policy_config(cfg, config, tokenizer, pipeline)


@pytest.fixture(scope="module")
def samples(training_transform: Pi05InputTransform) -> Samples:
    return build_samples(sample_dataset(), [EPISODE], training_transform)


def served_inputs(policy: Pi05Policy, step: int) -> ModelInputs:
    """Frame `step` of the sample episode as a client sends it and the server prepares it for the model."""
    obs = observation_for(sample_dataset(), EPISODE, step)
    method = policy.spec.preprocessing.image_resize
    sizes = {c.name: (c.height, c.width) for c in policy.spec.cameras}
    obs["images"] = {name: fit_image(rgb, *sizes[name], method) for name, rgb in obs["images"].items()}
    return policy._prepare(validate_request(request_from_dict(obs), policy.spec)).inputs


def assert_equal_inputs(served: ModelInputs, trained: ModelInputs) -> None:
    assert inputs_difference(served, trained) is None
    for a, b in zip([*served.images, *served.image_masks, served.tokens, served.token_masks],
                    [*trained.images, *trained.image_masks, trained.tokens, trained.token_masks], strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape
        assert torch.equal(a, b)


def test_served_and_training_inputs_are_identical(policy: Pi05Policy, samples: Samples) -> None:
    steps = [0, 37, len(samples) - 1]
    for step in steps:
        trained = samples.inputs([step])
        assert trained.batch_size == 1 and tuple(trained.images[0].shape) == (1, 3, 28, 28)
        assert all(bool(m.all()) for m in trained.image_masks)
        assert_equal_inputs(served_inputs(policy, step), trained)
    # A training batch is the served requests stacked (what the server's batched path builds).
    together = Pi05InputTransform.collate([served_inputs(policy, s) for s in steps])
    assert_equal_inputs(together, samples.inputs(steps))


def test_frames_are_fitted_and_scaled_once(policy: Pi05Policy, samples: Samples) -> None:
    raw = sample_dataset().episode(EPISODE).images("top")[5]
    assert raw.shape == (240, 320, 3)
    fitted = fit_image(raw, 28, 28, "resize_with_pad")
    np.testing.assert_array_equal(samples.images[0][5].numpy(), fitted)
    np.testing.assert_array_equal(policy.transform.fit(raw), fitted)
    pixels = model_pixels(torch.tensor([[[[0, 255, 51]]]], dtype=torch.uint8))
    assert pixels.shape == (1, 3, 1, 1) and pixels.dtype == torch.float32
    torch.testing.assert_close(pixels.flatten(), torch.tensor([-1.0, 1.0, 51 / 255 * 2 - 1]), rtol=0, atol=0)


def test_a_slot_without_its_camera_is_masked(policy: Pi05Policy) -> None:
    transform = policy.transform
    obs = ObservationInput(images={"top": np.full((28, 28, 3), 255, np.uint8)}, image_timestamps={},
                           state=sample_dataset().episode(0).states[0].astype(np.float32), prompt="fold",
                           timestamp=0.0, episode_index=0, step_index=0)
    inputs = transform(obs).inputs
    slots = dict(transform.slot_cameras)
    top = list(slots.values()).index("top")
    wrist = list(slots.values()).index("left_wrist")
    assert bool(inputs.image_masks[top].all()) and bool((inputs.images[top] == 1.0).all())
    assert not bool(inputs.image_masks[wrist].any()) and bool((inputs.images[wrist] == 0.0).all())


def test_the_prompt_carries_the_state_bins_and_strict_refuses_truncation(policy: Pi05Policy) -> None:
    transform = policy.transform
    state = sample_dataset().episode(0).states[3].astype(np.float32)
    encoded = transform.encode_prompt(state, "  fold the towel ")
    prepared, _ = transform.pipeline.prepare(state)
    assert prepared.state_bins is not None
    np.testing.assert_array_equal(encoded.state_bins, prepared.state_bins)
    np.testing.assert_array_equal(encoded.state, prepared.state)
    expected = transform.tokenizer.tokenize_pi05("fold the towel", prepared.state_bins,
                                                 max_len=transform.cfg.max_token_len)
    np.testing.assert_array_equal(encoded.tokens, expected.tokens)
    np.testing.assert_array_equal(encoded.token_mask, expected.mask)
    long_task = "fold the towel " * 200
    assert transform.encode_prompt(state, long_task).truncated_tokens > 0
    with pytest.raises(TokenizerError, match="longer than max_len"):
        transform.encode_prompt(state, long_task, strict=True)


def test_an_unknown_model_slot_is_refused_by_name(policy: Pi05Policy) -> None:
    t = policy.transform
    with pytest.raises(ValueError, match=r"model slots \['nope'\] do not exist"):
        Pi05InputTransform(t.cfg, {"top": "nope"}, t.tokenizer, t.pipeline)


def test_training_prompt_jitter_moves_bins_by_about_one_and_leaves_the_rest_alone(
        training_transform: Pi05InputTransform, samples: Samples) -> None:
    """The jittered prompts differ from the exact ones only in state bins (by a bin or two, seeded), the images
    and exact prompts are untouched, and `inputs(idx, jittered)` picks per frame."""
    jittered = build_samples(sample_dataset(), [EPISODE], training_transform, state_jitter_bins=1.0, seed=3)
    assert jittered.jittered_tokens is not None and jittered.jittered_token_masks is not None
    torch.testing.assert_close(jittered.tokens, samples.tokens, rtol=0, atol=0)
    n = len(samples)
    bins_exact = np.stack([training_transform.encode_prompt(s, "x").state_bins for s in samples.states])
    states = jittered.states.astype(np.float64)
    width = np.stack([state_bin_width(training_transform, s) for s in states])
    assert (width > 0).any() and np.isfinite(width).all()
    changed = int((jittered.jittered_tokens != jittered.tokens).any(dim=1).sum())
    assert 0.3 * n < changed <= n  # most frames get a different prompt
    # Recompute one jittered prompt's bins from its tokens' text: they stay within a few bins of the exact ones.
    text = training_transform.tokenizer.decode(jittered.jittered_tokens[5][jittered.jittered_token_masks[5]].tolist())
    bins = [int(v) for v in text.split("State: ")[1].split(";")[0].split()]
    assert np.abs(np.asarray(bins) - bins_exact[5]).max() <= 5
    pick = torch.tensor([True, False])
    both = jittered.inputs([5, 5], pick)
    assert torch.equal(both.tokens[0], jittered.jittered_tokens[5]) and torch.equal(both.tokens[1], samples.tokens[5])
    with pytest.raises(ValueError, match="without state jitter"):
        samples.inputs([5], pick[:1])
    with pytest.raises(ValueError, match="state_jitter_bins"):
        build_samples(sample_dataset(), [EPISODE], training_transform, state_jitter_bins=-1.0)
