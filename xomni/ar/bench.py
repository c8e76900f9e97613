"""`xomni bench matmul | bandwidth | sample | generate`: machine baselines, and the speed of each sampling path (eager,
speculative Jacobi decoding, compiled) against transformers' generate."""
from __future__ import annotations

import dataclasses
import resource
import statistics
import time
from typing import Optional

import torch
import typer

from xomni.ar.distribution import SamplingConfig, draw, process_logits
from xomni.ar.sampler import build_package_for, build_rows, prompt_batch, sample_images
from xomni.ar.vocab import generation_length
from xomni.cliargs import IntRange, JsonOpt, _cb, check_in_path
from xomni.hwbench import matmul_gflops, read_bandwidth_gbs
from xomni.pipeline import Pipeline
from xomni.utils import emit_json

class _UnifiedHead(torch.nn.Module):
    """The AR model's two output heads as one linear layer over the unified vocabulary, as generate() expects."""

    def __init__(self, model):
        super().__init__()
        self.text_head, self.image_norm, self.image_head = model.text_head, model.image_norm, model.image_head

    def forward(self, h):
        return torch.cat([self.text_head(h), self.image_head(self.image_norm(h))], dim=-1)


def _hf_twin(model):
    """A Qwen2ForCausalLM over the unified vocabulary with the same weights, for transformers' `generate`."""
    from transformers import Qwen2ForCausalLM
    cfg = model.backbone.config.__class__(**model.backbone.config.to_dict())
    cfg.vocab_size = model.layout.total
    cfg.tie_word_embeddings = False
    twin = Qwen2ForCausalLM(cfg)
    twin.model.load_state_dict({k: v for k, v in model.backbone.state_dict().items()}, strict=False)
    with torch.no_grad():
        twin.model.embed_tokens.weight.copy_(torch.cat([model.text_embed.weight, model.image_embed.weight]))
    twin.lm_head = _UnifiedHead(model)
    return twin.eval()


def _hf_generate(twin, model, prompts: list[list[int]], grid, s: SamplingConfig, seed: int,
                 image_only: bool = False) -> torch.Tensor:
    """Image codes (B x h*w) drawn by transformers' generate(use_cache=True) on the twin; `image_only` suppresses
    the text side of the vocabulary (needed to decode the codes; costs generate a little per step). With CFG,
    transformers' own guidance: a second, unbatched pass over the empty prompt per step (`negative_prompt_ids`)."""
    lay = model.layout
    N = grid[0] * grid[1]
    ids, mask, _ = prompt_batch(model, prompts, grid, 1.0)
    torch.manual_seed(seed)
    extra = {"suppress_tokens": list(range(lay.image_offset))} if image_only else {}
    if s.cfg_on:  # the sampler's own unconditional rows (all of one length: no padding)
        uncond = torch.tensor(build_rows(model, prompts, grid, s.cfg_scale)[len(prompts):])
        extra.update(guidance_scale=s.cfg_scale, negative_prompt_ids=uncond,
                     negative_prompt_attention_mask=torch.ones_like(uncond))
    out = twin.generate(ids, attention_mask=mask, max_new_tokens=N, min_new_tokens=N, do_sample=True,
                        temperature=s.temperature, top_k=s.top_k, top_p=s.top_p, min_p=s.min_p or None,
                        use_cache=True, pad_token_id=lay.pad_id, eos_token_id=None, **extra)
    return (out[:, -N:] - lay.image_offset).clamp(min=0)


def _prompts(model, B: int):
    return [[65 + (i % 26)] * 40 for i in range(B)]


def _paths(compile: bool, sjd_window: int) -> dict[str, dict]:
    """sample_images arguments of each path of ours: the default first."""
    paths = {"eager": {}, "eager_sjd": {"sjd_window": sjd_window}}
    if compile:  # torch.compile in this process ("jit"), and the AOTInductor package `xomni compile` builds
        paths.update(compiled={"compile": "jit"}, compiled_sjd={"compile": "jit", "sjd_window": sjd_window},
                     packaged={"compile": True})
    return paths


def _interleaved(fns: dict, repeats: int, skip=lambda name, r: False) -> dict[str, list[float]]:
    """Seconds of each fn(seed) per repeat, the paths interleaved so that drifts in machine load hit all alike."""
    times = {name: [] for name in fns}
    for r in range(repeats):
        for name, fn in fns.items():
            if skip(name, r):
                continue
            t = time.perf_counter()
            fn(r)
            times[name].append(time.perf_counter() - t)
    return times


def bench_sample_impl(model, grid, batches=(1, 16), repeats: int = 5, compile: bool = True,
                      sjd_window: int = 8, sampling: SamplingConfig | None = None,
                      prompts: list[list[int]] | None = None) -> dict:
    """Tokens/s, images/s and forward passes per image of each sampling path (eager = the default, speculative
    Jacobi decoding, compiled, both) against transformers' generate(use_cache=True) and a no-cache loop, all with
    the same sampling settings (`sampling`, default temperature 1 and no filter; CFG off, generate has none).
    `prompts` (token ids, cycled to each batch size; default 40-token dummies): what SJD's pass count depends on."""
    N = grid[0] * grid[1]
    s = dataclasses.replace(sampling or SamplingConfig(min_p=0.0), cfg_scale=1.0)
    twin = _hf_twin(model)
    ours = _paths(compile, sjd_window)
    res = {"grid": list(grid), "new_tokens": N, "threads": torch.get_num_threads(), "repeats": repeats,
           "sampling": dataclasses.asdict(s), "sjd_window": sjd_window, "compile_s": {},
           # what `xomni generate` runs by default: the package where `xomni compile` built one, else eager
           "default_path": "packaged" if compile else "eager"}

    @torch.no_grad()
    def nocache(rows, seed):
        g = torch.Generator().manual_seed(seed)
        lay = model.layout
        ids, mask, pos = prompt_batch(model, rows, grid, 1.0)
        for _ in range(N):
            h, _ = model.hidden(ids, attention_mask=mask, position_ids=pos)
            tok = draw(process_logits(model.image_logits(h[:, -1]), None, s), g)
            ids = torch.cat([ids, (tok + lay.image_offset)[:, None]], dim=1)
            mask = torch.cat([mask, mask[:, -1:]], dim=1)
            pos = torch.cat([pos, pos[:, -1:] + 1], dim=1)

    for B in batches:
        rows = [prompts[i % len(prompts)] for i in range(B)] if prompts else _prompts(model, B)
        passes = {"generate": [N], "nocache": [N]}

        def run(kw, name):
            def fn(seed):
                out = sample_images(model, rows, grid, s, generator=torch.Generator().manual_seed(seed), **kw)
                passes.setdefault(name, []).append(out.forward_passes)  # the batch moves in lock step
            return fn
        fns = {name: run(kw, name) for name, kw in ours.items()}
        fns["generate"] = lambda seed: _hf_generate(twin, model, rows, grid, s, seed)
        fns["nocache"] = lambda seed: nocache(rows, seed)
        if compile:  # the package for this batch size and the prompts' cache length (its build = xomni compile)
            t = time.perf_counter()
            path = build_package_for(model, grid, s, B, max(map(len, rows)))
            res["compile_s"][f"package_build_batch{B}"] = time.perf_counter() - t
            res.setdefault("package_mb", {})[f"batch{B}"] = path.stat().st_size / 2 ** 20
            model.__dict__.pop("_xomni_packages", None)  # loaded below as a fresh process would
        for name, fn in fns.items():  # one untimed warm-up each (compiled: its compile time; packaged: its load)
            if name == "nocache":
                continue  # no cache or graph to warm, and its seconds-long run would only add noise
            t = time.perf_counter()
            fn(10_000)
            if name.startswith("compiled") or name == "packaged":
                res["compile_s"][f"{name}_batch{B}"] = time.perf_counter() - t
        # the no-cache loop is slow; two runs are enough for a ratio of its size
        times = _interleaved(fns, repeats, skip=lambda name, r: name == "nocache" and r >= 2)
        med = {k: statistics.median(v) for k, v in times.items()}
        res[f"batch{B}"] = {name: {"median_s": med[name], "tokens_per_s": B * N / med[name],
                                   "images_per_s": B / med[name],
                                   "forward_passes_per_image": statistics.median(passes[name]),
                                   "speedup_vs_generate": med["generate"] / med[name]} for name in fns}
    top = res[f"batch{batches[-1]}"]
    best = max(ours, key=lambda name: top[name]["tokens_per_s"])
    res["default_speedup_vs_generate"] = top[res["default_path"]]["speedup_vs_generate"]
    res["best_path"] = best
    res["best_speedup_vs_generate"] = top[best]["speedup_vs_generate"]
    res["forward_passes_per_image"] = {name: v["forward_passes_per_image"] for name, v in top.items()}
    # memory traffic per decode step of the default path at the largest batch: non-embedding weights + mean KV cache
    bb = model.backbone.config
    B = batches[-1]
    weight_bytes = 4 * (model.num_params(non_embedding=True))
    head_dim = bb.hidden_size // bb.num_attention_heads
    mean_len = generation_length(40, 0, 0) + N / 2
    kv_bytes = 4 * 2 * bb.num_hidden_layers * bb.num_key_value_heads * head_dim * mean_len * B
    step_s = top["eager"]["median_s"] / top["eager"]["forward_passes_per_image"]
    bw = read_bandwidth_gbs() * 1e9
    res["bytes_per_step"] = weight_bytes + kv_bytes
    res["achieved_gb_per_s"] = (weight_bytes + kv_bytes) / step_s / 1e9
    res["read_bandwidth_gb_per_s"] = bw / 1e9
    res["bandwidth_fraction"] = (weight_bytes + kv_bytes) / step_s / bw
    res["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return res


def bench_generate_impl(pipe, prompt: str, n_images: int = 4, runs: int = 5, steps: int | None = None,
                        compile: bool = False, sjd_window: int = 8, baseline=None) -> dict:
    """End-to-end latency of one `n_images` generation (AR sampling + diffusion decoding), split by stage, for each
    sampling path: `default` (what `xomni generate` runs with this pipeline as loaded), SJD, the compiled ones when
    `compile`, and transformers' generate for the AR stage. The first call of each path is an untimed warm-up.
    `baseline`: another pipeline timed the same way, its runs interleaved with `pipe`'s (machine load hits both
    alike); its figures go under "baseline" and each path's latency ratio (pipe / baseline) beside them."""
    timers = [_GenerateTimer(pipe, prompt, n_images, steps, compile, sjd_window)]
    if baseline is not None:
        timers.append(_GenerateTimer(baseline, prompt, n_images, steps, compile, sjd_window))
    fns = {(i, name): fn for i, t in enumerate(timers) for name, fn in t.fns.items()}
    try:
        for fn in fns.values():
            fn(0)
        for t in timers:
            t.clear()
        _interleaved({k: (lambda seed, f=f: f(1 + seed)) for k, f in fns.items()}, runs)
    finally:
        for t in timers:
            t.restore()
    out = timers[0].summary(runs)
    if baseline is not None:
        ref = timers[1].summary(runs)
        out["baseline"] = {"model": str(baseline.path), "grid": ref["grid"], "latency_p50_s": ref["latency_p50_s"],
                           "paths": {k: {m: v[m] for m in ("latency_p50_s", "ar_p50_s", "decoder_p50_s")}
                                     for k, v in ref["paths"].items()}}
        out["latency_ratio_vs_baseline"] = {k: v["latency_p50_s"] / ref["paths"][k]["latency_p50_s"]
                                            for k, v in out["paths"].items()}
    return out


class _GenerateTimer:
    """One pipeline's timed paths for `bench_generate_impl`: fns[name](seed) runs one generation and records its
    (AR seconds, decoder seconds); summary() turns the records into the JSON figures."""

    def __init__(self, pipe, prompt, n_images, steps, compile, sjd_window):
        self.pipe, self.prompt, self.n_images, self.steps, self.sjd_window = pipe, prompt, n_images, steps, sjd_window
        self.s = pipe.sampling_config()
        self.ids = pipe.check_prompt(prompt)
        self.twin = _hf_twin(pipe.drawing_model())
        self.dflt = {"compile_sampler": pipe.compile_sampler, "sjd_window": pipe.sjd_window}
        self.paths = {"default": self.dflt, "sjd": {**self.dflt, "sjd_window": sjd_window}}
        if compile:
            self.paths.update(compiled={"compile_sampler": "jit", "sjd_window": 0},
                              compiled_sjd={"compile_sampler": "jit", "sjd_window": sjd_window})
        self.N = pipe.grid[0] * pipe.grid[1]
        self.passes = {"generate": [self.N]}
        self.split: dict[str, list[tuple[float, float]]] = {name: [] for name in [*self.paths, "generate"]}
        self.fns = {name: self._run(name) for name in self.split}

    def _run(self, name):
        pipe = self.pipe

        def fn(seed):
            t0 = time.perf_counter()
            if name == "generate":
                codes = _hf_generate(self.twin, pipe.drawing_model(), [self.ids] * self.n_images, pipe.grid, self.s,
                                     seed, image_only=True)
                codes = pipe.ar.layout.image_grid(codes, *pipe.grid)
            else:
                for k, v in self.paths[name].items():
                    setattr(pipe, k, v)
                out = pipe.generate_codes([self.prompt] * self.n_images, seed=seed, sampling=self.s)
                codes = out.codes_BHW
                self.passes.setdefault(name, []).append(out.forward_passes)
            t1 = time.perf_counter()
            pipe.decode(codes, steps=self.steps, seed=seed)
            self.split[name].append((t1 - t0, time.perf_counter() - t1))
        return fn

    def clear(self):
        for v in self.split.values():
            v.clear()

    def restore(self):
        for k, v in self.dflt.items():
            setattr(self.pipe, k, v)

    def summary(self, runs: int) -> dict:
        pipe, n_images = self.pipe, self.n_images
        out = {"prompt": self.prompt, "n_images": n_images, "runs": runs, "threads": torch.get_num_threads(),
               "decoder_steps": int(self.steps or pipe.decoder.config.steps), "grid": list(pipe.grid),
               "sjd_window": self.sjd_window, "paths": {}}
        for name, v in self.split.items():
            ar_s, dec_s = zip(*v)
            total = [a + d for a, d in v]
            p50 = statistics.median(total)
            out["paths"][name] = {"latency_p50_s": p50, "ar_p50_s": statistics.median(ar_s),
                                  "decoder_p50_s": statistics.median(dec_s), "images_per_s": n_images / p50,
                                  "ar_tokens_per_s": n_images * self.N / statistics.median(ar_s),
                                  "forward_passes_per_image": statistics.median(self.passes[name]),
                                  "ar_fraction": statistics.median(a / t for a, t in zip(ar_s, total)),
                                  "latency_s": total, "ar_s": list(ar_s), "decoder_s": list(dec_s)}
        gen = out["paths"]["generate"]
        for v in out["paths"].values():
            v["speedup_vs_generate"] = gen["latency_p50_s"] / v["latency_p50_s"]
            v["ar_speedup_vs_generate"] = gen["ar_p50_s"] / v["ar_p50_s"]
        ours = [k for k in out["paths"] if k != "generate"]
        best = max(ours, key=lambda k: out["paths"][k]["images_per_s"])
        out.update({k: out["paths"]["default"][k] for k in ("latency_p50_s", "ar_p50_s", "decoder_p50_s",
                                                             "ar_fraction", "images_per_s")})
        out.update(default_speedup_vs_generate=out["paths"]["default"]["speedup_vs_generate"], best_path=best,
                   best_speedup_vs_generate=out["paths"][best]["speedup_vs_generate"],
                   forward_passes_per_image={k: v["forward_passes_per_image"] for k, v in out["paths"].items()})
        return out


BENCH_WORDS = ("HELLO", "OPEN", "Aroma", "cake")  # `bench sample` prompts: the model's template around each
SjdWindowOpt = typer.Option(8, "--sjd-window", help="Drafts per forward pass of the speculative (SJD) paths, "
                            "1..64.", callback=IntRange("--sjd-window", 1, 64))


def register_bench(apps: dict) -> None:
    bench = apps["bench"]

    @bench.command("matmul")
    def bench_matmul(n: int = typer.Option(1024, "--n", help="Matrix size, 16..16384.",
                                           callback=IntRange("--n", 16, 16384)),
                     json_path: Optional[str] = JsonOpt):
        """fp32 matmul rate (GFLOP/s): the denominator of MFU."""
        emit_json({"n": n, "threads": torch.get_num_threads(), "fp32_gflops": matmul_gflops(n),
                   "bf16_gflops": matmul_gflops(n, dtype=torch.bfloat16)}, json_path)

    @bench.command("bandwidth")
    def bench_bandwidth(json_path: Optional[str] = JsonOpt):
        """Memory read bandwidth (GB/s) at working sets around the model sizes: decoding is bound by it."""
        emit_json({f"read_gb_per_s_{m}mib": read_bandwidth_gbs(m) for m in (16, 64, 256)}, json_path)

    @bench.command("sample")
    def bench_sample(model_dir: Optional[str] = typer.Option(None, "--model", help="Pipeline directory "
                                                               "(default: the bundled model).",
                                                               callback=_cb(check_in_path, "--model")),
                     repeats: int = typer.Option(5, "--repeats", help="Interleaved runs, 1..100; the median is "
                                                 "reported.", callback=IntRange("--repeats", 1, 100)),
                     compile: bool = typer.Option(True, "--compile/--no-compile", help="Also time the compiled "
                                                  "paths (each compiles once per batch size first)."),
                     sjd_window: int = SjdWindowOpt,
                     json_path: Optional[str] = JsonOpt):
        """Tokens/s, images/s and forward passes per image of each sampling path vs transformers'
        generate(use_cache=True) and a no-cache loop, at the model's shipped sampling settings (CFG off), with the
        model's prompt template around four words."""
        pipe = Pipeline.from_pretrained(model_dir)
        prompts = [pipe.check_prompt(pipe.caption_for_text(w)) for w in BENCH_WORDS]
        out = bench_sample_impl(pipe.drawing_model(), pipe.grid, repeats=repeats, compile=compile,
                                sjd_window=sjd_window, sampling=pipe.sampling_config(), prompts=prompts)
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
                       compile: bool = typer.Option(False, "--compile", help="Also time the compiled AR sampler "
                                                    "paths (the warm-up run compiles; not counted)."),
                       sjd_window: int = SjdWindowOpt,
                       baseline: Optional[str] = typer.Option(
                           None, "--baseline", help="Also time this pipeline ('bundled' = the bundled model) in the "
                           "same run, interleaved with --model's runs, and report each path's latency beside it "
                           "(ratio new / old).",
                           callback=_cb(lambda p, name: p if p == "bundled" else check_in_path(p, name),
                                        "--baseline")),
                       json_path: Optional[str] = JsonOpt):
        """End-to-end latency of one n-image generation, p50, split between the AR sampler and the decoder, for
        each sampling path and for transformers' generate."""
        pipe = Pipeline.from_pretrained(model_dir)
        old = Pipeline.from_pretrained(None if baseline == "bundled" else baseline) if baseline else None
        out = bench_generate_impl(pipe, prompt, n_images=n, runs=runs, steps=steps, compile=compile,
                                  sjd_window=sjd_window, baseline=old)
        out["model"] = str(pipe.path)
        emit_json(out, json_path)
