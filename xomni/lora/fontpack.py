"""The font-pack measurement (docs/LORA.md): does an adapter teach a model a font it never saw, and keep the old one?

`xomni eval fontpack --lora O --font dejavu-serif-bold --targets T` draws every target string with the new font's
prompt (the preset variant PRESET:FONT's template, "... bold serif letters") and with the model's own prompt (the old
font), with and without the adapter, and reports per model and prompt: OCR exact match (Tesseract on the preset's
OCR region, 95 % bootstrap interval) and the share of images drawn in the asked-for font; then the adapter's size and
training minutes, and each bar (docs/LORA.md) passed or not.

Which font an image is drawn in is decided by template matching (`font_of`): the target string is laid out in each
candidate font exactly as the preset lays out a sign (size fitted to the text box, centred), and the candidate whose
ink correlates best with the image's luminance in the OCR region (absolute Pearson correlation, either polarity,
best over shifts of up to 2 px) wins. `judge_check` measures this judge on ground-truth renders of both fonts.
"""
from __future__ import annotations

import functools
import io
import time
from pathlib import Path
from typing import Optional

import numpy as np
import typer
from PIL import Image, ImageDraw

from xomni.checkpoint import read_json
from xomni.cliargs import IntRange, JsonOpt, SeedOpt, _cb, check_in_file, check_in_path, check_out_dir
from xomni.data.fonts import font_spec, load_font
from xomni.data.fontvariant import variant_name
from xomni.data.presets import get_preset
from xomni.data.render import fit_font_size, place_text
from xomni.data.synth import make_sample
from xomni.errors import XomniError
from xomni.eval.text import generate
from xomni.lora.adapter import INFO, WEIGHTS, resolve_adapter_dir
from xomni.metrics.images import Item, read_targets
from xomni.metrics.ocr import OcrRegion
from xomni.metrics.text import score_items
from xomni.pipeline import Pipeline
from xomni.utils import emit_json, log


@functools.lru_cache(maxsize=4096)
def _template(font: str, text: str, preset: str) -> np.ndarray:
    """Ink (0..1) of `text` drawn in `font` as the preset lays out a sign, cropped to its OCR region."""
    p = get_preset(preset)
    size = fit_font_size(font, text, p.font_size[1], p.min_font_size, p.text_box) or p.min_font_size
    origin, _ = place_text(font, size, text, p.text_box)
    img = Image.new("L", (p.width, p.height), 0)
    ImageDraw.Draw(img).text(tuple(origin), text, font=load_font(font, size), fill=255)
    x0, y0, x1, y1 = p.ocr_region or (0, 0, p.width, p.height)
    return np.asarray(img, dtype=np.float32)[y0:y1, x0:x1] / 255.0


def _luma(img, preset: str) -> np.ndarray:
    p = get_preset(preset)
    a = np.asarray(img.convert("L").resize((p.width, p.height)), dtype=np.float32) / 255.0
    x0, y0, x1, y1 = p.ocr_region or (0, 0, p.width, p.height)
    return a[y0:y1, x0:x1]


def _best_corr(a: np.ndarray, t: np.ndarray, shift: int = 2) -> float:
    best = 0.0
    H, W = a.shape
    for dy in range(-shift, shift + 1):
        for dx in range(-shift, shift + 1):
            aa = a[max(0, dy):H + min(0, dy), max(0, dx):W + min(0, dx)]
            tt = t[max(0, -dy):H + min(0, -dy), max(0, -dx):W + min(0, -dx)]
            x, y = aa - aa.mean(), tt - tt.mean()
            den = float(np.sqrt((x * x).sum() * (y * y).sum()))
            if den > 0:
                best = max(best, abs(float((x * y).sum()) / den))
    return best


def font_of(img, text: str, fonts: list[str], preset: str) -> tuple[str, dict]:
    """(the font of `fonts` the image is drawn in, {font: score}) for an image meant to show `text`."""
    a = _luma(img, preset)
    scores = {f: _best_corr(a, _template(f, text, preset)) for f in fonts}
    return max(scores, key=scores.get), scores


def judge_check(fonts: list[str], base_preset: str, n: int = 100, seed: int = 0) -> dict:
    """The font judge's accuracy on ground-truth test renders of each font (the preset's layout and colours)."""
    out = {}
    for f in fonts:
        name = variant_name(base_preset, [f])
        hits = 0
        for i in range(n):
            png, meta = make_sample((name, seed, "test", i))
            got, _ = font_of(Image.open(io.BytesIO(png)), meta["text"], fonts, base_preset)
            hits += got == f
        out[f] = hits / n
    return out


def _score(pipe, prompts: list[str], texts: list[str], want_font: str, fonts: list[str], preset: str,
           samples: int, seed: int, batch: int, save: Path | None) -> dict:
    images = generate(pipe, prompts, samples, seed, batch)
    items, targets, share = [], [], []
    for i, (t, ims) in enumerate(zip(texts, images)):
        for j, im in enumerate(ims):
            key = f"t{i:04d}-s{j}"
            items.append(Item(key, im.convert("RGB"), {"key": key, "text": t, "preset": preset}, None))
            targets.append(t)
            share.append(font_of(im, t, fonts, preset)[0] == want_font)
            if save is not None:
                save.mkdir(parents=True, exist_ok=True)
                im.save(save / f"{key}.png")
    p = get_preset(preset)
    reg = OcrRegion(tuple(p.ocr_region), (p.width, p.height)) if p.ocr_region else None
    res, _ = score_items(items, targets, region=reg)
    return {"exact_match": res["exact_match"], "ci95": res.get("ci95", {}).get("exact_match"), "cer": res.get("cer"),
            "n": res["n"], "font_share": round(float(np.mean(share)), 4), "font": want_font}


def evaluate_fontpack(model: str | None, lora: str | None, font: str, targets: str, samples: int = 1,
                      seed: int = 0, batch: int = 16, save_images: str | None = None, judge_n: int = 100) -> dict:
    t0 = time.time()
    texts = read_targets(targets)
    if not texts:
        raise XomniError(f"{targets} holds no target strings")
    runs = [("before", None)] + ([("after", lora)] if lora else [])
    out: dict = {"font": font, "targets": str(targets), "n_targets": len(texts), "samples": samples, "seed": seed}
    for tag, ad in runs:
        pipe = Pipeline.from_pretrained(model, lora=ad)
        base = pipe.index.get("data_preset") or "mini"
        base = base.split(":")[0]
        old_font = get_preset(base).fonts[0]
        if font == old_font:
            raise XomniError(f"--font {font} is the model's own font; give the new font of the pack")
        new_preset = variant_name(base, [font])
        fonts = [font, old_font]
        new_prompts = [get_preset(new_preset).prompt_template.format(text=t) for t in texts]
        old_prompts = [pipe.caption_for_text(t) for t in texts]
        res = {}
        for which, prompts, want, preset in (("new_font", new_prompts, font, new_preset),
                                             ("old_font", old_prompts, old_font, base)):
            log(f"[fontpack] {tag}: {len(texts)} x {samples} images, {which} prompts ...")
            save = Path(save_images) / tag / which if save_images else None
            res[which] = _score(pipe, prompts, texts, want, fonts, base, samples, seed, batch, save)
            res[which]["prompt_example"] = prompts[0]
        out[tag] = res
        out["fonts"] = fonts
        out["base_preset"] = base
    if lora:
        d = resolve_adapter_dir(lora)
        info = read_json(d / INFO) if (d / INFO).is_file() else {}
        out["adapter"] = {"dir": str(d), "bytes": (d / WEIGHTS).stat().st_size, "params": info.get("n_params"),
                          "train_minutes": round(info["wall_s"] / 60, 2) if "wall_s" in info else None}
        b, a = out["before"], out["after"]
        lo = (b["old_font"]["ci95"] or [b["old_font"]["exact_match"]])[0]
        out["bars"] = {
            "new_font_exact>=0.8": a["new_font"]["exact_match"] >= 0.8,
            "new_font_share>=0.8": a["new_font"]["font_share"] >= 0.8,
            "old_font_exact_within_interval": a["old_font"]["exact_match"] >= lo,
            "adapter<=2MB": out["adapter"]["bytes"] <= 2 * 1024 * 1024,
            "train<=30min": out["adapter"]["train_minutes"] is not None and out["adapter"]["train_minutes"] <= 30,
        }
    if judge_n:
        out["judge_accuracy_on_renders"] = judge_check(out["fonts"], out["base_preset"], n=judge_n)
    out["wall_s"] = round(time.time() - t0, 1)
    return out


def register_fontpack(apps: dict) -> None:
    @apps["eval"].command("fontpack")
    def fontpack_cmd(
        font: str = typer.Option(..., "--font", help="The pack's new font id (e.g. dejavu-serif-bold)."),
        targets: str = typer.Option(..., "--targets", help="Text file, one target string per line.",
                                    callback=_cb(check_in_file, "--targets")),
        model: Optional[str] = typer.Option(None, "--model", help="Base pipeline (default: the bundled model).",
                                            callback=_cb(check_in_path, "--model")),
        lora: Optional[str] = typer.Option(None, "--lora", help="The font pack's adapter: measured after, the base "
                                           "before (without it: the base only).",
                                           callback=_cb(check_in_path, "--lora")),
        samples: int = typer.Option(1, "--samples", help="Images per target string and prompt, 1..16.",
                                    callback=IntRange("--samples", 1, 16)),
        seed: int = SeedOpt(0, "Base seed (chunk c of --batch strings: seed + c)."),
        batch: int = typer.Option(16, "--batch", help="Target strings per generation call.",
                                  callback=IntRange("--batch", 1, 256)),
        judge_n: int = typer.Option(100, "--judge-n", help="Ground-truth renders per font to check the font judge "
                                    "on (0 = skip).", callback=IntRange("--judge-n", 0, 10_000)),
        save_images: Optional[str] = typer.Option(None, "--save-images", help="Save the samples here "
                                                  "(before|after/new_font|old_font/*.png).",
                                                  callback=_cb(check_out_dir, "--save-images")),
        json_path: Optional[str] = JsonOpt,
    ):
        """LoRA font pack: OCR exact and font share in the new font and the old one, before vs after the adapter."""
        font_spec(font)
        emit_json(evaluate_fontpack(model, lora, font, targets, samples, seed, batch, save_images, judge_n),
                  json_path)
