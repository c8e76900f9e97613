"""`xomni bench matmul | memory | sample`: machine baselines and sampler speed vs transformers' generate."""
from __future__ import annotations

import resource
import statistics
import time
from typing import Optional

import typer

from xomni.cliargs import IntRange, JsonOpt, _cb, check_in_path

def _hf_twin(model):
    """A Qwen2ForCausalLM over the unified vocabulary with the same transformer weights (for `generate`)."""
    import torch
    from transformers import Qwen2ForCausalLM
    cfg = model.backbone.config.__class__(**model.backbone.config.to_dict())
    cfg.vocab_size = model.layout.total
    cfg.tie_word_embeddings = False
    twin = Qwen2ForCausalLM(cfg)
    twin.model.load_state_dict({k: v for k, v in model.backbone.state_dict().items()}, strict=False)
    with torch.no_grad():
        twin.model.embed_tokens.weight.copy_(torch.cat([model.text_embed.weight, model.image_embed.weight]))
        twin.lm_head.weight.copy_(torch.cat([model.text_head.weight, model.image_head.weight]))
    return twin.eval()


def _prompts(model, B: int):
    return [[65 + (i % 26)] * 40 for i in range(B)]


def bench_sample_impl(model, grid, batches=(1, 16), repeats: int = 5, compile: bool = True) -> dict:
    import torch
    from xomni.ar.sampler import SamplingConfig, process_logits, draw, sample_images
    from xomni.hwbench import read_bandwidth_gbs
    N = grid[0] * grid[1]
    s = SamplingConfig(temperature=1.0, top_k=0, min_p=0.0)
    twin = _hf_twin(model)
    res = {"grid": list(grid), "new_tokens": N, "threads": torch.get_num_threads(), "repeats": repeats,
           "sampling": "temperature 1.0, no top-k/top-p/min-p, no CFG (identical for all three)"}

    def ours(B, seed):
        sample_images(model, _prompts(model, B), grid, s, generator=torch.Generator().manual_seed(seed))

    def ours_compiled(B, seed):
        sample_images(model, _prompts(model, B), grid, s, generator=torch.Generator().manual_seed(seed), compile=True)

    def hf(B, seed):
        torch.manual_seed(seed)
        lay = model.layout
        ids = torch.tensor([[lay.bos_id] + p + lay.image_header(*grid) for p in _prompts(model, B)])
        twin.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=N, min_new_tokens=N, do_sample=True,
                      temperature=1.0, top_k=0, top_p=1.0, use_cache=True, pad_token_id=0, eos_token_id=None)

    @torch.no_grad()
    def nocache(B, seed):
        g = torch.Generator().manual_seed(seed)
        lay = model.layout
        ids = torch.tensor([[lay.bos_id] + p + lay.image_header(*grid) for p in _prompts(model, B)])
        for _ in range(N):
            h, _ = model.hidden(ids)
            tok = draw(process_logits(model.image_logits(h[:, -1]), None, s), g)
            ids = torch.cat([ids, (tok + lay.image_offset)[:, None]], dim=1)

    paths = [("ours", ours), ("generate", hf), ("nocache", nocache)]
    if compile:
        paths.insert(1, ("ours_compiled", ours_compiled))
    res["compile_s"] = {}
    for B in batches:
        times = {name: [] for name, _ in paths}
        for name, fn in paths:  # one untimed warm-up each (for the compiled path: its compile time)
            if name == "nocache":
                continue  # no cache or graph to warm, and its seconds-long run would only add noise
            t = time.perf_counter()
            fn(B, 10_000)
            if name == "ours_compiled":
                res["compile_s"][f"batch{B}"] = time.perf_counter() - t
        for r in range(repeats):  # interleaved, so drifts in machine load hit all paths alike
            for name, fn in paths:
                if name == "nocache" and r >= 2:
                    continue  # slow; two runs are enough for a ratio of this size
                t = time.perf_counter()
                fn(B, r)
                times[name].append(time.perf_counter() - t)
        med = {k: statistics.median(v) for k, v in times.items()}
        res[f"batch{B}"] = {f"{k}_tokens_per_s": B * N / v for k, v in med.items()}
        res[f"batch{B}"]["median_s"] = med
    b16 = res[f"batch{batches[-1]}"]
    best = "ours_compiled" if compile else "ours"
    res["speedup_path"] = ("compiled: sample_images(compile=True), xomni generate --compile" if compile
                           else "eager: sample_images() as `xomni generate` runs it by default")
    res["speedup_vs_generate"] = b16[f"{best}_tokens_per_s"] / b16["generate_tokens_per_s"]
    res["speedup_vs_nocache"] = b16[f"{best}_tokens_per_s"] / b16["nocache_tokens_per_s"]
    res["eager_speedup_vs_generate"] = b16["ours_tokens_per_s"] / b16["generate_tokens_per_s"]
    res["eager_speedup_vs_nocache"] = b16["ours_tokens_per_s"] / b16["nocache_tokens_per_s"]
    # memory traffic per decode step at the largest batch: all non-embedding weights + the mean KV cache
    bb = model.backbone.config
    B = batches[-1]
    weight_bytes = 4 * (model.num_params(non_embedding=True))
    head_dim = bb.hidden_size // bb.num_attention_heads
    mean_len = 40 + 5 + N / 2
    kv_bytes = 4 * 2 * bb.num_hidden_layers * bb.num_key_value_heads * head_dim * mean_len * B
    step_s = b16["median_s"][best] / N
    bw = read_bandwidth_gbs() * 1e9
    res["bytes_per_step"] = weight_bytes + kv_bytes
    res["achieved_gb_per_s"] = (weight_bytes + kv_bytes) / step_s / 1e9
    res["read_bandwidth_gb_per_s"] = bw / 1e9
    res["bandwidth_fraction"] = (weight_bytes + kv_bytes) / step_s / bw
    res["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return res


def bench_generate_impl(pipe, prompt: str, n_images: int = 4, runs: int = 5, steps: int | None = None) -> dict:
    """End-to-end latency of one `n_images` generation (AR sampling + diffusion decoding), split by stage; the
    first call is a warm-up and is not counted."""
    import torch

    def once(seed: int) -> tuple[float, float]:
        t0 = time.perf_counter()
        out = pipe.generate_codes([prompt] * n_images, seed=seed, sampling=pipe.sampling_config())
        t1 = time.perf_counter()
        pipe.decode(out.codes_BHW, steps=steps, seed=seed)
        return t1 - t0, time.perf_counter() - t1

    once(0)
    ar_s, dec_s = zip(*(once(1 + i) for i in range(runs)))
    total = [a + d for a, d in zip(ar_s, dec_s)]
    p50 = statistics.median(total)
    return {"prompt": prompt, "n_images": n_images, "runs": runs, "threads": torch.get_num_threads(),
            "decoder_steps": int(steps or pipe.decoder.config.steps), "grid": list(pipe.grid),
            "latency_p50_s": p50, "ar_p50_s": statistics.median(ar_s), "decoder_p50_s": statistics.median(dec_s),
            "ar_fraction": statistics.median(a / t for a, t in zip(ar_s, total)),
            "images_per_s": n_images / p50, "latency_s": total, "ar_s": list(ar_s), "decoder_s": list(dec_s)}


def register_bench(apps: dict) -> None:
    bench = apps["bench"]

    @bench.command("matmul")
    def bench_matmul(n: int = typer.Option(1024, "--n", help="Matrix size, 16..16384.",
                                           callback=IntRange("--n", 16, 16384)),
                     json_path: Optional[str] = JsonOpt):
        """fp32 matmul rate (GFLOP/s): the denominator of MFU."""
        import torch
        from xomni.hwbench import matmul_gflops
        from xomni.utils import emit_json
        emit_json({"n": n, "threads": torch.get_num_threads(), "fp32_gflops": matmul_gflops(n),
                   "bf16_gflops": matmul_gflops(n, dtype=torch.bfloat16)}, json_path)

    @bench.command("memory")
    def bench_memory(json_path: Optional[str] = JsonOpt):
        """Memory read bandwidth (GB/s) at working sets around the model sizes: decoding is bound by it."""
        from xomni.hwbench import read_bandwidth_gbs
        from xomni.utils import emit_json
        emit_json({f"read_gb_per_s_{m}mib": read_bandwidth_gbs(m) for m in (16, 64, 256)}, json_path)

    @bench.command("sample")
    def bench_sample(model_dir: Optional[str] = typer.Option(None, "--model", help="Pipeline directory "
                                                               "(default: the bundled model).",
                                                               callback=_cb(check_in_path, "--model")),
                     repeats: int = typer.Option(5, "--repeats", help="Interleaved runs, 1..100; the median is "
                                                 "reported.", callback=IntRange("--repeats", 1, 100)),
                     compile: bool = typer.Option(True, "--compile/--no-compile", help="Also time the compiled "
                                                  "sampler (compiles once per batch size first, ~30 s each)."),
                     json_path: Optional[str] = JsonOpt):
        """Tokens/s of xomni's sampler vs transformers' generate(use_cache=True) and a no-cache loop."""
        from xomni.pipeline import Pipeline
        from xomni.utils import emit_json
        pipe = Pipeline.from_pretrained(model_dir)
        out = bench_sample_impl(pipe.ar, pipe.grid, repeats=repeats, compile=compile)
        out["model"] = str(pipe.path)
        emit_json(out, json_path)

    @bench.command("generate")
    def bench_generate(model_dir: Optional[str] = typer.Option(None, "--model", help="Pipeline directory "
                                                                   "(default: the bundled model).",
                                                                   callback=_cb(check_in_path, "--model")),
                       prompt: str = typer.Option('a white poster with the text "HELLO" in black sans-serif letters',
                                                  "--prompt", help="Prompt to generate."),
                       n: int = typer.Option(4, "--n", help="Images per generation, 1..64.",
                                             callback=IntRange("--n", 1, 64)),
                       runs: int = typer.Option(5, "--runs", help="Timed runs after one warm-up (p50 reported), "
                                                "1..1000.", callback=IntRange("--runs", 1, 1000)),
                       steps: Optional[int] = typer.Option(None, "--steps", help="Decoder steps, 1..1000 (default: "
                                                           "the decoder's).", callback=IntRange("--steps", 1, 1000)),
                       compile: bool = typer.Option(False, "--compile", help="Compiled AR sampler (the warm-up run "
                                                    "compiles; not counted)."),
                       json_path: Optional[str] = JsonOpt):
        """End-to-end latency of one n-image generation, p50, split between the AR sampler and the decoder."""
        from xomni.errors import XomniError
        from xomni.pipeline import Pipeline
        from xomni.utils import emit_json
        if n < 1 or runs < 1:
            raise XomniError(f"--n and --runs must be >= 1, got {n} and {runs}")
        pipe = Pipeline.from_pretrained(model_dir)
        pipe.compile_sampler = compile
        out = bench_generate_impl(pipe, prompt, n_images=n, runs=runs, steps=steps)
        out["compiled_sampler"] = compile
        out["model"] = str(pipe.path)
        emit_json(out, json_path)
