"""SigLIP vision tower (So400m/14 at full size) and the PaliGemma projector.

Pre-LayerNorm ViT: patch convolution (stride = patch size) + learned position embedding, then per layer
x += attn(LN1(x)); x += mlp(LN2(x)) with a GeLU-tanh MLP, then a final LayerNorm. The projector is one linear
map to the LLM width. PaliGemma divides image features by sqrt(width); Pi0.5 does not, and neither do we.

Attribute names follow the checkpoint keys (`embeddings.patch_embedding`, `encoder.layers.N.self_attn.q_proj`,
`post_layernorm`, ...), so a checkpoint loads by name with no renaming.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from policy_server.model.config import SiglipConfig
from policy_server.model.layers import attend, gelu_tanh


class SiglipAttention(nn.Module):
    def __init__(self, cfg: SiglipConfig) -> None:
        super().__init__()
        self.num_heads = cfg.num_heads
        self.head_dim = cfg.width // cfg.num_heads
        self.scale = self.head_dim**-0.5
        self.backend = "eager"  # set for the whole model by Pi05Model.set_execution
        self.q_proj = nn.Linear(cfg.width, cfg.width)
        self.k_proj = nn.Linear(cfg.width, cfg.width)
        self.v_proj = nn.Linear(cfg.width, cfg.width)
        self.out_proj = nn.Linear(cfg.width, cfg.width)

    def forward(self, x: Tensor) -> Tensor:
        b, n, _ = x.shape

        def heads(t: Tensor) -> Tensor:
            return t.view(b, n, self.num_heads, self.head_dim).transpose(1, 2)

        out = attend(heads(self.q_proj(x)), heads(self.k_proj(x)), heads(self.v_proj(x)), None, self.scale,
                     self.backend)
        projected: Tensor = self.out_proj(out)
        return projected


class SiglipMLP(nn.Module):
    def __init__(self, cfg: SiglipConfig) -> None:
        super().__init__()
        self.fc1 = nn.Linear(cfg.width, cfg.mlp_dim)
        self.fc2 = nn.Linear(cfg.mlp_dim, cfg.width)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.fc2(gelu_tanh(self.fc1(x)))
        return out


class SiglipEncoderLayer(nn.Module):
    def __init__(self, cfg: SiglipConfig) -> None:
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(cfg.width, eps=cfg.layer_norm_eps)
        self.self_attn = SiglipAttention(cfg)
        self.layer_norm2 = nn.LayerNorm(cfg.width, eps=cfg.layer_norm_eps)
        self.mlp = SiglipMLP(cfg)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.self_attn(self.layer_norm1(x))
        out: Tensor = x + self.mlp(self.layer_norm2(x))
        return out


class SiglipEncoder(nn.Module):
    def __init__(self, cfg: SiglipConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(SiglipEncoderLayer(cfg) for _ in range(cfg.depth))


class SiglipEmbeddings(nn.Module):
    def __init__(self, cfg: SiglipConfig) -> None:
        super().__init__()
        self.patch_embedding = nn.Conv2d(3, cfg.width, kernel_size=cfg.patch_size, stride=cfg.patch_size)
        self.position_embedding = nn.Embedding(cfg.num_patches, cfg.width)

    def forward(self, pixels: Tensor) -> Tensor:
        patches = self.patch_embedding(pixels.to(self.patch_embedding.weight.dtype))
        tokens: Tensor = patches.flatten(2).transpose(1, 2)
        return tokens + self.position_embedding.weight[None].to(tokens.dtype)


class SiglipVisionTransformer(nn.Module):
    def __init__(self, cfg: SiglipConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embeddings = SiglipEmbeddings(cfg)
        self.encoder = SiglipEncoder(cfg)
        self.post_layernorm = nn.LayerNorm(cfg.width, eps=cfg.layer_norm_eps)

    def forward(self, pixels: Tensor) -> Tensor:
        """pixels [B, 3, S, S] in [-1, 1] -> tokens [B, (S/patch)^2, width]."""
        expected = (3, self.cfg.image_size, self.cfg.image_size)
        if tuple(pixels.shape[1:]) != expected:
            raise ValueError(f"vision tower expects images [B, {', '.join(map(str, expected))}], "
                             f"got {list(pixels.shape)}")
        x = self.embeddings(pixels)
        x = x.to(self.post_layernorm.weight.dtype)
        for layer in self.encoder.layers:
            x = layer(x)
        out: Tensor = self.post_layernorm(x)
        return out


class SiglipVisionModel(nn.Module):
    """Wrapper that gives the `vision_tower.vision_model.` key prefix of the checkpoints."""

    def __init__(self, cfg: SiglipConfig) -> None:
        super().__init__()
        self.vision_model = SiglipVisionTransformer(cfg)

    def forward(self, pixels: Tensor) -> Tensor:
        out: Tensor = self.vision_model(pixels)
        return out


class MultiModalProjector(nn.Module):
    def __init__(self, vision_width: int, llm_width: int) -> None:
        super().__init__()
        self.linear = nn.Linear(vision_width, llm_width)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.linear(x.to(self.linear.weight.dtype))
        return out


def image_features(tower: SiglipVisionModel, projector: MultiModalProjector, pixels: Tensor) -> Tensor:
    """Image tokens in the LLM's width: projector(SigLIP(pixels)), no sqrt(width) division (Pi0.5)."""
    with torch.autocast(device_type=pixels.device.type, enabled=False):
        out: Tensor = projector(tower(pixels))
    return out
