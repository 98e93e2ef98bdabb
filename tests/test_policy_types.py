"""The policy type registry behind `serve --policy`: choices, required arguments, builders, batching defaults."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from policy_server import cli, policy_types
from policy_server.batching import BatchingConfig
from policy_server.policy import Policy
from policy_server.policy_types import PolicyRequest, PolicyType, get_policy_type, policy_type_names


def _args(*flags: str) -> argparse.Namespace:
    return cli.build_parser().parse_args(["serve", *flags])


def test_builtin_types_and_their_facts() -> None:
    assert policy_type_names() == ("dataset", "pi05")
    dataset, pi05 = get_policy_type("dataset"), get_policy_type("pi05")
    assert not dataset.batches_on_cuda and pi05.batches_on_cuda
    assert dataset.missing_argument(PolicyRequest()) == "--dataset PATH"
    assert pi05.missing_argument(PolicyRequest()) == "--checkpoint DIR"
    assert pi05.missing_argument(PolicyRequest(checkpoint=Path("c"))) is None
    with pytest.raises(ValueError, match="'pi05' is already registered"):
        policy_types.register_policy_type(pi05)
    with pytest.raises(ValueError, match=r"requires \['weights'\], which are not PolicyRequest fields"):
        policy_types.register_policy_type(PolicyType("x", build=pi05.build, requires={"weights": "--weights"}))


def test_missing_arguments_are_refused_by_name() -> None:
    with pytest.raises(SystemExit, match="--policy pi05 needs --checkpoint DIR"):
        cli.build_policy(_args("--policy", "pi05"))
    with pytest.raises(SystemExit, match="--policy dataset needs --dataset PATH"):
        cli.build_policy(_args())


def test_a_registered_type_is_served_without_touching_the_cli(monkeypatch: pytest.MonkeyPatch) -> None:
    """One registration: the --policy choice, the argument check, the builder and the batching default."""
    built: list[PolicyRequest] = []

    def build(request: PolicyRequest) -> Policy:
        built.append(request)
        raise RuntimeError("built")

    monkeypatch.setitem(policy_types._POLICY_TYPES, "remote", PolicyType(
        name="remote", build=build, requires={"checkpoint": "--checkpoint URL"}, batches_on_cuda=False,
        help="a policy served elsewhere"))
    with pytest.raises(SystemExit, match="--policy remote needs --checkpoint URL"):
        cli.build_policy(_args("--policy", "remote"))
    with pytest.raises(RuntimeError, match="built"):
        cli.build_policy(_args("--policy", "remote", "--checkpoint", "c", "--horizon", "7"))
    assert built == [PolicyRequest(checkpoint=Path("c"), horizon=7)]
    # No model to batch: off by default even where a model type would batch.
    monkeypatch.setattr(cli, "_serves_on_cuda", lambda device: True)
    assert cli.build_batching(_args("--policy", "remote", "--checkpoint", "c")) is None
    assert cli.build_batching(_args("--checkpoint", "c")) == BatchingConfig()
