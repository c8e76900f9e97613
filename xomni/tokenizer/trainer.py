"""`xomni train tokenizer` / `xomni eval tokenizer` / `xomni bench tokenizer` bodies, on the shared training loop.

Objective (semantic, as in X-Omni): the quantised code sequence must let a small byte-level caption decoder
reproduce the caption (attributes and the exact text) under teacher forcing; plus the VQ commitment loss and an
optional auxiliary pixel reconstruction (`model.recon_weight`).
"""
from __future__ import annotations

import time

import torch
from safetensors import safe_open

from xomni.checkpoint import load_model_weights, weights_file
from xomni.config import to_dict
from xomni.errors import XomniError
from xomni.tokenizer.config import OCR_N, TokenizerConfig, TokenizerTrainConfig
from xomni.tokenizer.images import ImageSet, load_split
from xomni.tokenizer.metrics import evaluate
from xomni.tokenizer.model import ImageTokenizer
from xomni.tokenizer.textdec import encode_caption
from xomni.train import dist_info, run_training, seed_everything
from xomni.utils import log


class CaptionedImages:
    """Map-style training set: {"image": 3 x H x W uint8, "caption": byte ids}."""

    def __init__(self, images: ImageSet, max_bytes: int):
        self.images = images
        caps = [m.get("caption") or "" for m in images.metas]
        long = sum(len(c.encode()) > max_bytes for c in caps)
        if long:
            log(f"warning: {long} caption(s) longer than {max_bytes} bytes are truncated")
        self.captions = torch.stack([encode_caption(c, max_bytes) for c in caps])

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return {"image": torch.from_numpy(self.images.images[i]).permute(2, 0, 1), "caption": self.captions[i]}


def tokenizer_loss(model, batch, gen):
    images = batch["image"].float().div(127.5).sub(1.0)
    return model(images, batch["caption"])


def train_tokenizer(cfg: TokenizerTrainConfig, resume: str | None = None, init: str | None = None) -> dict | None:
    """Train, then evaluate on the val split; returns the JSON result (None on ranks > 0 under torchrun)."""
    t0 = time.time()
    mcfg = cfg.model.validate()
    if mcfg.freeze_level0 and not init:  # a frozen random level 0 would train nothing worth keeping
        raise XomniError("model.freeze_level0 keeps level 0 as loaded: give --init (the one-level tokenizer to "
                         "build on)")
    train_set = load_split(cfg.data, cfg.train_split, mcfg.image_size, cfg.n_train, desc="load train")
    val_set = load_split(cfg.data, cfg.val_split, mcfg.image_size, cfg.n_val, desc="load val")
    log(f"[tokenizer] {len(train_set)} training images ({train_set.skipped} skipped), {len(val_set)} val images; "
        f"grid {mcfg.grid[0]}x{mcfg.grid[1]}, K={mcfg.codebook_size}, levels={mcfg.levels} (token grid "
        f"{mcfg.token_grid[0]}x{mcfg.token_grid[1]}), encoder={mcfg.encoder}")
    seed_everything(cfg.train.seed)
    model = ImageTokenizer(mcfg)
    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    config_dict = {**model.config_dict(), "trainer": to_dict(cfg)}

    def eval_fn(m, step):
        return _short(evaluate(m, ImageSet(val_set.images[:256], val_set.metas[:256]), max_caption=128))

    if init:
        init_tokenizer(model, init)
    res = run_training(cfg.train, model, CaptionedImages(train_set, mcfg.max_caption_bytes), tokenizer_loss,
                       config_dict=config_dict, resume=resume, eval_fn=eval_fn)
    t_train = time.time() - t0
    if dist_info()[0] != 0:  # under torchrun only rank 0 (whose weights were saved) evaluates and reports
        return None
    metrics = evaluate(model, val_set, max_ocr=cfg.n_ocr)
    out = {"out_dir": str(res.out_dir / "final"), "steps": res.step, "trainable_params": n_params,
           "grid": list(mcfg.grid), "codebook_size": mcfg.codebook_size, "levels": mcfg.levels,
           "token_grid": list(mcfg.token_grid), "encoder": mcfg.encoder,
           "train_images": len(train_set), "skipped_images": train_set.skipped, "wall_time_s": round(t_train, 1),
           "last_train_metrics": res.last_metrics, "val": metrics}
    return out


def init_tokenizer(model: ImageTokenizer, init: str) -> None:
    """Load `init`'s weights; residual levels and a residual branch that it lacks start fresh (growing a one-level
    tokenizer), and a fresh branch encoder starts as a copy of the loaded encoder."""
    with safe_open(str(weights_file(init)), "pt") as f:  # names only: the weights are read once, below
        have = set(f.keys())
    fresh = tuple(k for k in model.state_dict() if k not in have and k.startswith(("rvq.", "res_")))
    load_model_weights(model, init, keep_fresh=fresh)
    if any(k.startswith("res_encoder.") for k in fresh):
        model.res_encoder.load_state_dict(model.encoder.state_dict())
    log(f"[tokenizer] initialised weights from {init}" + (f" ({len(fresh)} new tensors start fresh)" if fresh else ""))


def _short(m: dict) -> dict:
    return {k: m[k] for k in ("usage", "perplexity", "caption_exact", "text_exact")}


def eval_tokenizer(model_dir: str, data: str, split: str = "val", n: int = 0, max_caption: int = 0,
                   max_ocr: int | None = None) -> dict:
    """`xomni eval tokenizer`: the metrics of `evaluate`; max_ocr None = OCR_N images read by Tesseract."""
    tok = ImageTokenizer.from_pretrained(model_dir)
    val = load_split(data, split, tok.config.image_size, n, desc=f"load {split}")
    out = {"model": str(model_dir), "data": str(data), "split": split, "skipped_images": val.skipped,
           "grid": list(tok.grid)}
    out.update(evaluate(tok, val, max_caption=max_caption, max_ocr=OCR_N if max_ocr is None else max_ocr))
    return out


def bench_tokenizer(model_dir: str | None, batch_size: int = 16, n_batches: int = 8, threads: int = 0) -> dict:
    """Encode speed (images/s) on random images at the tokenizer's size (warm-up batch excluded)."""
    if threads > 0:
        torch.set_num_threads(threads)
    tok = ImageTokenizer.from_pretrained(model_dir) if model_dir else ImageTokenizer(TokenizerConfig()).eval()
    h, w = tok.config.image_size
    x = torch.rand(batch_size, 3, h, w) * 2 - 1
    tok.encode(x)
    t = time.perf_counter()
    for _ in range(n_batches):
        tok.encode(x)
    dt = time.perf_counter() - t
    return {"model": model_dir or "untrained default config", "batch_size": batch_size, "n_batches": n_batches,
            "threads": torch.get_num_threads(), "image_size": [h, w], "grid": list(tok.grid), "levels": tok.levels,
            "encode_images_per_s": batch_size * n_batches / dt,
            "params": sum(p.numel() for p in tok.parameters()) - sum(
                p.numel() for p in tok.caption_decoder.parameters())}
