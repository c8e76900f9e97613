"""Prompt compliance, GenEval-style: does an image show what its prompt asked for (colours, frame, shapes)?

`wanted(meta)`: the prompt's attributes, parsed from the caption (xomni.data.caption.parse_caption) when there is
one, else taken from the metadata fields. `compare(pred, want)` -> {attribute: [bool, ...]} with
  background, text_color, noun             one check per image
  shape_count, shape_position              one check per image (number / set of occupied positions)
  shape_kind, shape_color                  one check per requested shape (judge reading at that position)
A free-form caption (outside our grammar) is checked only on what it names. An image satisfies its prompt when
every check passes; `overall` is the fraction of prompts fully satisfied.

`evaluate_judge`: the judge's own accuracy on held-out ground-truth renders, and its rejection rate on renders
whose attributes were swapped against the prompt (re-rendered with the data renderer, original caption kept).
"""
from __future__ import annotations

import copy
import random
from typing import Callable, Sequence

from xomni.data import render as rendering
from xomni.data.caption import parse_caption
from xomni.data.palette import PALETTE, contrast_ratio
from xomni.data.presets import get_preset
from xomni.data.scene import MIN_SHAPE_CONTRAST
from xomni.errors import XomniError
from xomni.metrics.textmetrics import bootstrap_ci

SINGLE = ("background", "text_color", "noun")
ATTRS = ("background", "text_color", "noun", "shape_count", "shape_position", "shape_kind", "shape_color")
SWAPS = ("background", "text_color", "noun", "shape_color", "shape_kind", "shape_position", "shape_count")


def wanted(meta: dict) -> dict | None:
    """What the prompt asked for; None when neither a caption nor attribute metadata is available."""
    cap = meta.get("caption")
    if isinstance(cap, str) and cap.strip():
        p = parse_caption(cap)
        w = {k: p[k] for k in SINGLE if k in p}
        w["shapes"] = [{"kind": s["kind"], "color": s["color"], "position": s["position"]} for s in p["shapes"]]
        w["complete"] = bool(p.get("grammar"))
        return w
    if all(k in meta for k in SINGLE):
        w = {k: meta[k] for k in SINGLE}
        w["shapes"] = [{"kind": s["kind"], "color": s["color"], "position": s["position"]}
                       for s in meta.get("shapes") or []]
        w["complete"] = True
        return w
    return None


def compare(pred: dict, want: dict) -> dict[str, list[bool]]:
    res: dict[str, list[bool]] = {}
    for k in SINGLE:
        if k in want:
            res[k] = [pred.get(k) == want[k]]
    at = {s["position"]: s for s in pred.get("shapes", [])}
    if want.get("complete", True):
        res["shape_count"] = [len(pred.get("shapes", [])) == len(want["shapes"])]
        res["shape_position"] = [set(at) == {s["position"] for s in want["shapes"]}]
    if want["shapes"]:
        res["shape_kind"] = [s["position"] in at and at[s["position"]]["kind"] == s["kind"] for s in want["shapes"]]
        res["shape_color"] = [s["position"] in at and at[s["position"]]["color"] == s["color"]
                              for s in want["shapes"]]
    return res


def satisfied(checks: dict[str, list[bool]]) -> bool:
    return all(all(v) for v in checks.values())


def score(preds: Sequence[dict], wants: Sequence[dict], n_boot: int = 500) -> tuple[dict, list[dict]]:
    """Per-attribute accuracy (checks pooled over images) and overall fraction of fully satisfied prompts."""
    per_image = []
    pooled: dict[str, list[bool]] = {k: [] for k in ATTRS}
    for p, w in zip(preds, wants):
        c = compare(p, w)
        for k, v in c.items():
            pooled[k].extend(v)
        per_image.append({"checks": {k: all(v) for k, v in c.items()}, "satisfied": satisfied(c), "pred": p})
    sat = [float(r["satisfied"]) for r in per_image]
    res = {"n": len(per_image), "overall": sum(sat) / len(sat) if sat else float("nan"),
           "ci95": {"overall": bootstrap_ci(sat, n_boot=n_boot)}, "per_attribute": {}, "n_checks": {}}
    for k in ATTRS:
        if pooled[k]:
            res["per_attribute"][k] = sum(pooled[k]) / len(pooled[k])
            res["n_checks"][k] = len(pooled[k])
    return res, per_image


def unlearned(want: dict, schema: dict) -> list[str]:
    """What a prompt asks for that a judge with this schema never learned (colours, nouns, shape kinds or
    positions outside its vocabulary): such checks would be scored against a guess."""
    out = [f"{k} {want[k]!r}" for k, vocab in (("background", "colors"), ("text_color", "colors"), ("noun", "nouns"))
           if k in want and want[k] not in schema.get(vocab, ())]
    for sh in want.get("shapes") or []:
        if sh["position"] not in schema.get("positions", ()):
            out.append(f"a shape at {sh['position']!r}")
        elif sh["kind"] not in schema.get("kinds", ()) or sh["color"] not in schema.get("colors", ()):
            out.append(f"a {sh['color']} {sh['kind']}")
    return out


def evaluate_images(items, predict: Callable[[list], list[dict]], n_boot: int = 500,
                    schema: dict | None = None) -> tuple[dict, list[dict]]:
    """Compliance of a list of Items (image + meta with caption or attributes). With the judge's `schema`, a
    prompt asking for something the judge never learned is refused (XomniError) rather than scored."""
    ok, wants, skipped = [], [], []
    for it in items:
        w = wanted(it.meta) if it.image is not None else None
        if it.image is None:
            skipped.append({"key": it.key, "reason": it.error or "unreadable image"})
        elif w is None:
            skipped.append({"key": it.key, "reason": "no caption or attribute metadata"})
        else:
            ok.append(it)
            wants.append(w)
    if not ok:
        raise XomniError("no image with a caption (or attribute metadata) to score; images need metadata.jsonl")
    for it, w in zip(ok, wants) if schema is not None else ():
        bad = unlearned(w, schema)
        if bad:
            raise XomniError(f"image {it.key} asks for {', '.join(bad[:3])}, which the judge (trained on preset "
                             f"{schema.get('preset')!r}) never learned; use a judge trained on data like these images")
    preds = predict([it.image for it in ok])
    res, per = score(preds, wants, n_boot=n_boot)
    for r, it, w in zip(per, ok, wants):
        r["key"] = it.key
        r["caption"] = it.meta.get("caption")
        r["want"] = w
    res["n_skipped"] = len(skipped)
    res["skipped"] = skipped[:50]
    return res, per


# ------------------------------------------------------------------ swapped renders
def make_swap(meta: dict, kind: str, rng: random.Random) -> dict | None:
    """A copy of `meta` with one attribute changed (None when this sample cannot take that swap). The caption is
    left as it was: the image then contradicts it."""
    p = get_preset(meta.get("preset", "tiny"))
    m = copy.deepcopy(meta)
    shapes = m.get("shapes") or []
    bg = m["background"]

    def ok_on(col, back, ratio):
        return contrast_ratio(PALETTE[col], PALETTE[back]) >= ratio

    if kind == "background":
        c = [x for x in p.colors if x not in (bg, m["text_color"]) and ok_on(m["text_color"], x, p.min_contrast)
             and all(s["color"] != x and ok_on(s["color"], x, MIN_SHAPE_CONTRAST) for s in shapes)]
        if not _recolour(m, "background", c, rng):
            return None
    elif kind == "text_color":
        c = [x for x in p.colors if x not in (bg, m["text_color"]) and ok_on(x, bg, p.min_contrast)]
        if not _recolour(m, "text_color", c, rng):
            return None
    elif kind == "noun":
        m["noun"] = rng.choice([x for x in p.nouns if x != m["noun"]])
    elif kind in ("shape_color", "shape_kind", "shape_position"):
        if not shapes:
            return None
        s = rng.choice(shapes)
        if kind == "shape_color":
            c = [x for x in p.colors if x not in (bg, s["color"]) and ok_on(x, bg, MIN_SHAPE_CONTRAST)]
            if not _recolour(s, "color", c, rng):
                return None
        elif kind == "shape_kind":
            s["kind"] = rng.choice([k for k in p.shape_kinds if k != s["kind"]])
        else:
            free = [q for q in p.shape_centers if q not in {t["position"] for t in shapes}]
            if not free:
                return None
            _move(s, rng.choice(free), p)
    elif kind == "shape_count":
        if shapes and (len(shapes) >= p.max_shapes or rng.random() < 0.5):
            shapes.remove(rng.choice(shapes))
        else:
            free = [q for q in p.shape_centers if q not in {t["position"] for t in shapes}]
            c = [x for x in p.colors if x != bg and ok_on(x, bg, MIN_SHAPE_CONTRAST)]
            if not free or not c:
                return None
            col = rng.choice(c)
            s = {"kind": rng.choice(p.shape_kinds), "color": col, "color_rgb": list(PALETTE[col]),
                 "position": "", "box": [0, 0, p.shape_size[0], p.shape_size[0]]}
            _move(s, rng.choice(free), p)
            shapes.append(s)
        m["shapes"] = shapes
    else:
        raise ValueError(kind)
    return m


def _recolour(obj: dict, key: str, choices: list, rng: random.Random) -> bool:
    """obj[key] (and obj[key + "_rgb"]) set to a random one of `choices`; False when there is none."""
    if not choices:
        return False
    obj[key] = rng.choice(choices)
    obj[key + "_rgb"] = list(PALETTE[obj[key]])
    return True


def _move(s: dict, pos: str, p) -> None:
    size = s["box"][2] - s["box"][0]
    cx, cy = p.shape_centers[pos]
    s["position"] = pos
    s["box"] = [cx - size // 2, cy - size // 2, cx - size // 2 + size, cy - size // 2 + size]


def swapped_renders(metas: Sequence[dict], seed: int = 0) -> list[tuple[str, dict, object]]:
    """One swapped render per sample: (swap kind, original meta, image). The swap kind cycles through the kinds
    this sample can take, starting from a seeded random one."""
    rng = random.Random(seed)
    out = []
    for i, meta in enumerate(metas):
        order = list(SWAPS)
        rng.shuffle(order)
        for kind in order:
            m2 = make_swap(meta, kind, rng)
            if m2 is not None:
                out.append((kind, meta, rendering.render(m2)))
                break
    return out


def evaluate_judge(predict: Callable[[list], list[dict]], items, seed: int = 0) -> dict:
    """Judge accuracy per attribute on ground-truth renders and its swap-rejection rate."""
    good = [it for it in items if it.image is not None and wanted(it.meta) is not None]
    if not good:
        raise XomniError("no readable held-out ground-truth render with metadata")
    metas = [it.meta for it in good]
    acc, per = score(predict([it.image for it in good]), [wanted(m) for m in metas])
    swaps = swapped_renders(metas, seed=seed)
    sp = predict([im for _, _, im in swaps])
    by_kind: dict[str, list[bool]] = {}
    for (kind, meta, _), p in zip(swaps, sp):
        rejected = not satisfied(compare(p, wanted(meta)))
        by_kind.setdefault(kind, []).append(rejected)
    allr = [r for v in by_kind.values() for r in v]
    return {
        "n_heldout": len(good), "n_skipped": len(items) - len(good),
        "accuracy": acc["per_attribute"], "accuracy_all_attributes": acc["overall"],
        "min_attribute_accuracy": min(acc["per_attribute"].values()),
        "n_swaps": len(allr), "swap_rejection": sum(allr) / len(allr) if allr else float("nan"),
        "swap_rejection_by_kind": {k: {"n": len(v), "rejection": sum(v) / len(v)} for k, v in sorted(by_kind.items())},
        "pass": bool(min(acc["per_attribute"].values()) >= 0.98 and allr and sum(allr) / len(allr) >= 0.95),
        "criteria": "per-attribute accuracy >= 0.98 and swap rejection >= 0.95",
    }
