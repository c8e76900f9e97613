"""LongText-Bench metric (X-Omni), written from the rule, not from the official script.

Rule, per image: normalise the target strings and the OCR output -- keep only letters, digits, whitespace and CJK
characters (everything else is deleted, so "Wi-Fi" -> "WiFi"); English: lowercase, collapse whitespace, split into
words; Chinese: the non-space characters. Count the multiset intersection of target units and OCR units.
Score = sum(matched) / sum(target units) over all images (pooled recall; extra OCR text is not penalised).

Differences from the official script, on purpose: every occurrence of every hallucination keyword is removed from
the OCR text (the official one strips only the last), and results are written where the caller asks.

Subsets: `select_units(..., max_chars=N)` keeps only target strings of at most N characters, one unit per kept
string (a small model gets one templated prompt per string). A subset score is labelled
`{"subset": "max_chars=N", "official": false}`; only a full, unfiltered run with no skipped image is official.

The prompts ship with the package: `BENCH_EN` / `BENCH_ZH` (xomni/data/longtext, Apache-2.0, see its README).
"""
from __future__ import annotations

import json
import unicodedata
from collections import Counter
from pathlib import Path
from typing import Iterable, Sequence

from xomni.errors import XomniError

REQUIRED_FIELDS = ("prompt_id", "prompt", "text")
# the benchmark's prompts ship with the package (Apache-2.0, attribution in xomni/data/longtext/README.md)
BENCH_DIR = Path(__file__).resolve().parents[1] / "data" / "longtext"
BENCH_EN = BENCH_DIR / "text_prompts_en.jsonl"
BENCH_ZH = BENCH_DIR / "text_prompts_zh.jsonl"


def is_cjk(ch: str) -> bool:
    o = ord(ch)
    return (0x4E00 <= o <= 0x9FFF or 0x3400 <= o <= 0x4DBF or 0x20000 <= o <= 0x2A6DF or 0xF900 <= o <= 0xFAFF
            or 0x2A700 <= o <= 0x2EBEF or 0x30000 <= o <= 0x3134F)


def _keep(ch: str) -> bool:
    if ch.isspace() or is_cjk(ch):
        return True
    cat = unicodedata.category(ch)
    return cat[0] == "L" or cat == "Nd"  # letters (any script) and decimal digits


def clean(s: str) -> str:
    """Keep letters, digits, whitespace and CJK; delete the rest. Full-width forms are folded (NFKC) first."""
    s = unicodedata.normalize("NFKC", s or "")
    return "".join(ch for ch in s if _keep(ch))


def units(s: str, lang: str) -> list[str]:
    """Scoring units of a string: English -> lowercase words; Chinese -> non-space characters."""
    c = clean(s)
    if lang == "en":
        return c.lower().split()
    if lang == "zh":
        return [ch for ch in c if not ch.isspace()]
    raise XomniError(f"unknown language {lang!r} (use en or zh)")


def strip_keywords(ocr: str, keywords: Iterable[str] = ()) -> str:
    """Remove every occurrence of each hallucination keyword (the official script only removes the last one)."""
    for k in keywords:
        if k:
            ocr = ocr.replace(k, " ")
    return ocr


def score_image(targets: Sequence[str], ocr: str, lang: str, keywords: Iterable[str] = ()) -> tuple[int, int]:
    """(matched units, target units) for one image with one or more target strings."""
    t = Counter()
    for s in targets:
        t.update(units(s, lang))
    o = Counter(units(strip_keywords(ocr or "", keywords), lang))
    return sum((t & o).values()), sum(t.values())


def pooled_score(pairs: Iterable[tuple[Sequence[str], str]], lang: str, keywords: Iterable[str] = ()) -> dict:
    """Pooled recall over images given (target strings, OCR text) pairs."""
    matched = total = n = 0
    for targets, ocr in pairs:
        m, t = score_image(targets, ocr, lang, keywords)
        matched += m
        total += t
        n += 1
    return {"score": matched / total if total else float("nan"), "matched": matched, "target_units": total, "n": n}


def detect_lang(records: Sequence[dict]) -> str:
    for r in records:
        for s in r["text"]:
            if any(is_cjk(ch) for ch in s):
                return "zh"
    return "en"


def load_bench(path: str | Path) -> list[dict]:
    """Read a LongText-Bench jsonl file; one clear XomniError line for any problem."""
    p = Path(path)
    if not p.is_file():
        raise XomniError(f"bench file not found: {p}")
    recs = []
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise XomniError(f"bench file {p} is not UTF-8 text") from None
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            r = json.loads(line)
        except json.JSONDecodeError as e:
            raise XomniError(f"bench file {p} line {i} is not JSON: {e.msg}") from None
        if not isinstance(r, dict):
            raise XomniError(f"bench file {p} line {i}: expected a JSON object")
        missing = [k for k in REQUIRED_FIELDS if k not in r]
        if missing:
            raise XomniError(f"bench file {p} line {i}: missing field(s) {', '.join(missing)}")
        if not isinstance(r["text"], list) or not r["text"] or not all(isinstance(s, str) for s in r["text"]):
            raise XomniError(f"bench file {p} line {i}: 'text' must be a non-empty list of strings")
        recs.append(r)
    if not recs:
        raise XomniError(f"bench file {p} has no prompts")
    ids = [str(r["prompt_id"]) for r in recs]
    if len(set(ids)) != len(ids):
        raise XomniError(f"bench file {p} has duplicate prompt_id values")
    return recs


def select_units(records: Sequence[dict], max_chars: int | None = None) -> list[dict]:
    """Evaluation units. Full benchmark: one unit per prompt with all its strings.
    With max_chars: one unit per target string of <= max_chars characters, id "PROMPTID:INDEX"."""
    out = []
    for r in records:
        if max_chars is None:
            out.append({"id": str(r["prompt_id"]), "prompt_id": r["prompt_id"], "prompt": r["prompt"],
                        "targets": list(r["text"]), "category": r.get("category"), "length": r.get("length")})
        else:
            for j, s in enumerate(r["text"]):
                if len(s.strip()) <= max_chars:
                    out.append({"id": f"{r['prompt_id']}:{j}", "prompt_id": r["prompt_id"], "text_index": j,
                                "prompt": None, "targets": [s], "category": r.get("category"),
                                "length": r.get("length")})
    return out


def label(max_chars: int | None, n_skipped: int) -> dict:
    """Labels that keep a subset or an incomplete run from passing for the official full-benchmark score."""
    subset = f"max_chars={max_chars}" if max_chars is not None else "full"
    return {"subset": subset, "official": max_chars is None and n_skipped == 0}


# ------------------------------------------------------------------ running the benchmark
def _unit_images_from_dir(units: list[dict], images: str, max_chars: int | None):
    """Map images to units: by `prompt_id` (+ `text_index` with --max-chars) in the metadata, else by sorted
    file order. Returns ({unit id: [Item, ...]}, n_unmatched)."""
    from xomni.eval.images import ImageSource
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
    from xomni.eval.images import Item
    from xomni.eval.text import caption_for, generate, load_pipeline, model_preset, unsupported_chars
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
    from xomni.eval.text import ocr_images, resolve_region
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
    from xomni.eval.text import check_region_fits
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
