"""`xomni generate` and `xomni caption`: the user-facing commands of a trained pipeline."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer

from xomni.ar.compiled import cache_dir
from xomni.ar.sampler import build_packages
from xomni.cliargs import (IMAGE_EXTS, MAX_IMAGES, FloatRange, IntRange, JsonOpt, OverwriteOpt, SeedOpt, SjdWindowOpt,
                           ThreadsOpt, _cb, check_in_file, check_in_path, check_out_dir, check_out_file, iter_lines,
                           open_image, refuse_existing)
from xomni.data.caption import parse_caption
from xomni.data.io import write_imagefolder_swap
from xomni.errors import XomniError
from xomni.lora.cli import LoraOpt
from xomni.pipeline import Pipeline
from xomni.rl.bestofn import best_of_n
from xomni.utils import atomic_write_bytes, emit_json, image_grid, log, resolve_device, set_threads

ModelOpt = typer.Option(None, "--model", help="Pipeline directory (default: the bundled mini model).",
                        callback=_cb(check_in_path, "--model"))
DeviceOpt = typer.Option("auto", "--device", help="auto (a CUDA GPU when there is one, else the CPU), cpu, cuda or "
                                                  "cuda:N. The same seed gives the same images on the same device.")


def generate(prompt: Optional[str] = typer.Argument(None, help="The prompt, e.g. 'a white poster with the text "
                                                               "\"HELLO\" in black sans letters'."),
             prompts: Optional[str] = typer.Option(None, "--prompts", help="UTF-8 text file, one prompt per line "
                                                   "(instead of PROMPT): writes a directory of images with "
                                                   "metadata.jsonl, --batch prompts at a time (memory stays flat).",
                                                   callback=_cb(check_in_file, "--prompts")),
             n: int = typer.Option(4, "--n", help=f"Images per prompt, 1..{MAX_IMAGES}.",
                                   callback=IntRange("--n", 1, MAX_IMAGES)),
             seed: int = SeedOpt(0, "Random seed (same seed, same images; with --prompts, batch c uses seed + c)."),
             size: Optional[str] = typer.Option(None, "--size", help="HxW in pixels; must match the model."),
             temperature: Optional[float] = typer.Option(None, "--temperature", help="> 0. Default: the model's.",
                                                         callback=FloatRange("--temperature", 0, lo_open=True)),
             top_k: Optional[int] = typer.Option(None, "--top-k", help="Default: the model's (0 = off).",
                                                 callback=IntRange("--top-k", 0)),
             top_p: Optional[float] = typer.Option(None, "--top-p", help="In (0, 1]. Default: the model's (1 = off).",
                                                   callback=FloatRange("--top-p", 0, 1, lo_open=True)),
             min_p: Optional[float] = typer.Option(None, "--min-p", help="In [0, 1). Default: the model's "
                                                   "(X-Omni: 0.03).", callback=FloatRange("--min-p", 0, 1,
                                                                                          hi_open=True)),
             cfg: Optional[float] = typer.Option(None, "--cfg", help="Classifier-free guidance scale >= 1 (1 = off; "
                                                                     "default: the model's).",
                                                 callback=FloatRange("--cfg", 1)),
             steps: Optional[int] = typer.Option(None, "--steps", help="Decoder sampling steps, 1..1000 (default: "
                                                 "the decoder's).", callback=IntRange("--steps", 1, 1000)),
             best_of: int = typer.Option(1, "--best-of", help="Sample N per image and keep the best by the RL "
                                                           f"reward, 1..{MAX_IMAGES} (needs the RL stage).",
                                         callback=IntRange("--best-of", 1, MAX_IMAGES)),
             reward_config: Optional[str] = typer.Option(None, "--reward-config", help="RL config whose rewards "
                                                         "pick the best (YAML, RL run dir or RL-tuned pipeline); "
                                                         "default: the model's own RL config, else the RL defaults.",
                                                         callback=_cb(check_in_path, "--reward-config")),
             compile: Optional[bool] = typer.Option(None, "--compile/--no-compile", help="Run the AR sampler's "
                                                    "token step as one compiled graph. Default: where `xomni compile` "
                                                    "built its package on this machine; --compile compiles now "
                                                    "where there is none (tens of seconds per batch size), "
                                                    "--no-compile never."),
             sjd_window: int = SjdWindowOpt(),
             batch: int = typer.Option(8, "--batch", help="--prompts: prompts per generation call (x --n images).",
                                       callback=IntRange("--batch", 1, 256)),
             overwrite: bool = OverwriteOpt("the --prompts output directory"),
             model: Optional[str] = ModelOpt,
             lora: Optional[str] = LoraOpt,
             device: str = DeviceOpt,
             out: str = typer.Option("out.png", "--out", "-o", help="PNG (a grid when n > 1) or, with --prompts, "
                                                                    "a directory."),
             json_path: Optional[str] = JsonOpt):
    """Text -> image(s)."""
    if prompt is None and prompts is None:
        raise XomniError("give a PROMPT or --prompts FILE")
    if prompt is not None and prompts is not None:
        raise XomniError("give either a PROMPT or --prompts FILE, not both")
    if prompt is not None and not prompt.strip():
        raise XomniError("the prompt is empty")
    if prompts:
        check_out_dir(out, "-o")
        refuse_existing(Path(out), "-o", "files", overwrite)
        plist = list(iter_lines(prompts, "prompts file"))
        if not plist:
            raise XomniError(f"prompts file {prompts} is empty")
    else:
        check_out_file(out, "-o", IMAGE_EXTS)
        plist = [(0, prompt)]
    hw = _parse_size(size)
    dev = resolve_device(device)
    pipe = Pipeline.from_pretrained(model, lora=lora).to(dev)
    pipe.compile_sampler = "auto" if compile is None else compile
    pipe.sjd_window = sjd_window
    if hw is not None:
        want = tuple(pipe.image_tokenizer.config.image_size)
        if hw != want:
            raise XomniError(f"--size {hw[0]}x{hw[1]} is not supported by this model; it draws {want[0]}x{want[1]}")
    for line, p in plist:
        try:
            pipe.check_prompt(p)
        except XomniError as e:
            raise XomniError(f"{prompts} line {line}: {e}" if prompts else str(e)) from None
    s = pipe.sampling_config(temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p, cfg_scale=cfg)
    rc = reward_config or (str(pipe.path) if "rl" in pipe.index else None)
    texts = [p for _, p in plist]
    t0 = time.time()
    outp = Path(out)
    if prompts:
        rewards: list[float] = []
        count = write_imagefolder_swap(outp, _prompt_rows(pipe, texts, n, seed, s, steps, best_of, rc, batch, rewards))
        result = {"out": str(outp), "n_images": count, "n_prompts": len(texts), "batch": batch}
        scores = rewards if best_of > 1 else None
    else:
        images, scores = _draw(pipe, texts, n, seed, s, steps, best_of, rc)
        img = images[0] if len(images) == 1 else image_grid(images, cols=2 if len(images) >= 4 else len(images))
        _save_image(img, outp)
        result = {"out": str(outp), "n_images": len(images), "prompt": texts[0]}
    dt = time.time() - t0
    result.update({"seed": seed, "seconds": round(dt, 2), "model": str(pipe.path), "device": str(dev)})
    if scores is not None:
        result.update({"best_of": best_of, "rewards": [float(x) for x in scores]})
    log(f"wrote {outp}")
    emit_json(result, json_path)


def _parse_size(size: Optional[str]):
    if not size:
        return None
    try:
        hh, ww = (int(v) for v in size.lower().split("x"))
    except ValueError:
        raise XomniError(f"--size must look like 64x256, got {size!r}") from None
    return hh, ww


def _draw(pipe, prompts: list[str], n: int, seed: int, sampling, steps, best_of: int, reward_config):
    """n images per prompt (prompt-major) and their best-of-N rewards (None without best-of-N)."""
    import dataclasses
    if best_of > 1:
        return best_of_n(pipe, [p for p in prompts for _ in range(n)], best_of, reward_config, seed=seed,
                         sampling=sampling, steps=steps)
    kw = {k: v for k, v in dataclasses.asdict(sampling).items()
          if k in ("temperature", "top_k", "top_p", "min_p", "cfg_scale")}
    return pipe(prompts, num_images=n, seed=seed, steps=steps, **kw), None


def _prompt_rows(pipe, prompts: list[str], n: int, seed: int, sampling, steps, best_of: int, reward_config,
                 batch: int, rewards: list):
    """(image, metadata) rows for `--prompts`, generated `batch` prompts at a time (chunk c with seed + c), so only
    one chunk's images are in memory; best-of-N rewards are appended to `rewards`."""
    preset = pipe.index.get("data_preset")  # `xomni eval text --images` then reads that preset's OCR region
    for c, start in enumerate(range(0, len(prompts), batch)):
        chunk = prompts[start:start + batch]
        images, scores = _draw(pipe, chunk, n, seed + c, sampling, steps, best_of, reward_config)
        for j, im in enumerate(images):
            i = start + j // n
            text = parse_caption(prompts[i]).get("text")  # quoted text: `xomni eval text --images` reads it
            meta = {"key": f"p{i:04d}-s{j % n}", "caption": prompts[i], "prompt": prompts[i], "seed": seed + c,
                    "index": j % n, **({"text": text} if text else {}), **({"preset": preset} if preset else {})}
            if scores is not None:
                meta["reward"] = float(scores[j])
                rewards.append(float(scores[j]))
            yield im, meta
        log(f"generate: {min(start + batch, len(prompts))}/{len(prompts)} prompts")


def _save_image(img, path: Path) -> None:
    """Save atomically (temp file + rename), so a failed save never leaves half a file."""
    import io
    buf = io.BytesIO()
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG"}.get(path.suffix.lower(), path.suffix.lower().lstrip(".").upper())
    img.save(buf, format=fmt)
    atomic_write_bytes(path, buf.getvalue())


def caption(image: str = typer.Argument(..., help="Image file (any size; resized to the model's).",
                                         callback=_cb(check_in_file, "image")),
            model: Optional[str] = ModelOpt,
            lora: Optional[str] = LoraOpt,
            device: str = DeviceOpt,
            beams: Optional[int] = typer.Option(None, "--beams", help="Beam search width, 1..64 (1 = greedy; "
                                                "default: the model's own setting, else 1).",
                                                callback=IntRange("--beams", 1, 64)),
            json_path: Optional[str] = JsonOpt):
    """Image -> caption, with the same AR weights that draw images."""
    dev = resolve_device(device)
    p = Path(image)
    img = open_image(p)
    pipe = Pipeline.from_pretrained(model, lora=lora).to(dev)
    emit_json({"image": str(p), "caption": pipe.caption([img], num_beams=beams)[0]}, json_path)



def compile_cmd(model: Optional[str] = ModelOpt,
                batch_sizes: str = typer.Option("1,4,8,16", "--batch-sizes", help="Comma-separated batch sizes "
                                                "(images per sampler call) to compile, each 1..256."),
                threads: int = ThreadsOpt,
                json_path: Optional[str] = JsonOpt):
    """Compile the AR sampler's token step once on this machine (AOTInductor packages, one per batch size and cache
    length, in ~/.cache/xomni/compile): later `generate`, `eval` and `serve` runs load them instead of sampling
    eagerly, without a compile wait."""
    try:
        sizes = sorted({int(v) for v in batch_sizes.split(",") if v.strip()})
    except ValueError:
        raise XomniError(f"--batch-sizes must be comma-separated integers, got {batch_sizes!r}") from None
    if not sizes or sizes[0] < 1 or sizes[-1] > 256:
        raise XomniError(f"--batch-sizes must be integers in 1..256, got {batch_sizes!r}")
    set_threads(threads)
    pipe = Pipeline.from_pretrained(model)
    t0 = time.time()
    try:
        rows = build_packages(pipe.drawing_model(), pipe.grid, pipe.sampling_config(), sizes, progress=lambda r: log(
            f"[compile] batch {r['batch']}, cache {r['cache_length']}: {r['seconds']:.0f} s, {r['mb']} MB"))
    except OSError as e:
        raise XomniError(f"cannot write the compiled sampler to {cache_dir()}: {e}") from None
    except XomniError:
        raise
    except Exception as e:  # noqa: BLE001 - export or AOTInductor failed (no C++ compiler, an op it cannot lower)
        first = (str(e).strip().splitlines() or [""])[0][:200]
        raise XomniError(f"the sampler's step did not compile on this machine ({type(e).__name__}: {first}); "
                         f"generate samples eagerly without it") from None
    emit_json({"model": str(pipe.path), "cache_dir": str(cache_dir()), "packages": rows,
               "seconds": round(time.time() - t0, 1)}, json_path)


def register(apps: dict) -> None:
    apps["root"].command("generate")(generate)
    apps["root"].command("compile")(compile_cmd)
    apps["root"].command("caption")(caption)
