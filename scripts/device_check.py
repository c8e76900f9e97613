"""Check the CUDA path of xomni on a GPU and measure its speed (JSON on stdout; `--json FILE` also saves).

    python scripts/device_check.py --model xomni/pretrained/mini --tokens TOKEN_CACHE --images-out DIR --json out.json

What it checks (each part is independent; a failure is recorded as {"error": ...} and the rest still runs):
- ar_step: the AR training loss of one batch on CUDA equals the CPU loss (fp32, |diff| <= 1e-3), and the bf16
  autocast loss is close; training steps/s at batch 32 and 256, fp32 vs bf16, timed on the training loop itself
  (xomni.train.time_steps, as `xomni train ar` runs it).
- sampler: the per-token log-probabilities returned by the CUDA sampler equal those of a separate full forward pass
  with CFG, min-p and temperature all on (max |diff|, fp32 and bf16 weights); tokens/s at batch 16 and 256.
- sampler_compiled: the same log-prob check for the compiled sampler (fp32, CFG on; `fell_back_to_eager` says
  whether it compiled at all), its first-call (compile) time, and tokens/s compiled vs eager at batch 16 and 256.
- decoder: images/s of the diffusion decoder at its default steps, batch 16 and 256.
- pipeline: `pipe.to("cuda")` draws every target of --targets with --samples samples; the images and their
  metadata go to --images-out so that `xomni eval text --images DIR` can score them on a machine with Tesseract.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


DEV = "cuda"
SIZES = {"train": (32, 256), "sample": (16, 256), "decode": (16, 256), "reps": 10}


def _sync():
    if DEV.startswith("cuda"):
        torch.cuda.synchronize()


def _timed(fn, reps: int, warmup: int = 3) -> float:
    """Median seconds per call over `reps` calls (after `warmup`)."""
    for _ in range(warmup):
        fn()
    _sync()
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        _sync()
        ts.append(time.perf_counter() - t)
    return sorted(ts)[len(ts) // 2]


def ar_step(pipe, tokens: str) -> dict:
    import copy
    import dataclasses

    from xomni.ar.data import TokenDataset
    from xomni.ar.train import ARTrainConfig, build_loss_fn, make_sequences
    from xomni.train import time_steps
    ds = TokenDataset(tokens)
    cfg = ARTrainConfig()
    out = {}
    from xomni.lora.adapter import base_model_of, is_lora
    src = base_model_of(pipe.ar) if is_lora(pipe.ar) else pipe.ar  # an adapter freezes the base: train it in full
    cpu = copy.deepcopy(src).float().cpu().train()
    gpu = copy.deepcopy(src).float().to(DEV).train()
    batch = [ds[i] for i in range(min(32, SIZES["train"][0]))]
    ids, tg, mask = make_sequences(batch, cpu, pipe.text_tokenizer, cfg, torch.Generator().manual_seed(0))
    with torch.no_grad():
        l_cpu = cpu(ids, tg, attention_mask=mask)[0].item()
        l_gpu = gpu(ids, tg, attention_mask=mask)[0].item()
        with torch.autocast(DEV.split(":")[0], dtype=torch.bfloat16):
            l_bf16 = gpu(ids, tg, attention_mask=mask)[0].item()
    out["loss_cpu_fp32"], out["loss_cuda_fp32"], out["loss_cuda_bf16"] = l_cpu, l_gpu, l_bf16
    out["cuda_matches_cpu"] = abs(l_cpu - l_gpu) <= 1e-3
    loss_fn = build_loss_fn(gpu, pipe.text_tokenizer, cfg)
    for bs in SIZES["train"]:
        for prec in ("fp32", "bf16"):  # the training loop itself, as `xomni train ar` runs it
            tc = dataclasses.replace(cfg.train, device=DEV, precision=prec, batch_size=bs, lr=1e-5, warmup_steps=0)
            s = time_steps(tc, gpu, ds, loss_fn, steps=max(3, SIZES["reps"]), warmup=2, collate=list, move_batch=False)
            out[f"train_b{bs}_{prec}"] = {"s_per_step": round(s, 5), "steps_per_s": round(1 / s, 1),
                                          "samples_per_s": round(bs / s)}
    return out


def sampler(pipe) -> dict:
    from xomni.ar.sampler import SamplingConfig
    out = {}
    s = SamplingConfig(temperature=0.7, min_p=0.05, cfg_scale=2.0)
    prompts = [pipe.check_prompt(f'a white poster with the text "{w}" in black bold sans-serif letters')
               for w in ("HELLO", "river", "Quartz", "42")]
    try:
        _sampler_runs(pipe, prompts, s, out)
    finally:  # the pipeline part after this one draws with float32 weights whatever happened here
        pipe.ar.to(DEV, dtype=torch.float32)
    out["logprob_bar_fp32_1e-4"] = out["logprob_max_abs_diff_fp32"] <= 1e-4 and not out.get("min_p_flips_fp32")
    return out


def _sampler_runs(pipe, prompts, s, out) -> None:
    from xomni.ar.sampler import SamplingConfig, sample_images, sequence_logprobs
    for dt in (torch.float32, torch.bfloat16):
        pipe.ar.to(DEV, dtype=dt).eval()
        ar = pipe.drawing_model()  # what the pipeline samples with (a keep-reader adapter merged in)
        o = sample_images(ar, prompts, pipe.grid, s, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            ref = sequence_logprobs(ar, prompts, o.codes_BHW, s)
        name = "fp32" if dt == torch.float32 else "bf16"
        diff = (o.logprobs_BN - ref).abs()
        ok = torch.isfinite(diff)  # not: a token on min-p's threshold, kept by one pass and cut by the other
        out[f"logprob_max_abs_diff_{name}"] = float(diff[ok].max()) if ok.any() else float("inf")
        out[f"min_p_flips_{name}"] = int((~ok).sum())
        d = SamplingConfig(temperature=0.55)
        for B in SIZES["sample"]:
            rows = [prompts[i % 4] for i in range(B)]
            t = _timed(lambda: sample_images(ar, rows, pipe.grid, d, generator=torch.Generator().manual_seed(0)),
                       reps=max(1, SIZES["reps"] // 2), warmup=1)
            out[f"sample_b{B}_{name}"] = {"s": round(t, 4), "tokens_per_s": round(B * pipe.grid[0] * pipe.grid[1] / t),
                                          "images_per_s": round(B / t, 1)}


def sampler_compiled(pipe) -> dict:
    """The compiled sampler (xomni.ar.compiled) on this device, fp32: its log-probs against a full forward, and
    tokens/s against the eager sampler with the same settings (CFG on), per batch size after one compiling call."""
    from xomni.ar.sampler import SamplingConfig, sample_images, sequence_logprobs
    pipe.ar.to(DEV, dtype=torch.float32).eval()
    ar = pipe.drawing_model()
    s = SamplingConfig(temperature=0.7, min_p=0.05, cfg_scale=2.0)
    words = ("HELLO", "river", "Quartz", "42")
    prompts = [pipe.check_prompt(f'a white poster with the text "{w}" in black bold sans-serif letters') for w in words]
    out = {}
    t = time.perf_counter()
    o = sample_images(ar, prompts, pipe.grid, s, generator=torch.Generator().manual_seed(0), compile=True)
    out["first_call_s"] = round(time.perf_counter() - t, 1)
    with torch.no_grad():
        ref = sequence_logprobs(ar, prompts, o.codes_BHW, s)
    out["logprob_max_abs_diff_fp32"] = float((o.logprobs_BN - ref).abs().max())
    out["logprob_bar_fp32_1e-4"] = out["logprob_max_abs_diff_fp32"] <= 1e-4
    from xomni.ar import compiled
    out["fell_back_to_eager"] = bool(compiled._failed)
    for B in SIZES["sample"]:
        rows = [prompts[i % 4] for i in range(B)]
        runs = {}
        for name, c in (("compiled", True), ("eager", False)):
            runs[name] = _timed(lambda: sample_images(ar, rows, pipe.grid, s, generator=torch.Generator().manual_seed(0),
                                                      compile=c), reps=max(1, SIZES["reps"] // 2), warmup=1)
        n_tok = B * pipe.grid[0] * pipe.grid[1]
        out[f"sample_b{B}"] = {f"{k}_tokens_per_s": round(n_tok / v) for k, v in runs.items()}
        out[f"sample_b{B}"]["compiled_over_eager"] = round(runs["eager"] / runs["compiled"], 2)
    return out


def decoder(pipe) -> dict:
    out = {"steps": pipe.decoder.config.steps}
    for B in SIZES["decode"]:
        codes = torch.randint(0, pipe.decoder.vocab_size, (B, *pipe.grid), generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            t = _timed(lambda: pipe.decoder.decode(codes, generator=torch.Generator().manual_seed(0)),
                       reps=max(1, SIZES["reps"] // 2), warmup=1)
        out[f"decode_b{B}"] = {"s": round(t, 4), "images_per_s": round(B / t, 1)}
    return out


def pipeline_images(pipe, targets: str, samples: int, out_dir: str) -> dict:
    from xomni.data.io import write_imagefolder
    words = [w.strip() for w in Path(targets).read_text().splitlines() if w.strip()]
    prompts = [pipe.caption_for_text(w) for w in words]
    t = time.perf_counter()
    images = pipe(prompts, num_images=samples, seed=0)
    _sync()
    dt = time.perf_counter() - t
    rows = [(im, {"key": f"t{i // samples:04d}-s{i % samples}", "caption": prompts[i // samples],
                  "text": words[i // samples]}) for i, im in enumerate(images)]
    write_imagefolder(Path(out_dir), rows)
    return {"n_images": len(images), "seconds": round(dt, 2), "images_per_s": round(len(images) / dt, 1),
            "sampling": pipe.index.get("sampling"), "out": out_dir}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="Pipeline directory (default: the bundled model).")
    ap.add_argument("--tokens", required=True, help="AR token cache (codes.safetensors + meta.jsonl).")
    ap.add_argument("--targets", default=None, help="Target words, one per line, for the pipeline images.")
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--images-out", default=None)
    ap.add_argument("--json", default=None)
    ap.add_argument("--device", default="cuda", help="cuda; cpu only for a dry run of this script's code paths.")
    ap.add_argument("--dry", action="store_true", help="Tiny sizes, one repetition: a quick run of the code paths.")
    a = ap.parse_args()
    global DEV
    DEV = a.device
    if a.dry:
        SIZES.update({"train": (2,), "sample": (4,), "decode": (4,), "reps": 1})
    from xomni.pipeline import Pipeline
    if DEV.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("error: no CUDA GPU on this machine; this script checks the CUDA path")
    res = {"torch": torch.__version__, "device": DEV,
           "gpu": torch.cuda.get_device_name(0) if DEV.startswith("cuda") else None}
    from xomni.errors import XomniError
    try:
        pipe = Pipeline.from_pretrained(a.model).to(DEV)
    except XomniError as e:  # bad --model: one line, exit 2
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    parts = [("ar_step", lambda: ar_step(pipe, a.tokens)), ("sampler", lambda: sampler(pipe)),
             ("sampler_compiled", lambda: sampler_compiled(pipe)), ("decoder", lambda: decoder(pipe))]
    if a.targets and a.images_out:
        parts.append(("pipeline", lambda: pipeline_images(pipe, a.targets, a.samples, a.images_out)))
    for name, fn in parts:
        t = time.perf_counter()
        try:
            res[name] = fn()
        except Exception as e:  # noqa: BLE001 - record and go on: one GPU lease, every part counts
            res[name] = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-2000:]}
        res[name]["wall_s"] = round(time.perf_counter() - t, 1)
        print(f"[device_check] {name}: {json.dumps(res[name])[:600]}", file=sys.stderr, flush=True)
    if DEV.startswith("cuda"):
        res["peak_gpu_mem_gib"] = round(torch.cuda.max_memory_allocated() / 2 ** 30, 2)
    text = json.dumps(res, indent=1)
    print(text)
    if a.json:
        Path(a.json).write_text(text)


if __name__ == "__main__":
    main()
