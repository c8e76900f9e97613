"""Speculative Jacobi decoding (SJD): several image tokens per forward pass, drawn from the same distribution as
one token at a time (Teng et al., "Accelerating Auto-regressive Text-to-Image Generation with Training-free
Speculative Jacobi Decoding", ICLR 2025; also used by Lumina-mGPT 2.0).

Each row keeps a window of `W` draft tokens after its committed ones. One forward pass feeds the last committed
token and the drafts, and gives the model's distribution p at W + 1 positions, each conditioned on the drafts before
it. Drafts are then verified left to right as in speculative sampling: draft x, drawn from a proposal q, is kept with
probability min(1, p(x) / q(x)); the first one refused is replaced by a draw from max(0, p - q) (renormalised), and
if all W are kept the last position's p gives one more token. Whatever q was, every committed token is distributed
as p given the committed tokens before it, i.e. exactly as the plain sampler draws (the chi-square test in
tests/test_ar_sjd.py checks this), and every pass commits at least one token.

The drafts after the first refusal are not wasted (the Jacobi part): their distributions p from this pass become
their proposals for the next one. Each old draft is carried over to its new proposal by the same keep-or-redraw step
(a maximal coupling, as in MC-SJD, So et al. 2025), so it stays the same token whenever the new p allows. New
positions at the end of the window start from the last position's p. None of this touches the target distribution:
a proposal may be any distribution fixed before its draft is drawn.

Random numbers: every pass draws the same number of uniforms per row, from the row's own stream, and a row's tokens
depend only on its own uniforms, so per-request streams (xomni serve) give each request the tokens it would get
alone. The tokens differ from the plain sampler's for the same seed (the uniforms are used differently); greedy
decoding (top_k=1) gives the same tokens.
"""
from __future__ import annotations

from typing import Callable

import torch

from xomni.ar.distribution import draw_weights, uniforms

# window(tokens_BT, n_B) -> log-probs B x T x V: feed image tokens n-1 .. n+T-2 of each row (the last committed one
# and T-1 drafts), return the sampling distribution of image tokens n .. n+T-1.
WindowFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def speculate(x_BT: torch.Tensor, q_BTV: torch.Tensor, p_BTV: torch.Tensor, u_keep: torch.Tensor,
              u_draw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One speculative-sampling step at every position: keep draft x (drawn from q) with probability
    min(1, p(x) / q(x)), else draw from max(0, p - q). The result is distributed as p; where q is all zeros (no
    draft) it is a plain draw from p. Returns the tokens and whether each draft was kept."""
    px = p_BTV.gather(-1, x_BT[..., None]).squeeze(-1)
    qx = q_BTV.gather(-1, x_BT[..., None]).squeeze(-1)
    kept = (u_keep * qx < px) & (qx > 0)
    y = torch.where(kept, x_BT, draw_weights((p_BTV - q_BTV).clamp(min=0), u_draw))
    return y, kept


@torch.no_grad()
def sample_window(window: WindowFn, logp0_BV: torch.Tensor, n_tokens: int, width: int, generator,
                  on_commit: Callable[[torch.Tensor, int], None] | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Draw `n_tokens` image tokens per row with SJD, `width` drafts per pass; `logp0_BV` is the distribution of
    token 0 (from the prefill). Returns codes (B x n), their log-probs under the sampling distribution, and the
    number of window passes. `on_commit(codes, n_min)` sees the codes after every pass (the first n_min of every
    row are final)."""
    B, V = logp0_BV.shape
    W, N, dev = width, n_tokens, logp0_BV.device
    codes = torch.zeros(B, N + W + 1, dtype=torch.long, device=dev)   # room for a pass that runs past the end
    logps = torch.zeros(B, N + W + 1, dtype=torch.float32, device=dev)
    u = uniforms(B, generator, dev, per_row=W + 1)
    p0 = logp0_BV.exp()
    codes[:, 0] = draw_weights(p0, u[:, 0])
    logps[:, 0] = logp0_BV.gather(-1, codes[:, :1]).squeeze(-1)
    q = p0[:, None].expand(B, W, V)                    # proposals of the drafts
    x = draw_weights(q, u[:, 1:])                      # drafts of tokens n .. n+W-1
    n = torch.ones(B, dtype=torch.long, device=dev)    # committed tokens per row
    steps = torch.arange(W + 1, device=dev)
    passes = 0
    if on_commit is not None:
        on_commit(codes, 1)
    while bool((n < N).any()):
        last = codes.gather(1, (n - 1)[:, None])
        logp = window(torch.cat([last, x], dim=1), n)               # B x (W+1) x V
        p = logp.exp()
        passes += 1
        u = uniforms(B, generator, dev, per_row=3 * (W + 1)).view(B, 3, W + 1)
        no_draft = torch.zeros(B, 1, dtype=torch.long, device=dev)
        y, kept = speculate(torch.cat([x, no_draft], 1), torch.cat([q, p.new_zeros(B, 1, V)], 1), p,
                            u[:, 0], u[:, 1])
        c = (~kept).int().argmax(1) + 1                             # drafts before the first refusal, plus one
        c = torch.minimum(c, N - n)                                 # rows already done commit nothing
        idx = n[:, None] + steps[None]
        new = steps[None] < c[:, None]
        codes.scatter_(1, idx, torch.where(new, y, codes.gather(1, idx)))
        logps.scatter_(1, idx, torch.where(new, logp.gather(-1, y[..., None]).squeeze(-1), logps.gather(1, idx)))
        n = n + c
        # the next window: old positions c .. c+W-1; positions past the old window start from the last p
        src = c[:, None] + steps[None, :W]
        fresh = src > W
        src = src.clamp(max=W)
        p_last = p[:, W:]                                           # B x 1 x V
        x = torch.where(fresh, draw_weights(p_last.expand(B, W, V), u[:, 2, :W]), y.gather(1, src))
        q = torch.where(fresh[..., None], p_last, p.gather(1, src[..., None].expand(B, W, V)))
        if on_commit is not None:
            on_commit(codes, int(n.min()))
    return codes[:, :N], logps[:, :N], passes
