"""Image understanding with the generator's own weights: the unified model captions ground-truth renders, and the
caption is compared with the true one (exact match, text-string exact match, per-attribute accuracy by
`parse_caption`)."""
from __future__ import annotations

from xomni.data.caption import parse_caption
from xomni.data.io import open_dataset
from xomni.errors import XomniError
from xomni.metrics.textmetrics import bootstrap_ci
from xomni.pipeline import Pipeline

ATTRS = ("text", "noun", "background", "text_color", "font_family", "font_style")


def caption_scores(preds: list[str], truths: list[str]) -> dict:
    exact = [float(p.strip() == t.strip()) for p, t in zip(preds, truths)]
    per_attr: dict[str, list[float]] = {a: [] for a in ATTRS}
    for p, t in zip(preds, truths):
        pa, ta = parse_caption(p), parse_caption(t)
        for a in ATTRS:
            per_attr[a].append(float(pa.get(a) == ta.get(a)))
    n = len(exact)
    return {"n": n, "caption_exact": sum(exact) / max(1, n), "ci95": bootstrap_ci(exact),
            "text_exact": sum(per_attr["text"]) / max(1, n),
            "per_attribute": {a: sum(v) / max(1, n) for a, v in per_attr.items()}}


def evaluate_captions(model_dir: str | None, data: str, split: str = "test", n: int = 200,
                      batch: int = 32, num_beams: int | None = None,
                      lora: str | None = None) -> tuple[dict, list[dict]]:
    """Caption the first `n` images of `split` with the pipeline (+ LoRA adapters); scores + per-image rows."""
    pipe = Pipeline.from_pretrained(model_dir, lora=lora)
    num_beams = pipe.check_num_beams(num_beams)  # before the dataset is read
    ds = open_dataset(data, split=split)
    rows, images = [], []
    for i in range(min(n, len(ds)) if n > 0 else len(ds)):
        s = ds[i]
        if s.image is None or not s.meta.get("caption"):
            continue
        images.append(s.image.convert("RGB"))
        rows.append({"key": s.key, "caption": s.meta["caption"]})
    if not rows:
        raise XomniError(f"no captioned images in {data} (split {split})")
    preds: list[str] = []
    for i in range(0, len(images), batch):
        preds.extend(pipe.caption(images[i:i + batch], num_beams=num_beams))
    for r, p in zip(rows, preds):
        r["predicted"] = p
        r["exact"] = p.strip() == r["caption"].strip()
    res = caption_scores(preds, [r["caption"] for r in rows])
    res.update({"model": str(pipe.path), "data": str(data), "split": split, "num_beams": num_beams})
    if lora is not None:
        res["lora"] = pipe.index.get("lora")
    return res, rows
