"""Paired comparison of two evaluations of the same targets: the mean difference per image with a bootstrap
interval (resampling targets), which is tighter than comparing two separate intervals."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from xomni.errors import XomniError
from xomni.metrics.textmetrics import bootstrap_ci

METRICS = ("exact_match", "cer")


def read_rows(path: str | Path) -> list[dict]:
    p = Path(path)
    try:
        rows = [json.loads(line) for line in p.read_text().splitlines() if line.strip()]
    except (OSError, ValueError) as e:
        raise XomniError(f"cannot read per-image results {p}: {e}") from None
    if not rows or any("target" not in r for r in rows):
        raise XomniError(f"{p} holds no per-image rows with a 'target' (write them with --per-image)")
    return rows


def paired_difference(a_rows: list[dict], b_rows: list[dict], n_boot: int = 2000, seed: int = 0) -> dict:
    """B minus A per metric, pairing rows in order; both lists must hold the same targets in the same order."""
    if [r["target"] for r in a_rows] != [r["target"] for r in b_rows]:
        raise XomniError(f"the two results do not hold the same targets in the same order "
                         f"({len(a_rows)} and {len(b_rows)} rows)")
    out: dict = {"n": len(a_rows)}
    for k in METRICS:
        a = np.array([float(r[k]) for r in a_rows])
        b = np.array([float(r[k]) for r in b_rows])
        out[k] = {"a": round(float(a.mean()), 4), "b": round(float(b.mean()), 4),
                  "b_minus_a": round(float((b - a).mean()), 4),
                  "ci95_b_minus_a": [round(x, 4) for x in bootstrap_ci(b - a, n_boot=n_boot, seed=seed)]}
    out["b_only_right"] = int(sum(1 for x, y in zip(a_rows, b_rows) if y["exact_match"] > x["exact_match"]))
    out["a_only_right"] = int(sum(1 for x, y in zip(a_rows, b_rows) if x["exact_match"] > y["exact_match"]))
    return out
