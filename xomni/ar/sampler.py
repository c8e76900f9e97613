"""Batched image-token sampler: prefill the prompt, then one token per forward pass (or, with speculative Jacobi
decoding, a window of them), with CFG, temperature / top-k / top-p / min-p, seeds and streaming.

The backend that runs the transformer is chosen once, before the token loop (`choose_backend`):
  StaticCache  a static KV cache over the backbone's own modules (xomni.ar.fastdecode); the default
  Compiled     the same cache, each token step one compiled graph (xomni.ar.compiled; `compile=True`)
  HFCache      transformers' own cache: the reference path (`hf_cache=True`) and backbones fastdecode cannot read
Each has `prefill` (prompt rows -> logits of image token 0) and `decode_one_token` (feed token t-1 of every row, draw
token t); the static ones also have `decode_window` for SJD (xomni.ar.sjd, `sjd_window=W`).

The sampling distribution itself (`SamplingConfig`, `process_logits`, the inverse-CDF draw) is xomni.ar.distribution,
re-exported here.
"""
from __future__ import annotations

import abc
import dataclasses
import time
from typing import Callable

import torch

from xomni.ar import compiled, fastdecode, sjd
from xomni.ar.distribution import SamplingConfig, draw, draw_from, process_logits, uniforms  # noqa: F401 (re-exported)
from xomni.ar.vocab import generation_length
from xomni.errors import XomniError


def _left_pad(rows: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    L = max(len(r) for r in rows)
    ids = torch.full((len(rows), L), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), L), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, L - len(r):] = torch.tensor(r, dtype=torch.long)
        mask[i, L - len(r):] = 1
    return ids, mask


def build_rows(model, prompts: list[list[int]], grid: tuple[int, int], cfg_scale: float) -> list[list[int]]:
    """Conditional rows (and unconditional rows = empty prompt, when CFG is on): <bos> prompt <SOM> h w <IMG>."""
    lay = model.layout
    head = lay.image_header(*grid)
    rows = [[lay.bos_id] + list(p) + head for p in prompts]
    if cfg_scale != 1.0:
        rows += [[lay.bos_id] + head for _ in prompts]
    return rows


def prompt_batch(model, prompts: list[list[int]], grid: tuple[int, int], cfg_scale: float, device=None):
    """The left-padded rows of `prompts` (build_rows) on `device`: ids, attention mask and positions (R x L)."""
    ids, mask = _left_pad(build_rows(model, prompts, grid, cfg_scale), model.layout.pad_id)
    ids, mask = ids.to(device), mask.to(device)
    return ids, mask, (mask.cumsum(-1) - 1).clamp(min=0)


@dataclasses.dataclass
class SampleOutput:
    codes_BHW: torch.Tensor
    logprobs_BN: torch.Tensor  # log-prob of each drawn token under the sampling distribution (token grid order)
    forward_passes: int = 0    # transformer passes over the batch, the prefill included


# ---------------------------------------------------------------------------------------------- decoding backends
class Backend(abc.ABC):
    """What the token loops need from a decoding backend. Rows are the B prompts, then (CFG) their B unconditional
    twins, which are fed the same image tokens."""

    def __init__(self, model, sampling: SamplingConfig, batch: int):
        self.model, self.sampling, self.B = model, sampling, batch
        self.rows = 2 * batch if sampling.cfg_on else batch

    @abc.abstractmethod
    def prefill(self, ids_RL: torch.Tensor, mask_RL: torch.Tensor, pos_RL: torch.Tensor) -> torch.Tensor:
        """Run the prompt rows; return the image logits of image token 0 (R x V)."""

    @abc.abstractmethod
    def forward(self, codes_R: torch.Tensor, t: int) -> torch.Tensor:
        """Feed image token t-1 of each row; return the image logits of token t (R x V)."""

    def logprobs(self, logits_RV: torch.Tensor) -> torch.Tensor:
        """Each prompt's sampling distribution (B x V log-probs) from the logits of its rows."""
        B = self.B
        return process_logits(logits_RV[:B], logits_RV[B:] if self.sampling.cfg_on else None, self.sampling)

    def draw(self, logits_RV: torch.Tensor, u_B: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The token at quantile u of each prompt's sampling distribution, and its log-prob."""
        lp = self.logprobs(logits_RV)
        tok = draw_from(lp, u_B)
        return tok, lp.gather(-1, tok[:, None]).squeeze(-1)

    def rows_of(self, x_B: torch.Tensor) -> torch.Tensor:
        """Per-prompt values -> per-row values."""
        return torch.cat([x_B, x_B]) if self.sampling.cfg_on else x_B

    def decode_one_token(self, prev_B: torch.Tensor, t: int, u_B: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Feed token t-1 (`prev_B`) of every prompt, draw token t: (tokens, their log-probs)."""
        return self.draw(self.forward(self.rows_of(prev_B), t), u_B)


class HFCacheBackend(Backend):
    """transformers' own KV cache (the reference path)."""

    def prefill(self, ids_RL, mask_RL, pos_RL):
        self.mask, self.pos0 = mask_RL, pos_RL[:, -1] + 1  # pos0: position of image token 0 in each row
        h_RLD, self.cache = self.model.hidden(ids_RL, attention_mask=mask_RL, position_ids=pos_RL, cache=None,
                                              use_cache=True)
        return self.model.image_logits(h_RLD[:, -1])

    def forward(self, codes_R, t):
        self.mask = torch.cat([self.mask, self.mask.new_ones(self.rows, 1)], dim=1)
        h_RLD, self.cache = self.model.hidden((codes_R + self.model.layout.image_offset)[:, None],
                                              attention_mask=self.mask, position_ids=(self.pos0 + t - 1)[:, None],
                                              cache=self.cache, use_cache=True)
        return self.model.image_logits(h_RLD[:, -1])


class StaticCacheBackend(Backend):
    """A static KV cache of `length` slots over the backbone's own modules (xomni.ar.fastdecode)."""

    def __init__(self, model, sampling: SamplingConfig, batch: int, mask_RL: torch.Tensor, length: int):
        super().__init__(model, sampling, batch)
        self.dec = fastdecode.StaticKVDecoder(model, self.rows, length, mask_RL)
        self.window_eager = fastdecode.window_step(model, sampling)

    def prefill(self, ids_RL, mask_RL, pos_RL):
        self.pos0, self.L0 = pos_RL[:, -1] + 1, ids_RL.shape[1]
        h_RLD = self.dec.step(ids_RL, pos_RL)
        # for the graph-shaped steps (decode_window, the compiled step): slot validity, caches, RoPE tables
        self.valid_RS = self.dec.valid.clone()
        self.valid_RS[:, self.L0:] = True  # image slots are live once written; causality masks the later ones
        self.caches = [c for kv in zip(self.dec.k, self.dec.v) for c in kv]
        self.cos_PD, self.sin_PD = fastdecode.rope_tables(self.model, max(self.valid_RS.shape[1],
                                                                            self.model.cfg.max_seq_len))
        return self.model.image_logits(h_RLD[:, -1])

    def forward(self, codes_R, t):
        h_RLD = self.dec.step((codes_R + self.model.layout.image_offset)[:, None], (self.pos0 + t - 1)[:, None])
        return self.model.image_logits(h_RLD[:, -1])

    def step_inputs(self, prev_B: torch.Tensor, t: int, u_B: torch.Tensor) -> tuple:
        """The arguments of the compiled one-token step (xomni.ar.compiled._step_fn) for image token t, which writes
        cache slot L0 + t - 1: the same tuple is a package's export example and its every call. Contiguous, because
        a package reads its inputs with the example's strides (a token column of the sampler is a strided view)."""
        return (self.rows_of(prev_B).contiguous(), self.pos0 + t - 1,
                torch.tensor(self.L0 + t - 1, device=prev_B.device), u_B.contiguous(), self.valid_RS, self.cos_PD,
                self.sin_PD, self.caches)

    def window_inputs(self, tokens_BT: torch.Tensor, n_B: torch.Tensor):
        """Rows, positions and cache slots of image tokens n-1 .. n+T-2 of each prompt."""
        start_R = self.rows_of(n_B - 1)[:, None] + torch.arange(tokens_BT.shape[1], device=tokens_BT.device)
        return self.rows_of(tokens_BT), self.pos0[:, None] + start_R, self.L0 + start_R

    def decode_window(self, tokens_BT: torch.Tensor, n_B: torch.Tensor) -> torch.Tensor:
        """Feed image tokens n-1 .. n+T-2 of every prompt (`tokens_BT`), each prompt at its own `n`; return the
        sampling distribution's log-probs of tokens n .. n+T-1 (B x T x V). Slots past a row's committed tokens
        may hold refused drafts: causality hides them, and the next window overwrites them."""
        return self.window_eager(*self.window_inputs(tokens_BT, n_B), self.valid_RS, self.cos_PD, self.sin_PD,
                                 self.caches)


class CompiledBackend(StaticCacheBackend):
    """The static cache with each step one compiled graph (xomni.ar.compiled). A graph that fails to build or run
    (no C++ compiler, an op inductor cannot lower) is reported once and the backend goes on eagerly from the cache
    the graphs wrote: `_run` is the one place that handles it. The one-token step is the package that
    `xomni compile` built for these shapes when there is one (compiled.packaged_step), else torch.compile's."""

    def __init__(self, model, sampling, batch, mask_RL, length, package: bool = True):
        S = compiled.cache_length(length, model.cfg.max_seq_len)
        super().__init__(model, sampling, batch, mask_RL, S)
        self.step = ((package and compiled.packaged_step(model, sampling, self.rows, S))
                     or compiled.compiled_step(model, sampling))
        self.window = compiled.compiled_window(model, sampling)  # torch.compile's graphs build on their first call

    def _run(self, graph, *args):
        """graph(*args), or None when there is no graph or it failed (then the caller runs eagerly)."""
        if graph is None:
            return None
        try:
            return graph(*args)
        except Exception as err:  # noqa: BLE001 - any compile or run failure: go on eagerly
            compiled.mark_failed(self.model, err)
            self.step = self.window = None
            return None

    def decode_one_token(self, prev_B, t, u_B):
        out = self._run(self.step, *self.step_inputs(prev_B, t, u_B))
        if out is None:  # the one-token graphs wrote slots L0 .. L0 + t - 2: the eager cache goes on from there
            self.dec.len = self.L0 + t - 1
            self.dec.valid[:, self.L0:self.dec.len] = True
            return super().decode_one_token(prev_B, t, u_B)
        return out

    def decode_window(self, tokens_BT, n_B):
        out = self._run(self.window, *self.window_inputs(tokens_BT, n_B), self.valid_RS, self.cos_PD, self.sin_PD,
                        self.caches)
        return super().decode_window(tokens_BT, n_B) if out is None else out


def choose_backend(model, sampling: SamplingConfig, batch: int, mask_RL: torch.Tensor, length: int,
                   hf_cache: bool = False, compile: bool | str = False, sjd: bool = False):
    """The decoding backend for this model and request, chosen once: transformers' cache when asked for or when
    the static cache cannot read the backbone; the compiled step when asked for (compile=True) and available, or
    with compile="auto" when `xomni compile` built its package for these shapes on this machine (plain decoding
    only: SJD's verify pass has no package); else the static cache. `length`: the slots a sequence needs."""
    if hf_cache or not fastdecode.supports(model):
        return HFCacheBackend(model, sampling, batch)
    if compile == "auto":
        S = compiled.cache_length(length, model.cfg.max_seq_len)
        compile = not sjd and compiled.has_package(model, sampling, mask_RL.shape[0], S)
    if compile and compiled.available(model):
        return CompiledBackend(model, sampling, batch, mask_RL, length, package=compile != "jit")
    return StaticCacheBackend(model, sampling, batch, mask_RL, length)


# ---------------------------------------------------------------------------------------------- the sampler
class _Stream:
    """callback(t, the first t codes of every row) at each multiple of `every` tokens and at the last token, once
    each, as the tokens become final."""

    def __init__(self, callback, every: int, total: int):
        self.callback, self.every, self.total, self.done = callback, every, total, 0

    def __call__(self, codes_BN: torch.Tensor, final: int) -> None:
        final = min(final, self.total)
        if self.callback is not None and self.every:
            for t in range(self.done + 1, final + 1):
                if t % self.every == 0 or t == self.total:
                    self.callback(t, codes_BN[:, :t].clone())
        self.done = max(self.done, final)


def _decode_tokens(backend, logits_RV: torch.Tensor, N: int, generator, stream: _Stream):
    """The plain loop, one forward pass per token: codes and log-probs (B x N, sequence order), passes."""
    B, device = backend.B, logits_RV.device
    codes = torch.empty(B, N, dtype=torch.long, device=device)
    logps = torch.empty(B, N, dtype=torch.float32, device=device)
    codes[:, 0], logps[:, 0] = backend.draw(logits_RV, uniforms(B, generator, device))
    stream(codes, 1)
    for t in range(1, N):
        codes[:, t], logps[:, t] = backend.decode_one_token(codes[:, t - 1], t, uniforms(B, generator, device))
        stream(codes, t + 1)
    return codes, logps, N - 1


@torch.no_grad()
def sample_images(model, prompts: list[list[int]], grid: tuple[int, int], sampling: SamplingConfig,
                  generator: torch.Generator | None = None,
                  callback: Callable[[int, torch.Tensor], None] | None = None, stream_every: int = 0,
                  hf_cache: bool = False, compile: bool | str = False, sjd_window: int = 0) -> SampleOutput:
    """Sample one h x w token grid per prompt (prompt = list of text token ids, without <bos>).

    Decoding uses the static-KV fast path for Qwen2/Llama backbones; `hf_cache=True` uses transformers' own cache
    instead (the reference path; both are checked against a full forward in the tests). `compile=True` runs each
    token step as one compiled graph (xomni.ar.compiled: faster once compiled, which takes tens of seconds per batch
    size; the same seed draws the same uniforms, so it gives the same tokens up to float rounding);
    `compile="auto"` does so only with the package `xomni compile` built for these shapes (xomni.ar.compiled);
    True uses that package when there is one, else torch.compile; "jit" always torch.compile (for benchmarks).
    `sjd_window=W > 0` drafts W tokens per forward pass with speculative Jacobi decoding (xomni.ar.sjd): the same
    distribution in fewer passes, but other tokens than the plain sampler for the same seed; it needs the static
    cache. `generator`: a torch.Generator, or per-request streams [(generator, rows), ...] in row order.
    `callback(t, codes)` gets the first t codes of every row (sequence order) every `stream_every` tokens."""
    sampling.validate()
    model.eval()
    B, (h, w) = len(prompts), grid
    N = h * w
    need = generation_length(max(len(p) for p in prompts), h, w)
    if need > model.cfg.max_seq_len:
        raise XomniError(f"prompt ({need - generation_length(0, h, w)} tokens) + image ({N} tokens) exceed the "
                         f"model's context of {model.cfg.max_seq_len} tokens")
    device = next(model.parameters()).device
    ids, mask, pos = prompt_batch(model, prompts, grid, sampling.cfg_scale, device)
    backend = choose_backend(model, sampling, B, mask, need + sjd_window, hf_cache=hf_cache, compile=compile,
                             sjd=sjd_window > 0)
    if sjd_window and not isinstance(backend, StaticCacheBackend):
        raise XomniError("speculative Jacobi decoding needs the static KV cache (a Qwen2/Llama backbone, "
                         "hf_cache=False)")

    logits_RV = backend.prefill(ids, mask, pos)
    stream = _Stream(callback, stream_every, N)
    if sjd_window:
        codes, logps, passes = sjd.sample_window(backend.decode_window, backend.logprobs(logits_RV), N, sjd_window,
                                                 generator, stream)
    else:
        codes, logps, passes = _decode_tokens(backend, logits_RV, N, generator, stream)
    lay = model.layout  # sequence order -> token grid order (coarse-to-fine levels sit side by side again)
    return SampleOutput(lay.image_grid(codes, h, w), lay.image_grid(logps, h, w).reshape(B, N), 1 + passes)


def sequence_logprobs(model, prompts: list[list[int]], codes_BHW: torch.Tensor, sampling: SamplingConfig,
                      keep_drawn: bool = False) -> torch.Tensor:
    """Log-probabilities of `codes` under the sampling distribution, from one full forward pass (differentiable).
    `keep_drawn` (for codes the sampler drew, as RL scores them): each code stays in the support (process_logits'
    keep_idx) instead of scoring -inf where this forward's float bits put it just past a filter's cut."""
    B, h, w = codes_BHW.shape
    N = h * w
    cfg_on = sampling.cfg_scale != 1.0
    rows = build_rows(model, prompts, (h, w), sampling.cfg_scale)
    seq_BN = model.layout.image_tokens(codes_BHW)
    img = (seq_BN + model.layout.image_offset).tolist()
    rows = [r + img[i % B][:-1] for i, r in enumerate(rows)]  # the last token is predicted, never fed
    ids, mask = _left_pad(rows, model.layout.pad_id)
    device = next(model.parameters()).device
    ids, mask = ids.to(device), mask.to(device)
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    h_RLD, _ = model.hidden(ids, attention_mask=mask, position_ids=pos)
    logits = model.image_logits(h_RLD[:, -N:])  # positions predicting t_1..t_N
    V = logits.shape[-1]
    cond = logits[:B].reshape(B * N, V)
    uncond = logits[B:].reshape(B * N, V) if cfg_on else None
    drawn = seq_BN.reshape(B * N).to(device)
    lp = process_logits(cond, uncond, sampling, keep_idx=drawn if keep_drawn else None)
    lp_BN = lp.gather(-1, drawn[:, None]).view(B, N)
    return model.layout.image_grid(lp_BN, h, w).reshape(B, N)  # token grid order, as the sampler returns them


def example_step_inputs(model, grid: tuple[int, int], sampling: SamplingConfig, batch: int, prompt_tokens: int
                        ) -> tuple:
    """The one-token step's arguments (StaticCacheBackend.step_inputs) for `batch` prefilled prompts of
    `prompt_tokens` tokens, at the cache length such prompts round to: a package's export example."""
    model.eval()
    device = next(model.parameters()).device
    ids, mask, pos = prompt_batch(model, [[32] * prompt_tokens] * batch, grid, sampling.cfg_scale, device)
    S = compiled.cache_length(generation_length(prompt_tokens, *grid), model.cfg.max_seq_len)
    backend = StaticCacheBackend(model, sampling, batch, mask, S)
    with torch.no_grad():
        backend.prefill(ids, mask, pos)
    first = torch.zeros(batch, dtype=torch.long, device=device)
    return backend.step_inputs(first, 1, torch.rand(batch, device=device))


def build_package_for(model, grid: tuple[int, int], sampling: SamplingConfig, batch: int, prompt_tokens: int):
    """The one-token step's AOTInductor package for `batch` prompts of `prompt_tokens` tokens (its cache length
    serves every prompt length that rounds to the same bucket); returns its path."""
    return compiled.build_package(model, sampling, example_step_inputs(model, grid, sampling, batch, prompt_tokens))


def build_packages(model, grid: tuple[int, int], sampling: SamplingConfig, batch_sizes: list[int],
                   progress=None) -> list[dict]:
    """`xomni compile`: the step's package (build_package_for) for each batch size at every cache length a prompt
    can need, so that `compile="auto"` finds one for any prompt at these batch sizes. One row per package."""
    h, w = grid
    longest = model.cfg.max_seq_len - generation_length(0, h, w)
    if longest < 1:
        raise XomniError(f"the model's context ({model.cfg.max_seq_len}) has no room for a prompt and a {h}x{w} grid")
    lengths: dict[int, int] = {}  # cache length -> the longest prompt that needs it
    for n in range(1, longest + 1):
        lengths[compiled.cache_length(generation_length(n, h, w), model.cfg.max_seq_len)] = n
    rows = []
    for b in batch_sizes:
        for S, n in sorted(lengths.items()):
            t = time.time()
            path = build_package_for(model, grid, sampling, b, n)
            rows.append({"batch": b, "cache_length": S, "seconds": round(time.time() - t, 1),
                         "mb": round(path.stat().st_size / 2 ** 20, 1), "path": str(path)})
            if progress:
                progress(rows[-1])
    return rows
