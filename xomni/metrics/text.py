"""Text accuracy of images: OCR each image (xomni.metrics.ocr) and score it against its target string
(xomni.metrics.textmetrics: exact match, word recall, CER with bootstrap intervals, by font and by length).

Sources of (image, target) pairs (`pairs_from_images`):
  a dataset / imagefolder with metadata: targets = each sample's `text`;
  any image directory plus a targets file: images sorted by file name (or sample key) map to the lines in order;
  the counts must agree.
"""
from __future__ import annotations

import json
from pathlib import Path

from xomni.errors import XomniError
from xomni.metrics import textmetrics as tm
from xomni.metrics.images import ImageSource, Item, read_targets
from xomni.metrics.ocr import OcrRegion, ocr_images
from xomni.utils import atomic_write_text, log


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
    """OCR the readable images and score them. Returns (result JSON, per-image rows incl. skipped ones).
    An item without image whose meta names `unsupported` characters (a string the model cannot draw) is scored in
    place as an empty reading (exact 0, CER 1) instead of being skipped."""
    ok = [i for i, it in enumerate(items) if (it.image is not None or it.meta.get("unsupported"))
          and targets[i].strip()]
    skipped = []
    for i, it in enumerate(items):
        if it.image is None and not it.meta.get("unsupported"):
            skipped.append({"key": it.key, "reason": it.error or "unreadable image"})
        elif not targets[i].strip():
            skipped.append({"key": it.key, "reason": "no target text"})
    if skipped:
        log(f"skipping {len(skipped)} image(s): first: {skipped[0]['key']}: {skipped[0]['reason']}")
    if not ok:
        raise XomniError("no readable image with a target string to score")
    drawn = [i for i in ok if items[i].image is not None]
    log(f"OCR ({engine}) on {len(drawn)} images ...")
    read = dict(zip(drawn, ocr_images([items[i].image for i in drawn], engine=engine, psm=psm, region=region)))
    preds = [read.get(i, "") for i in ok]
    rows = tm.score_rows(preds, [targets[i] for i in ok], [items[i].meta for i in ok])
    for r, i in zip(rows, ok):
        r["key"] = items[i].key
        for k in ("sample", "seed", "file_name"):
            if k in items[i].meta:
                r[k] = items[i].meta[k]
    res = summarize(rows, n_skipped=len(skipped), n_boot=n_boot)
    res["n_unsupported"] = len(ok) - len(drawn)
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
