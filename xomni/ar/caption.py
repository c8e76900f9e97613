"""Image -> text with the same weights: greedy (or sampled) decoding of the text head after the image prefix."""
from __future__ import annotations

import torch


@torch.no_grad()
def caption_codes(model, codes_BHW: torch.Tensor, max_new_tokens: int = 160) -> list[list[int]]:
    """Greedy captions (text token ids, without eos) for a batch of token grids."""
    model.eval()
    lay = model.layout
    B, h, w = codes_BHW.shape
    head = [lay.bos_id] + lay.image_header(h, w)
    img = codes_BHW.reshape(B, -1) + lay.image_offset
    ids = torch.cat([torch.tensor(head).expand(B, -1), img, torch.full((B, 1), lay.eom)], dim=1)
    device = next(model.parameters()).device
    ids = ids.to(device)
    max_new_tokens = min(max_new_tokens, model.cfg.max_seq_len - ids.shape[1])
    h_BLD, cache = model.hidden(ids, use_cache=True)
    out = [[] for _ in range(B)]
    done = torch.zeros(B, dtype=torch.bool)
    pos = torch.full((B, 1), ids.shape[1], dtype=torch.long, device=device)
    for _ in range(max_new_tokens):
        logits = model.text_logits(h_BLD[:, -1])
        logits[:, lay.n_text:] = float("-inf")  # captions are plain text
        tok = logits.argmax(-1)
        for i in range(B):
            if not done[i]:
                if tok[i].item() == lay.eos_id:
                    done[i] = True
                else:
                    out[i].append(tok[i].item())
        if done.all():
            break
        h_BLD, cache = model.hidden(tok[:, None], position_ids=pos, cache=cache, use_cache=True)
        pos = pos + 1
    return out
