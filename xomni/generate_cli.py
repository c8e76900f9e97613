"""`xomni generate` and `xomni caption`: the user-facing commands of a trained pipeline."""
from __future__ import annotations


import time
from pathlib import Path
from typing import Optional

import typer

from xomni.errors import XomniError
from xomni.train_cli import JsonOpt

ModelOpt = typer.Option(None, "--model", help="Pipeline directory (default: the bundled tiny model).")
DeviceOpt = typer.Option("auto", "--device", help="auto (a CUDA GPU when there is one, else the CPU), cpu, cuda or "
                                                  "cuda:N. The same seed gives the same images on the same device.")


def _grid_image(images, cols: int):
    from PIL import Image
    w, h = images[0].size
    rows = (len(images) + cols - 1) // cols
    grid = Image.new("RGB", (cols * w + (cols - 1) * 4, rows * h + (rows - 1) * 4), (255, 255, 255))
    for i, im in enumerate(images):
        grid.paste(im, ((i % cols) * (w + 4), (i // cols) * (h + 4)))
    return grid


def generate(prompt: Optional[str] = typer.Argument(None, help="The prompt, e.g. 'a white poster with the text "
                                                               "\"HELLO\" in black sans letters'."),
             prompts: Optional[str] = typer.Option(None, "--prompts", help="Text file, one prompt per line: "
                                                   "writes a directory of images with metadata.jsonl."),
             n: int = typer.Option(4, "--n", help="Images per prompt."),
             seed: int = typer.Option(0, "--seed", help="Random seed (same seed, same images)."),
             size: Optional[str] = typer.Option(None, "--size", help="HxW in pixels; must match the model."),
             temperature: Optional[float] = typer.Option(None, "--temperature", help="Default: the model's."),
             top_k: Optional[int] = typer.Option(None, "--top-k", help="Default: the model's (0 = off)."),
             top_p: Optional[float] = typer.Option(None, "--top-p", help="Default: the model's (1 = off)."),
             min_p: Optional[float] = typer.Option(None, "--min-p", help="Default: the model's (X-Omni: 0.03)."),
             cfg: Optional[float] = typer.Option(None, "--cfg", help="Classifier-free guidance scale (1 = off; "
                                                                     "default: the model's)."),
             steps: Optional[int] = typer.Option(None, "--steps", help="Decoder sampling steps."),
             best_of: int = typer.Option(1, "--best-of", help="Sample N per image and keep the best by the RL "
                                                           "reward (needs the RL stage)."),
             reward_config: Optional[str] = typer.Option(None, "--reward-config", help="RL config whose rewards "
                                                         "pick the best (YAML, RL run dir or RL-tuned pipeline); "
                                                         "default: the model's own RL config, else the RL defaults."),
             compile: bool = typer.Option(False, "--compile", help="Run the AR sampler's token step as one "
                                          "compiled graph: faster once compiled, but the first call per batch size "
                                          "compiles (worth it for many prompts, not for one; `xomni bench sample` "
                                          "measures both, with the compile time)."),
             model: Optional[str] = ModelOpt,
             device: str = DeviceOpt,
             out: str = typer.Option("out.png", "--out", "-o", help="PNG (a grid when n > 1) or, with --prompts, "
                                                                    "a directory."),
             json_path: Optional[str] = JsonOpt):
    """Text -> image(s)."""
    from xomni.pipeline import MAX_IMAGES, Pipeline
    from xomni.utils import emit_json, log
    if prompt is None and prompts is None:
        raise XomniError("give a PROMPT or --prompts FILE")
    if prompt is not None and not prompt.strip():
        raise XomniError("the prompt is empty")
    if not 1 <= n <= MAX_IMAGES:
        raise XomniError(f"--n must be between 1 and {MAX_IMAGES}, got {n}")
    if best_of < 1:
        raise XomniError(f"--best-of must be >= 1, got {best_of}")
    plist = [prompt] if prompt is not None else []
    if prompts:
        pf = Path(prompts)
        if not pf.is_file():
            raise XomniError(f"prompts file not found: {pf}")
        plist = [line.strip() for line in pf.read_text().splitlines() if line.strip()]
        if not plist:
            raise XomniError(f"prompts file {pf} is empty")
    from xomni.utils import resolve_device
    dev = resolve_device(device)
    pipe = Pipeline.from_pretrained(model).to(dev)
    pipe.compile_sampler = compile
    if size:
        try:
            hh, ww = (int(v) for v in size.lower().split("x"))
        except ValueError:
            raise XomniError(f"--size must look like 64x256, got {size!r}") from None
        want = tuple(pipe.image_tokenizer.config.image_size)
        if (hh, ww) != want:
            raise XomniError(f"--size {hh}x{ww} is not supported by this model; it draws {want[0]}x{want[1]}")
    for p in plist:
        pipe.check_prompt(p)
    t0 = time.time()
    scores = None
    if best_of > 1:
        from xomni.rl.bestofn import best_of_n
        rc = reward_config or (str(pipe.path) if "rl" in pipe.index else None)
        s = pipe.sampling_config(temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p, cfg_scale=cfg)
        images, scores = best_of_n(pipe, [p for p in plist for _ in range(n)], best_of, rc, seed=seed,
                                   sampling=s, steps=steps)
    else:
        images = pipe(plist, num_images=n, seed=seed, temperature=temperature, top_k=top_k, top_p=top_p,
                      min_p=min_p, cfg_scale=cfg, steps=steps)
    dt = time.time() - t0
    outp = Path(out)
    if prompts:
        from xomni.data.io import write_imagefolder
        from xomni.data.caption import parse_caption
        texts = [parse_caption(p).get("text") for p in plist]  # quoted text: `xomni eval text --images` reads it
        rows = [(im, {"key": f"p{i // n:04d}-s{i % n}", "caption": plist[i // n], "prompt": plist[i // n],
                      "seed": seed, "index": i % n,
                      **({"text": texts[i // n]} if texts[i // n] else {}),
                      **({"reward": scores[i]} if scores is not None else {})})
                for i, im in enumerate(images)]
        write_imagefolder(outp, rows)
        result = {"out": str(outp), "n_images": len(images)}
    else:
        outp.parent.mkdir(parents=True, exist_ok=True)
        (images[0] if len(images) == 1 else _grid_image(images, cols=2 if len(images) >= 4 else len(images))).save(outp)
        result = {"out": str(outp), "n_images": len(images), "prompt": plist[0]}
    result.update({"seed": seed, "seconds": round(dt, 2), "model": str(pipe.path), "device": str(dev)})
    if scores is not None:
        result.update({"best_of": best_of, "rewards": [float(x) for x in scores]})
    log(f"wrote {outp}")
    emit_json(result, json_path)


def caption(image: str = typer.Argument(..., help="Image file (any size; resized to the model's)."),
            model: Optional[str] = ModelOpt,
            device: str = DeviceOpt,
            beams: Optional[int] = typer.Option(None, "--beams", help="Beam search width (1 = greedy; default: the "
                                                                      "model's own setting, else 1)."),
            json_path: Optional[str] = JsonOpt):
    """Image -> caption, with the same AR weights that draw images."""
    from PIL import Image, UnidentifiedImageError

    from xomni.pipeline import Pipeline
    from xomni.utils import emit_json, resolve_device
    dev = resolve_device(device)
    p = Path(image)
    if not p.is_file():
        raise XomniError(f"image not found: {p}")
    try:
        img = Image.open(p).convert("RGB")
    except (UnidentifiedImageError, OSError) as e:
        raise XomniError(f"cannot read image {p}: {e}") from None
    pipe = Pipeline.from_pretrained(model).to(dev)
    emit_json({"image": str(p), "caption": pipe.caption([img], num_beams=beams)[0]}, json_path)



def register(apps: dict) -> None:
    apps["root"].command("generate")(generate)
    apps["root"].command("caption")(caption)
