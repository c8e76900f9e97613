"""How readable are image codes? Train the AR model's reading (image -> caption only) on a token cache, with the
codes arranged one way, and report caption loss and exact captions on held-out caches.

Arrangements of a cache with L codes per patch (side by side in its grid, as the tokenizers write them):
  coarse  every patch's level-0 code, then level 1, ... (the AR model's order for L > 1, xomni.ar.vocab)
  patch   each patch's L codes one after the other, patches in raster order
  level0  level-0 codes only (one code per patch: what `model.read_levels=1` gives the AR model's captioning)
Every arm starts from the same AR model (--init: backbone and text rows; image rows fresh), so arms differ only in
what the codes say and where they sit. `--embed-init codebook --tokenizer T` starts the image embeddings from the
tokenizer's code vectors instead of noise (`codebook_embeddings`), so that codes of alike glyph pieces start alike.

    python scripts/reading_probe.py --train CACHE --val NAME=CACHE [--val ...] --levels 3 --arrange coarse \
        --init xomni/pretrained/mini/ar --out DIR --steps 600 [--json FILE]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import torch

from xomni.ar.caption import caption_codes
from xomni.ar.data import TokenDataset
from xomni.ar.model import IMAGE_ROWS, ARConfig, UnifiedAR
from xomni.ar.train import ARTrainConfig, build_loss_fn
from xomni.ar.trainer import val_loss
from xomni.checkpoint import read_json
from xomni.data.text_tokenizer import load_text_tokenizer
from xomni.eval.captioning import caption_scores
from xomni.train import TrainConfig, run_training, seed_everything


class Arranged:
    """A token cache seen through one arrangement: item i -> {"codes": grid, "caption", "text"}."""

    def __init__(self, ds: TokenDataset, levels: int, arrange: str):
        codes = ds.codes
        if arrange == "level0":
            codes = codes[..., 0::levels].contiguous()
        self.codes, self.meta = codes, ds.meta

    def __len__(self) -> int:
        return len(self.meta)

    def __getitem__(self, i: int) -> dict:
        return {"codes": self.codes[i], "caption": self.meta[i]["caption"], "text": self.meta[i]["text"]}


@torch.no_grad()
def codebook_embeddings(code_table_VC: torch.Tensor, levels: int, d: int, std: float = 0.02,
                        seed: int = 0) -> torch.Tensor:
    """Image embedding rows from the tokenizer's code vectors (levels x K rows): each level's vectors, centred, go
    through their own random projection to width d (levels land in different subspaces) and are scaled to `std`."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for t in code_table_VC.chunk(levels):
        e = (t - t.mean(0)) @ torch.randn(t.shape[1], d, generator=g)
        out.append(e * (std / e.std()))
    return torch.cat(out)


@torch.no_grad()
def caption_rows(model: UnifiedAR, text_tok, ds: Arranged, batch: int = 32) -> list[dict]:
    rows = []
    for s in range(0, len(ds), batch):
        items = [ds[i] for i in range(s, min(len(ds), s + batch))]
        outs = caption_codes(model, torch.stack([it["codes"] for it in items]))
        rows += [{"caption": it["caption"], "predicted": text_tok.decode(ids)} for it, ids in zip(items, outs)]
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--train", required=True, help="token cache to train the reading on")
    ap.add_argument("--val", action="append", default=[], help="NAME=CACHE, held-out caches to score (repeatable)")
    ap.add_argument("--levels", type=int, default=1, help="codes per patch in the caches")
    ap.add_argument("--arrange", choices=("coarse", "patch", "level0"), default="coarse")
    ap.add_argument("--init", required=True, help="AR model directory to start from (image rows stay fresh)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--embed-init", choices=("noise", "codebook"), default="noise")
    ap.add_argument("--tokenizer", default=None, help="image tokenizer of the caches (for --embed-init codebook)")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    if not a.val:
        ap.error("give at least one --val NAME=CACHE")
    if a.embed_init == "codebook" and not a.tokenizer:
        ap.error("--embed-init codebook needs --tokenizer (the caches' image tokenizer)")
    t0 = time.time()
    train_ds = TokenDataset(a.train)
    vals = {}
    for spec in a.val:
        name, _, path = spec.partition("=")
        vals[name] = Arranged(TokenDataset(path), a.levels, a.arrange)
    train = Arranged(train_ds, a.levels, a.arrange)
    vocab = int(train_ds.info["vocab_size"])
    model_levels = a.levels if a.arrange == "coarse" else 1
    if a.arrange == "level0":
        vocab //= a.levels
    text_tok = load_text_tokenizer("byte")
    base = read_json(Path(a.init) / "config.json")["ar"]
    h, w = train.codes.shape[1:]
    mcfg = dataclasses.replace(ARConfig(**base), image_vocab=vocab, levels=model_levels,
                               max_seq_len=max(192, h * w + 96))
    tcfg = TrainConfig(out_dir=a.out, steps=a.steps, batch_size=a.batch_size, lr=a.lr, warmup_steps=50,
                       weight_decay=0.05, ckpt_every=max(50, a.steps // 4), eval_every=max(50, a.steps // 6),
                       progress=False)
    cfg = ARTrainConfig(train=tcfg, model=mcfg, t2i_ratio=0.0, uncond_prob=0.0)
    seed_everything(0)
    model = UnifiedAR(mcfg)
    if a.embed_init == "codebook":
        from xomni.tokenizer import ImageTokenizer
        table = ImageTokenizer.from_pretrained(a.tokenizer).code_table()
        if a.arrange == "level0":
            table = table[:vocab]
        with torch.no_grad():
            n_levels = 1 if a.arrange == "level0" else a.levels
            model.image_embed.weight.copy_(codebook_embeddings(table, n_levels, mcfg.hidden_size))
    first_val = next(iter(vals.values()))

    def eval_fn(m, step):
        return val_loss(m, text_tok, cfg, first_val, len(first_val), parts=("text",))

    res = run_training(tcfg, model, train, build_loss_fn(model, text_tok, cfg), collate=list,
                       config_dict={"ar": dataclasses.asdict(mcfg), "grid": [h, w]}, init=a.init,
                       init_keep_fresh=IMAGE_ROWS, resume="auto", eval_fn=eval_fn, move_batch=False)
    out = {"train": a.train, "arrange": a.arrange, "levels": a.levels, "image_tokens": h * w, "steps": res.step,
           "batch_size": a.batch_size, "lr": a.lr, "init": a.init,
           "embed_init": a.embed_init, "wall_s": round(time.time() - t0, 1)}
    model.eval()
    for name, ds in vals.items():
        rows = caption_rows(model, text_tok, ds)
        sc = caption_scores([r["predicted"] for r in rows], [r["caption"] for r in rows])
        loss = val_loss(model, text_tok, cfg, ds, len(ds), parts=("text",))["val_loss_text"]
        out[name] = {"n": len(ds), "caption_exact": round(sc["caption_exact"], 4), "ci95": sc["ci95"],
                     "loss_text": round(loss, 4)}
        Path(a.out, f"captions_{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    log = [json.loads(x) for x in Path(a.out, "log.jsonl").read_text().splitlines() if '"eval"' in x]
    out["val_curve"] = [[r["step"], round(r["eval"]["val_loss_text"], 4)] for r in log]
    text = json.dumps(out, indent=1)
    print(text)
    if a.json:
        Path(a.json).write_text(text + "\n")
    print(f"[probe] {a.arrange}: " + ", ".join(f"{k} {v['caption_exact']}" for k, v in out.items()
                                              if isinstance(v, dict)), file=sys.stderr)


if __name__ == "__main__":
    main()
