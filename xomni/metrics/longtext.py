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
