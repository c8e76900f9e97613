"""`xomni bench ocr`: throughput (images/s) of batched Tesseract and RapidOCR on ground-truth renders.

Both engines read the same images with the same preprocessing and OCR region (xomni.metrics.ocr). RapidOCR's model load
is timed separately (`rapidocr_load_s`) and excluded from its images/s. Exact match is reported as a check that
the fast path still reads correctly.
"""
from __future__ import annotations

import os
import time

from xomni.data.presets import get_preset
from xomni.data.render import render
from xomni.data.scene import sample_scene
from xomni.errors import XomniError
from xomni.metrics import ocr
from xomni.metrics.images import ImageSource
from xomni.metrics.ocr import resolve_region
from xomni.metrics.textmetrics import exact_match
from xomni.utils import log


def _render_images(n: int, preset: str = "tiny", seed: int = 0):
    p = get_preset(preset)
    metas = [sample_scene(p, seed, "val", i) for i in range(n)]
    return [render(m) for m in metas], metas


def _data_images(path: str, n: int):
    try:
        src = ImageSource(path, split="val")
    except XomniError:
        src = ImageSource(path)
    items = [src[i] for i in range(min(n, len(src)))]
    items = [it for it in items if it.image is not None]
    if not items:
        raise XomniError(f"no readable images in {path}")
    return [it.image for it in items], [it.meta for it in items]


def bench_ocr(n: int = 200, data: str | None = None, workers: int | None = None) -> dict:
    if n < 1:
        raise XomniError("--n must be >= 1")
    images, metas = _data_images(data, n) if data else _render_images(n)
    reg = resolve_region(metas)
    box = reg.box if reg else None
    targets = [m.get("text", "") for m in metas]
    res = {"n": len(images), "cpu_count": os.cpu_count(), "workers": workers or os.cpu_count(),
           "image_size": list(images[0].size), "ocr_region": list(box) if box else None}
    log(f"bench ocr: tesseract on {len(images)} images ...")
    t = time.perf_counter()
    tess = ocr.tesseract_batch(images, psm=7, workers=workers, region=box)
    dt = time.perf_counter() - t
    res["tesseract"] = {"images_per_s": len(images) / dt, "seconds": dt,
                        "exact_match": sum(exact_match(p, q) for p, q in zip(tess, targets)) / len(images)}
    log("bench ocr: rapidocr ...")
    t = time.perf_counter()
    ocr.rapidocr_batch(images[:1], region=box)  # model load + first call
    res["rapidocr_load_s"] = time.perf_counter() - t
    t = time.perf_counter()
    rap = ocr.rapidocr_batch(images, region=box)
    dt = time.perf_counter() - t
    res["rapidocr"] = {"images_per_s": len(images) / dt, "seconds": dt, "processes": 1,
                       "exact_match": sum(exact_match(p, q) for p, q in zip(rap, targets)) / len(images)}
    res["note"] = ("Tesseract: one process per chunk over a list file, chunks spread over the workers; RapidOCR: "
                   "recognition only, one process, 1 ONNX thread. Other load on the machine lowers both.")
    return res
