"""Residual levels on top of a trained one-level tokenizer, without touching what it already knows.

`add_levels` keeps the encoder, level 0's codebook and every head of a trained tokenizer, and fits each new
residual level's codebook by k-means on what the levels before it leave of the (frozen) features. Level-0 codes
stay exactly those of the source tokenizer, so an AR model trained on them keeps its knowledge, and a decoder can
start from the one-level decoder (`xomni.decoder.model.grow_levels`).
"""
from __future__ import annotations

import dataclasses
import sys
from typing import Iterable

import torch
import torch.nn.functional as F
from tqdm import tqdm

from xomni.errors import XomniError
from xomni.tokenizer.model import ImageTokenizer


def kmeans(x_ND: torch.Tensor, k: int, iters: int, generator: torch.Generator, chunk: int = 65536) -> torch.Tensor:
    """Lloyd's k-means in L2 (k-means++-free: k random points to start); empty clusters restart at random points."""
    n = x_ND.shape[0]
    if n < k:
        raise XomniError(f"k-means needs at least {k} vectors, got {n}: use more images")
    c_KD = x_ND[torch.randperm(n, generator=generator)[:k]].clone()
    for _ in tqdm(range(iters), desc=f"k-means K={k}", file=sys.stderr, mininterval=2.0):
        assign_N = nearest(x_ND, c_KD, chunk)
        sums = torch.zeros_like(c_KD).index_add_(0, assign_N, x_ND)
        counts = torch.bincount(assign_N, minlength=k).to(x_ND.dtype)
        empty = counts == 0
        c_KD = sums / counts.clamp(min=1)[:, None]
        if empty.any():
            c_KD[empty] = x_ND[torch.randint(n, (int(empty.sum()),), generator=generator)]
    return c_KD


def nearest(x_ND: torch.Tensor, c_KD: torch.Tensor, chunk: int = 65536) -> torch.Tensor:
    """Index of the nearest centre (L2) for each row, computed in chunks."""
    c2 = c_KD.pow(2).sum(-1)
    return torch.cat([(2 * x_ND[i:i + chunk] @ c_KD.t() - c2).argmax(-1) for i in range(0, x_ND.shape[0], chunk)])


@torch.no_grad()
def add_levels(tok: ImageTokenizer, batches: Iterable[torch.Tensor], levels: int, iters: int = 20,
               max_vectors: int = 400_000, seed: int = 0) -> ImageTokenizer:
    """A copy of the one-level `tok` with `levels` codes per patch; `batches` yields images_B3HW in [-1, 1]."""
    if tok.levels != 1:
        raise XomniError(f"add_levels starts from a one-level tokenizer; this one has {tok.levels} levels")
    if not 2 <= levels <= 4:
        raise XomniError(f"levels must be in 2..4, got {levels}")
    feats = []
    n = 0
    for x in batches:
        f = F.normalize(tok.features(x).float(), dim=1)
        feats.append(f.permute(0, 2, 3, 1).reshape(-1, f.shape[1]))
        n += feats[-1].shape[0]
        if n >= max_vectors:
            break
    f_ND = torch.cat(feats)[:max_vectors]
    cfg = dataclasses.replace(tok.config, levels=levels)
    new = ImageTokenizer(cfg)
    missing, unexpected = new.load_state_dict(tok.state_dict(), strict=False)
    if unexpected or any(not k.startswith("rvq.") for k in missing):
        raise XomniError(f"tokenizer weights do not carry over: missing {missing[:3]}, unexpected {unexpected[:3]}")
    g = torch.Generator().manual_seed(seed)
    cb = tok.codebook()
    r_ND = f_ND - cb[(f_ND @ cb.t()).argmax(-1)]
    for vq in new.rvq:
        c_KD = kmeans(r_ND, cfg.codebook_size, iters, g)
        book = vq._codebook
        book.embed.copy_(c_KD.view_as(book.embed))
        book.embed_avg.copy_(c_KD.view_as(book.embed_avg))
        book.cluster_size.fill_(1.0)
        book.initted.fill_(True)
        r_ND = r_ND - c_KD[nearest(r_ND, c_KD)]
    return new.eval()


def check_same_level0(base: ImageTokenizer, grown: ImageTokenizer, name: str = "the tokenizer") -> None:
    """Raise unless `grown` makes exactly `base`'s level-0 codes: same config apart from the residual settings,
    same encoder, projection and level-0 codebook weights."""
    keep = ("levels", "residual_branch", "freeze_level0")
    a, b = ({k: v for k, v in dataclasses.asdict(t.config).items() if k not in keep} for t in (base, grown))
    diff = sorted(k for k in a if a[k] != b[k])
    if diff:
        raise XomniError(f"{name} is not built on the pipeline's tokenizer: config differs in {', '.join(diff)}")
    src, own = base.state_dict(), grown.state_dict()
    changed = [k for k, v in src.items() if k.startswith(("encoder.", "proj.", "vq."))
               and (k not in own or not torch.equal(v, own[k]))]
    if changed:
        raise XomniError(f"{name}'s level 0 differs from the pipeline's tokenizer ({changed[0]}): train it with "
                         "--init <pipeline>/image_tokenizer --set model.freeze_level0=true")


@torch.no_grad()
def residual_norms(tok: ImageTokenizer, images_B3HW: torch.Tensor) -> list[float]:
    """Mean L2 norm of what is left of the unit-norm features (plus a residual branch's correction) after each
    level (level 0 first)."""
    f = F.normalize(tok.features(images_B3HW).float(), dim=1)
    f_ND = f.permute(0, 2, 3, 1).reshape(-1, f.shape[1])
    b = tok.branch_correction(images_B3HW)
    if b is not None:  # the residual levels aim at the feature plus the branch's correction
        f_ND = f_ND + b.float().reshape(-1, f_ND.shape[1])
    out = []
    codes = tok.encode(images_B3HW).reshape(-1, tok.levels)
    table = tok.code_table()
    acc = torch.zeros_like(f_ND)
    for level in range(tok.levels):
        acc = acc + table[codes[:, level]]
        out.append(round(float((f_ND - acc).norm(dim=-1).mean()), 4))
    return out
