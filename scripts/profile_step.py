"""Where the time of one packaged token step goes: kernel by kernel (JSON on stdout; `--json FILE` also saves).

    OMP_NUM_THREADS=1 python scripts/profile_step.py --batch 16 --prompt-tokens 30 [--model DIR] [--json out.json]

Builds the AR step's AOTInductor package as `xomni compile` does, but with inductor's per-kernel profiling on
(into a temporary cache directory, so the user's packages are untouched), prefills a batch of prompts, then times
the bare step and profiles it with torch.profiler. Kernels are grouped by what they compute (GEMM templates,
attention loops over the KV cache, the image head's extern matmul, the sampling distribution and draw, the rest).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def group(name: str) -> str:
    if name.startswith("gemm_"):
        return "gemm_templates"
    if "bmm" in name or "scaled_dot_product" in name:
        return "attention"
    if name.startswith("aoti_torch_cpu_mm") or name.startswith("aoti_torch_cpu_addmm"):
        return "extern_mm (image head)"
    if "log_softmax" in name or "cumsum" in name or "searchsorted" in name:
        return "sampling"
    return "other"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="pipeline directory (default: the bundled model)")
    ap.add_argument("--batch", type=int, default=16, help="images per step")
    ap.add_argument("--prompt-tokens", type=int, default=30, help="prompt length (sets the cache length bucket)")
    ap.add_argument("--steps", type=int, default=200, help="timed steps")
    ap.add_argument("--json", default=None, help="also save the JSON here")
    a = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["XOMNI_CACHE_DIR"] = tmp
        from xomni.ar.compiled import build_package
        from xomni.ar.sampler import example_step_inputs
        from xomni.pipeline import Pipeline

        pipe = Pipeline.from_pretrained(a.model)
        model, s, B = pipe.ar.float().eval(), pipe.sampling_config(), a.batch
        args = example_step_inputs(model, pipe.grid, s, B, a.prompt_tokens)
        t = time.perf_counter()
        path = build_package(model, s, args, {"cpp.enable_kernel_profile": True})
        build_s = time.perf_counter() - t
        step = torch._inductor.aoti_load_package(str(path))
        for _ in range(20):
            step(*args)
        t = time.perf_counter()
        for _ in range(a.steps):
            step(*args)
        step_ms = (time.perf_counter() - t) / a.steps * 1e3
        with torch.profiler.profile() as prof:
            for _ in range(a.steps):
                step(*args)
    groups: dict[str, float] = {}
    for ev in prof.key_averages():
        if ev.key.startswith("graph_") or ev.key.startswith("aoti_torch_cpu"):
            k = group(ev.key.removeprefix("graph_0_"))
            groups[k] = groups.get(k, 0.0) + ev.self_cpu_time_total / 1e3 / a.steps
    caches, valid_RS = args[-1], args[4]  # every step reads all of K and V (step_inputs: ..., valid_RS, ..., caches)
    kv_bytes = sum(c.numel() * c.element_size() for c in caches)
    res = {"batch": B, "cache_length": valid_RS.shape[1], "threads": torch.get_num_threads(),
           "package_build_s": round(build_s, 1),
           "step_ms": round(step_ms, 3), "tokens_per_s_bare_step": round(B / step_ms * 1e3, 1),
           "profiled_ms_per_step": {k: round(v, 3) for k, v in sorted(groups.items(), key=lambda kv: -kv[1])},
           "kv_cache_mb_read_per_step": round(kv_bytes / 2 ** 20, 1)}
    text = json.dumps(res, indent=1)
    print(text)
    if a.json:
        Path(a.json).write_text(text + "\n")


if __name__ == "__main__":
    main()
