"""`xomni reconstruct`: images -> tokenizer codes -> decoder pixels, written as an imagefolder.

Input: one image file, a folder of image files (no metadata), or a dataset (shards / imagefolder / dataset root with
--split). A dataset's metadata is copied to the reconstructions (same keys, text, caption...), so
`xomni eval text --images OUT` scores them against the original strings. Unreadable images are skipped and counted;
other sizes are resized to the tokenizer's (one-line warning when the aspect ratio changes).
"""
from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Iterator

import torch

from xomni.cliargs import refuse_existing
from xomni.data.io import open_dataset, write_imagefolder_swap
from xomni.decoder.model import Decoder
from xomni.errors import XomniError
from xomni.tokenizer.images import ResizeWarner, images_to_tensor, input_images, tensor_to_pil
from xomni.tokenizer.model import ImageTokenizer
from xomni.utils import log


def _is_dataset(p: Path) -> bool:
    if p.is_file():
        return p.suffix == ".tar" or p.name == "metadata.jsonl"
    return ((p / "metadata.jsonl").is_file() or (p / "dataset.json").is_file() or any(p.glob("*.tar"))
            or any((p / s).is_dir() for s in ("train", "val", "test")))


def _safe_key(stem: str, seen: set) -> str:
    key = re.sub(r"[^A-Za-z0-9_-]+", "_", stem) or "image"
    base, i = key, 1
    while key in seen:
        key, i = f"{base}-{i}", i + 1
    seen.add(key)
    return key


def iter_inputs(path: str, split: str | None, n: int, counts: dict) -> Iterator[tuple]:
    """(PIL image, meta) pairs; unreadable ones are counted in counts['skipped'] and logged once."""
    p = Path(path)
    if not p.exists():
        raise XomniError(f"not found: {p}")
    if _is_dataset(p):
        ds = open_dataset(p, split)
        total = len(ds) if n <= 0 else min(n, len(ds))
        for i in range(total):
            s = ds[i]
            if s.image is None:
                _skip(counts, s.error or s.key)
                continue
            meta = {k: v for k, v in s.meta.items() if k != "file_name"}
            meta.setdefault("key", s.key)
            yield s.image, meta
        return
    from PIL import Image
    files = input_images(p)
    seen: set = set()
    for f in files[:n if n > 0 else None]:
        try:
            with Image.open(f) as im:
                im.load()
                img = im.convert("RGB")
        except Exception as e:
            _skip(counts, f"{f}: {e}")
            continue
        yield img, {"key": _safe_key(f.stem, seen), "source": str(f)}


def _skip(counts: dict, why: str) -> None:
    if counts["skipped"] == 0:
        log(f"skipping unreadable image: {why}")
    counts["skipped"] += 1


def reconstruct(inp: str, out: str, tokenizer: str, decoder: str, split: str | None = None, n: int = 0,
                steps: int | None = None, seed: int = 0, batch_size: int = 16,
                strength: float | None = None, overwrite: bool = False) -> dict:
    """Written aside and swapped in when complete; a non-empty `out` is replaced only with `overwrite`."""
    refuse_existing(Path(out), "--out", "files", overwrite)
    tok = ImageTokenizer.from_pretrained(tokenizer)
    dec = Decoder.from_pretrained(decoder)
    if tuple(tok.grid) != tuple(dec.grid) or tok.vocab_size != dec.vocab_size:
        raise XomniError(f"tokenizer ({tok.grid[0]}x{tok.grid[1]} grid, {tok.vocab_size} codes) and decoder "
                         f"({dec.grid[0]}x{dec.grid[1]} grid, {dec.vocab_size} codes) do not match")
    counts = {"skipped": 0, "written": 0}
    warner = ResizeWarner()
    g = torch.Generator().manual_seed(seed)
    t0 = time.time()

    def batches():
        buf = []
        for item in iter_inputs(inp, split, n, counts):
            buf.append(item)
            if len(buf) == batch_size:
                yield buf
                buf = []
        if buf:
            yield buf

    def items():
        for buf in batches():
            x = images_to_tensor([im for im, _ in buf], tok.config.image_size, warner)
            rec = tensor_to_pil(dec.decode(tok.encode(x), steps=steps, generator=g, strength=strength))
            for img, (_, meta) in zip(rec, buf):
                counts["written"] += 1
                yield img, meta

    def checked():
        yield from items()
        if counts["written"] == 0:  # raised inside the staged write: `out` stays as it was
            raise XomniError(f"no readable images in {inp} ({counts['skipped']} unreadable)")
    write_imagefolder_swap(out, checked())
    dt = time.time() - t0
    return {"out": str(out), "written": counts["written"], "skipped": counts["skipped"],
            "steps": int(steps or dec.config.steps),
            "strength": float(dec.config.strength if strength is None else strength), "seed": seed,
            "seconds": round(dt, 2),
            "images_per_s": counts["written"] / dt}
