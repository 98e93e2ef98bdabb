"""policy_config.json's image_resize speaks the shared method names, and refuses "none" for a fixed-size model."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from policy_norm.image_fit import RESIZE_METHODS
from policy_server.policy_config import Pi05PolicyConfig, PolicyConfigError

DEMO_CONFIG = Path(__file__).resolve().parents[1] / "data" / "demo_policy" / "policy_config.json"


def test_every_fitting_method_is_accepted_and_none_is_refused_by_name() -> None:
    config = Pi05PolicyConfig.load(DEMO_CONFIG)
    for method in RESIZE_METHODS:
        if method == "none":
            with pytest.raises(PolicyConfigError, match=r"image_resize: 'none' cannot serve"):
                dataclasses.replace(config, image_resize=method)
        else:
            assert dataclasses.replace(config, image_resize=method).image_resize == method
    with pytest.raises(PolicyConfigError, match=r"image_resize must be one of .*got 'pad'"):
        dataclasses.replace(config, image_resize="pad")
