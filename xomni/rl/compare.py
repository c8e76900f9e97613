"""`xomni eval rl`: the RL reproduction table: SFT and SFT+GRPO, one sample and best-of-N, on the same prompts.

    xomni eval rl --sft SFT_PIPELINE --rl RL_RUN --targets words.txt --best-of 8 \
        --reward-config configs/rl_mini.yaml --reference DATA --split test -o report_dir

Every condition samples with the model's own default sampling settings and fixed seeds. Best-of-N draws N
candidates per prompt and keeps the one with the highest combined reward under the RL reward configuration (the
same callables and weights as `xomni train rl`, `xomni.rl.bestofn.best_of_n`); "1 sample" is the same code path
with N = 1. Columns: Tesseract (the evaluator) exact match / word recall / CER with 95 % bootstrap intervals,
RapidOCR (the reward's engine) exact match, the mean combined reward of the kept images, compliance when a judge
is given, and FID against ground-truth renders (--reference) with a bootstrap interval over the generated images.
The HTML page plots the RL run's training reward against the SFT one-sample and best-of-N reward levels (the
paper's Fig. 2b); note that the training curve is on training prompts, the levels on the evaluation prompts.
"""
from __future__ import annotations

import hashlib
import html
import json
from pathlib import Path

import numpy as np

from xomni.errors import XomniError
from xomni.eval.report import CSS, ci_text, html_table, pct, safe_name
from xomni.eval.text import caption_for, load_pipeline, model_preset, unsupported_chars
from xomni.metrics.compliance import evaluate_images
from xomni.metrics.fid import extract, fid_with_ci, get_extractor
from xomni.metrics.images import ImageSource, Item, read_targets
from xomni.metrics.judge import Judge
from xomni.metrics.ocr import resolve_region
from xomni.metrics.text import score_items
from xomni.metrics.textmetrics import bootstrap_ci
from xomni.rl.bestofn import best_of_n
from xomni.rl.config import load_rl_config
from xomni.utils import atomic_write_text, image_grid, log


def resolve_rl(path: str) -> tuple[Path, Path | None]:
    """An RL run dir (with pipeline/ and log.jsonl) or a pipeline dir -> (pipeline dir, log.jsonl or None)."""
    p = Path(path)
    if (p / "pipeline" / "model_index.json").is_file():
        return p / "pipeline", (p / "log.jsonl") if (p / "log.jsonl").is_file() else None
    if (p / "model_index.json").is_file():
        log_p = p.parent / "log.jsonl"
        return p, log_p if log_p.is_file() else None
    raise XomniError(f"--rl {p}: neither an RL run directory (with pipeline/) nor a model directory")


def reward_curve(log_path: Path, key: str = "reward") -> list[tuple[int, float]]:
    """(step, value of `key`: the mean training reward by default) from an RL run's log.jsonl (the last entry per
    step wins after a resume)."""
    by_step: dict[int, float] = {}
    for line in log_path.read_text().splitlines():
        try:
            r = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(r, dict) and key in r and "step" in r:
            by_step[int(r["step"])] = float(r[key])
    return sorted(by_step.items())


def run_condition(pipe, targets: list[str], n: int, reward_cfg, seed: int, judge=None, real_feats=None,
                  extractor=None, n_boot_fid: int = 200) -> tuple[dict, list]:
    """Sample best-of-n (n = 1: one sample) for every target string and score the kept images."""
    caps = [caption_for(pipe, t) for t in targets]
    images, scores = best_of_n(pipe, caps, n, reward_cfg, seed=seed, sampling=pipe.sampling_config())
    preset = model_preset(pipe)
    items = [Item(f"t{i:04d}", im.convert("RGB"), {"key": f"t{i:04d}", "text": t, "caption": c,
                                                  **({"preset": preset} if preset else {})})
             for i, (im, t, c) in enumerate(zip(images, targets, caps))]
    region = resolve_region([it.meta for it in items])
    tess, _ = score_items(items, targets, engine="tesseract", region=region)
    rapid, _ = score_items(items, targets, engine="rapidocr", region=region, n_boot=200)
    res = {"n": tess["n"], "exact_match": tess["exact_match"], "word_recall": tess["word_recall"],
           "cer": tess["cer"], "ci95": tess["ci95"], "rapidocr_exact_match": rapid["exact_match"],
           "reward_mean": float(np.mean(scores)), "reward_ci95": _mean_ci(scores)}
    if judge is not None:
        comp, _ = evaluate_images(items, judge.predict, schema=judge.schema)
        res["compliance"] = {"overall": comp["overall"], "ci95": comp["ci95"]["overall"]}
    if real_feats is not None:
        ff, _ = extract(items, extractor, 16, "generated")
        res["fid"] = fid_with_ci(real_feats, ff, n_boot_fid, seed)
    return res, images


def _mean_ci(values, n_boot: int = 1000, seed: int = 0) -> list[float]:
    return [float(v) for v in bootstrap_ci([float(v) for v in values], n_boot=n_boot, seed=seed)]


def compare(sft: str, rl: str, targets_file: str, out: str, best_of: int = 8, reward_config: str | None = None,
            seed: int = 0, reference: str | None = None, split: str | None = "test", n_ref: int = 512,
            judge: str | None = None, n_boot_fid: int = 200, rest: str | None = None,
            reuse_sft: str | None = None) -> dict:
    if best_of < 2:
        raise XomniError(f"--best-of must be >= 2 for the comparison, got {best_of}")
    targets = read_targets(targets_file)
    targets_sha = hashlib.sha256("\n".join(targets).encode()).hexdigest()
    rl_dir, rl_log = resolve_rl(rl)
    pipes = {"SFT": load_pipeline(sft), "SFT+GRPO": load_pipeline(str(rl_dir))}
    rest_dir = resolve_rl(rest)[0] if rest else None
    if rest_dir is not None:  # the reward-filtered self-training control: one sample only
        pipes["SFT+ReST"] = load_pipeline(str(rest_dir))
    for name, pipe in pipes.items():
        bad = [t for t in targets if unsupported_chars(pipe, t)]
        if bad:
            raise XomniError(f"{targets_file}: {len(bad)} target(s) have characters the {name} model cannot draw, "
                             f"first {bad[0]!r}")
    rc = reward_config or str(rl_dir)
    rcfg = load_rl_config(rc)
    jd = None
    if judge:
        jd = Judge.load(judge)
    real_feats = extractor = None
    if reference:
        src = ImageSource(reference, split=split)
        extractor, _ = get_extractor()
        real_feats, _ = extract([src[i] for i in range(min(n_ref, len(src)))], extractor, 16, "reference")
    rows, grids = {}, {}
    if reuse_sft:
        rows.update(reused_sft_rows(reuse_sft, len(targets), targets_sha, seed, best_of, dict(rcfg.rewards),
                                    _sampling(pipes["SFT"]), judge, reference, n_ref, rcfg.ocr_confidence))
    od = Path(out)
    (od / "img").mkdir(parents=True, exist_ok=True)
    for name, pipe in pipes.items():
        for n in ((1,) if name == "SFT+ReST" else (1, best_of)):
            label = f"{name}, " + ("1 sample" if n == 1 else f"best-of-{n}")
            if label in rows:
                continue
            log(f"[eval rl] {label} on {len(targets)} prompts ...")
            res, images = run_condition(pipe, targets, n, rc, seed, jd, real_feats, extractor, n_boot_fid)
            rows[label] = res
            grids[label] = _grid(images[:16], od / "img" / f"{safe_name(label)}.png")
    curve = reward_curve(rl_log) if rl_log else []
    result = {"sft": sft, "rl": str(rl_dir), "targets": targets_file, "n_targets": len(targets),
              "targets_sha256": targets_sha, "seed": seed, "judge": judge, "reference": reference,
              "n_ref": n_ref if reference else None, "sft_rows_from": reuse_sft,
              "best_of": best_of, "reward_weights": dict(rcfg.rewards), "ocr_confidence": rcfg.ocr_confidence,
              "reward_config": rc,
              "sampling": {k: _sampling(p) for k, p in pipes.items()}, "conditions": rows,
              "rl_steps": curve[-1][0] if curve else None, "rest": str(rest_dir) if rest_dir else None,
              "rl_kl_last": (reward_curve(rl_log, "kl") or [(None, None)])[-1][1] if rl_log else None}
    s1, sb, r1 = rows["SFT, 1 sample"], rows[f"SFT, best-of-{best_of}"], rows["SFT+GRPO, 1 sample"]
    result["bars"] = {"grpo1_ge_sft_best": r1["exact_match"] >= sb["exact_match"],
                      "grpo1_ci95": r1["ci95"]["exact_match"], "sft_best_ci95": sb["ci95"]["exact_match"],
                      "grpo1_minus_sft1_points": round(100 * (r1["exact_match"] - s1["exact_match"]), 1)}
    if "SFT+ReST, 1 sample" in rows:
        result["bars"]["grpo1_minus_rest1_points"] = round(
            100 * (r1["exact_match"] - rows["SFT+ReST, 1 sample"]["exact_match"]), 1)
    if "fid" in r1:  # no reward hacking: not worse than SFT by more than SFT's own interval
        result["bars"]["fid_not_worse"] = r1["fid"]["fid"] <= s1["fid"]["ci95"][1]
    if "compliance" in r1:
        result["bars"]["compliance_not_worse"] = r1["compliance"]["overall"] >= s1["compliance"]["ci95"][0]
    if curve:
        _curve_plot(curve, s1["reward_mean"], sb["reward_mean"], best_of, od / "img" / "reward_curve.png")
        result["curve_crosses_sft_best"] = any(v >= sb["reward_mean"] for _, v in _smooth(curve))
    _write_html(result, grids, od, bool(curve))
    atomic_write_text(od / "compare.json", json.dumps(result, indent=2))
    result["report"] = str(od / "index.html")
    log(f"report: {od / 'index.html'}")
    return result


def reused_sft_rows(path: str, n_targets: int, targets_sha: str, seed: int, best_of: int, rewards: dict,
                    sampling: dict, judge: str | None, reference: str | None, n_ref: int,
                    ocr_confidence: bool = False) -> dict:
    """The SFT rows of an earlier compare.json, when it was made under the same conditions (targets, seed, N,
    reward weights, the SFT model's sampling, and judge / FID columns when asked for): the SFT side of the table
    does not change between RL runs from the same start, and its best-of-N is the costliest row. Files made
    before `ocr_confidence` was recorded were made without it."""
    try:
        old = json.loads(Path(path).read_text())
        old_rows = {k: v for k, v in old["conditions"].items() if k.startswith("SFT, ")}
    except (OSError, ValueError, KeyError, AttributeError, TypeError) as e:
        raise XomniError(f"--reuse-sft {path}: not a compare.json of `xomni eval rl` ({type(e).__name__})") from None
    checks = [("n_targets", old.get("n_targets"), n_targets), ("seed", old.get("seed"), seed),
              ("best_of", old.get("best_of"), best_of), ("reward_weights", old.get("reward_weights"), rewards),
              ("ocr_confidence", bool(old.get("ocr_confidence", False)), bool(ocr_confidence)),
              ("SFT sampling", (old.get("sampling") or {}).get("SFT"), sampling)]
    if "targets_sha256" in old:
        checks.append(("targets (sha256)", old["targets_sha256"], targets_sha))
    if old.get("judge") and judge:  # files made before these were recorded are taken on trust for them
        checks.append(("judge", str(Path(old["judge"]).resolve()), str(Path(judge).resolve())))
    if old.get("reference") and reference:
        checks += [("reference", str(Path(old["reference"]).resolve()), str(Path(reference).resolve())),
                   ("n_ref", old.get("n_ref"), n_ref)]
    for what, was, now in checks:
        if was != now:
            raise XomniError(f"--reuse-sft {path}: {what} differs ({was!r} there, {now!r} here)")
    need = ["SFT, 1 sample", f"SFT, best-of-{best_of}"]
    for label in need:
        row = old_rows.get(label)
        if row is None:
            raise XomniError(f"--reuse-sft {path}: no {label!r} row")
        if judge and "compliance" not in row:
            raise XomniError(f"--reuse-sft {path}: its {label!r} row has no compliance (made without --judge)")
        if reference and "fid" not in row:
            raise XomniError(f"--reuse-sft {path}: its {label!r} row has no FID (made without --reference)")
    log(f"[eval rl] SFT rows reused from {path}")
    return {label: old_rows[label] for label in need}


def _sampling(pipe) -> dict:
    import dataclasses
    return dataclasses.asdict(pipe.sampling_config())


def _smooth(curve: list[tuple[int, float]], w: int = 10) -> list[tuple[int, float]]:
    vals = [v for _, v in curve]
    return [(s, float(np.mean(vals[max(0, i - w + 1):i + 1]))) for i, (s, _) in enumerate(curve)]


def _curve_plot(curve, sft1: float, sftb: float, n: int, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 3.4), dpi=100)
    ax.plot([s for s, _ in curve], [v for _, v in curve], color="#9db4d6", lw=0.8, label="GRPO batch reward")
    sm = _smooth(curve)
    ax.plot([s for s, _ in sm], [v for _, v in sm], color="#4c72b0", lw=2, label="GRPO (moving mean of 10)")
    ax.axhline(sftb, color="#c44e52", ls="--", label=f"SFT best-of-{n} (eval prompts)")
    ax.axhline(sft1, color="#8c8c8c", ls=":", label="SFT 1 sample (eval prompts)")
    ax.set_xlabel("RL step")
    ax.set_ylabel("combined reward")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _grid(images, path: Path, cols: int = 4) -> str:
    image_grid(images, cols=cols).save(path)
    return f"img/{path.name}"


def _write_html(result: dict, grids: dict, od: Path, has_curve: bool) -> None:
    rows = []
    for label, r in result["conditions"].items():
        fid = r.get("fid")
        comp = r.get("compliance")
        rows.append([html.escape(label), pct(r["exact_match"]) + ci_text(r["ci95"]["exact_match"]),
                     pct(r["word_recall"]), f"{r['cer']:.3f} [{r['ci95']['cer'][0]:.3f}, {r['ci95']['cer'][1]:.3f}]",
                     pct(r["rapidocr_exact_match"]), f"{r['reward_mean']:.3f}",
                     (pct(comp["overall"]) + ci_text(comp["ci95"])) if comp else "not measured",
                     f"{fid['fid']:.1f} [{fid['ci95'][0]:.1f}, {fid['ci95'][1]:.1f}]" if fid else "not measured"])
    head = ["condition", "exact (Tesseract) [95% CI]", "word recall", "CER [95% CI]", "exact (RapidOCR)",
            "mean reward", "compliance", "FID [95% CI]"]
    w = ", ".join(f"{k} {v:g}" for k, v in result["reward_weights"].items())
    b = result["bars"]
    parts = [f"<h1>RL reproduction: SFT vs SFT+GRPO, 1 sample vs best-of-{result['best_of']}</h1>",
             f"<p>SFT <code>{html.escape(result['sft'])}</code> &middot; SFT+GRPO <code>{html.escape(result['rl'])}"
             f"</code> ({result['rl_steps']} RL steps) &middot; {result['n_targets']} prompts from "
             f"<code>{html.escape(result['targets'])}</code>, seed {result['seed']} &middot; reward weights: {w}</p>",
             html_table(rows, head),
             (f"<p>SFT rows reused from <code>{html.escape(result['sft_rows_from'])}</code> (same targets, seed, N, "
              f"rewards and sampling).</p>" if result.get("sft_rows_from") else ""),
             f"<p class=big>GRPO 1 sample {'&ge;' if b['grpo1_ge_sft_best'] else '&lt;'} SFT best-of-"
             f"{result['best_of']} on exact match; GRPO 1 sample minus SFT 1 sample: "
             f"{b['grpo1_minus_sft1_points']:+.1f} points."
             + "".join(f" {k.replace('_', ' ')}: {'yes' if b[k] else 'NO'}." for k in ("fid_not_worse",
                                                                                     "compliance_not_worse") if k in b)
             + "</p>"]
    if has_curve:
        parts.append("<h2>Reward during RL (cf. the paper's Fig. 2b)</h2><img src='img/reward_curve.png'>"
                     "<p>The curve is the mean reward of each step's training rollouts (training prompts); the "
                     "lines are the SFT model's mean reward on the evaluation prompts.</p>")
    parts.append("<h2>Samples (first 16 prompts)</h2>" + "".join(
        f"<h3>{html.escape(k)}</h3><img class=s src='{v}' style='width:{4 * 256}px'>" for k, v in grids.items()))
    doc = (f"<!doctype html><html><head><meta charset='utf-8'><title>xomni RL comparison</title><style>{CSS}"
           f"</style></head><body>{''.join(parts)}</body></html>")
    atomic_write_text(od / "index.html", doc)
