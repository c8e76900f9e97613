"""`xomni data targets`: reproducible target-string lists for `xomni eval text --targets FILE` (one per line).

  upper     N distinct random upper-case strings of 4-7 letters (uniform letters and lengths) from a seeded stream;
            each is a string of --split by the rules of xomni.data.signtext (the test split by default, so none is
            a string of any preset's train split)
  <preset>  the first N distinct texts of that split of `xomni data synth --preset P --seed S`, in sample order
            (e.g. `--kind sign`: the sign distribution's test strings)
"""
from __future__ import annotations

import hashlib
from pathlib import Path

from xomni.data.presets import PRESETS, get_preset
from xomni.data.scene import sample_scene
from xomni.data.signtext import confusable_share, upper_targets
from xomni.data.words import SPLITS
from xomni.errors import XomniError
from xomni.utils import atomic_write_text

MAX_N = 100_000


def kinds() -> tuple[str, ...]:
    return ("upper", *sorted(PRESETS))


def preset_targets(preset: str, n: int, seed: int, split: str) -> tuple[list[str], int]:
    """The first `n` distinct texts of `split` of the preset's synth stream, and how many samples were read."""
    p = get_preset(preset)
    out: list[str] = []
    seen: set[str] = set()
    limit = 20 * n + 1000
    for i in range(limit):
        t = sample_scene(p, seed, split, i)["text"]
        if t not in seen:
            seen.add(t)
            out.append(t)
            if len(out) == n:
                return out, i + 1
    raise XomniError(f"preset {preset}: only {len(out)} distinct {split} strings in the first {limit} samples; "
                     f"ask for fewer (--n)")


def make_targets(kind: str, n: int, seed: int = 0, split: str = "test", out: str | Path | None = None) -> dict:
    """Write the list to `out` (when given); returns the JSON summary."""
    if kind not in kinds():
        raise XomniError(f"unknown --kind {kind!r}; expected one of {', '.join(kinds())}")
    if split not in SPLITS:
        raise XomniError(f"unknown --split {split!r}; expected one of {', '.join(SPLITS)}")
    if not 1 <= n <= MAX_N:
        raise XomniError(f"--n must be between 1 and {MAX_N}, got {n}")
    if kind == "upper":
        texts, read = upper_targets(n, seed, split), None
    else:
        texts, read = preset_targets(kind, n, seed, split)
    body = "".join(t + "\n" for t in texts)
    if out is not None:
        atomic_write_text(out, body)
    lengths = [len(t) for t in texts]
    info = {
        "kind": kind, "split": split, "seed": seed, "n": len(texts), "out": str(out) if out is not None else None,
        "sha256": hashlib.sha256(body.encode("utf-8")).hexdigest(),
        "length": {"min": min(lengths), "max": max(lengths), "mean": round(sum(lengths) / len(lengths), 2)},
        "charset": "".join(sorted(set("".join(texts)))),
        "confusable_share": round(confusable_share(texts), 4),
        "first": texts[:5],
    }
    if read is not None:
        info["samples_read"] = read
        info["rule"] = (f"the first {len(texts)} distinct texts of split {split} of `xomni data synth --preset "
                        f"{kind} --seed {seed}`")
    else:
        info["rule"] = (f"distinct random upper-case strings of 4-7 letters, seed {seed}, each a string of split "
                        f"{split} (xomni.data.signtext)")
    return info
