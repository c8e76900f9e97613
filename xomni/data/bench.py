"""`xomni bench data`: render speed (single process) and shard read throughput (open_dataset, sequential)."""
from __future__ import annotations

import os
import tempfile
import time

from xomni.data.io import encode_png, open_dataset
from xomni.data.presets import get_preset
from xomni.data.render import render
from xomni.data.scene import sample_scene
from xomni.data.synth import synth
from xomni.errors import XomniError


def bench_data(n: int = 200, preset: str = "tiny", seed: int = 0) -> dict:
    if n <= 0:
        raise XomniError(f"--n must be positive, got {n}")
    p = get_preset(preset)
    sample_scene(p, seed, "train", 0)  # warm the word list and font caches
    t = time.perf_counter()
    metas = [sample_scene(p, seed, "train", i) for i in range(n)]
    t_scene = time.perf_counter() - t
    t = time.perf_counter()
    imgs = [render(m) for m in metas]
    t_render = time.perf_counter() - t
    t = time.perf_counter()
    for im in imgs:
        encode_png(im)
    t_png = time.perf_counter() - t
    with tempfile.TemporaryDirectory(prefix="xomni-bench-") as d:
        t = time.perf_counter()
        synth(d, n, seed=seed, preset=preset, split="train", progress=False)
        t_synth = time.perf_counter() - t
        shard_dir = os.path.join(d, "train")
        nbytes = sum(os.path.getsize(os.path.join(shard_dir, f)) for f in os.listdir(shard_dir))
        t = time.perf_counter()
        ds = open_dataset(d, "train")
        t_index = time.perf_counter() - t
        t = time.perf_counter()
        ok = sum(ds[i].image is not None for i in range(len(ds)))
        t_read = time.perf_counter() - t
        t = time.perf_counter()
        for i in range(len(ds)):
            ds.meta(i)
        t_meta = time.perf_counter() - t
    return {
        "n": n, "preset": preset, "threads": 1,
        "renders_per_s": round(n / (t_scene + t_render), 1),
        "scene_sampling_per_s": round(n / t_scene, 1), "render_only_per_s": round(n / t_render, 1),
        "png_encode_per_s": round(n / t_png, 1),
        "synth_end_to_end_per_s": round(n / t_synth, 1),
        "shards": {"bytes": nbytes, "bytes_per_sample": round(nbytes / n),
                   "index_build_s": round(t_index, 4),
                   "read_samples_per_s": round(ok / t_read, 1), "read_mb_per_s": round(nbytes / t_read / 1e6, 2),
                   "meta_only_per_s": round(len(ds) / t_meta, 1),
                   "note": "sequential ds[i] with PNG decode to RGB; open_dataset index build excluded"},
    }
