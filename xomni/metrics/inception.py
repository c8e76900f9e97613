"""InceptionV3 in plain torch, for FID features from a *local* weights file (no torchvision import, no download).

Accepted `--inception-weights` files:
  * a state dict with torchvision's InceptionV3 parameter names (`Conv2d_1a_3x3.conv.weight`, ..., `fc.weight`),
    e.g. torchvision's `inception_v3_google-*.pth` (fc 1000) or pytorch-fid's `pt_inception-*.pth`
    (fc 1008; its FID-specific block variants are selected automatically from the fc size);
  * a TorchScript file of a torchvision-style InceptionV3 (its submodules are run up to the 2048-d pool);
  * any other TorchScript module whose forward(x, [return_features=True]) maps float images in [0, 255],
    N x 3 x 299 x 299, to N x D features (e.g. the StyleGAN/clean-fid `inception-*.pt`).
Features: the 2048-d global average pool after Mixed_7c (the standard FID layer). Input: RGB in [0, 1] resized to
299x299 (bilinear) and scaled to [-1, 1], which is what both torchvision (transform_input) and pytorch-fid feed.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from xomni.errors import XomniError


class BasicConv2d(nn.Module):
    def __init__(self, cin, cout, **kw):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, bias=False, **kw)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


def _avg(x, fid: bool):
    return F.avg_pool2d(x, 3, 1, 1, count_include_pad=not fid)


class InceptionA(nn.Module):
    def __init__(self, cin, pool_features, fid=False):
        super().__init__()
        self.fid = fid
        self.branch1x1 = BasicConv2d(cin, 64, kernel_size=1)
        self.branch5x5_1 = BasicConv2d(cin, 48, kernel_size=1)
        self.branch5x5_2 = BasicConv2d(48, 64, kernel_size=5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, padding=1)
        self.branch_pool = BasicConv2d(cin, pool_features, kernel_size=1)

    def forward(self, x):
        b1 = self.branch1x1(x)
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = self.branch_pool(_avg(x, self.fid))
        return torch.cat([b1, b5, b3, bp], 1)


class InceptionB(nn.Module):
    def __init__(self, cin):
        super().__init__()
        self.branch3x3 = BasicConv2d(cin, 384, kernel_size=3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, stride=2)

    def forward(self, x):
        b3 = self.branch3x3(x)
        bd = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([b3, bd, F.max_pool2d(x, 3, 2)], 1)


class InceptionC(nn.Module):
    def __init__(self, cin, c7, fid=False):
        super().__init__()
        self.fid = fid
        self.branch1x1 = BasicConv2d(cin, 192, kernel_size=1)
        self.branch7x7_1 = BasicConv2d(cin, c7, kernel_size=1)
        self.branch7x7_2 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(cin, c7, kernel_size=1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(cin, 192, kernel_size=1)

    def forward(self, x):
        b1 = self.branch1x1(x)
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        bd = x
        for m in (self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4,
                  self.branch7x7dbl_5):
            bd = m(bd)
        return torch.cat([b1, b7, bd, self.branch_pool(_avg(x, self.fid))], 1)


class InceptionD(nn.Module):
    def __init__(self, cin):
        super().__init__()
        self.branch3x3_1 = BasicConv2d(cin, 192, kernel_size=1)
        self.branch3x3_2 = BasicConv2d(192, 320, kernel_size=3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(cin, 192, kernel_size=1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, kernel_size=3, stride=2)

    def forward(self, x):
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat([b3, b7, F.max_pool2d(x, 3, 2)], 1)


class InceptionE(nn.Module):
    def __init__(self, cin, pool: str = "avg"):  # pool: avg (torchvision), avg_nopad / max (pytorch-fid E_1 / E_2)
        super().__init__()
        self.pool = pool
        self.branch1x1 = BasicConv2d(cin, 320, kernel_size=1)
        self.branch3x3_1 = BasicConv2d(cin, 384, kernel_size=1)
        self.branch3x3_2a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(cin, 448, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, kernel_size=3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(cin, 192, kernel_size=1)

    def forward(self, x):
        b1 = self.branch1x1(x)
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        bd = torch.cat([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], 1)
        if self.pool == "max":
            p = F.max_pool2d(x, 3, 1, 1)
        else:
            p = F.avg_pool2d(x, 3, 1, 1, count_include_pad=self.pool == "avg")
        return torch.cat([b1, b3, bd, self.branch_pool(p)], 1)


STEM = ["Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool", "Conv2d_3b_1x1", "Conv2d_4a_3x3", "maxpool"]
BLOCKS = ["Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e",
          "Mixed_7a", "Mixed_7b", "Mixed_7c"]


class InceptionV3Features(nn.Module):
    """torchvision-compatible parameter names; forward(x in [0,1]) -> N x 2048 pool3 features."""

    num_features = 2048

    def __init__(self, fid_variant: bool = False, num_classes: int = 1000):
        super().__init__()
        f = fid_variant
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, kernel_size=3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, kernel_size=3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, kernel_size=3)
        self.Mixed_5b = InceptionA(192, 32, f)
        self.Mixed_5c = InceptionA(256, 64, f)
        self.Mixed_5d = InceptionA(288, 64, f)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, 128, f)
        self.Mixed_6c = InceptionC(768, 160, f)
        self.Mixed_6d = InceptionC(768, 160, f)
        self.Mixed_6e = InceptionC(768, 192, f)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280, "avg_nopad" if f else "avg")
        self.Mixed_7c = InceptionE(2048, "max" if f else "avg")
        self.fc = nn.Linear(2048, num_classes)

    def forward(self, x):
        return run_features(self, x)


def run_features(m, x: torch.Tensor) -> torch.Tensor:
    """Run a torchvision-style InceptionV3 (ours or a TorchScript one) up to the 2048-d average pool."""
    x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False) * 2 - 1
    for name in STEM:
        x = F.max_pool2d(x, 3, 2) if name == "maxpool" else getattr(m, name)(x)
    for name in BLOCKS:
        x = getattr(m, name)(x)
    return x.mean(dim=(2, 3))


class _ScriptFeatures(nn.Module):
    """Wraps a TorchScript module: torchvision-style submodules if present, else its own forward on [0,255]."""

    def __init__(self, sm):
        super().__init__()
        self.sm = sm
        self.tv = all(hasattr(sm, n) for n in BLOCKS + ["Conv2d_1a_3x3"])

    def forward(self, x):
        if self.tv:
            return run_features(self.sm, x)
        x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False) * 255
        try:
            y = self.sm(x, return_features=True)
        except Exception:  # noqa: BLE001 - forward without that keyword
            y = self.sm(x)
        y = y.reshape(y.shape[0], -1)
        if y.shape[1] in (1000, 1008):
            raise XomniError("the TorchScript Inception returns class logits, not features")
        return y


def load_inception(path: str | Path) -> nn.Module:
    p = Path(path)
    if not p.is_file():
        raise XomniError(f"inception weights not found: {p}")
    try:
        sm = torch.jit.load(str(p), map_location="cpu")
        return _ScriptFeatures(sm.eval()).eval()
    except XomniError:
        raise
    except Exception:  # noqa: BLE001 - not TorchScript: try a state dict
        pass
    try:
        sd = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001
        raise XomniError(f"{p} is neither TorchScript nor a torch state dict ({type(e).__name__})") from None
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or "Mixed_7c.branch_pool.conv.weight" not in sd:
        raise XomniError(f"{p} is not a torchvision-style InceptionV3 state dict")
    n_cls = sd["fc.weight"].shape[0] if "fc.weight" in sd else 1000
    m = InceptionV3Features(fid_variant=(n_cls == 1008), num_classes=n_cls)
    sd = {k: v for k, v in sd.items() if not k.startswith("AuxLogits.")}
    missing, unexpected = m.load_state_dict(sd, strict=False)
    missing = [k for k in missing if not k.startswith("fc.")]
    if missing or unexpected:
        raise XomniError(f"{p}: InceptionV3 weights do not match (missing {missing[:3]}, unexpected {unexpected[:3]})")
    return m.eval()
