"""The sampling distribution and the draw from it, shared by every decoding path (sampler, compiled step, SJD).

`process_logits` is THE definition of the sampling distribution. The sampler draws from it and returns the
log-probability of each drawn token under it; `sequence_logprobs` recomputes the same quantity with one full forward
pass (with gradients, for RL). Using one function for both is how the RL gradient stays on the policy that sampled.
"""
from __future__ import annotations

import dataclasses
import math

import torch

from xomni.config import field
from xomni.errors import XomniError


@dataclasses.dataclass
class SamplingConfig:
    temperature: float = field(1.0, help="Softmax temperature (> 0).")
    top_k: int = field(0, help="Keep the k most likely tokens (0 = off).")
    top_p: float = field(1.0, help="Nucleus sampling: keep the smallest set with this much probability (1 = off).")
    min_p: float = field(0.03, help="Drop tokens with probability < min_p x the top token's (X-Omni default 0.03).")
    cfg_scale: float = field(1.0, help="Classifier-free guidance scale on logits (1 = off, the X-Omni default).")

    def validate(self) -> None:
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

    @property
    def cfg_on(self) -> bool:
        """Whether each prompt needs an unconditional row beside it."""
        return self.cfg_scale != 1.0


def process_logits(cond_NV: torch.Tensor, uncond_NV: torch.Tensor | None, s: SamplingConfig,
                   keep_idx: torch.Tensor | None = None) -> torch.Tensor:
    """Log-probabilities of the sampling distribution: CFG -> temperature -> top-k -> top-p -> min-p.

    Filtered tokens get -inf. Works with gradients (the RL loss calls it on a full forward pass) and on any leading
    shape (the speculative sampler scores a window of positions per row at once). `keep_idx` (the logits' shape
    without V): a token per position that stays in the support, for scoring tokens already drawn: a recomputed
    forward differs from the sampler's in the last float bits, which can move a drawn token just past a top-k /
    top-p / min-p cut (its log-prob would be -inf, and an RL step NaN).
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
        if keep_idx is not None:
            keep.scatter_(-1, keep_idx.unsqueeze(-1).to(keep.device), True)
    out = torch.log_softmax(logits.masked_fill(~keep, neg_inf), dim=-1)
    return out.masked_fill(~keep, float("-inf"))


def uniforms(n: int, generator, device, per_row: int = 0) -> torch.Tensor:
    """n uniforms in [0, 1) on `device` (n x per_row when per_row > 0), drawn on the generator's own device (CPU
    generators also drive CUDA). `generator` may also be per-request streams, a list of (generator, rows) in row
    order, so that each request of a merged batch (xomni serve) draws what it would draw alone."""
    k = max(per_row, 1)
    if isinstance(generator, (list, tuple)):
        u = torch.cat([torch.rand(rows * k, generator=g, device=g.device).to(device) for g, rows in generator])
        if len(u) != n * k:
            raise XomniError(f"random streams cover {len(u) // k} rows, the batch has {n}")
    else:
        dev = generator.device if generator is not None else device
        u = torch.rand(n * k, generator=generator, device=dev).to(device)
    return u.view(n, per_row) if per_row else u


def draw(logprobs_NV: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Inverse-CDF sampling: one uniform per row, cumsum, searchsorted (torch.multinomial draws one exponential per
    vocabulary entry and dominated decoding time on CPU). Same distribution."""
    return draw_from(logprobs_NV, uniforms(logprobs_NV.shape[0], generator, logprobs_NV.device))


def draw_from(logprobs_NV: torch.Tensor, u_N: torch.Tensor) -> torch.Tensor:
    """The token at quantile `u_N` (uniforms in [0, 1)) of each row's distribution; no data-dependent branch, so the
    compiled step (xomni.ar.compiled) draws with this same function."""
    return draw_weights(logprobs_NV.exp(), u_N)


def draw_weights(probs_NV: torch.Tensor, u_N: torch.Tensor) -> torch.Tensor:
    """`draw_from` for non-negative weights that need not sum to one (any leading shape: u has the weights' shape
    without the last dimension)."""
    cdf = probs_NV.cumsum(-1)
    idx = torch.searchsorted(cdf, u_N[..., None] * cdf[..., -1:], right=True).clamp_(max=probs_NV.shape[-1] - 1)
    # guard against landing on a zero-probability token through float ties at the end of the cdf
    bad = probs_NV.gather(-1, idx) <= 0
    return torch.where(bad, probs_NV.argmax(-1, keepdim=True), idx).squeeze(-1)
