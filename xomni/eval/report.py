"""`xomni eval all`: one self-contained HTML report (index.html + PNG files next to it) and metrics.json.

Sections: headline numbers with 95 % intervals and a few generated sentences (best/worst font, the text length
where accuracy falls, the weakest compliance attribute); plots of exact match by text length and by font; metric
tables; a grid of samples (generated next to ground truth when --reference is given); failures (target vs OCR).
"""
from __future__ import annotations

import html
import json
import math
import shutil
from pathlib import Path

from xomni.errors import XomniError
from xomni.metrics.compliance import evaluate_images
from xomni.metrics.fid import extract, fid_from_features, get_extractor
from xomni.metrics.images import ImageSource
from xomni.metrics.judge import Judge
from xomni.metrics.ocr import resolve_region
from xomni.metrics.text import pairs_from_images, score_items
from xomni.utils import atomic_write_text, log

N_GRID = 24
N_FAIL = 40


def pct(x) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}%"


def ci_text(ci) -> str:
    return "" if not ci or any(v is None or math.isnan(v) for v in ci) else f" [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"


def _bar_plot(groups: dict, path: Path, title: str, xlabel: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    names = list(groups)
    vals = [groups[k]["exact_match"] for k in names]
    lo = [max(0.0, v - groups[k]["ci95_exact_match"][0]) for k, v in zip(names, vals)]
    hi = [max(0.0, groups[k]["ci95_exact_match"][1] - v) for k, v in zip(names, vals)]
    fig, ax = plt.subplots(figsize=(max(4.0, 0.6 * len(names) + 2), 3.2), dpi=100)
    ax.bar(range(len(names)), vals, yerr=[lo, hi], color="#4c72b0", capsize=3)
    for i, k in enumerate(names):
        ax.text(i, 0.02, f"n={groups[k]['n']}", ha="center", va="bottom", fontsize=7, color="white")
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=30 if len(names) > 6 else 0, ha="right" if len(names) > 6 else "center",
                       fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("exact match")
    ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _cer_hist(rows: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(4.5, 3.2), dpi=100)
    ax.hist([min(r["cer"], 1.5) for r in rows], bins=30, range=(0, 1.5), color="#dd8452")
    ax.set_xlabel("character error rate (clipped at 1.5)")
    ax.set_ylabel("images")
    ax.set_title("CER distribution", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _match_reference(items, reference: str | None, split: str | None) -> dict:
    """key -> reference Item: by the generated image's `key` / `ref_key` metadata, else by position."""
    if not reference:
        return {}
    ref = ImageSource(reference, split=split)
    by_key = {}
    for i in range(len(ref)):
        by_key[str(ref.meta(i).get("key"))] = i
    out = {}
    for pos, it in enumerate(items):
        k = str(it.meta.get("ref_key") or it.meta.get("key") or it.key)
        j = by_key.get(k, pos if pos < len(ref) and len(ref) == len(items) else None)
        if j is not None:
            out[it.key] = ref[j]
    return out


def _save_img(im, path: Path, scale: int = 1) -> str:
    if scale != 1:
        im = im.resize((im.width * scale, im.height * scale))
    im.save(path)
    return f"img/{path.name}"


def _sentences(text_res: dict, comp: dict | None) -> list[str]:
    s = [f"Text: {pct(text_res['exact_match'])} of {text_res['n']} images read exactly by Tesseract "
         f"(95% CI{ci_text(text_res['ci95']['exact_match'])}); word recall {pct(text_res['word_recall'])}, "
         f"CER {text_res['cer']:.3f}."]
    fonts = {k: v for k, v in (text_res.get("by_font") or {}).items() if v["n"] >= 5}
    if len(fonts) >= 2:
        best = max(fonts, key=lambda k: fonts[k]["exact_match"])
        worst = min(fonts, key=lambda k: fonts[k]["exact_match"])
        s.append(f"Best font: {best} ({pct(fonts[best]['exact_match'])}); worst: {worst} "
                 f"({pct(fonts[worst]['exact_match'])}).")
    lens = text_res.get("by_length") or {}
    drop = next((k for k, v in lens.items() if v["n"] >= 5 and v["exact_match"] < 0.5), None)
    if drop:
        s.append(f"Accuracy falls below 50% at text length {drop} characters.")
    elif lens:
        s.append("Accuracy stays at or above 50% for every text length bucket with >= 5 images.")
    if comp:
        pa = comp["per_attribute"]
        if pa:
            w = min(pa, key=pa.get)
            s.append(f"Compliance: {pct(comp['overall'])} of prompts fully satisfied; weakest attribute: {w} "
                     f"({pct(pa[w])}).")
    return s


def html_table(rows: list[list], head: list[str]) -> str:
    h = "".join(f"<th>{html.escape(str(c))}</th>" for c in head)
    b = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{h}</tr>{b}</table>"


CSS = """body{font-family:sans-serif;margin:24px;max-width:1200px;color:#222}h1{font-size:22px}h2{font-size:18px;
margin-top:28px;border-bottom:1px solid #ccc}table{border-collapse:collapse;font-size:13px;margin:8px 0}
td,th{border:1px solid #ddd;padding:3px 7px;text-align:left;vertical-align:middle}th{background:#f3f3f3}
.ok{color:#1a7f37;font-weight:bold}.bad{color:#c0392b;font-weight:bold}.big{font-size:15px}
.plots img{margin:4px;border:1px solid #eee}code{background:#f6f6f6;padding:1px 3px}img.s{image-rendering:pixelated}"""


def build_report(images: str, out: str, reference: str | None = None, judge: str | None = None,
                 targets: str | None = None, split: str | None = None, limit: int | None = None,
                 fid: bool = True) -> dict:
    od = Path(out)
    if od.exists() and not od.is_dir():
        raise XomniError(f"--out {od} exists and is not a directory")
    items, tg = pairs_from_images(images, targets, split)
    if limit is not None:
        items, tg = items[:limit], tg[:limit]
    if od.exists():
        shutil.rmtree(od / "img", ignore_errors=True)
    (od / "img").mkdir(parents=True, exist_ok=True)
    reg = resolve_region([it.meta for it in items])
    text_res, rows = score_items(items, tg, region=reg)
    metrics: dict = {"images": images, "reference": reference, "text": text_res}
    by_key = {r["key"]: r for r in rows if not r.get("skipped")}

    comp, comp_by_key = None, {}
    if judge:
        jd = Judge.load(judge)
        comp, per = evaluate_images(items, jd.predict, schema=jd.schema)
        comp_by_key = {r["key"]: r for r in per}
        metrics["compliance"] = comp
    refs = _match_reference(items, reference, split)
    if reference and fid:
        ok = [it for it in items if it.image is not None]
        real = [refs[it.key] for it in ok if it.key in refs and refs[it.key].image is not None]
        if len(real) >= 2 and len(ok) >= 2:
            ext, name = get_extractor()
            fr, _ = extract(real, ext, 16, "reference")
            ff, _ = extract(ok, ext, 16, "generated")
            metrics["fid"] = {"fid": fid_from_features(fr, ff), "n_real": len(fr), "n_fake": len(ff),
                              "features": name, "note": "small-n FID is biased; compare only at equal n"}
        else:
            log("report: fewer than 2 matched reference images, FID skipped")

    plots = []
    if text_res.get("by_length"):
        _bar_plot(text_res["by_length"], od / "img" / "by_length.png", "Exact match by text length", "characters")
        plots.append("img/by_length.png")
    if text_res.get("by_font"):
        _bar_plot(text_res["by_font"], od / "img" / "by_font.png", "Exact match by font", "font")
        plots.append("img/by_font.png")
    scored = [r for r in rows if not r.get("skipped")]
    _cer_hist(scored, od / "img" / "cer_hist.png")
    plots.append("img/cer_hist.png")

    # ---- sections
    parts = [f"<h1>xomni evaluation report</h1><p>Images: <code>{html.escape(images)}</code>"
             + (f" &middot; reference: <code>{html.escape(reference)}</code>" if reference else "")
             + f" &middot; n={text_res['n']}, skipped={text_res['n_skipped']}</p>"]
    parts.append("<h2>Summary</h2><ul class=big>" + "".join(f"<li>{html.escape(s)}</li>"
                                                            for s in _sentences(text_res, comp)) + "</ul>")
    head = [["exact match", pct(text_res["exact_match"]) + ci_text(text_res["ci95"]["exact_match"])],
            ["word recall", pct(text_res["word_recall"]) + ci_text(text_res["ci95"]["word_recall"])],
            ["character error rate", f"{text_res['cer']:.3f}" + (
                f" [{text_res['ci95']['cer'][0]:.3f}, {text_res['ci95']['cer'][1]:.3f}]")]]
    if comp:
        head.append(["prompts fully satisfied (judge)", pct(comp["overall"]) + ci_text(comp["ci95"]["overall"])])
    if "fid" in metrics:
        f = metrics["fid"]
        head.append(["FID vs reference", f"{f['fid']:.2f} (n={f['n_fake']}/{f['n_real']}, {f['features']})"])
    parts.append("<h2>Metrics</h2>" + html_table(head, ["metric", "value [95% CI]"]))
    parts.append("<h2>Plots</h2><div class=plots>" + "".join(f"<img src='{p}'>" for p in plots) + "</div>")
    for key, title in (("by_length", "By text length"), ("by_font", "By font")):
        g = text_res.get(key)
        if g:
            parts.append(f"<h3>{title}</h3>" + html_table(
                [[html.escape(k), v["n"], pct(v["exact_match"]) + ci_text(v["ci95_exact_match"]), pct(v["word_recall"]),
                  f"{v['cer']:.3f}"] for k, v in g.items()], [title.split()[-1], "n", "exact", "word recall", "CER"]))
    if comp:
        parts.append("<h3>Compliance by attribute</h3>" + html_table(
            [[k, comp["n_checks"][k], pct(v)] for k, v in comp["per_attribute"].items()],
            ["attribute", "checks", "accuracy"]))

    def cells(it, r):
        gen = _save_img(it.image, od / "img" / f"g-{safe_name(it.key)}.png", 2)
        c = [f"<img class=s src='{gen}'>"]
        if reference:
            ref = refs.get(it.key)
            c.append(f"<img class=s src='{_save_img(ref.image, od / 'img' / f'r-{safe_name(it.key)}.png', 2)}'>"
                     if ref is not None and ref.image is not None else "")
        ok = r["exact_match"] == 1.0
        c += [html.escape(r["target"]), html.escape(r["ocr"]) or "<i style='color:#999'>(empty)</i>",
              f"<span class={'ok' if ok else 'bad'}>{'yes' if ok else 'no'}</span>", f"{r['cer']:.2f}",
              html.escape(str(r.get("font", "")))]
        if comp:
            cr = comp_by_key.get(it.key)
            bad = [k for k, v in (cr or {}).get("checks", {}).items() if not v]
            c.append("<span class=ok>ok</span>" if cr and not bad else
                     f"<span class=bad>{html.escape(', '.join(bad))}</span>" if cr else "")
        return c

    cols = ["generated"] + (["reference"] if reference else []) + ["target", "OCR", "exact", "CER", "font"] + (
        ["compliance"] if comp else [])
    scored_items = [it for it in items if it.key in by_key]
    grid = [cells(it, by_key[it.key]) for it in scored_items[:N_GRID]]
    parts.append(f"<h2>Samples (first {len(grid)})</h2>" + html_table(grid, cols))
    fails = [it for it in scored_items if by_key[it.key]["exact_match"] < 1.0]
    fails.sort(key=lambda it: -by_key[it.key]["cer"])
    parts.append(f"<h2>Failures ({len(fails)} of {len(scored_items)}; worst {min(N_FAIL, len(fails))} by CER)</h2>"
                 + (html_table([cells(it, by_key[it.key]) for it in fails[:N_FAIL]], cols) if fails else
                    "<p>No OCR failures.</p>"))
    if text_res.get("skipped"):
        parts.append("<h2>Skipped images</h2>" + html_table(
            [[html.escape(str(s["key"])), html.escape(s["reason"])] for s in text_res["skipped"]], ["key", "reason"]))
    doc = (f"<!doctype html><html><head><meta charset='utf-8'><title>xomni report</title><style>{CSS}</style>"
           f"</head><body>{''.join(parts)}</body></html>")
    atomic_write_text(od / "index.html", doc)
    atomic_write_text(od / "metrics.json", json.dumps(metrics, indent=2, default=_num))
    log(f"report: {od / 'index.html'}")
    return {"report": str(od / "index.html"), "metrics": str(od / "metrics.json"), "n": text_res["n"],
            "n_skipped": text_res["n_skipped"], "exact_match": text_res["exact_match"],
            "compliance": comp["overall"] if comp else None, "fid": metrics.get("fid", {}).get("fid")}


def safe_name(k: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in str(k))


def _num(o):
    try:
        return o.item()
    except AttributeError:
        raise TypeError(type(o)) from None
