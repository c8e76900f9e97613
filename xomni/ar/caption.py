"""Image -> text with the same weights: greedy or beam-search decoding of the text head after the image prefix.

Beam search ranks hypotheses by their summed log-probability (no length penalty: the most probable caption, which
for a fixed caption template is what exact match rewards). The beams hold unfinished hypotheses only; a hypothesis
that emits eos moves to a per-image pool of finished captions. The search stops for an image once its best finished
caption scores at least as high as every live beam (log-probabilities only fall), or at `max_new_tokens`, and
returns the best of the finished and the (truncated) live hypotheses.
"""
from __future__ import annotations

import torch


def _prefix(model, codes_BHW: torch.Tensor) -> torch.Tensor:
    ids = torch.tensor([model.layout.i2t_prefix(c) for c in codes_BHW])  # the training format's caption prefix
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
    ids = _prefix(model, codes_BHW)
    max_new_tokens = min(max_new_tokens, model.cfg.max_seq_len - ids.shape[1])
    if num_beams == 1:
        return _greedy(model, ids, max_new_tokens)
    return _beam_search(model, ids, max_new_tokens, num_beams)


def _greedy(model, ids: torch.Tensor, max_new_tokens: int) -> tuple[list[list[int]], list[float]]:
    eos = model.layout.eos_id
    B, L = ids.shape
    h_BLD, cache = model.hidden(ids, use_cache=True)
    out: list[list[int]] = [[] for _ in range(B)]
    score = [0.0] * B
    done = [False] * B
    pos = torch.full((B, 1), L, dtype=torch.long, device=ids.device)
    for step in range(max_new_tokens):
        logp_BV = _text_logprobs(model, h_BLD[:, -1])
        tok = logp_BV.argmax(-1)
        for i, t in enumerate(tok.tolist()):
            if not done[i]:
                score[i] += float(logp_BV[i, t])
                if t == eos:
                    done[i] = True
                else:
                    out[i].append(t)
        if all(done) or step == max_new_tokens - 1:
            break
        h_BLD, cache = model.hidden(tok[:, None], position_ids=pos, cache=cache, use_cache=True)
        pos = pos + 1
    return out, score


def _beam_search(model, ids: torch.Tensor, max_new_tokens: int, nb: int) -> tuple[list[list[int]], list[float]]:
    eos = model.layout.eos_id
    B, L = ids.shape
    device = ids.device
    h_BLD, cache = model.hidden(ids, use_cache=True)
    cache.batch_repeat_interleave(nb)  # one row per beam; only beam 0 is live at the start (no duplicate beams)
    h_RD = h_BLD[:, -1].repeat_interleave(nb, dim=0)
    R = B * nb
    score_BN = torch.zeros(B, nb, device=device)
    score_BN[:, 1:] = float("-inf")
    seqs: list[list[int]] = [[] for _ in range(R)]
    fin_score = [float("-inf")] * B
    fin_seq: list[list[int]] = [[] for _ in range(B)]
    pos = torch.full((R, 1), L, dtype=torch.long, device=device)
    for step in range(max_new_tokens):
        cand_BNV = score_BN[..., None] + _text_logprobs(model, h_RD).view(B, nb, -1)
        V = cand_BNV.shape[-1]
        # hypotheses that end here go to the finished pool
        eos_BN = cand_BNV[..., eos]
        best_eos, arg_eos = eos_BN.max(-1)
        for b in range(B):
            if float(best_eos[b]) > fin_score[b]:
                fin_score[b], fin_seq[b] = float(best_eos[b]), list(seqs[b * nb + int(arg_eos[b])])
        cand_BNV[..., eos] = float("-inf")
        top_val, top_idx = cand_BNV.view(B, nb * V).topk(nb, dim=-1)
        src_R = (top_idx // V + torch.arange(B, device=device)[:, None] * nb).reshape(R)
        tok_R = (top_idx % V).reshape(R)
        score_BN = top_val
        seqs = [seqs[s] + [t] for s, t in zip(src_R.tolist(), tok_R.tolist())]
        # an image is settled once no live beam can beat its best finished caption
        settled = all(float(score_BN[b].max()) <= fin_score[b] for b in range(B))
        if settled or step == max_new_tokens - 1:
            break
        cache.reorder_cache(src_R)
        h, cache = model.hidden(tok_R[:, None], position_ids=pos, cache=cache, use_cache=True)
        h_RD = h[:, -1]
        pos = pos + 1
    out, scores = [], []
    for b in range(B):
        k = int(score_BN[b].argmax())
        live = float(score_BN[b, k])
        if fin_score[b] >= live:
            out.append(fin_seq[b]); scores.append(fin_score[b])
        else:  # truncated at max_new_tokens
            out.append(seqs[b * nb + k]); scores.append(live)
    return out, scores
