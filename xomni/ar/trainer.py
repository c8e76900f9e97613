"""`xomni train ar`: encode the dataset once with the frozen image tokenizer, then SFT on the shared loop."""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import torch

from xomni.ar.data import TokenDataset, encode_to_cache, tokenizer_fingerprint
from xomni.ar.model import IMAGE_ROWS, UnifiedAR
from xomni.ar.train import ARTrainConfig, build_loss_fn, flops_per_token, make_sequences
from xomni.ar.vocab import generation_length, training_length
from xomni.config import to_dict
from xomni.data.text_tokenizer import load_text_tokenizer
from xomni.errors import XomniError
from xomni.hwbench import matmul_gflops
from xomni.tokenizer import ImageTokenizer
from xomni.train import run_training, seed_everything
from xomni.utils import log, resolve_device


def token_cache(data: str, split: str, image_tokenizer, cache_root: Path, limit: int | None = None) -> TokenDataset:
    """A token cache for `split`: `data` itself when it is one, else built (once) under `cache_root`."""
    p = Path(data)
    if (p / "codes.safetensors").is_file():
        return _check_cache(TokenDataset(p), image_tokenizer, p)
    target = cache_root / f"tokens-{split}"
    if (target / "codes.safetensors").is_file():
        ds = TokenDataset(target)
        if ds.info.get("source") == str(data) and ds.info.get("tokenizer_sha256") == tokenizer_fingerprint(
                image_tokenizer):
            return ds
        log(f"[ar] {target} was made from other data or by another tokenizer: encoding again")
    encode_to_cache(image_tokenizer, data, split, target, limit=limit)
    return TokenDataset(target)


def _check_cache(ds: TokenDataset, image_tokenizer, where: Path) -> TokenDataset:
    """A token cache given as --data must come from this image tokenizer: its codes index the tokenizer's vocabulary
    and its grids have the tokenizer's shape (another tokenizer's cache failed deep inside the model)."""
    k = image_tokenizer.vocab_size
    grid = tuple(ds.codes.shape[1:])
    want = tuple(image_tokenizer.grid)
    if len(ds) and (int(ds.codes.max()) >= k or int(ds.codes.min()) < 0 or grid != want):
        raise XomniError(f"token cache {where} was made by another image tokenizer (grid {grid[0]}x{grid[1]}, codes "
                         f"up to {int(ds.codes.max())}; this tokenizer: grid {want[0]}x{want[1]}, {k} codes): pass "
                         f"the dataset instead, or the tokenizer that made the cache")
    return ds


def build_model(cfg: ARTrainConfig, text_tok, image_tokenizer) -> UnifiedAR:
    m = cfg.model
    m.n_text, m.bos_id, m.eos_id, m.pad_id = text_tok.vocab_size, text_tok.bos_id, text_tok.eos_id, text_tok.pad_id
    m.image_vocab = image_tokenizer.vocab_size
    m.levels = image_tokenizer.levels
    return UnifiedAR(m)


@torch.no_grad()
def val_loss(model: UnifiedAR, text_tok, cfg: ARTrainConfig, val: TokenDataset, n: int,
             parts: tuple[str, ...] = ("image", "text")) -> dict:
    """Image-token loss (text->image) and caption loss (image->text) on the first `n` validation grids; `parts`
    picks which of the two to compute."""
    model.eval()
    out = {}
    for name, ratio in (("val_loss_image", 1.0), ("val_loss_text", 0.0)):
        if name.removeprefix("val_loss_") not in parts:
            continue
        c = dataclasses.replace(cfg, t2i_ratio=ratio, uncond_prob=0.0)
        tot, cnt = 0.0, 0
        for s in range(0, min(n, len(val)), 64):
            batch = [val[i] for i in range(s, min(n, len(val), s + 64))]
            ids, tg, mask = make_sequences(batch, model, text_tok, c, torch.Generator().manual_seed(0))
            loss, _ = model(ids, tg, attention_mask=mask)
            k = int((tg != -100).sum())
            tot, cnt = tot + loss.item() * k, cnt + k
        out[name] = tot / max(1, cnt)
    model.train()
    return out


def train_ar_main(cfg: ARTrainConfig, data: str, tokenizer_dir: str, resume: str | None = None,
                  init: str | None = None, val_n: int = 256, init_except_image: bool = False) -> dict:
    """`xomni train ar`. `init_except_image`: --init comes from an AR model of another image tokenizer, so its
    image-code embeddings and output rows (which index that tokenizer's codes) are left at a fresh init."""
    t0 = time.time()
    if cfg.train.num_threads:
        torch.set_num_threads(cfg.train.num_threads)
    cfg.validate()
    out = Path(cfg.train.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    text_tok = load_text_tokenizer(cfg.text_tokenizer)
    image_tok = ImageTokenizer.from_pretrained(tokenizer_dir)
    image_tok.to(resolve_device(cfg.train.device))  # a cache is encoded where the model trains
    train = token_cache(data, "train", image_tok, out)
    val = None
    if not (Path(data) / "codes.safetensors").is_file():
        try:
            val = token_cache(data, "val", image_tok, out, limit=val_n)
        except XomniError as e:
            log(f"[ar] no validation split ({e}); val loss disabled")
    image_tok.cpu()
    seed_everything(cfg.train.seed)
    model = build_model(cfg, text_tok, image_tok)
    h, w = image_tok.grid
    longest = max(len(text_tok.encode(train[i]["caption"], add_special_tokens=False)) for i in range(min(len(train), 2000)))
    need = training_length(longest, h, w)
    if need > cfg.model.max_seq_len:
        raise XomniError(f"model.max_seq_len={cfg.model.max_seq_len} is too short: captions need up to {need} "
                         f"tokens with a {h}x{w} grid; raise it with --set model.max_seq_len={need}")
    seq = generation_length(longest, h, w)
    dev = resolve_device(cfg.train.device)
    dt = torch.bfloat16 if cfg.train.precision == "bf16" and dev.type == "cuda" else torch.float32
    peak = matmul_gflops(4096 if dev.type == "cuda" else 1024, dtype=dt, device=dev) * 1e9
    log(f"[ar] {model.num_params() / 1e6:.2f}M non-embedding params, {len(train)} training grids of {h}x{w}, "
        f"{str(dt).replace('torch.', '')} matmul peak on {dev} {peak / 1e9:.0f} GFLOP/s")
    eval_fn = (lambda m, step: val_loss(m, text_tok, cfg, val, val_n)) if val is not None else None
    config_dict = {"ar": to_dict(cfg.model), "grid": [h, w], "text_tokenizer": cfg.text_tokenizer}
    res = run_training(cfg.train, model, train, build_loss_fn(model, text_tok, cfg), collate=list,
                       config_dict=config_dict, init=init, resume=resume, eval_fn=eval_fn,
                       init_keep_fresh=IMAGE_ROWS if init_except_image else (),
                       flops_per_token=flops_per_token(model, seq), peak_flops=peak, move_batch=False)
    result = {"out_dir": str(out), "steps": res.step, "bad_steps": res.bad_steps, "train": res.last_metrics,
              "params_non_embedding": model.num_params(), "wall_s": round(time.time() - t0, 1)}
    if val is not None:
        result["val"] = val_loss(model, text_tok, cfg, val, val_n)
    return result
