"""OCR shared by the data check, the evaluation, the component trainers and the RL rewards.

The same preprocessing (`preprocess_for_ocr`) and the same engine settings are used for every image, real or
generated; nothing is derived from the target string (no whitelist).

- `tesseract_batch(images, psm=7)`: the tesseract binary run once per chunk over a list file (pages come back
  separated by form feeds), chunks spread over `workers` processes (`xomni bench ocr` times it against one
  pytesseract call per image).
- `rapidocr_batch(images)`: RapidOCR (PP-OCR, ONNX) recognition only, one engine per process.
- `ocr_images(images, engine, region=)`: either engine on the fixed crop of a dataset preset (`OcrRegion`,
  `resolve_region`).
- Exact match (`exact_match`, from xomni.metrics.textmetrics): equal after stripping both ends and collapsing
  whitespace runs; case and punctuation count.
"""
from __future__ import annotations

import functools
import logging
import os
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

from PIL import Image, ImageOps

from xomni.data.presets import get_preset
from xomni.errors import XomniError
from xomni.metrics.textmetrics import exact_match, normalize_ws  # noqa: F401  (exact_match: the OCR pass rule)

UPSCALE = 2
BORDER = 16
MAX_CHUNK = 128


def preprocess_for_ocr(img, region=None):
    """Crop to `region` (x0, y0, x1, y1) when given, grayscale, autocontrast, invert when the background (the
    median grey level) is dark so text is dark on light, 2x bicubic upscale, 16 px border in the background level.
    Depends only on the image (and the fixed region), never on the target text."""
    if region is not None:
        img = img.crop(tuple(region))
    g = ImageOps.autocontrast(img.convert("L"))
    hist = g.histogram()
    half, acc, bg = (g.width * g.height) / 2, 0, 0
    for level, count in enumerate(hist):
        acc += count
        if acc >= half:
            bg = level
            break
    if bg < 128:
        g = ImageOps.invert(g)
        bg = 255 - bg
    w, h = g.size
    g = g.resize((w * UPSCALE, h * UPSCALE), Image.BICUBIC)
    return ImageOps.expand(g, border=BORDER, fill=bg)


def tesseract_cmd() -> str:
    cmd = os.environ.get("XOMNI_TESSERACT", "tesseract")
    path = shutil.which(cmd)
    if path is None:
        raise XomniError("the tesseract binary was not found: install the Debian package tesseract-ocr "
                         "(apt-get install tesseract-ocr tesseract-ocr-eng)")
    return path


def _tess_env() -> dict:
    env = dict(os.environ)
    env["OMP_THREAD_LIMIT"] = "1"   # one core per process; parallelism comes from the pool
    return env


def _run_tesseract_list(cmd: str, paths: list[str], psm: int, workdir: str) -> list[str] | None:
    """One tesseract process over a list file; None when the output cannot be split into len(paths) pages."""
    lst = os.path.join(workdir, "list.txt")
    with open(lst, "w") as f:
        f.write("\n".join(paths) + "\n")
    r = subprocess.run([cmd, lst, "stdout", "--psm", str(psm), "-l", "eng"], capture_output=True, env=_tess_env())
    if r.returncode != 0:
        return None
    pages = r.stdout.decode("utf-8", errors="replace").split("\f")
    if len(pages) == len(paths) + 1 and not pages[-1].strip():   # some versions end with a form feed
        pages = pages[:-1]
    return pages if len(pages) == len(paths) else None


def _run_tesseract_one(cmd: str, path: str, psm: int) -> str:
    r = subprocess.run([cmd, path, "stdout", "--psm", str(psm), "-l", "eng"], capture_output=True, env=_tess_env())
    if r.returncode != 0:
        raise XomniError(f"tesseract failed on {path}: {r.stderr.decode(errors='replace').strip()[:200]}")
    return r.stdout.decode("utf-8", errors="replace").replace("\f", "")


def _tesseract_chunk(cmd: str, images: list, psm: int, region) -> list[str]:
    with tempfile.TemporaryDirectory(prefix="xomni-ocr-") as d:
        paths = []
        for i, img in enumerate(images):
            p = os.path.join(d, f"{i:05d}.png")
            preprocess_for_ocr(img, region).save(p, compress_level=1)
            paths.append(p)
        pages = _run_tesseract_list(cmd, paths, psm, d)
        if pages is None:  # could not split the output reliably: one process per image
            pages = [_run_tesseract_one(cmd, p, psm) for p in paths]
    return [normalize_ws(p) for p in pages]


def tesseract_batch(images: list, psm: int = 7, workers: int | None = None, region=None) -> list[str]:
    """Tesseract text of each image (whitespace-normalised), in order. `region`: the fixed crop of the dataset
    preset (`Preset.ocr_region`), the same for ground-truth and generated images; None reads the whole image."""
    if not images:
        return []
    cmd = tesseract_cmd()
    workers = max(1, workers or os.cpu_count() or 1)
    n = len(images)
    size = max(1, min(MAX_CHUNK, -(-n // workers)))
    chunks = [images[i:i + size] for i in range(0, n, size)]
    if len(chunks) == 1 or workers == 1:
        results = [_tesseract_chunk(cmd, c, psm, region) for c in chunks]
    else:  # threads suffice: the work happens in the tesseract child processes
        with ThreadPoolExecutor(max_workers=workers) as ex:
            results = list(ex.map(lambda c: _tesseract_chunk(cmd, c, psm, region), chunks))
    return [t for r in results for t in r]


def tesseract_one(image, psm: int = 7, region=None) -> str:
    """Single image through pytesseract (slow path; same preprocessing and settings)."""
    import pytesseract
    pytesseract.pytesseract.tesseract_cmd = tesseract_cmd()
    text = pytesseract.image_to_string(preprocess_for_ocr(image, region), lang="eng", config=f"--psm {psm}")
    return normalize_ws(text)


@functools.lru_cache(maxsize=1)
def _rapidocr_engine():
    logging.getLogger("RapidOCR").setLevel(logging.ERROR)
    try:
        from rapidocr import RapidOCR
    except ImportError as e:
        raise XomniError(f"rapidocr is not installed ({e}); pip install rapidocr onnxruntime") from None
    eng = RapidOCR(params={"Global.log_level": "error", "Global.use_det": False, "Global.use_cls": False,
                           "EngineConfig.onnxruntime.intra_op_num_threads": 1,
                           "EngineConfig.onnxruntime.inter_op_num_threads": 1})
    logging.getLogger("RapidOCR").setLevel(logging.ERROR)
    return eng


def rapidocr_batch(images: list, region=None, with_confidence: bool = False) -> list:
    """RapidOCR recognition (no detection, no angle classifier) of each preprocessed image, in order. With
    `with_confidence`, (text, confs) pairs: confs[k] is the recogniser's probability of the text's k-th character
    (1.0 for spaces; every character gets the line's mean score when RapidOCR's per-character list does not match
    the text)."""
    import numpy as np
    if not images:
        return []
    eng = _rapidocr_engine()
    out = []
    for img in images:
        arr = np.asarray(preprocess_for_ocr(img, region).convert("RGB"))
        r = eng(arr, use_det=False, use_cls=False, use_rec=True, return_word_box=with_confidence)
        txts = getattr(r, "txts", None) or ()
        text = normalize_ws(" ".join(t for t in txts if t))
        if not with_confidence:
            out.append(text)
            continue
        char_confs = [float(c) for w in (getattr(r, "word_results", None) or ()) for c in (w.confs or ())]
        ink = [ch for ch in text if ch != " "]
        if len(char_confs) != len(ink):
            scores = [float(s) for s in (getattr(r, "scores", None) or ())]
            char_confs = [sum(scores) / len(scores) if scores else 0.0] * len(ink)
        it = iter(char_confs)
        out.append((text, [1.0 if ch == " " else next(it) for ch in text]))
    return out


# ------------------------------------------------------------------ the region OCR reads
def ocr_images(images: Sequence[Image.Image], engine: str = "tesseract", psm: int = 7,
               region: "OcrRegion | None" = None) -> list[str]:
    """Batched OCR: Tesseract over list files in a process pool, or RapidOCR; `region` crops first."""
    if not images:
        return []
    box = None
    if region is not None:
        box = region.box
        if region.size is not None:
            images = [im if im.size == region.size else im.resize(region.size, Image.BICUBIC) for im in images]
    if engine == "tesseract":
        return list(tesseract_batch(list(images), psm=psm, region=box))
    if engine == "rapidocr":
        return list(rapidocr_batch(list(images), region=box))
    raise XomniError(f"unknown OCR engine {engine!r} (use tesseract or rapidocr)")


class OcrRegion:
    """The fixed crop OCR reads (a property of the dataset preset); images of another size are resized first."""

    def __init__(self, box, size):
        self.box, self.size = tuple(box), tuple(size)

    def as_json(self):
        return {"box": list(self.box), "image_size": list(self.size)}


def resolve_region(metas: Sequence[dict], preset: str | None = None, region: str | None = None) -> OcrRegion | None:
    """--region x0,y0,x1,y1 (at the image's own size) | 'none' > --preset NAME > the `preset` in the metadata
    (when all images share one) > whole image."""
    if region:
        if region.strip().lower() in ("none", "full", "all"):
            return None
        try:
            box = [int(v) for v in region.split(",")]
            assert len(box) == 4 and box[0] < box[2] and box[1] < box[3]
        except (ValueError, AssertionError):
            raise XomniError(f"--region expects x0,y0,x1,y1 or none, got {region!r}") from None
        return _BoxOnly(box)
    names = {preset} if preset else {m.get("preset") for m in metas}
    if len(names) != 1 or None in names:
        return None
    p = get_preset(names.pop())
    return OcrRegion(p.ocr_region, (p.width, p.height)) if p.ocr_region else None


def check_region_fits(reg: OcrRegion | None, items) -> None:
    """A --region box given at the image's own size must lie inside the images (a crop outside reads nothing and
    would score 0)."""
    if not isinstance(reg, _BoxOnly):
        return
    im = next((it.image for it in items if it.image is not None), None)
    if im is None:
        return
    x0, y0, x1, y1 = reg.box
    if x0 < 0 or y0 < 0 or x1 > im.width or y1 > im.height:
        raise XomniError(f"--region {x0},{y0},{x1},{y1} is outside the {im.width}x{im.height} images")


class _BoxOnly(OcrRegion):
    def __init__(self, box):
        self.box, self.size = tuple(box), None

    def as_json(self):
        return {"box": list(self.box), "image_size": None}
