"""Token datasets for the AR model: images are encoded once by the frozen image tokenizer and cached.

A token cache directory holds `codes.safetensors` (codes_NHW, int16/int32) and `meta.jsonl` (caption, text, key per
row) plus `info.json` (grid, codebook size, source dataset, tokenizer). Written atomically.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from xomni.checkpoint import read_json, read_safetensors
from xomni.data.io import open_dataset
from xomni.errors import XomniError
from xomni.utils import log


def tokenizer_fingerprint(image_tokenizer) -> str:
    """sha256 of the tokenizer's weights (names and bytes): two tokenizers with one vocabulary size make other codes."""
    import hashlib
    h = hashlib.sha256()
    for k, v in sorted(image_tokenizer.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def encode_to_cache(image_tokenizer, data_path: str, split: str, out_dir: str | Path, batch_size: int = 64,
                    limit: int | None = None) -> Path:
    """Encode a dataset split with the frozen tokenizer into a token cache directory."""
    import numpy as np
    from tqdm import tqdm

    ds = open_dataset(data_path, split=split)
    n = len(ds) if limit is None else min(limit, len(ds))
    out_dir = Path(out_dir)
    H, W = image_tokenizer.config.image_size
    codes, metas, skipped = [], [], 0
    batch_imgs, batch_meta = [], []

    def flush():
        if not batch_imgs:
            return
        x = torch.stack(batch_imgs)
        with torch.no_grad():
            codes.append(image_tokenizer.encode(x).to(torch.int32).cpu())  # x follows the tokenizer to its device
        metas.extend(batch_meta)
        batch_imgs.clear()
        batch_meta.clear()

    for i in tqdm(range(n), desc=f"encode {split}", file=sys.stderr, mininterval=2.0):
        s = ds[i]
        if s.image is None:
            skipped += 1
            continue
        img = s.image.convert("RGB")
        if img.size != (W, H):
            img = img.resize((W, H), resample=3)
        arr = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1).float() / 127.5 - 1
        batch_imgs.append(arr)
        batch_meta.append({"key": s.key, "caption": s.meta.get("caption", ""), "text": s.meta.get("text", "")})
        if len(batch_imgs) == batch_size:
            flush()
    flush()
    if not codes:
        raise XomniError(f"no readable images in {data_path} (split {split})")
    tmp = out_dir.parent / f".{out_dir.name}.tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    save_file({"codes": torch.cat(codes)}, str(tmp / "codes.safetensors"))
    (tmp / "meta.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metas))
    (tmp / "info.json").write_text(json.dumps({"source": str(data_path), "split": split, "n": len(metas),
                                               "skipped": skipped, "vocab_size": image_tokenizer.vocab_size,
                                               "grid": list(image_tokenizer.grid),
                                               "tokenizer_sha256": tokenizer_fingerprint(image_tokenizer)}, indent=1))
    if out_dir.exists():
        import shutil
        shutil.rmtree(out_dir)
    tmp.rename(out_dir)
    log(f"[ar] encoded {len(metas)} images ({skipped} unreadable, skipped) -> {out_dir}")
    return out_dir


class TokenDataset:
    """Map-style: item i -> {"codes": LongTensor[h, w], "caption": str, "text": str}."""

    def __init__(self, cache_dir: str | Path):
        d = Path(cache_dir)
        if not (d / "codes.safetensors").is_file():
            raise XomniError(f"{d} is not a token cache (no codes.safetensors); run `xomni train ar` with --data "
                             f"pointing at a dataset to build it")
        self.codes = read_safetensors(d / "codes.safetensors")["codes"].long()
        self.meta = [json.loads(line) for line in (d / "meta.jsonl").read_text().splitlines() if line.strip()]
        self.info = read_json(d / "info.json")
        if len(self.meta) != len(self.codes):
            raise XomniError(f"token cache {d} is inconsistent: {len(self.codes)} code grids, {len(self.meta)} rows")

    def __len__(self) -> int:
        return len(self.meta)

    def __getitem__(self, i: int) -> dict:
        return {"codes": self.codes[i], "caption": self.meta[i]["caption"], "text": self.meta[i]["text"]}
