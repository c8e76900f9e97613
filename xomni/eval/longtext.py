"""`xomni eval longtext`: LongText-Bench on an image directory or on a model's own samples (the scoring rule and the
bench files: xomni.metrics.longtext)."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

from xomni.errors import XomniError
from xomni.eval.text import caption_for, generate, load_pipeline, model_preset, unsupported_chars
from xomni.metrics.images import ImageSource, Item
from xomni.metrics.longtext import BENCH_EN, BENCH_ZH, detect_lang, label, load_bench, score_image, select_units
from xomni.metrics.ocr import check_region_fits, ocr_images, resolve_region


def _unit_images_from_dir(units: list[dict], images: str, max_chars: int | None):
    """Map images to units: by `prompt_id` (+ `text_index` with --max-chars) in the metadata, else by sorted
    file order. Returns ({unit id: [Item, ...]}, n_unmatched)."""
    src = ImageSource(images)
    by_id: dict[str, list] = {}
    unmatched = 0
    if src.has_meta and all("prompt_id" in src.meta(i) for i in range(len(src))):
        ids = {u["id"] for u in units}
        for i in range(len(src)):
            m = src.meta(i)
            uid = str(m["prompt_id"]) if max_chars is None else f"{m['prompt_id']}:{m.get('text_index', 0)}"
            if uid in ids:
                by_id.setdefault(uid, []).append(src[i])
            else:
                unmatched += 1
        return by_id, unmatched
    if len(src) != len(units):
        raise XomniError(f"{len(src)} images in {images} but {len(units)} benchmark units; without prompt_id "
                         "metadata the images sorted by file name map to the units in order")
    return {u["id"]: [src[i]] for i, u in enumerate(units)}, 0


def _unit_images_from_model(units: list[dict], model: str, samples: int, seed: int, batch: int = 8):
    """Generate for each unit: the bench prompt (full benchmark) or the model's template on the string (subset).
    A unit whose text uses characters outside the model's charset gets no image: it scores 0 (never dropped)."""
    pipe = load_pipeline(model)
    out, todo, caps = {}, [], []
    for u in units:
        cap = u["prompt"] if u["prompt"] else caption_for(pipe, u["targets"][0])
        if unsupported_chars(pipe, cap):
            out[u["id"]] = [Item(f"{u['id']}-s{j}", None, {"caption": cap, "sample": j, "unsupported": True},
                                 f"characters outside the model's charset: {unsupported_chars(pipe, cap)!r}")
                            for j in range(samples)]
        else:
            todo.append(u)
            caps.append(cap)
    meta0 = {"preset": model_preset(pipe)} if model_preset(pipe) else {}
    for u, cap, ims in zip(todo, caps, generate(pipe, caps, samples, seed, batch)):
        out[u["id"]] = [Item(f"{u['id']}-s{j}", im.convert("RGB"), dict(meta0, caption=cap, sample=j))
                        for j, im in enumerate(ims)]
    return out, 0


def run_longtext(bench: str | Path | None = None, images: str | None = None, model: str | None = None,
                 lang: str = "auto", max_chars: int | None = None, engine: str | None = None, psm: int | None = None,
                 samples: int = 1, seed: int = 0, keywords: Iterable[str] = (), preset: str | None = None,
                 region: str | None = None, batch: int = 8) -> tuple[dict, list[dict]]:
    if (images is None) == (model is None):
        raise XomniError("pass exactly one of --images DIR or --model DIR")
    if max_chars is not None and max_chars < 1:
        raise XomniError("--max-chars must be >= 1")
    records = load_bench(bench if bench is not None else (BENCH_ZH if lang == "zh" else BENCH_EN))
    if lang == "auto":
        lang = detect_lang(records)
    if lang not in ("en", "zh"):
        raise XomniError(f"--lang must be en, zh or auto, got {lang!r}")
    units = select_units(records, max_chars)
    n_total = sum(len(r["text"]) for r in records)
    if not units:
        raise XomniError(f"no target string has <= {max_chars} characters")
    engine = engine or ("rapidocr" if lang == "zh" else "tesseract")
    if engine == "tesseract" and lang == "zh":
        raise XomniError("Tesseract has no Chinese model here; use --ocr rapidocr for --lang zh")
    psm = psm if psm is not None else (7 if max_chars is not None else 11)
    if images is not None:
        by_id, unmatched = _unit_images_from_dir(units, images, max_chars)
    else:
        by_id, unmatched = _unit_images_from_model(units, model, samples, seed, batch)
    flat = [(u, it) for u in units for it in by_id.get(u["id"], [])]
    ok = [(u, it) for u, it in flat if it.image is not None]
    zero = [(u, it) for u, it in flat if it.image is None and it.meta.get("unsupported")]
    if not ok:
        why = (f"the model cannot draw any of the {len(units)} prompts (characters outside its charset)"
               if zero else "no image could be read")
        hint = "; use --max-chars N to score the strings the model can draw" if model and max_chars is None else ""
        raise XomniError(f"nothing to score: {why}{hint}")
    reg = resolve_region([it.meta for _, it in ok], preset, region) if max_chars is not None or region else None
    check_region_fits(reg, [it for _, it in ok])
    texts = ocr_images([it.image for _, it in ok], engine=engine, psm=psm, region=reg)
    rows, matched, total, cats = [], 0, 0, {}
    for (u, it), txt in zip(ok, texts):
        m, t = score_image(u["targets"], txt, lang, keywords)
        matched, total = matched + m, total + t
        c = cats.setdefault(u.get("category") or "?", [0, 0])
        c[0], c[1] = c[0] + m, c[1] + t
        rows.append({"id": u["id"], "key": it.key, "category": u.get("category"), "targets": u["targets"],
                     "ocr": txt, "matched": m, "target_units": t, "recall": m / t if t else None})
    for u, it in zero:  # the model cannot draw these characters: it scores 0 on them
        _, t = score_image(u["targets"], "", lang, keywords)
        total += t
        c = cats.setdefault(u.get("category") or "?", [0, 0])
        c[1] += t
        rows.append({"id": u["id"], "key": it.key, "category": u.get("category"), "targets": u["targets"],
                     "ocr": "", "matched": 0, "target_units": t, "recall": 0.0, "unsupported": True})
    missing = [u["id"] for u in units if not by_id.get(u["id"])]
    bad = [it.key for _, it in flat if it.image is None and not it.meta.get("unsupported")]
    n_skipped = len(missing) + len(bad)
    if not rows:
        raise XomniError("no readable image to score")
    res = {"score": matched / total if total else float("nan"), "matched": matched, "target_units": total,
           "lang": lang, **label(max_chars, n_skipped),
           "n_kept": sum(len(u["targets"]) for u in units), "n_total": n_total, "n_units": len(units),
           "n_images": len(ok), "n_skipped": n_skipped, "missing_units": missing[:50], "unreadable": bad[:50],
           "n_unmatched_images": unmatched, "n_unsupported": len(zero),
           "by_category": {k: v[0] / v[1] for k, v in sorted(cats.items()) if v[1]},
           "ocr": {"engine": engine, "psm": psm if engine == "tesseract" else None,
                   "region": reg.as_json() if reg is not None else None},
           "rule": "pooled recall of normalised target units (en: lowercase words, zh: characters)"}
    return res, rows
