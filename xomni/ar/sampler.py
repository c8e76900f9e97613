"""Batched image-token sampler with a KV cache, CFG, temperature / top-k / top-p / min-p, seeds and streaming.

`process_logits` is THE definition of the sampling distribution. The sampler draws from it and returns the
log-probability of each drawn token under it; `sequence_logprobs` recomputes the same quantity with one full forward
pass (with gradients, for RL). Using one function for both is how the RL gradient stays on the policy that sampled.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import torch

from xomni.config import field


@dataclasses.dataclass
class SamplingConfig:
    temperature: float = field(1.0, help="Softmax temperature (> 0).")
    top_k: int = field(0, help="Keep the k most likely tokens (0 = off).")
    top_p: float = field(1.0, help="Nucleus sampling: keep the smallest set with this much probability (1 = off).")
    min_p: float = field(0.03, help="Drop tokens with probability < min_p x the top token's (X-Omni default 0.03).")
    cfg_scale: float = field(1.0, help="Classifier-free guidance scale on logits (1 = off, the X-Omni default).")

    def validate(self) -> None:
        from xomni.errors import XomniError
        import math
        if not (self.temperature > 0 and math.isfinite(self.temperature)):
            raise XomniError(f"temperature must be a finite number > 0, got {self.temperature}")
        if not (self.cfg_scale >= 1 and math.isfinite(self.cfg_scale)):
            raise XomniError(f"cfg_scale must be a finite number >= 1 (1 = off), got {self.cfg_scale}")
        if not 0 < self.top_p <= 1:
            raise XomniError(f"top_p must be in (0, 1], got {self.top_p}")
        if not 0 <= self.min_p < 1:
            raise XomniError(f"min_p must be in [0, 1), got {self.min_p}")
        if self.top_k < 0:
            raise XomniError(f"top_k must be >= 0, got {self.top_k}")


def process_logits(cond_NV: torch.Tensor, uncond_NV: torch.Tensor | None, s: SamplingConfig) -> torch.Tensor:
    """Log-probabilities of the sampling distribution: CFG -> temperature -> top-k -> top-p -> min-p.

    Filtered tokens get -inf. Works with gradients (the RL loss calls it on a full forward pass).
    """
    logits = cond_NV.float()
    if uncond_NV is not None and s.cfg_scale != 1.0:
        logits = uncond_NV.float() + s.cfg_scale * (logits - uncond_NV.float())
    logits = logits / s.temperature
    neg_inf = torch.finfo(logits.dtype).min
    with torch.no_grad():  # the kept set is a function of the logits but not differentiated through
        keep = torch.ones_like(logits, dtype=torch.bool)
        if s.top_k and s.top_k < logits.shape[-1]:
            kth = torch.topk(logits, s.top_k, dim=-1).values[..., -1:]
            keep &= logits >= kth
        lp = torch.log_softmax(logits.masked_fill(~keep, neg_inf), dim=-1)
        if s.top_p < 1.0:
            sorted_lp, order = torch.sort(lp, dim=-1, descending=True)
            cum = sorted_lp.exp().cumsum(-1)
            drop_sorted = (cum - sorted_lp.exp()) >= s.top_p  # keep tokens until the mass reaches top_p
            keep &= ~torch.zeros_like(keep).scatter(-1, order, drop_sorted)
            lp = torch.log_softmax(logits.masked_fill(~keep, neg_inf), dim=-1)
        if s.min_p > 0:
            top = lp.max(dim=-1, keepdim=True).values
            keep &= lp >= top + torch.log(torch.tensor(s.min_p))
    out = torch.log_softmax(logits.masked_fill(~keep, neg_inf), dim=-1)
    return out.masked_fill(~keep, float("-inf"))


def draw(logprobs_NV: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Inverse-CDF sampling: one uniform per row, cumsum, searchsorted (torch.multinomial draws one exponential per
    vocabulary entry and dominated decoding time on CPU). Same distribution."""
    return draw_from(logprobs_NV, uniforms(logprobs_NV.shape[0], generator, logprobs_NV.device))


def uniforms(n: int, generator, device) -> torch.Tensor:
    """n uniforms in [0, 1) on `device`, drawn on the generator's own device (CPU generators also drive CUDA).
    `generator` may also be per-request streams, a list of (generator, rows) in row order, so that each request of
    a merged batch (xomni serve) draws what it would draw alone."""
    if isinstance(generator, (list, tuple)):
        u = torch.cat([torch.rand(k, generator=g, device=g.device).to(device) for g, k in generator])
        if len(u) != n:
            from xomni.errors import XomniError
            raise XomniError(f"random streams cover {len(u)} rows, the batch has {n}")
        return u
    dev = generator.device if generator is not None else device
    return torch.rand(n, generator=generator, device=dev).to(device)


def draw_from(logprobs_NV: torch.Tensor, u_N: torch.Tensor) -> torch.Tensor:
    """The token at quantile `u_N` (uniforms in [0, 1)) of each row's distribution; no data-dependent branch, so the
    compiled step (xomni.ar.compiled) draws with this same function."""
    probs = logprobs_NV.exp()
    cdf = probs.cumsum(-1)
    idx = torch.searchsorted(cdf, u_N[:, None] * cdf[:, -1:], right=True).clamp_(max=probs.shape[-1] - 1)
    # guard against landing on a zero-probability token through float ties at the end of the cdf
    bad = probs.gather(-1, idx) <= 0
    return torch.where(bad, probs.argmax(-1, keepdim=True), idx).squeeze(-1)


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


@dataclasses.dataclass
class SampleOutput:
    codes_BHW: torch.Tensor
    logprobs_BN: torch.Tensor  # log-prob of each drawn token under the sampling distribution


@torch.no_grad()
def sample_images(model, prompts: list[list[int]], grid: tuple[int, int], sampling: SamplingConfig,
                  generator: torch.Generator | None = None,
                  callback: Callable[[int, torch.Tensor], None] | None = None, stream_every: int = 0,
                  hf_cache: bool = False, compile: bool = False) -> SampleOutput:
    """Sample one h x w token grid per prompt (prompt = list of text token ids, without <bos>).

    Decoding uses the static-KV fast path for Qwen2/Llama backbones; `hf_cache=True` uses transformers' own
    cache instead (the reference path; both are checked against a full forward in the tests). `compile=True` runs
    each token step as one compiled graph (xomni.ar.compiled: faster once compiled, ~30 s to compile per batch size;
    the same seed draws the same uniforms, so it gives the same tokens up to float rounding)."""
    sampling.validate()
    model.eval()
    B, (h, w) = len(prompts), grid
    N = h * w
    cfg_on = sampling.cfg_scale != 1.0
    ids, mask = _left_pad(build_rows(model, prompts, grid, sampling.cfg_scale), model.layout.pad_id)
    R, L0 = ids.shape
    if L0 + N > model.cfg.max_seq_len:
        from xomni.errors import XomniError
        raise XomniError(f"prompt ({L0 - 5} tokens) + image ({N} tokens) exceed the model's context of "
                         f"{model.cfg.max_seq_len} tokens")
    device = next(model.parameters()).device
    ids, mask = ids.to(device), mask.to(device)
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    from xomni.ar import fastdecode
    fast = fastdecode.supports(model) and not hf_cache
    step_c = None
    if fast and compile:
        from xomni.ar import compiled
        step_c = compiled.compiled_step(model, sampling)
    cache = None
    if fast:  # static KV cache over the backbone's own modules (see fastdecode.py)
        S = L0 + N if step_c is None else compiled.cache_length(L0 + N, model.cfg.max_seq_len)
        dec = fastdecode.StaticKVDecoder(model, R, S, mask)
        h_RLD = dec.step(ids, pos)
    else:
        h_RLD, cache = model.hidden(ids, attention_mask=mask, position_ids=pos, cache=cache, use_cache=True)
    codes = torch.empty(B, N, dtype=torch.long, device=device)
    logps = torch.empty(B, N, dtype=torch.float32, device=device)
    pos0 = pos[:, -1] + 1  # position of image token 0 in each row
    off = model.layout.image_offset
    if step_c is not None:
        base_valid = dec.valid.clone()
        base_valid[:, L0:] = True  # image slots are live once written; the step masks the ones after its own
        caches = [c for kv in zip(dec.k, dec.v) for c in kv]
        cos_PD, sin_PD = compiled.rope_tables(model, model.cfg.max_seq_len)
    for t in range(N):
        u_B = uniforms(B, generator, device)
        if t > 0:  # feed token t-1 (position pos0 + t - 1, cache slot L0 + t - 1), then draw token t
            codes_R = codes[:, t - 1].repeat(2 if cfg_on else 1)
            tok = None
            if step_c is not None:
                try:
                    tok, lp_tok = step_c(codes_R, pos0 + t - 1, torch.tensor(L0 + t - 1, device=device), u_B,
                                         base_valid, cos_PD, sin_PD, caches)
                except Exception as err:  # no C++ compiler, an op inductor cannot lower: go on eagerly
                    compiled.mark_failed(model, err)
                    step_c = None
                    dec.len = L0 + t - 1  # the compiled steps wrote slots L0 .. L0 + t - 2
                    dec.valid[:, L0:dec.len] = True
            if tok is None:
                if fast:
                    h_RLD = dec.step((codes_R + off)[:, None], (pos0 + t - 1)[:, None])
                else:
                    mask = torch.cat([mask, mask.new_ones(R, 1)], dim=1)
                    h_RLD, cache = model.hidden((codes_R + off)[:, None], attention_mask=mask,
                                                position_ids=(pos0 + t - 1)[:, None], cache=cache, use_cache=True)
        if t == 0 or tok is None:
            logits = model.image_logits(h_RLD[:, -1])
            lp = process_logits(logits[:B], logits[B:] if cfg_on else None, sampling)
            tok = draw_from(lp, u_B)
            lp_tok = lp.gather(-1, tok[:, None]).squeeze(-1)
        codes[:, t] = tok
        logps[:, t] = lp_tok
        if callback is not None and stream_every and ((t + 1) % stream_every == 0 or t + 1 == N):
            callback(t + 1, codes[:, :t + 1].clone())
    return SampleOutput(codes.view(B, h, w), logps)


def sequence_logprobs(model, prompts: list[list[int]], codes_BHW: torch.Tensor, sampling: SamplingConfig
                      ) -> torch.Tensor:
    """Log-probabilities of `codes` under the sampling distribution, from one full forward pass (differentiable)."""
    B, h, w = codes_BHW.shape
    N = h * w
    cfg_on = sampling.cfg_scale != 1.0
    rows = build_rows(model, prompts, (h, w), sampling.cfg_scale)
    img = (codes_BHW.reshape(B, N) + model.layout.image_offset).tolist()
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
    lp = process_logits(cond, uncond, sampling)
    return lp.gather(-1, codes_BHW.reshape(B * N, 1).to(device)).view(B, N)
