"""`xomni data check`: how well Tesseract and RapidOCR read the ground-truth text of a dataset's renders.

Exact match as the evaluation counts it (`xomni.metrics.textmetrics.exact_match`). The crop that OCR reads is the
preset's `ocr_region` for samples of a known preset at the preset's size (the same crop the evaluation uses on
generated images), else the whole image. An OCR metric of a dataset: the layer map puts it with xomni.metrics.
"""
from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path

from xomni.data.io import open_dataset
from xomni.data.presets import PRESETS
from xomni.errors import XomniError
from xomni.metrics import ocr
from xomni.metrics.textmetrics import exact_match
from xomni.utils import log

ENGINES = ("tesseract", "rapidocr")


def ocr_region_for(meta: dict, size: tuple[int, int]):
    p = PRESETS.get(meta.get("preset", ""))
    if p is not None and p.ocr_region and (p.width, p.height) == tuple(size):
        return tuple(p.ocr_region)
    return None


def run_ocr(engine: str, images: list, regions: list, workers: int | None = None) -> list[str]:
    """OCR each image with its region; images sharing a region go through one batch call."""
    out: list[str | None] = [None] * len(images)
    groups: dict = defaultdict(list)
    for i, r in enumerate(regions):
        groups[r].append(i)
    for r, idx in groups.items():
        batch = [images[i] for i in idx]
        preds = ocr.tesseract_batch(batch, workers=workers, region=r) if engine == "tesseract" \
            else ocr.rapidocr_batch(batch, region=r)
        for i, p in zip(idx, preds):
            out[i] = p
    return out  # type: ignore[return-value]


def _rate(xs: list[bool]) -> float:
    return round(sum(xs) / len(xs), 4) if xs else 0.0


def _grouped(ok: list[bool], metas: list[dict], key) -> dict:
    g: dict = defaultdict(list)
    for o, m in zip(ok, metas):
        for k in key(m):
            g[k].append(o)
    return {k: {"exact_match": _rate(v), "n": len(v)} for k, v in sorted(g.items())}


def summarize(preds: list[str], metas: list[dict], n_fail: int = 10) -> dict:
    ok = [exact_match(p, m["text"]) for p, m in zip(preds, metas)]
    one = (lambda k: (lambda m: [m[k]] if k in m else []))
    return {
        "exact_match": _rate(ok), "n_correct": sum(ok), "n": len(ok),
        "by_font": _grouped(ok, metas, one("font")),
        "by_text_colour": _grouped(ok, metas, one("text_color")),
        "by_background": _grouped(ok, metas, one("background")),
        # a sample counts for both its text colour and its background colour
        "by_colour": _grouped(ok, metas, lambda m: sorted({m[k] for k in ("text_color", "background") if k in m})),
        "by_noun": _grouped(ok, metas, one("noun")),
        "by_case": _grouped(ok, metas, one("case")),
        "by_n_shapes": _grouped(ok, metas, lambda m: [str(len(m.get("shapes") or []))]),
        "by_split": _grouped(ok, metas, one("split")),
        "failures": [{"key": m["key"], "text": m["text"], "pred": p}
                     for o, p, m in zip(ok, preds, metas) if not o][:n_fail],
    }


def check_dataset(path: str | Path, splits: list[str] | None = None, limit: int | None = None,
                  engines=ENGINES, workers: int | None = None) -> dict:
    """OCR exact match of the renders in `path` (each of `splits`, at most `limit` samples per split)."""
    if limit is not None and limit <= 0:
        raise XomniError(f"--limit must be positive, got {limit}")
    for e in engines:
        if e not in ENGINES:
            raise XomniError(f"unknown OCR engine {e!r}; expected {', '.join(ENGINES)}")
    root = Path(path)
    if not splits and root.is_dir() and sum((root / s).is_dir() for s in ("train", "val", "test")) > 1:
        splits = ["val"] if (root / "val").is_dir() else None   # a dataset root: check the val split by default
    images, metas, regions = [], [], []
    unreadable, no_text = 0, 0
    for split in (splits or [None]):
        ds = open_dataset(path, split)
        n = len(ds) if limit is None else min(limit, len(ds))
        for i in range(n):
            s = ds[i]
            if s.image is None:
                unreadable += 1
                log(f"check: skip {s.key}: {s.error}")
                continue
            if not s.meta.get("text"):
                no_text += 1
                continue
            images.append(s.image)
            metas.append(s.meta)
            regions.append(ocr_region_for(s.meta, s.image.size))
    if not images:
        raise XomniError(f"no readable samples with a text field in {path}")
    result: dict = {"n": len(images), "splits": splits, "unreadable": unreadable, "no_text": no_text,
                    "ocr_regions": sorted({str(list(r)) if r else "full image" for r in regions})}
    for e in engines:
        t = time.time()
        preds = run_ocr(e, images, regions, workers)
        dt = time.time() - t
        result[e] = summarize(preds, metas)
        result[e]["seconds"] = round(dt, 2)
        result[e]["images_per_s"] = round(len(images) / dt, 1) if dt > 0 else None
        log(f"check: {e} exact match {result[e]['exact_match']:.4f} on {len(images)} images ({dt:.1f} s)")
    return result
