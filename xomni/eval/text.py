"""`xomni eval text --model`: a model draws K samples of each target string with its own prompt template (see
docs/EVAL.md for the Pipeline contract); the images are then scored as any image directory is
(xomni.metrics.text). Fails clearly without a model.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from xomni.data.io import write_imagefolder
from xomni.errors import XomniError
from xomni.metrics.images import Item, read_targets
from xomni.pipeline import Pipeline
from xomni.utils import log


def load_pipeline(model_dir: str, lora: str | None = None):
    """Load a pipeline directory (+ a LoRA adapter, merge-free); a clear error when it is missing or has no
    model_index.json."""
    p = Path(model_dir)
    if not p.is_dir():
        raise XomniError(f"model directory not found: {p}")
    if not (p / "model_index.json").is_file():
        raise XomniError(f"{p} is not a model directory (no model_index.json)")
    return Pipeline.from_pretrained(str(p), lora=lora)


def caption_for(pipe, text: str) -> str:
    """The model's own prompt template for a target string (see docs/EVAL.md)."""
    fn = getattr(pipe, "caption_for_text", None)
    if callable(fn):
        return fn(text)
    tpl = getattr(pipe, "prompt_template", None)
    if isinstance(tpl, str) and "{text}" in tpl:
        return tpl.format(text=text)
    raise XomniError("the model has no prompt template (Pipeline.caption_for_text or prompt_template)")


def generate(pipe, captions: list[str], k: int, seed: int, batch: int = 8, sampling: dict | None = None) -> list[list]:
    """K images for each caption. Captions go `batch` at a time (batch x K images per call, seed + chunk index), so
    results are reproducible for the same (seed, K, batch); batching is what makes AR decoding fast."""
    out: list[list] = []
    batch = max(1, batch)
    for c, start in enumerate(range(0, len(captions), batch)):
        chunk = captions[start:start + batch]
        ims = pipe(chunk, num_images=k, seed=seed + c, **(sampling or {}))
        ims = list(ims) if isinstance(ims, (list, tuple)) else [ims]
        if len(ims) != len(chunk) * k:
            raise XomniError(f"the pipeline returned {len(ims)} images for {len(chunk)} prompts x {k} samples")
        out.extend(ims[i * k:(i + 1) * k] for i in range(len(chunk)))  # prompt-major order
    return out


def model_preset(pipe) -> str | None:
    """The dataset preset a model was trained on (its images are read with that preset's OCR region)."""
    idx = getattr(pipe, "index", None) or {}
    return idx.get("data_preset") or idx.get("preset")


def unsupported_chars(pipe, text: str) -> str:
    """Characters of `text` outside the model's charset ('' when it has none or all are supported)."""
    cs = getattr(pipe, "charset", None)
    return "".join(sorted({c for c in text if c not in cs})) if cs else ""


def items_from_model(model_dir: str, targets_file: str, samples: int, seed: int,
                     save_dir: str | None = None, batch: int = 8,
                     sampling: dict | None = None, lora: str | None = None, sjd_window: int = 0,
                     unsupported: str = "error") -> tuple[list[Item], list[str]]:
    """Generate `samples` images per target string with the model's prompt template and its default sampling
    settings, overridden by the non-None entries of `sampling` (temperature, top_k, top_p, min_p, cfg_scale);
    `sjd_window` > 0 samples with speculative Jacobi decoding (same distribution, other draws per seed).
    A string with characters outside the model's charset stops the run (`unsupported="error"`), or gets no image
    and scores as a failure (`"zero"`: models of different charsets compared on one list)."""
    lines = read_targets(targets_file)
    if samples < 1:
        raise XomniError("--samples must be >= 1")
    pipe = load_pipeline(model_dir, lora)
    pipe.sjd_window = sjd_window
    if unsupported not in ("error", "zero"):
        raise XomniError(f"unsupported must be error or zero, got {unsupported!r}")
    bad = {i: c for i, t in enumerate(lines) if (c := unsupported_chars(pipe, t))}
    if bad and unsupported == "error":
        i, chars = next(iter(bad.items()))
        raise XomniError(f"{targets_file} line {i + 1} ({lines[i]!r}) has characters the model cannot draw: "
                         f"{chars!r} ({len(bad)} line(s) in all; --unsupported zero scores them as failures)")
    caps = [caption_for(pipe, t) for t in lines]
    used = dataclasses.asdict(pipe.sampling_config(**(sampling or {})))  # recorded in every item's metadata
    drawable = [i for i in range(len(lines)) if i not in bad]
    log(f"generating {len(drawable)} x {samples} images with {model_dir} ..."
        + (f" ({len(bad)} string(s) with characters outside its charset score as failures)" if bad else ""))
    drawn = dict(zip(drawable, generate(pipe, [caps[i] for i in drawable], samples, seed, batch, used)))
    images = [drawn.get(i, [None] * samples) for i in range(len(lines))]
    items, targets, saved = [], [], []
    for i, (t, cap, ims) in enumerate(zip(lines, caps, images)):
        for j, im in enumerate(ims):
            key = f"t{i:04d}-s{j}"
            meta = {"key": key, "text": t, "caption": cap, "sample": j, "seed": seed + i // max(1, batch),
                    "file_name": f"{key}.png", "sampling": used, "sjd_window": sjd_window}
            if i in bad:
                meta["unsupported"] = bad[i]
            if model_preset(pipe):
                meta["preset"] = model_preset(pipe)
            why = "characters outside the model's charset" if i in bad else "generation failed"
            items.append(Item(key, im.convert("RGB") if im is not None else None, meta, None if im is not None
                              else why))
            targets.append(t)
            if save_dir and im is not None:
                saved.append((im, meta))
    if save_dir:
        write_imagefolder(save_dir, saved)
    return items, targets
