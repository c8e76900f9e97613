"""`xomni eval text`: read images with OCR (Tesseract by default) and score them against target strings.

Sources of (image, target) pairs:
  --images DIR (dataset / imagefolder with metadata): targets = each sample's `text`.
  --images DIR --targets FILE: images sorted by file name (or sample key) map to the lines in order; the counts
      must agree.
  --model DIR --targets FILE: the model's own prompt template turns each line into a caption; K samples per line
      with seeds seed, seed+1, ... (see docs/EVAL.md for the Pipeline contract). Fails clearly without a model.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Sequence

from PIL import Image

from xomni.errors import XomniError
from xomni.eval import textmetrics as tm
from xomni.eval.images import ImageSource, Item, read_targets
from xomni.utils import atomic_write_text, log


def ocr_images(images: Sequence[Image.Image], engine: str = "tesseract", psm: int = 7,
               region: "OcrRegion | None" = None) -> list[str]:
    """Batched OCR through xomni.ocr (Tesseract over list files in a process pool, or RapidOCR)."""
    if not images:
        return []
    try:
        from xomni import ocr
    except ImportError:
        raise XomniError("OCR needs xomni.ocr, which this build does not have") from None
    box = None
    if region is not None:
        box = region.box
        if region.size is not None:
            images = [im if im.size == region.size else im.resize(region.size, Image.BICUBIC) for im in images]
    if engine == "tesseract":
        return list(ocr.tesseract_batch(list(images), psm=psm, region=box))
    if engine == "rapidocr":
        return list(ocr.rapidocr_batch(list(images), region=box))
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
    from xomni.data.presets import get_preset
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


def pairs_from_images(images: str, targets: str | None, split: str | None = None) -> tuple[list[Item], list[str]]:
    src = ImageSource(images, split=split)
    items = list(src)
    if targets is not None:
        lines = read_targets(targets)
        if len(lines) != len(items):
            raise XomniError(f"{len(items)} images in {images} but {len(lines)} lines in {targets}; "
                             "images sorted by file name map to the lines in order")
        for it, t in zip(items, lines):
            it.meta["text"] = t
        return items, lines
    if not src.has_meta:
        raise XomniError(f"{images} has no metadata (dataset shards or metadata.jsonl): pass --targets FILE")
    texts = [it.meta.get("text") for it in items]
    if not any(isinstance(t, str) and t.strip() for t in texts):
        raise XomniError(f"the metadata in {images} has no 'text' field: pass --targets FILE")
    return items, [t if isinstance(t, str) else "" for t in texts]


def score_items(items: list[Item], targets: list[str], engine: str = "tesseract", psm: int = 7,
                n_boot: int = 1000, region: OcrRegion | None = None) -> tuple[dict, list[dict]]:
    """OCR the readable images and score them. Returns (result JSON, per-image rows incl. skipped ones)."""
    ok = [i for i, it in enumerate(items) if it.image is not None and targets[i].strip()]
    skipped = []
    for i, it in enumerate(items):
        if it.image is None:
            skipped.append({"key": it.key, "reason": it.error or "unreadable image"})
        elif not targets[i].strip():
            skipped.append({"key": it.key, "reason": "no target text"})
    if skipped:
        log(f"skipping {len(skipped)} image(s): first: {skipped[0]['key']}: {skipped[0]['reason']}")
    if not ok:
        raise XomniError("no readable image with a target string to score")
    log(f"OCR ({engine}) on {len(ok)} images ...")
    preds = ocr_images([items[i].image for i in ok], engine=engine, psm=psm, region=region)
    rows = tm.score_rows(preds, [targets[i] for i in ok], [items[i].meta for i in ok])
    for r, i in zip(rows, ok):
        r["key"] = items[i].key
        for k in ("sample", "seed", "file_name"):
            if k in items[i].meta:
                r[k] = items[i].meta[k]
    res = summarize(rows, n_skipped=len(skipped), n_boot=n_boot)
    res["ocr"] = {"engine": engine, "psm": psm if engine == "tesseract" else None,
                  "region": region.as_json() if region is not None else None}
    res["skipped"] = skipped[:50]
    return res, rows + [dict(s, skipped=True) for s in skipped]


def summarize(rows: list[dict], n_skipped: int = 0, n_boot: int = 1000) -> dict:
    agg = tm.aggregate(rows, n_boot=n_boot)
    res = {"n": agg["n"], "n_skipped": n_skipped, "exact_match": agg["exact_match"],
           "word_recall": agg["word_recall"], "cer": agg["cer"], "ci95": agg["ci95"]}
    if any("font" in r for r in rows):
        res["by_font"] = {k: _short(v) for k, v in tm.breakdown(rows, "font").items()}
    res["by_length"] = {k: _short(v) for k, v in tm.breakdown(rows, "length_bucket").items()}
    fails = [r for r in rows if not r["exact_match"]]
    res["failures"] = [{"key": r.get("key"), "target": r["target"], "ocr": r["ocr"], "cer": round(r["cer"], 3)}
                       for r in fails[:20]]
    return res


def _short(a: dict) -> dict:
    return {"n": a["n"], "exact_match": a["exact_match"], "word_recall": a["word_recall"], "cer": a["cer"],
            "ci95_exact_match": a["ci95"]["exact_match"]}


def write_per_image(rows: list[dict], path: str | Path) -> None:
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


# ---------------------------------------------------------------- model path
def load_pipeline(model_dir: str):
    """Load a pipeline directory; a clear error when it is missing or has no model_index.json."""
    p = Path(model_dir)
    if not p.is_dir():
        raise XomniError(f"model directory not found: {p}")
    if not (p / "model_index.json").is_file():
        raise XomniError(f"{p} is not a model directory (no model_index.json)")
    from xomni.pipeline import Pipeline
    return Pipeline.from_pretrained(str(p))


def caption_for(pipe, text: str) -> str:
    """The model's own prompt template for a target string (see docs/EVAL.md)."""
    fn = getattr(pipe, "caption_for_text", None)
    if callable(fn):
        return fn(text)
    tpl = getattr(pipe, "prompt_template", None)
    if isinstance(tpl, str) and "{text}" in tpl:
        return tpl.format(text=text)
    raise XomniError("the model has no prompt template (Pipeline.caption_for_text or prompt_template)")


def generate(pipe, captions: list[str], k: int, seed: int, batch: int = 8, sampling: dict | None = None) -> list[list]:
    """K images for each caption. Captions go `batch` at a time (batch x K images per call, seed + chunk index), so
    results are reproducible for the same (seed, K, batch); batching is what makes AR decoding fast."""
    out: list[list] = []
    batch = max(1, batch)
    for c, start in enumerate(range(0, len(captions), batch)):
        chunk = captions[start:start + batch]
        ims = pipe(chunk, num_images=k, seed=seed + c, **(sampling or {}))
        ims = list(ims) if isinstance(ims, (list, tuple)) else [ims]
        if len(ims) != len(chunk) * k:
            raise XomniError(f"the pipeline returned {len(ims)} images for {len(chunk)} prompts x {k} samples")
        out.extend(ims[i * k:(i + 1) * k] for i in range(len(chunk)))  # prompt-major order
    return out


def model_preset(pipe) -> str | None:
    """The dataset preset a model was trained on (its images are read with that preset's OCR region)."""
    idx = getattr(pipe, "index", None) or {}
    return idx.get("data_preset") or idx.get("preset")


def unsupported_chars(pipe, text: str) -> str:
    """Characters of `text` outside the model's charset ('' when it has none or all are supported)."""
    cs = getattr(pipe, "charset", None)
    return "".join(sorted({c for c in text if c not in cs})) if cs else ""


def items_from_model(model_dir: str, targets_file: str, samples: int, seed: int,
                     save_dir: str | None = None, batch: int = 8,
                     sampling: dict | None = None) -> tuple[list[Item], list[str]]:
    """Generate `samples` images per target string with the model's prompt template and its default sampling
    settings, overridden by the non-None entries of `sampling` (temperature, top_k, top_p, min_p, cfg_scale)."""
    lines = read_targets(targets_file)
    if samples < 1:
        raise XomniError("--samples must be >= 1")
    pipe = load_pipeline(model_dir)
    bad = [(i, t, unsupported_chars(pipe, t)) for i, t in enumerate(lines) if unsupported_chars(pipe, t)]
    if bad:
        i, t, chars = bad[0]
        raise XomniError(f"{targets_file} line {i + 1} ({t!r}) has characters the model cannot draw: {chars!r} "
                         f"({len(bad)} line(s) in all)")
    caps = [caption_for(pipe, t) for t in lines]
    used = dataclasses.asdict(pipe.sampling_config(**(sampling or {})))  # recorded in every item's metadata
    log(f"generating {len(lines)} x {samples} images with {model_dir} ...")
    images = generate(pipe, caps, samples, seed, batch, used)
    items, targets, saved = [], [], []
    for i, (t, cap, ims) in enumerate(zip(lines, caps, images)):
        for j, im in enumerate(ims):
            key = f"t{i:04d}-s{j}"
            meta = {"key": key, "text": t, "caption": cap, "sample": j, "seed": seed + i // max(1, batch),
                    "file_name": f"{key}.png", "sampling": used}
            if model_preset(pipe):
                meta["preset"] = model_preset(pipe)
            items.append(Item(key, im.convert("RGB") if im is not None else None, meta,
                              None if im is not None else "generation failed"))
            targets.append(t)
            if save_dir and im is not None:
                saved.append((im, meta))
    if save_dir:
        from xomni.data.io import write_imagefolder
        write_imagefolder(save_dir, saved)
    return items, targets
