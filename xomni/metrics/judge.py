"""Compliance judge: a small CNN that reads the scene attributes of an image.

Heads (the schema comes from the dataset's preset and is saved in config.json):
  background   colour of the background          (C classes)
  text_color   colour of the text                (C classes)
  noun         frame style: poster/sign/label/banner
  slot kind    per shape position (6 for the tiny preset): empty or a shape kind   (P x (K+1))
  slot color   per shape position: none or a colour                                 (P x (C+1))
Shape counts and occupied positions follow from the slots.

Training runs on the shared loop (`xomni train judge`); the seed (`train.seed`) sets init and data order, so a
second, independent judge (e.g. for RL rewards, to keep the evaluator out of the optimisation) is one
`--set train.seed=N` away. Saved as OUT/final/{model.safetensors, config.json}.
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from xomni.checkpoint import load_model_weights, read_json
from xomni.config import config_from_dict, field, in_range
from xomni.data.presets import get_preset
from xomni.errors import XomniError

EMPTY = "empty"


# ------------------------------------------------------------------ schema
def schema_from_preset(name: str) -> dict:
    p = get_preset(name)
    return {"preset": p.name, "colors": list(p.colors), "nouns": list(p.nouns), "kinds": list(p.shape_kinds),
            "positions": list(p.shape_centers), "centers": [list(p.shape_centers[k]) for k in p.shape_centers],
            "shape_size": max(p.shape_size), "height": p.height, "width": p.width}


def schema_from_metas(metas: list[dict]) -> dict:
    """Fallback when the preset is unknown: the values seen in the metadata."""
    cols, nouns, kinds, boxes = set(), set(), set(), {}
    for m in metas:
        cols.update([m["background"], m["text_color"]] + [s["color"] for s in m.get("shapes", [])])
        nouns.add(m["noun"])
        kinds.update(s["kind"] for s in m.get("shapes", []))
        for s in m.get("shapes", []):
            boxes.setdefault(s["position"], []).append(s["box"])
    pos = sorted(boxes)
    centers = [[sum((b[0] + b[2]) / 2 for b in boxes[q]) / len(boxes[q]),
                sum((b[1] + b[3]) / 2 for b in boxes[q]) / len(boxes[q])] for q in pos]
    size = max((b[2] - b[0] for q in pos for b in boxes[q]), default=12)
    return {"preset": None, "colors": sorted(cols), "nouns": sorted(nouns), "kinds": sorted(kinds),
            "positions": pos, "centers": centers, "shape_size": size, "height": metas[0]["height"],
            "width": metas[0]["width"]}


def labels_of(meta: dict, schema: dict) -> dict:
    """Integer labels of a metadata dict (or parsed caption) for every head. Unknown values -> XomniError."""
    ci = {c: i for i, c in enumerate(schema["colors"])}
    try:
        out = {"background": ci[meta["background"]], "text_color": ci[meta["text_color"]],
               "noun": schema["nouns"].index(meta["noun"])}
        kinds = [0] * len(schema["positions"])
        colors = [0] * len(schema["positions"])
        for s in meta.get("shapes") or []:
            j = schema["positions"].index(s["position"])
            kinds[j] = 1 + schema["kinds"].index(s["kind"])
            colors[j] = 1 + ci[s["color"]]
    except (KeyError, ValueError) as e:
        raise XomniError(f"sample {meta.get('key', '?')}: value {e} is not in the judge's schema") from None
    out["slot_kind"], out["slot_color"] = kinds, colors
    return out


# ------------------------------------------------------------------ model
@dataclasses.dataclass
class JudgeModelConfig:
    width: int = field(32, help="Channels after the 4x4 patch stem (later stages use 2x and 3x).")
    hidden: int = field(256, help="Width of the shared fully connected layer.")
    height: int = field(64, help="Input height (images are resized to height x width).")
    img_width: int = field(256, help="Input width.")
    slot_width: int = field(16, help="Channels of the slot CNN's first layer (then 2x, 4x).")
    slot_margin: int = field(5, help="Pixels around the shape box included in each slot crop.")

    def check(self, where: str = "model") -> "JudgeModelConfig":
        for name in ("width", "hidden", "slot_width"):
            in_range(self, where, name, 1)
        in_range(self, where, "height", 16)
        in_range(self, where, "img_width", 16)
        in_range(self, where, "slot_margin", 0)
        return self


def _cbr(a: int, b: int, k: int = 3, s: int = 1, p: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(a, b, k, s, p, bias=False), nn.BatchNorm2d(b), nn.ReLU(inplace=True)]


class JudgeNet(nn.Module):
    """Global branch: 4x4 patch stem (stride 4) -> stride 8 -> stride 16 -> fully connected layer over the whole
    map -> background, text colour, frame. Slot branch, shared across positions: a small CNN on a
    (shape size + 2 x margin) crop around each slot centre (edge-replicated at the border) plus a learned slot
    embedding -> (kind or empty, colour or none). The crops give the shape heads full resolution and let the
    six slots share one detector."""

    def __init__(self, schema: dict, cfg: JudgeModelConfig):
        super().__init__()
        self.schema = schema
        c = cfg.width
        self.features = nn.Sequential(*_cbr(3, c, 4, 4, 0), *_cbr(c, c), *_cbr(c, 2 * c, 3, 2, 1),
                                      *_cbr(2 * c, 2 * c), *_cbr(2 * c, 3 * c, 3, 2, 1))
        with torch.no_grad():
            self.eval()
            n_flat = self.features(torch.zeros(1, 3, cfg.height, cfg.img_width)).numel()
            self.train()
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(n_flat, cfg.hidden), nn.ReLU(inplace=True))
        C, P, K = len(schema["colors"]), len(schema["positions"]), len(schema["kinds"])
        self.P = P
        self.head_bg = nn.Linear(cfg.hidden, C)
        self.head_tc = nn.Linear(cfg.hidden, C)
        self.head_noun = nn.Linear(cfg.hidden, len(schema["nouns"]))
        # slot crops, in the judge's input pixels (schema coordinates scaled to height x width)
        sy, sx = cfg.height / schema["height"], cfg.img_width / schema["width"]
        self.crop = int(math.ceil((schema.get("shape_size", 12) * max(sx, sy) + 2 * cfg.slot_margin) / 4) * 4)
        self.pad = self.crop // 2
        self.slot_xy = [(int(round(cx * sx)), int(round(cy * sy))) for cx, cy in schema["centers"]]
        s = cfg.slot_width
        self.slot_cnn = nn.Sequential(*_cbr(3, s), *_cbr(s, 2 * s, 3, 2, 1), *_cbr(2 * s, 4 * s, 3, 2, 1),
                                      nn.Flatten())
        n_slot = 4 * s * (self.crop // 4) ** 2
        self.slot_emb = nn.Parameter(torch.zeros(P, n_slot))
        self.slot_mlp = nn.Sequential(nn.Linear(n_slot, 128), nn.ReLU(inplace=True))
        self.head_kind = nn.Linear(128, K + 1)
        self.head_color = nn.Linear(128, C + 1)
        self.hw = (cfg.height, cfg.img_width)
        if P == 0:  # no slots (mini): the slot branch stays in the state dict but is frozen, so DDP sees no
            for m in (self.slot_cnn, self.slot_mlp, self.head_kind, self.head_color):  # unused trainable params
                m.requires_grad_(False)
            self.slot_emb.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> dict:
        """x: uint8 or float in [0, 255], N x 3 x H x W (already at the judge's size)."""
        x = x.float() / 127.5 - 1.0
        h = self.fc(self.features(x))
        n, k = x.shape[0], self.crop
        heads = {"background": self.head_bg(h), "text_color": self.head_tc(h), "noun": self.head_noun(h)}
        if self.P == 0:  # a preset without shapes (mini): no slots to read
            return {**heads, "slot_kind": h.new_zeros(n, 0, self.head_kind.out_features),
                    "slot_color": h.new_zeros(n, 0, self.head_color.out_features)}
        xp = F.pad(x, (self.pad,) * 4, mode="replicate")
        crops = torch.stack([xp[:, :, cy:cy + k, cx:cx + k] for cx, cy in self.slot_xy], 1)  # N x P x 3 x k x k
        z = self.slot_cnn(crops.reshape(n * self.P, 3, k, k)).view(n, self.P, -1) + self.slot_emb
        z = self.slot_mlp(z)
        return {**heads, "slot_kind": self.head_kind(z), "slot_color": self.head_color(z)}


def image_tensor(img, hw: tuple[int, int]) -> torch.Tensor:
    from PIL import Image
    img = img.convert("RGB")
    if img.size != (hw[1], hw[0]):
        img = img.resize((hw[1], hw[0]), Image.BILINEAR)
    return torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1)


# ------------------------------------------------------------------ training
def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Mild, label-preserving jitter so the judge tolerates imperfect generated images: +-2 px shifts (edge
    replicate), occasional slight blur, small pixel noise."""
    n = x.shape[0]
    x = x.float()
    dx = torch.randint(-2, 3, (1,), generator=gen).item()
    dy = torch.randint(-1, 2, (1,), generator=gen).item()
    if dx or dy:
        x = F.pad(x, (2, 2, 1, 1), mode="replicate")[:, :, 1 + dy:1 + dy + x.shape[2], 2 + dx:2 + dx + x.shape[3]]
    blur = torch.rand(n, generator=gen) < 0.3
    if blur.any():
        k = torch.tensor([1.0, 2.0, 1.0])
        k = (k[:, None] * k[None, :] / 16).expand(3, 1, 3, 3)
        xb = F.conv2d(F.pad(x[blur], (1, 1, 1, 1), mode="replicate"), k, groups=3)
        x[blur] = xb
    x = x + torch.randn(x.shape, generator=gen) * 4.0
    return x.clamp_(0, 255)


def judge_loss(model, batch, gen) -> tuple[torch.Tensor, dict]:
    x = augment(batch["x"], gen)
    out = model(x)
    loss = 0.0
    metrics = {}
    for k in ("background", "text_color", "noun"):
        loss = loss + F.cross_entropy(out[k], batch[k])
        metrics[f"acc_{k}"] = (out[k].argmax(-1) == batch[k]).float().mean().item()
    for k in ("slot_kind", "slot_color"):
        lg = out[k]
        if lg.shape[1] == 0:  # no shape slots in this preset
            continue
        loss = loss + F.cross_entropy(lg.reshape(-1, lg.shape[-1]), batch[k].reshape(-1)) * 2.0
        metrics[f"acc_{k}"] = (lg.argmax(-1) == batch[k]).float().mean().item()
    return loss, metrics


class JudgeData:
    """Map-style training set over a dataset split: {x: uint8 3xHxW, labels...}; unreadable images are replaced
    by the next readable sample (and counted)."""

    def __init__(self, source, schema: dict, hw: tuple[int, int]):
        self.src, self.schema, self.hw = source, schema, hw
        self.n_bad = 0

    def __len__(self):
        return len(self.src)

    def __getitem__(self, i):
        for j in range(len(self.src)):
            it = self.src[(i + j) % len(self.src)]
            if it.image is not None:
                lab = labels_of(it.meta, self.schema)
                d = {"x": image_tensor(it.image, self.hw)}
                for k, v in lab.items():
                    d[k] = torch.tensor(v, dtype=torch.long)
                return d
            self.n_bad += 1
        raise XomniError("no readable image in the training data")


# ------------------------------------------------------------------ inference
class Judge:
    """A trained judge: predict(images) -> list of attribute dicts {background, text_color, noun, shapes}."""

    def __init__(self, net: JudgeNet, config: dict):
        self.net = net.eval()
        self.config = config
        self.schema = config["schema"]

    @classmethod
    def load(cls, path: str | Path) -> "Judge":
        p = Path(path)
        if not p.exists():
            raise XomniError(f"judge not found: {p}")
        d = p / "final" if (p / "final" / "config.json").is_file() else p
        if not (d / "config.json").is_file() or not (d / "model.safetensors").is_file():
            raise XomniError(f"{p} is not a judge directory (needs config.json + model.safetensors)")
        cfg = read_json(d / "config.json")
        if cfg.get("kind") != "xomni-judge":
            raise XomniError(f"{d / 'config.json'} is not a judge config (kind={cfg.get('kind')!r})")
        net = JudgeNet(cfg["schema"], config_from_dict(JudgeModelConfig, cfg.get("model"), source=d / "config.json"))
        load_model_weights(net, d / "model.safetensors")
        return cls(net, cfg)

    @torch.no_grad()
    def predict(self, images, batch_size: int = 128) -> list[dict]:
        out = []
        for s in range(0, len(images), batch_size):
            x = torch.stack([image_tensor(im, self.net.hw) for im in images[s:s + batch_size]])
            out.extend(decode(self.net(x), self.schema))
        return out


def decode(out: dict, schema: dict) -> list[dict]:
    cols, nouns, kinds, pos = schema["colors"], schema["nouns"], schema["kinds"], schema["positions"]
    bg = out["background"].argmax(-1).tolist()
    tc = out["text_color"].argmax(-1).tolist()
    nn_ = out["noun"].argmax(-1).tolist()
    sk = out["slot_kind"].argmax(-1).tolist()
    # colour of an occupied slot: best non-"none" colour
    sc = out["slot_color"][..., 1:].argmax(-1).tolist()
    res = []
    for i in range(len(bg)):
        shapes = [{"kind": kinds[k - 1], "color": cols[sc[i][j]], "position": pos[j]}
                  for j, k in enumerate(sk[i]) if k > 0]
        res.append({"background": cols[bg[i]], "text_color": cols[tc[i]], "noun": nouns[nn_[i]], "shapes": shapes})
    return res
