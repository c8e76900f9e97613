"""`xomni demo` (what `make demo` runs).

With the bundled model (xomni/pretrained/mini): generate images for a few prompts — including a word that was never
in training — into OUT/generated.png, with OUT/prompts.txt and an OCR read-back of each image.
Without a bundled model: render 16 dataset samples into OUT/preview.png + OUT/captions.txt.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import typer

from xomni.cliargs import JsonOpt, SeedOpt, _cb, check_in_path, check_out_dir
from xomni.data.presets import get_preset
from xomni.data.preview import preview
from xomni.data.synth import synth
from xomni.eval.text import model_preset
from xomni.metrics.ocr import tesseract_batch
from xomni.pipeline import Pipeline, default_model_dir
from xomni.utils import emit_json, image_grid, log

# Per dataset preset (the prompts follow the caption grammar the model was trained on).
DEMO_PROMPTS = {
    "mini": [
        'a white poster with the text "HELLO" in black bold sans-serif letters',
        'a yellow sign with the text "OPEN" in blue bold sans-serif letters',    # "open" is in no split's word list
        'a black poster with the text "Aroma" in white bold sans-serif letters',  # "aroma": a test-split word
        'a blue sign with the text "cake" in white bold sans-serif letters',
    ],
    "sign": [  # the mini image with short signage text: a word, a price, a code
        'a white poster with the text "HELLO" in black bold sans-serif letters',
        'a yellow sign with the text "OPEN 24/7" in blue bold sans-serif letters',
        'a black poster with the text "$4.50" in white bold sans-serif letters',
        'a blue sign with the text "Gate B14" in white bold sans-serif letters',
    ],
    "tiny": [
        'a white poster with the text "HELLO" in black sans-serif letters',
        'a yellow sign with the text "OPEN 24" in blue bold serif letters, a red circle at the top left',
        'a black banner with the text "AROMA" in white bold sans-serif letters',   # "aroma" is a test-split word
        'a pink label with the text "Cake & Tea" in black serif letters',
    ],
}


def run_preview(out_dir: str = "demo_out", n: int = 16, seed: int = 0) -> dict:
    out = Path(out_dir)
    with tempfile.TemporaryDirectory(prefix="xomni-demo-") as d:
        synth(d, n, seed=seed, preset="tiny", split="val", fmt="imagefolder", progress=False,
              command=f"xomni demo -o {out_dir}")
        res = preview(d, out / "preview.png", n=n, split="val", overwrite=True)
    return {"preview": res["grid"], "captions": res["captions"], "n": res["n"], "source": "synthetic tiny preset "
            "(no bundled model in this build)"}


def run_generate(out_dir: str, model: str | None, seed: int = 0) -> dict:
    import torch

    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    pipe = Pipeline.from_pretrained(model)
    preset = model_preset(pipe) or "tiny"
    prompts = [p for p in DEMO_PROMPTS.get(preset, DEMO_PROMPTS["tiny"]) if all(c in (pipe.charset or c) for c in p)]
    images = pipe(prompts, num_images=2, seed=seed)
    dt = time.time() - t0
    image_grid(images, cols=2).save(out / "generated.png")
    region = get_preset(preset).ocr_region
    reads = tesseract_batch(images, region=region)
    lines = [f"{i}\t{prompts[i // 2]}\tOCR: {reads[i]!r}" for i in range(len(images))]
    (out / "prompts.txt").write_text("".join(x + "\n" for x in lines))
    log(f"wrote {out / 'generated.png'} ({len(images)} images in {dt:.1f} s)")
    return {"generated": str(out / "generated.png"), "prompts": str(out / "prompts.txt"), "model": str(pipe.path),
            "seconds": round(dt, 1),
            "ocr": [{"prompt": prompts[i // 2], "read": reads[i]} for i in range(len(images))]}


def register(apps: dict) -> None:
    @apps["root"].command("demo")
    def demo_cmd(
        out: str = typer.Option("demo_out", "--out", "-o", help="Output directory.",
                                callback=_cb(check_out_dir, "--out")),
        model: str = typer.Option(None, "--model", help="Pipeline directory (default: the bundled model).",
                                  callback=_cb(check_in_path, "--model")),
        seed: int = SeedOpt(0),
        json_path: str = JsonOpt,
    ):
        """Generate images from a few prompts with the bundled model (or preview the dataset if none ships)."""
        if model or (default_model_dir() / "model_index.json").is_file():
            emit_json(run_generate(out, model, seed), json_path)
        else:
            emit_json(run_preview(out, seed=seed), json_path)
