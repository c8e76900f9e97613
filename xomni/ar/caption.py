"""Image -> text with the same weights: greedy or beam-search decoding of the text head after the image prefix.

Beam search ranks hypotheses by their summed log-probability (no length penalty: the most probable caption, which
for a fixed caption template is what exact match rewards). A finished hypothesis keeps its score and stays in the
beam; the search stops when every beam of every image has finished or `max_new_tokens` is reached.
"""
from __future__ import annotations

import torch


def _prefix(model, codes_BHW: torch.Tensor) -> torch.Tensor:
    lay = model.layout
    B, h, w = codes_BHW.shape
    head = [lay.bos_id] + lay.image_header(h, w)
    img = codes_BHW.reshape(B, -1) + lay.image_offset
    ids = torch.cat([torch.tensor(head).expand(B, -1), img, torch.full((B, 1), lay.eom)], dim=1)
    return ids.to(next(model.parameters()).device)


def _text_logprobs(model, h_BD: torch.Tensor) -> torch.Tensor:
    logits = model.text_logits(h_BD)
    logits[:, model.layout.n_text:] = float("-inf")  # captions are plain text
    return torch.log_softmax(logits, dim=-1)


@torch.no_grad()
def caption_codes(model, codes_BHW: torch.Tensor, max_new_tokens: int = 160, num_beams: int = 1) -> list[list[int]]:
    """Captions (text token ids, without eos) for a batch of token grids: greedy, or beam search if num_beams > 1."""
    return caption_codes_scored(model, codes_BHW, max_new_tokens, num_beams)[0]


@torch.no_grad()
def caption_codes_scored(model, codes_BHW: torch.Tensor, max_new_tokens: int = 160,
                         num_beams: int = 1) -> tuple[list[list[int]], list[float]]:
    """As `caption_codes`, plus each caption's summed log-probability (eos included when it was emitted)."""
    if num_beams < 1:
        raise ValueError(f"num_beams must be >= 1, got {num_beams}")
    model.eval()
    lay = model.layout
    ids = _prefix(model, codes_BHW)
    B, L = ids.shape
    nb = num_beams
    max_new_tokens = min(max_new_tokens, model.cfg.max_seq_len - L)
    h_BLD, cache = model.hidden(ids, use_cache=True)
    device = ids.device
    if nb > 1:  # one row per beam; only beam 0 is live at the start so that the beams do not duplicate
        cache.batch_repeat_interleave(nb)
        h_BLD = h_BLD.repeat_interleave(nb, dim=0)
    R = B * nb
    score_R = torch.zeros(R, device=device)
    if nb > 1:
        score_R.view(B, nb)[:, 1:] = float("-inf")
    done_R = torch.zeros(R, dtype=torch.bool, device=device)
    seqs: list[list[int]] = [[] for _ in range(R)]
    pos = torch.full((R, 1), L, dtype=torch.long, device=device)
    h_RD = h_BLD[:, -1]
    for _ in range(max_new_tokens):
        logp_RV = _text_logprobs(model, h_RD)
        V = logp_RV.shape[1]
        # a finished row may only "continue" with eos at no cost, so its score is carried over unchanged
        logp_RV[done_R] = float("-inf")
        logp_RV[done_R, lay.eos_id] = 0.0
        cand_RV = score_R[:, None] + logp_RV
        if nb == 1:
            tok_R = cand_RV.argmax(-1)
            src_R = torch.arange(R, device=device)
            score_R = cand_RV.gather(1, tok_R[:, None]).squeeze(1)
        else:
            top_val, top_idx = cand_RV.view(B, nb * V).topk(nb, dim=-1)
            src_R = (top_idx // V + torch.arange(B, device=device)[:, None] * nb).reshape(R)
            tok_R = (top_idx % V).reshape(R)
            score_R = top_val.reshape(R)
        was_done = done_R[src_R]
        seqs = [list(seqs[s]) for s in src_R.tolist()]
        for r, (t, d) in enumerate(zip(tok_R.tolist(), was_done.tolist())):
            if not d and t != lay.eos_id:
                seqs[r].append(t)
        done_R = was_done | (tok_R == lay.eos_id)
        if done_R.all():
            break
        if nb > 1:
            cache.reorder_cache(src_R)
        h, cache = model.hidden(tok_R[:, None], position_ids=pos, cache=cache, use_cache=True)
        h_RD = h[:, -1]
        pos = pos + 1
    best = [b * nb + int(score_R.view(B, nb)[b].argmax()) for b in range(B)]
    return [seqs[r] for r in best], [float(score_R[r]) for r in best]
