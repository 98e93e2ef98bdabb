"""Pi0.5 prompt state bins exactly as the trainers write them, held against LeRobot 0.6.1's own output.

The golden prompts in tests/golden/lerobot/pi05_state_prompts.json were built by LeRobot's
`Pi05PrepareStateTokenizerProcessorStep` (tests/golden/lerobot/make_golden.py, run in LeRobot's own environment):
`np.digitize(s, np.linspace(-1, 1, 257)[:-1]) - 1` with no clipping, so a value below -1 is written "-1".
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from policy_norm.numeric import discretize_state
from policy_server.pi05_policy import Pi05Policy, Pi05ServeOptions
from policy_server.tokenizer import PromptTokenizer, TokenizerError
from tests.pi05_helpers import make_servable_checkpoint
from tests.wire_helpers import sample_dataset

GOLDEN = Path(__file__).parent / "golden" / "lerobot" / "pi05_state_prompts.json"


def _golden_cases() -> list[dict[str, object]]:
    cases: list[dict[str, object]] = json.loads(GOLDEN.read_text())["cases"]
    return cases


@pytest.mark.parametrize("case", _golden_cases(), ids=lambda c: str(c["task"])[:12])
def test_prompt_text_equals_lerobot_for_states_below_at_and_above_the_range(case: dict[str, object]) -> None:
    state = np.asarray(case["state"], dtype=np.float32)  # LeRobot binned the float32 tensor
    bins, below, above = discretize_state(state)
    assert PromptTokenizer.build_pi05_prompt(str(case["task"]), bins) == case["prompt"]
    assert bool(below.any())  # every golden case holds a value below -1 ...
    assert "-1 " in str(case["prompt"]) or "-1;" in str(case["prompt"])  # ... and LeRobot wrote it as "-1"


def test_the_tokenizer_takes_what_the_trainers_emit_and_nothing_else() -> None:
    PromptTokenizer.build_pi05_prompt("t", [-1, 0, 255])
    for impossible in (-2, 256):
        with pytest.raises(TokenizerError, match=r"\[-1, 255\]"):
            PromptTokenizer.build_pi05_prompt("t", [0, impossible])


@pytest.fixture(scope="module")
def lerobot_policy(tmp_path_factory: pytest.TempPathFactory) -> Pi05Policy:
    checkpoint = make_servable_checkpoint(tmp_path_factory.mktemp("lerobot"), layout="lerobot")
    policy = Pi05Policy(Pi05ServeOptions(checkpoint=checkpoint, device="cpu", warmup=False))
    assert policy.load_report.layout == "lerobot"
    return policy


def test_lerobot_checkpoint_prompt_has_minus_one_at_the_joint_below_q01(lerobot_policy: Pi05Policy) -> None:
    pipeline = lerobot_policy.pipeline
    names = pipeline.config.state_names
    joint = 3
    q01, q99 = pipeline.stats.state.q01, pipeline.stats.state.q99
    assert q01 is not None and q99 is not None
    state = sample_dataset().episode(0).states[10].astype(np.float32).copy()
    state[joint] = np.float32(q01[joint] - 0.25 * (q99[joint] - q01[joint]))  # normalized about -1.5

    encoded = lerobot_policy.transform.encode_prompt(state, "pick up the cube")
    text = lerobot_policy.tokenizer.decode(encoded.tokens[: encoded.num_tokens].tolist())
    bins_text = text.split("State: ")[1].split(";")[0].split(" ")
    assert bins_text[joint] == "-1"
    assert all(int(b) >= 0 for i, b in enumerate(bins_text) if i != joint)
    expected, _, _ = discretize_state(encoded.report.state[joint].normalized_min)
    assert int(expected) == -1

    field = f"observation.state[{joint}] ({names[joint]})"
    named = [w for w in encoded.report.warnings if w.field == field]
    assert named, [w.field for w in encoded.report.warnings]
    assert "its prompt bin is -1" in named[0].message
    assert encoded.report.state_bins_out_of_range == 1
