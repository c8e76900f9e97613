"""`xomni train decoder` and `xomni bench decoder` bodies, on the shared training loop.

The frozen tokenizer encodes every training image once (codes cached in OUT/codes-<split>.safetensors, keyed by the
tokenizer weights and the data), so a training step costs only the decoder.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from xomni.config import to_dict
from xomni.decoder.config import DecoderConfig, DecoderTrainConfig
from xomni.decoder.model import Decoder, config_for_tokenizer
from xomni.metrics import ocr
from xomni.metrics.ocr import ocr_images, resolve_region
from xomni.tokenizer.images import ImageSet, load_split, tensor_to_pil
from xomni.tokenizer.model import ImageTokenizer
from xomni.train import dist_info, run_training, seed_everything
from xomni.utils import log, resolve_device


def _tok_dir(path: str) -> Path:
    p = Path(path)
    return p / "final" if (p / "final" / "config.json").is_file() and not (p / "config.json").is_file() else p


@torch.no_grad()
def encode_set(tok: ImageTokenizer, images: ImageSet, batch_size: int = 128, desc: str = "encode") -> torch.Tensor:
    from tqdm import tqdm
    out = []
    for i in tqdm(range(0, len(images), batch_size), desc=desc, file=__import__("sys").stderr, leave=False,
                  mininterval=2.0):
        x = images.tensor(list(range(i, min(len(images), i + batch_size))))
        out.append(tok.encode(x).cpu())  # inputs follow the tokenizer to its device
    return torch.cat(out)


def cached_codes(tok: ImageTokenizer, tok_dir: Path, images: ImageSet, cache: Path) -> torch.Tensor:
    """Codes of `images`, reused from `cache` when the tokenizer weights and the sample keys are unchanged."""
    from safetensors.torch import load_file, save_file
    h = hashlib.sha256()
    h.update((tok_dir / "model.safetensors").read_bytes())
    h.update(json.dumps([m.get("key") for m in images.metas]).encode())
    digest = h.hexdigest()[:16]
    if cache.is_file():
        try:
            d = load_file(str(cache))
            if "codes" in d and bytes(d["digest"].tolist()).decode() == digest:
                log(f"[decoder] reusing cached codes {cache}")
                return d["codes"].long()
        except Exception:  # a stale or broken cache is recomputed
            pass
    codes = encode_set(tok, images)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_name(f".{cache.name}.tmp-{os.getpid()}")
    save_file({"codes": codes.to(torch.int32), "digest": torch.tensor(list(digest.encode()), dtype=torch.uint8)},
              str(tmp))
    tmp.replace(cache)
    return codes


class CodedImages:
    """Map-style training set: {"codes": h x w long, "image": 3 x H x W uint8}."""

    def __init__(self, images: ImageSet, codes: torch.Tensor):
        self.images, self.codes = images, codes

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return {"codes": self.codes[i], "image": torch.from_numpy(self.images.images[i]).permute(2, 0, 1)}


def decoder_loss(model, batch, gen):
    return model(batch["codes"].long(), batch["image"].float().div(127.5).sub(1.0), gen)


def ocr_check(originals: list, recons: list, metas: list[dict]) -> dict:
    """Tesseract exact match on reconstructions vs originals, read exactly as `xomni eval text` reads them (the
    preset's OCR region, the same preprocessing)."""
    region = resolve_region(metas)
    targets = [m.get("text", "") for m in metas]
    p_orig = ocr_images(originals, region=region)
    p_rec = ocr_images(recons, region=region)
    em_o = float(np.mean([ocr.exact_match(p, t) for p, t in zip(p_orig, targets)]))
    em_r = float(np.mean([ocr.exact_match(p, t) for p, t in zip(p_rec, targets)]))
    return {"n": len(targets), "ocr_exact_originals": em_o, "ocr_exact_reconstructions": em_r,
            "ratio": em_r / em_o if em_o else None,
            "examples": [{"text": t, "ocr_recon": r} for t, r in list(zip(targets, p_rec))[:5]]}


def reconstruct_set(tok: ImageTokenizer, dec: Decoder, images: ImageSet, steps: int | None = None, seed: int = 0,
                    batch_size: int = 16) -> list:
    out = []
    g = torch.Generator().manual_seed(seed)
    for i in range(0, len(images), batch_size):
        idx = list(range(i, min(len(images), i + batch_size)))
        out.extend(tensor_to_pil(dec.decode(tok.encode(images.tensor(idx)), steps=steps, generator=g)))
    return out


def train_decoder(cfg: DecoderTrainConfig, resume: str | None = None, init: str | None = None,
                  init_except_codes: bool = False) -> dict | None:
    """Train, then OCR-check reconstructions of val images; returns the JSON result (None on ranks > 0).
    `init_except_codes`: --init is a decoder of another tokenizer, so its code embeddings and recon hint are not
    copied (they come from this tokenizer, as for a decoder from scratch); its UNet and the rest are."""
    t0 = time.time()
    tok_dir = _tok_dir(cfg.tokenizer)
    tok = ImageTokenizer.from_pretrained(tok_dir)
    mcfg = config_for_tokenizer(cfg.model, tok).validate()
    train_set = load_split(cfg.data, cfg.train_split, mcfg.image_size, cfg.n_train, desc="load train")
    log(f"[decoder] {len(train_set)} training images ({train_set.skipped} skipped); grid {mcfg.grid}, "
        f"K={mcfg.codebook_size}; encoding with the tokenizer ...")
    tok.to(resolve_device(cfg.train.device))  # encode where the model trains (on a GPU: seconds, not minutes)
    codes = cached_codes(tok, tok_dir, train_set, Path(cfg.train.out_dir) / f"codes-{cfg.train_split}.safetensors")
    tok.cpu()
    seed_everything(cfg.train.seed)
    model = Decoder(mcfg)
    model.init_from_tokenizer(tok)
    config_dict = {**model.config_dict(), "tokenizer": str(tok_dir), "trainer": to_dict(cfg)}
    fresh = ()
    if init_except_codes:
        fresh = ("cond.embed.weight",) + tuple(k for k in model.state_dict() if k.startswith("cond.hint."))
    res = run_training(cfg.train, model, CodedImages(train_set, codes), decoder_loss, config_dict=config_dict,
                       resume=resume, init=init, init_keep_fresh=fresh)
    if dist_info()[0] != 0:
        return None
    out = {"out_dir": str(res.out_dir / "final"), "steps": res.step, "wall_time_s": round(time.time() - t0, 1),
           "params": sum(p.numel() for p in model.parameters()), "train_images": len(train_set),
           "skipped_images": train_set.skipped, "sampling_steps": mcfg.steps, "last_train_metrics": res.last_metrics}
    if cfg.n_val > 0:
        val = load_split(cfg.data, cfg.val_split, mcfg.image_size, cfg.n_val, desc="load val")
        model.eval()
        recons = reconstruct_set(tok, model, val)
        try:
            out["val_ocr"] = ocr_check(tensor_to_pil(val.tensor(list(range(len(val))))), recons, val.metas)
        except Exception as e:  # OCR missing: report, the model is still saved
            out["val_ocr"] = {"error": str(e)}
    return out


def bench_decoder(model_dir: str | None, batch_size: int = 16, n_batches: int = 2, steps: int | None = None,
                  threads: int = 0) -> dict:
    """Decode speed (images/s) of random token grids at the default (or given) steps; warm-up excluded."""
    if threads > 0:
        torch.set_num_threads(threads)
    dec = Decoder.from_pretrained(model_dir) if model_dir else Decoder(DecoderConfig()).eval()
    h, w = dec.grid
    g = torch.Generator().manual_seed(0)
    codes = torch.randint(0, dec.vocab_size, (batch_size, h, w), generator=g)
    dec.decode(codes[:2], steps=1)
    t = time.perf_counter()
    for _ in range(n_batches):
        dec.decode(codes, steps=steps, generator=g)
    dt = time.perf_counter() - t
    return {"model": model_dir or "untrained default config", "batch_size": batch_size, "n_batches": n_batches,
            "steps": int(steps or dec.config.steps), "threads": torch.get_num_threads(),
            "image_size": list(dec.config.image_size), "decode_images_per_s": batch_size * n_batches / dt,
            "params": sum(p.numel() for p in dec.parameters())}
