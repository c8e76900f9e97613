"""The compiled decode steps (`sample_images(..., compile=True)`; by default where this machine compiled before).

One `torch.compile` graph per (rows, cache bucket, sampling settings) runs a whole token step: image embedding ->
layers over the static KV cache (written in place) -> image head -> `process_logits` -> inverse-CDF draw. In eager
mode a step of the tiny model is a long chain of small ops; inductor fuses the elementwise work and, with `freezing`
and `max_autotune`, generates its own C++ GEMMs over weights packed once. `freezing` is what pays (the variants
measured are in docs/RESULTS.md); passing the options through `torch.compile(options=...)` left `freezing`
unapplied, hence the per-call patch below. `xomni bench sample` measures both paths. On CUDA it compiles with
`freezing` only (not yet measured on a GPU). The speculative sampler's verify pass (xomni.ar.fastdecode.window_step)
compiles the same way, one graph per (rows, window, cache bucket, sampling settings).

Costs, stated: the first call for a new batch size or cache bucket compiles (tens of seconds on 2 cores, again in
every process), and the weights are frozen into the graph, so the step is rebuilt when they
change (the key holds each parameter's storage and in-place version counter: an optimizer step or load_state_dict
invalidates it). A failed compile (no C++ compiler, an unsupported op) warns once and the sampler runs eagerly;
past dynamo's recompile limit (8 graphs per build) the step runs uncompiled, still correct.

Compiled once per machine: `xomni compile` exports the one-token step for given batch sizes and every cache length
and compiles it ahead of time with AOTInductor into packages in `cache_dir()` (~/.cache/xomni/compile, or
$XOMNI_CACHE_DIR), keyed by a hash of the weights, torch version, device, sampling settings, rows and cache length.
`compile="auto"` (what `xomni generate`, `eval` and `serve` pass) loads such a package where one exists and runs
the eager static cache otherwise: no call waits for a compile unless asked (compile=True).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import types
from pathlib import Path

import torch

from xomni.ar.distribution import SamplingConfig, draw_from, process_logits
from xomni.ar.fastdecode import finish_layer, project_qkv, window_step
from xomni.utils import log

BUCKET = 64  # cache lengths round up to a multiple of this, so prompts of similar length share one graph
_CPU_OPTIONS = {"freezing": True, "max_autotune": True, "max_autotune_gemm_backends": "CPP,ATEN",
                "cpp.enable_concat_linear": True}
_failed: set[str] = set()


def cache_length(needed: int, max_seq_len: int) -> int:
    """The static cache length for a sequence of `needed` tokens: the next multiple of BUCKET, at most the context."""
    return min(-(-needed // BUCKET) * BUCKET, max(max_seq_len, needed))


def weights_key(model) -> tuple:
    return tuple((p.data_ptr(), p._version, p.dtype, str(p.device)) for p in model.parameters())


# ------------------------------------------------------------------------------ compiled once per machine
def cache_dir() -> Path:
    """Where compiled step packages live: $XOMNI_CACHE_DIR, else ~/.cache/xomni/compile."""
    env = os.environ.get("XOMNI_CACHE_DIR")
    return Path(env) if env else Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "xomni" / "compile"


def _fingerprint(model) -> str:
    """A hash of the weights' values (cached while they do not change): a package freezes the weights in."""
    wkey = weights_key(model)
    fp = model.__dict__.get("_xomni_fingerprint")
    if fp is None or fp[0] != wkey:
        h = hashlib.sha256()
        for name, t in model.state_dict().items():
            h.update(name.encode())
            h.update(t.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
        fp = model.__dict__["_xomni_fingerprint"] = (wkey, h.hexdigest())
    return fp[1]


def package_path(model, sampling: SamplingConfig, rows: int, cache_len: int) -> Path:
    """The AOTInductor package of the one-token step for these weights, sampling settings, rows and cache length,
    on this torch version and device."""
    key = json.dumps([_fingerprint(model), torch.__version__, str(next(model.parameters()).device),
                      dataclasses.astuple(sampling), rows, cache_len])
    return cache_dir() / f"step-{hashlib.sha256(key.encode()).hexdigest()[:24]}.pt2"


def has_package(model, sampling: SamplingConfig, rows: int, cache_len: int) -> bool:
    """True when `xomni compile` built this step on this machine (it is loaded now, for the call that follows).
    XOMNI_AUTO_COMPILE=0 makes it False (the test suite sets it, so that tests choose their sampling path)."""
    if os.environ.get("XOMNI_AUTO_COMPILE", "1") == "0" or not available(model):
        return False
    return packaged_step(model, sampling, rows, cache_len) is not None


class _StepModule(torch.nn.Module):
    """The step as a module, for torch.export: the AR model's parameters become the graph's (frozen) constants."""

    def __init__(self, model, step):
        super().__init__()
        self.model, self.step = model, step

    def forward(self, codes_R, pos_R, slot, u_B, base_valid_RS, cos_PD, sin_PD, caches):
        return self.step(codes_R, pos_R, slot, u_B, base_valid_RS, cos_PD, sin_PD, caches)


def build_package(model, sampling: SamplingConfig, example_args: tuple, options: dict | None = None) -> Path:
    """Export the one-token step at the shapes of `example_args` (the sampler's StaticCacheBackend.step_inputs: rows
    and cache length from its R x S slot validity) and compile it ahead of time
    with AOTInductor into package_path(...), written atomically. Loading it later takes a fraction of a second,
    where torch.compile rebuilds the graph in every process (inductor's FX graph cache cannot hold the frozen
    weights that `freezing` packs for oneDNN). `options`: extra inductor settings (scripts/profile_step.py turns on
    per-kernel profiling, in its own XOMNI_CACHE_DIR: the package lands where the plain one would)."""
    rows, cache_len = example_args[4].shape
    path = package_path(model, sampling, rows, cache_len)
    path.parent.mkdir(parents=True, exist_ok=True)
    device = str(next(model.parameters()).device)
    opts = {**(_CPU_OPTIONS if device == "cpu" else {"freezing": True}), **(options or {})}
    with torch.no_grad():
        ep = torch.export.export(_StepModule(model, _step_fn(model, sampling, sampling.cfg_on)), example_args)
    tmp = path.with_name(f"{path.stem}.tmp{os.getpid()}.pt2")  # AOTInductor wants the .pt2 ending
    torch._inductor.aoti_compile_and_package(ep, package_path=str(tmp), inductor_configs=dict(opts))
    os.replace(tmp, path)
    return path


def packaged_step(model, sampling: SamplingConfig, rows: int, cache_len: int):
    """The loaded package of this step (once per process), or None when there is none."""
    path = package_path(model, sampling, rows, cache_len)
    store = model.__dict__.setdefault("_xomni_packages", {})
    if path not in store:
        if not path.is_file():
            return None
        store[path] = torch._inductor.aoti_load_package(str(path))
    return store[path]


def _step_fn(model, sampling: SamplingConfig, cfg_on: bool):
    from transformers.models.qwen2.modeling_qwen2 import apply_rotary_pos_emb
    bb = model.backbone
    cfg = bb.config
    H, KV = cfg.num_attention_heads, cfg.num_key_value_heads
    hd = getattr(cfg, "head_dim", None) or cfg.hidden_size // H
    g = H // KV
    layers = list(bb.layers)

    def step(codes_R, pos_R, slot, u_B, base_valid_RS, cos_PD, sin_PD, caches):
        """Feed image codes `codes_R` (no vocabulary offset) into cache slot `slot` (0-d tensor); draw the next.

        RoPE comes from tables (`fastdecode.rope_tables`): computed in the graph, inductor fused cos/sin into the
        attention reduction and recomputed them for every key slot."""
        R = codes_R.shape[0]
        x = model.image_embed(codes_R)[:, None]                                       # R x 1 x D
        cos, sin = cos_PD[pos_R][:, None], sin_PD[pos_R][:, None]                    # R x 1 x hd
        S = base_valid_RS.shape[1]
        live = base_valid_RS & (torch.arange(S, device=codes_R.device) <= slot)[None]
        mask = live[:, None, None, :]                                                # R x 1 x 1 x S
        for li, layer in enumerate(layers):
            q, k, v = project_qkv(layer, x, H, KV, hd, cos, sin, apply_rotary_pos_emb)
            K, V = caches[2 * li], caches[2 * li + 1]
            K.index_copy_(2, slot.view(1), k)
            V.index_copy_(2, slot.view(1), v)
            qg = q.reshape(R, KV, g, hd)
            att = (qg @ K.transpose(-1, -2)) * hd ** -0.5                            # R x KV x g x S
            att = att.masked_fill(~mask, float("-inf")).softmax(-1)
            x = finish_layer(layer, x, (att @ V).reshape(R, 1, H * hd))
        logits = model.image_logits(bb.norm(x)[:, 0])
        B = R // 2 if cfg_on else R
        lp = process_logits(logits[:B], logits[B:] if cfg_on else None, sampling)
        tok = draw_from(lp, u_B)
        return tok, lp.gather(-1, tok[:, None]).squeeze(-1)

    return step


@dataclasses.dataclass
class _Entry:
    key: tuple
    fn: object


def available(model) -> bool:
    """False once compiling failed on the model's device in this process (the sampler then runs eagerly)."""
    return str(next(model.parameters()).device) not in _failed


def _compiled(model, kind: str, sampling: SamplingConfig, make):
    """The compiled `make()` for this model, kind and sampling settings: built on first use, rebuilt when the
    weights change."""
    device = str(next(model.parameters()).device)
    skey = (kind, dataclasses.astuple(sampling))
    store = model.__dict__.setdefault("_xomni_compiled", {})
    wkey = weights_key(model)
    entry = store.get(skey)
    if entry is None or entry.key != wkey:
        opts = _CPU_OPTIONS if device == "cpu" else {"freezing": True}
        fn = make()
        # dynamo keys its compiled graphs (and its recompile limit) on the code object, and its guards check the
        # parameters' identity, not their values: with the same code object, a graph with the old frozen weights
        # would be reused after an update. A fresh copy of the code object gives this build its own cache.
        fn = types.FunctionType(fn.__code__.replace(), fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__)
        graph = torch.compile(fn, dynamic=False, fullgraph=True)

        def run(*args):  # options= did not apply `freezing` (see above); the patch is cheap next to a step
            with torch._inductor.config.patch(opts):
                return graph(*args)
        entry = store[skey] = _Entry(wkey, run)
    return entry.fn


def compiled_step(model, sampling: SamplingConfig):
    """The compiled one-token step for this model and these sampling settings, or None when compiling failed on
    this device before."""
    if not available(model):
        return None
    return _compiled(model, "step", sampling, lambda: _step_fn(model, sampling, sampling.cfg_on))


def compiled_window(model, sampling: SamplingConfig):
    """The compiled verify pass of the speculative sampler (xomni.ar.fastdecode.window_step), or None."""
    if not available(model):
        return None
    return _compiled(model, "window", sampling, lambda: window_step(model, sampling))


def mark_failed(model, err: Exception) -> None:
    device = str(next(model.parameters()).device)
    _failed.add(device)
    model.__dict__.pop("_xomni_compiled", None)
    log(f"warning: the compiled sampler failed on {device} ({type(err).__name__}: {str(err).splitlines()[0][:200]}); "
        f"sampling eagerly instead")
