"""Sizes of the Pi0.5 model, as named variants, so one code path builds the full model and small test models.

Variants follow openpi's names where they exist (`gemma_2b`, `gemma_300m`, `dummy`) and add vision variants
(`so400m_14` is PaliGemma's SigLIP; `tiny` and `dummy` are for benchmarks and tests, `demo` is the embedded demo
policy's).
"""

from __future__ import annotations

import difflib
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, TypeVar

PALIGEMMA_VOCAB_SIZE = 257152
# An unknown config key at least this close (difflib ratio) to a known one is taken for its misspelling.
KEY_TYPO_CUTOFF = 0.85


class ModelConfigError(ValueError):
    """A model configuration is inconsistent or names an unknown variant."""


@dataclass(frozen=True)
class GemmaConfig:
    width: int
    depth: int
    mlp_dim: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_eps: float = 1e-6
    rope_max_wavelength: float = 10_000.0


@dataclass(frozen=True)
class SiglipConfig:
    image_size: int = 224
    patch_size: int = 14
    width: int = 1152
    depth: int = 27
    mlp_dim: int = 4304
    num_heads: int = 16
    layer_norm_eps: float = 1e-6

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2


GEMMA_VARIANTS: dict[str, GemmaConfig] = {
    "gemma_2b": GemmaConfig(width=2048, depth=18, mlp_dim=16_384, num_heads=8, num_kv_heads=1, head_dim=256),
    "gemma_300m": GemmaConfig(width=1024, depth=18, mlp_dim=4096, num_heads=8, num_kv_heads=1, head_dim=256),
    "dummy": GemmaConfig(width=64, depth=4, mlp_dim=128, num_heads=8, num_kv_heads=1, head_dim=16),
    # Between dummy and full size: what CPU benchmarks use.
    "gemma_tiny": GemmaConfig(width=256, depth=4, mlp_dim=1024, num_heads=8, num_kv_heads=1, head_dim=32),
    "gemma_tiny_expert": GemmaConfig(width=128, depth=4, mlp_dim=512, num_heads=8, num_kv_heads=1, head_dim=32),
    # The embedded demo policy (training/): small enough to train on 2 CPU cores in minutes.
    "gemma_demo": GemmaConfig(width=128, depth=4, mlp_dim=512, num_heads=4, num_kv_heads=1, head_dim=32),
    "gemma_demo_expert": GemmaConfig(width=64, depth=4, mlp_dim=256, num_heads=4, num_kv_heads=1, head_dim=32),
}

SIGLIP_VARIANTS: dict[str, SiglipConfig] = {
    "so400m_14": SiglipConfig(),
    "tiny": SiglipConfig(image_size=224, patch_size=14, width=128, depth=2, mlp_dim=256, num_heads=4),
    "dummy": SiglipConfig(image_size=28, patch_size=14, width=32, depth=1, mlp_dim=64, num_heads=2),
    # 96x96 images in 12-pixel patches: 64 tokens per camera.
    "demo": SiglipConfig(image_size=96, patch_size=12, width=64, depth=2, mlp_dim=128, num_heads=2),
}

# Pi0.5 camera slots, in prefix order.
DEFAULT_IMAGE_KEYS = ("base_0_rgb", "left_wrist_0_rgb", "right_wrist_0_rgb")
# The variant name written for sizes that match no named variant (they travel as explicit sizes instead).
CUSTOM_VARIANT = "custom"
_Sizes = TypeVar("_Sizes", GemmaConfig, SiglipConfig)
# Fields of the explicit-size objects and the dataclass each is built into.
SIZE_FIELDS: dict[str, type[Any]] = {
    "llm_sizes": GemmaConfig, "expert_sizes": GemmaConfig, "vision_sizes": SiglipConfig,
}


def sizes_from_dict(kind: type[_Sizes], data: Any, where: str) -> _Sizes:
    """Build explicit sizes from a JSON object, refusing unknown or missing fields by name."""
    if isinstance(data, kind):
        return data
    if not isinstance(data, dict):
        raise ModelConfigError(f"{where}: expected an object of {kind.__name__} fields, got {type(data).__name__}")
    names = {f.name for f in fields(kind)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ModelConfigError(f"{where}: unknown {kind.__name__} fields {unknown}; known: {sorted(names)}")
    try:
        sizes = kind(**data)
    except TypeError as exc:
        raise ModelConfigError(f"{where}: {exc}") from None
    for f in fields(kind):
        value = getattr(sizes, f.name)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
            raise ModelConfigError(f"{where}.{f.name}: expected a positive number, got {value!r}")
    return sizes


def named_variant(table: dict[str, _Sizes], sizes: _Sizes) -> str | None:
    """The name of the variant with exactly these sizes, if any (so a converted checkpoint keeps a stock name)."""
    return next((name for name, known in table.items() if known == sizes), None)


@dataclass(frozen=True)
class Pi05Config:
    paligemma_variant: str = "gemma_2b"
    action_expert_variant: str = "gemma_300m"
    vision_variant: str = "so400m_14"
    action_dim: int = 32
    action_horizon: int = 50
    max_token_len: int = 200
    num_steps: int = 10
    vocab_size: int = PALIGEMMA_VOCAB_SIZE
    image_keys: tuple[str, ...] = DEFAULT_IMAGE_KEYS
    time_min_period: float = 4e-3
    time_max_period: float = 4.0
    # Explicit sizes for a part whose sizes match no named variant (a fine-tune converted from openpi's JAX
    # tree at any size); when set, they replace the named variant's sizes and the name is only a label.
    llm_sizes: GemmaConfig | None = None
    expert_sizes: GemmaConfig | None = None
    vision_sizes: SiglipConfig | None = None

    def __post_init__(self) -> None:
        for name, table, explicit in (("paligemma_variant", GEMMA_VARIANTS, self.llm_sizes),
                                      ("action_expert_variant", GEMMA_VARIANTS, self.expert_sizes),
                                      ("vision_variant", SIGLIP_VARIANTS, self.vision_sizes)):
            value = getattr(self, name)
            if explicit is None and value not in table:
                raise ModelConfigError(f"{name} '{value}' is unknown; known: {sorted(table)}")
        for name, kind in SIZE_FIELDS.items():
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, sizes_from_dict(kind, value, name))
        vision = self.vision
        if vision.width % vision.num_heads:
            raise ModelConfigError(f"vision width {vision.width} is not a multiple of its {vision.num_heads} heads")
        if vision.image_size % vision.patch_size:
            raise ModelConfigError(f"vision image_size {vision.image_size} is not a multiple of its patch size "
                                   f"{vision.patch_size}")
        llm, expert = self.llm, self.expert
        if (llm.num_heads, llm.num_kv_heads, llm.head_dim) != (expert.num_heads, expert.num_kv_heads,
                                                               expert.head_dim):
            raise ModelConfigError(
                "the LLM and the action expert share attention, so heads/kv heads/head_dim must match: "
                f"{self.paligemma_variant} has {llm.num_heads}/{llm.num_kv_heads}/{llm.head_dim}, "
                f"{self.action_expert_variant} has {expert.num_heads}/{expert.num_kv_heads}/{expert.head_dim}"
            )
        if llm.depth != expert.depth:
            raise ModelConfigError(f"LLM depth {llm.depth} != expert depth {expert.depth}")
        if expert.width % 2:
            raise ModelConfigError("the expert width must be even (sin/cos time embedding)")
        for label, value in (("action_dim", self.action_dim), ("action_horizon", self.action_horizon),
                             ("max_token_len", self.max_token_len), ("num_steps", self.num_steps),
                             ("vocab_size", self.vocab_size)):
            if value <= 0:
                raise ModelConfigError(f"{label} must be > 0, got {value}")
        if not self.image_keys:
            raise ModelConfigError("image_keys must name at least one camera slot")

    @property
    def llm(self) -> GemmaConfig:
        return self.llm_sizes or GEMMA_VARIANTS[self.paligemma_variant]

    @property
    def expert(self) -> GemmaConfig:
        return self.expert_sizes or GEMMA_VARIANTS[self.action_expert_variant]

    @property
    def vision(self) -> SiglipConfig:
        return self.vision_sizes or SIGLIP_VARIANTS[self.vision_variant]

    @property
    def prefix_len(self) -> int:
        return len(self.image_keys) * self.vision.num_patches + self.max_token_len

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["image_keys"] = list(self.image_keys)
        for name in SIZE_FIELDS:
            if out[name] is None:
                del out[name]  # named variants only: the same dict as before explicit sizes existed
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Pi05Config:
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(data) - known)
        if unknown:
            hints = [f"'{key}': did you mean '{close[0]}'?" for key in unknown
                     if (close := difflib.get_close_matches(key, sorted(known), n=1, cutoff=KEY_TYPO_CUTOFF))]
            raise ModelConfigError(f"unknown model config keys {unknown}; " + (f"{'; '.join(hints)} " if hints else "")
                                   + f"known: {sorted(known)}")
        values = dict(data)
        if "image_keys" in values:
            values["image_keys"] = tuple(values["image_keys"])
        return cls(**values)

    def with_(self, **changes: Any) -> Pi05Config:
        return replace(self, **changes)


def preset(name: str) -> Pi05Config:
    """Named model configurations: 'pi05' (full size), 'tiny' (benchmarks), 'dummy' (unit tests), 'demo' (the
    embedded demo policy trained by `training/`: one camera slot, 14 action dims, 1 s chunks at 10 Hz)."""
    presets = {
        "pi05": Pi05Config(),
        "tiny": Pi05Config(paligemma_variant="gemma_tiny", action_expert_variant="gemma_tiny_expert",
                           vision_variant="tiny", max_token_len=64, vocab_size=1024),
        "dummy": Pi05Config(paligemma_variant="dummy", action_expert_variant="dummy", vision_variant="dummy",
                            action_horizon=10, max_token_len=32, vocab_size=512),
        "demo": Pi05Config(paligemma_variant="gemma_demo", action_expert_variant="gemma_demo_expert",
                           vision_variant="demo", action_dim=14, action_horizon=10, max_token_len=72,
                           vocab_size=1024, image_keys=("base_0_rgb",)),
    }
    if name not in presets:
        raise ModelConfigError(f"unknown preset '{name}'; known: {sorted(presets)}")
    return presets[name]
