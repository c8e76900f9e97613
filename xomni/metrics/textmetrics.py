"""Text accuracy metrics on (OCR output, target) pairs: exact match, word recall, character error rate.

Definitions (all case- and punctuation-sensitive):
  normalise   strip both ends and collapse every whitespace run to one space
  exact       1 if normalise(pred) == normalise(target) else 0
  word recall multiset intersection of the whitespace-split words of pred and target, divided by the number of
              target words (extra OCR words are not penalised; a repeated target word must be read as often)
  CER         Levenshtein distance(normalise(pred), normalise(target)) / len(normalise(target)); it can exceed 1
              when the OCR output is much longer than the target. An empty target is not allowed.
Aggregates are means over images with 95 % percentile-bootstrap intervals (resampling images, fixed seed).
"""
from __future__ import annotations

import math
import re
from collections import Counter
from typing import Iterable, Sequence

import numpy as np

_WS = re.compile(r"\s+")
METRICS = ("exact_match", "word_recall", "cer")


def normalize_ws(s: str | None) -> str:
    return _WS.sub(" ", (s or "")).strip()


def exact_match(pred: str | None, target: str) -> bool:
    return normalize_ws(pred) == normalize_ws(target)


def edit_table(a: str, b: str) -> list[list[int]]:
    """The Levenshtein table: D[i][j] = edit distance between a[:i] and b[:j] (insertions, deletions,
    substitutions, each cost 1). Backtrace it to align the strings (xomni.rl.credit)."""
    D = [list(range(len(b) + 1))]
    for i, ca in enumerate(a, 1):
        prev, cur = D[-1], [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        D.append(cur)
    return D


def levenshtein(a: str, b: str) -> int:
    """Edit distance (insertions, deletions, substitutions, each cost 1)."""
    return 0 if a == b else edit_table(a, b)[-1][-1]


def word_recall(pred: str | None, target: str) -> float:
    t = normalize_ws(target).split(" ")
    p = Counter(normalize_ws(pred).split(" ")) if normalize_ws(pred) else Counter()
    tc = Counter(t)
    return sum((tc & p).values()) / len(t)


def cer(pred: str | None, target: str) -> float:
    t = normalize_ws(target)
    return levenshtein(normalize_ws(pred), t) / len(t)


def score_pair(pred: str | None, target: str) -> dict:
    """Per-image scores. `target` must be non-empty after whitespace normalisation."""
    if not normalize_ws(target):
        raise ValueError("empty target string")
    return {"exact_match": float(exact_match(pred, target)), "word_recall": word_recall(pred, target),
            "cer": cer(pred, target)}


def bootstrap_ci(values: Sequence[float], n_boot: int = 1000, alpha: float = 0.05, seed: int = 0) -> list[float]:
    """Percentile bootstrap interval of the mean. n=0 -> [nan, nan]; n=1 -> [v, v]."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return [math.nan, math.nan]
    if v.size == 1:
        return [float(v[0]), float(v[0])]
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    # chunked to bound memory for large n
    chunk = max(1, 2_000_000 // v.size)
    for s in range(0, n_boot, chunk):
        e = min(n_boot, s + chunk)
        idx = rng.integers(0, v.size, size=(e - s, v.size))
        means[s:e] = v[idx].mean(axis=1)
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    m = float(v.mean())
    # the percentile interval always brackets the sample mean up to quantile interpolation; make it explicit
    return [float(min(lo, m)), float(max(hi, m))]


def aggregate(rows: Sequence[dict], n_boot: int = 1000, seed: int = 0) -> dict:
    """Means and 95 % bootstrap intervals of the per-image metrics in `rows`."""
    out: dict = {"n": len(rows)}
    ci = {}
    for k in METRICS:
        vals = [r[k] for r in rows]
        out[k] = float(np.mean(vals)) if vals else math.nan
        ci[k] = bootstrap_ci(vals, n_boot=n_boot, seed=seed)
    out["ci95"] = ci
    return out


def length_bucket(text: str) -> str:
    """Coarse text-length buckets used by breakdowns and report plots (characters after normalisation)."""
    n = len(normalize_ws(text))
    for hi, name in ((4, "1-4"), (8, "5-8"), (12, "9-12"), (16, "13-16"), (24, "17-24")):
        if n <= hi:
            return name
    return "25+"


LENGTH_ORDER = ["1-4", "5-8", "9-12", "13-16", "17-24", "25+"]


def breakdown(rows: Sequence[dict], key: str, n_boot: int = 200) -> dict:
    """Group per-image rows by `row[key]` (skipping rows without it) -> {value: aggregate}."""
    groups: dict[str, list[dict]] = {}
    for r in rows:
        v = r.get(key)
        if v is None or v == "":
            continue
        groups.setdefault(str(v), []).append(r)
    if key == "length_bucket":
        order = [k for k in LENGTH_ORDER if k in groups]
    else:
        order = sorted(groups)
    return {k: aggregate(groups[k], n_boot=n_boot) for k in order}


def score_rows(preds: Iterable[str | None], targets: Iterable[str], metas: Iterable[dict] | None = None) -> list[dict]:
    """Per-image rows: scores + pred/target + font and length bucket when known."""
    rows = []
    metas = list(metas) if metas is not None else None
    for i, (p, t) in enumerate(zip(preds, targets)):
        r = score_pair(p, t)
        r.update({"target": t, "ocr": p or ""})
        r["length_bucket"] = length_bucket(t)
        r["length"] = len(normalize_ws(t))
        if metas is not None:
            m = metas[i] or {}
            for k in ("key", "font", "font_family", "font_style", "font_size", "file_name", "caption"):
                if m.get(k) is not None:
                    r[k] = m[k]
        rows.append(r)
    return rows
