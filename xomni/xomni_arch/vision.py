"""X-Omni's image side: the SigLIP-VQ tokenizer's quantiser (codebook and projections) and the FLUX decoder with its
SigLIP adapter.

SigLIP-VQ (official modeling_siglip_tokenizer.py): a SigLIP2-g ViT gives z_channels-wide patch features; a 1x1 conv
projects them to codebook_dim, the code is the nearest codebook row by cosine similarity (both sides L2-normalised,
"IBQ" at inference), and decoding maps codes back: the raw codebook row, a 1x1 conv to z_channels and residual conv
blocks (GroupNorm(32) - GELU - 3x3 conv, twice). Those features condition the FLUX decoder. xomni holds the
quantiser (`SigLIPVQ`); the ViT weights are carried along by the converter but not run (see docs/XOMNI.md).

FLUX decoder: the released `diffusers/` folder is loaded by the official code as FluxTransformer2DModelWithSigLIP
(a FluxTransformer2DModel subclass built with siglip_channels = z_channels). Its file is the size of the whole FLUX.1
transformer, and the authors describe the trained part as a linear mapping layer, so xomni takes it to be FLUX's own
tensors plus one adapter Linear(z_channels -> FLUX width); the converter refuses any other extra tensor.
`XOmniFluxDecoder` holds diffusers' own FluxTransformer2DModel (`transformer`) and the adapter (`siglip_proj`); its
forward adds the projected SigLIP features to FLUX's embedded image tokens (one SigLIP token per packed 2x2 latent,
i.e. per 16 x 16 pixels). The official modeling_siglip_flux.py was not available to check either assumption
(docs/XOMNI.md).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from xomni.errors import XomniError


class VQResBlock(nn.Module):
    def __init__(self, channels: int, groups: int = 32):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, channels)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.norm2 = nn.GroupNorm(groups, channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv1(F.gelu(self.norm1(x)))
        return x + self.conv2(F.gelu(self.norm2(y)))


class SigLIPVQ(nn.Module):
    """The SigLIP-VQ quantiser: encode(features) -> codes, decode(codes) -> decoder conditioning features."""

    def __init__(self, z_channels: int = 1536, codebook_size: int = 16384, codebook_dim: int = 2048,
                 n_blocks: int = 2):
        super().__init__()
        self.z_channels, self.codebook_size, self.codebook_dim = z_channels, codebook_size, codebook_dim
        self.proj_in = nn.Conv2d(z_channels, codebook_dim, 1)
        self.codebook = nn.Embedding(codebook_size, codebook_dim)
        self.proj_out = nn.Conv2d(codebook_dim, z_channels, 1)
        self.refine = nn.ModuleList(VQResBlock(z_channels) for _ in range(n_blocks))

    @torch.no_grad()
    def encode(self, features_BNC: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """ViT patch features [B, h*w, z_channels] -> codes [B, h, w]."""
        B = features_BNC.shape[0]
        x = features_BNC.transpose(1, 2).reshape(B, self.z_channels, h, w)
        z = F.normalize(self.proj_in(x).permute(0, 2, 3, 1).reshape(-1, self.codebook_dim), dim=-1)
        e = F.normalize(self.codebook.weight, dim=-1)
        return (z @ e.t()).argmax(-1).view(B, h, w)

    def decode(self, codes_BHW: torch.Tensor) -> torch.Tensor:
        """Codes [B, h, w] -> conditioning features [B, h*w, z_channels] (the raw codebook rows, as officially)."""
        B, h, w = codes_BHW.shape
        x = self.proj_out(self.codebook(codes_BHW).permute(0, 3, 1, 2))
        for blk in self.refine:
            x = blk(x)
        return x.reshape(B, self.z_channels, h * w).transpose(1, 2)


class XOmniFluxDecoder(nn.Module):
    """diffusers' FluxTransformer2DModel plus the SigLIP adapter Linear(siglip_channels -> FLUX width)."""

    def __init__(self, flux_config: dict, siglip_channels: int, adapter_bias: bool = True):
        super().__init__()
        from diffusers import FluxTransformer2DModel
        self.transformer = FluxTransformer2DModel(**flux_config)
        self.siglip_proj = nn.Linear(siglip_channels, self.transformer.inner_dim, bias=adapter_bias)

    def forward(self, hidden_states: torch.Tensor, siglip_features: torch.Tensor, **flux_kwargs):
        """`hidden_states`: packed latents [B, N, in_channels]; `siglip_features`: [B, N, siglip_channels] (one
        per packed latent token); other arguments as FluxTransformer2DModel.forward."""
        if siglip_features.shape[:2] != hidden_states.shape[:2]:
            raise XomniError(f"siglip_features {list(siglip_features.shape)} must have one row per latent token "
                             f"{list(hidden_states.shape[:2])}")
        cond = self.siglip_proj(siglip_features.to(self.siglip_proj.weight.dtype))
        hook = self.transformer.x_embedder.register_forward_hook(lambda mod, args, out: out + cond.to(out.dtype))
        try:
            return self.transformer(hidden_states=hidden_states, **flux_kwargs)
        finally:
            hook.remove()
