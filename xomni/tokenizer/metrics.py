"""Tokenizer metrics: codebook usage / perplexity of argmin assignments, caption accuracy decoded from codes, and
(with a reconstruction head) Tesseract on the head's deterministic reconstructions vs on the originals: how much of
the text the codes carry in pixels, an upper-bound proxy for what a decoder can draw from them."""
from __future__ import annotations

import math

import torch

from xomni.data.caption import parse_caption
from xomni.metrics import textmetrics as tm
from xomni.metrics.ocr import ocr_images, resolve_region
from xomni.tokenizer.images import tensor_to_pil
from xomni.utils import log


def codebook_stats(codes: torch.Tensor, vocab_size: int) -> dict:
    """Usage = fraction of the `vocab_size` ids assigned at least once; perplexity = exp(entropy) of the empirical
    id distribution (vocab_size for a uniform one, 1 for a single id)."""
    counts = torch.bincount(codes.reshape(-1).long(), minlength=vocab_size).double()
    n = counts.sum().item()
    p = counts[counts > 0] / max(n, 1)
    ent = float(-(p * p.log()).sum()) if n else 0.0
    ppl = math.exp(ent)
    return {"vocab_size": vocab_size, "n_tokens": int(n), "codes_used": int((counts > 0).sum()),
            "usage": float((counts > 0).sum()) / vocab_size, "perplexity": ppl,
            "perplexity_ratio": ppl / vocab_size}


def caption_scores(preds: list[str], metas: list[dict]) -> dict:
    """Exact match of the whole caption, of the quoted text string, and per-attribute accuracy (parsed)."""
    n = len(preds)
    cap = sum(p == m.get("caption") for p, m in zip(preds, metas))
    txt, attrs = 0, {"background": 0, "noun": 0, "text_color": 0, "font_family": 0, "font_style": 0, "shapes": 0}
    for p, m in zip(preds, metas):
        a = _safe_parse(parse_caption, p)
        t = m.get("text")
        if t is not None and a.get("text") == t:
            txt += 1
        for k in attrs:
            want = m.get(k)
            if k == "shapes":
                want = [(s["kind"], s["color"], s["position"]) for s in m.get("shapes") or []]
                got = [(s.get("kind"), s.get("color"), s.get("position")) for s in a.get("shapes") or []]
                attrs[k] += int(got == want)
            else:
                attrs[k] += int(a.get(k) == want)
    return {"n": n, "caption_exact": cap / max(n, 1), "text_exact": txt / max(n, 1),
            "attribute_accuracy": {k: v / max(n, 1) for k, v in attrs.items()}}


def _safe_parse(fn, s: str) -> dict:
    try:
        return fn(s) or {}
    except Exception:  # a garbled caption is simply wrong, never a crash
        return {}


@torch.no_grad()
def recon_ocr(tokenizer, imageset, codes_BHW: torch.Tensor, n: int) -> dict | None:
    """Tesseract on the reconstruction head's pixels for the first `n` images and on the originals, scored as
    `xomni eval text` scores (same crop: the preset in the metadata; exact match, word recall, CER, 95 % CIs).
    None without a head or without target texts."""
    from PIL import Image
    metas = imageset.metas[:n]
    if tokenizer.recon is None or not metas or any(m.get("text") is None for m in metas):
        return None
    recs = [im for i in range(0, len(metas), 64) for im in tensor_to_pil(tokenizer.reconstruct(codes_BHW[i:i + 64]))]
    origs = [Image.fromarray(a, "RGB") for a in imageset.images[:len(metas)]]
    region = resolve_region(metas)
    targets = [m["text"] for m in metas]
    out = {"n": len(metas)}
    for name, imgs in (("recon", recs), ("original", origs)):
        agg = tm.aggregate(tm.score_rows(ocr_images(imgs, region=region), targets))
        out[name] = {k: agg[k] for k in ("exact_match", "word_recall", "cer", "ci95")}
    return out


@torch.no_grad()
def evaluate(tokenizer, imageset, batch_size: int = 64, max_caption: int = 0, max_ocr: int = 0) -> dict:
    """Codes (argmin) for every image of `imageset`; usage/perplexity over all of them; greedy captions for the
    first `max_caption` (0 = all) and their scores; Tesseract on the head's reconstructions of the first `max_ocr`
    (0 = skip)."""
    was = tokenizer.training
    tokenizer.eval()
    codes, preds = [], []
    n = len(imageset)
    n_cap = n if max_caption <= 0 else min(n, max_caption)
    for i in range(0, n, batch_size):
        idx = list(range(i, min(n, i + batch_size)))
        c = tokenizer.encode(imageset.tensor(idx))
        codes.append(c)
        if i < n_cap:
            preds.extend(tokenizer.captions(c[:max(0, min(len(idx), n_cap - i))]))
    tokenizer.train(was)
    codes_t = torch.cat(codes)
    out = {"n_images": n, **codebook_stats(codes_t, tokenizer.vocab_size)}
    L, K = tokenizer.levels, tokenizer.config.codebook_size
    if L > 1:  # each level's own usage (level l's ids are offset by l*K and sit in every L-th token column)
        out["per_level"] = [codebook_stats(codes_t[..., lv::L] - lv * K, K) for lv in range(L)]
    out.update(caption_scores(preds, imageset.metas[:n_cap]))
    if max_ocr > 0:
        ro = recon_ocr(tokenizer, imageset, codes_t, min(n, max_ocr))
        if ro is not None:
            out["recon_ocr"] = ro
            log(f"[tokenizer eval] Tesseract exact on head reconstructions {ro['recon']['exact_match']:.3f} "
                f"(originals {ro['original']['exact_match']:.3f}, n={ro['n']})")
    out["examples"] = [{"target": m.get("caption"), "decoded": p} for p, m in zip(preds[:3], imageset.metas)]
    log(f"[tokenizer eval] usage {out['usage']:.3f} ppl {out['perplexity']:.0f}/{tokenizer.vocab_size} "
        f"caption_exact {out['caption_exact']:.3f} text_exact {out['text_exact']:.3f}")
    return out
