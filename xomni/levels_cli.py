"""`xomni add-levels`: a residual-code pipeline that starts from a trained one-level pipeline.

The image tokenizer gets residual levels fitted by k-means on its frozen features (level-0 codes unchanged), or
takes a trained multi-level tokenizer built on it (`--tokenizer`: `xomni train tokenizer --init
<pipeline>/image_tokenizer --set model.freeze_level0=true ...`, checked to make the same level-0 codes); the
decoder and the AR model are grown so that they start as the one-level ones (xomni.decoder.model.grow_levels,
xomni.ar.model.grow_levels). Then `xomni train decoder --init OUT/decoder` and `xomni train ar --init OUT/ar`
teach them the new levels.
"""
from __future__ import annotations

import time
from typing import Optional

import typer

from xomni.ar.model import grow_levels as grow_ar
from xomni.cliargs import IntRange, ThreadsOpt, _cb, check_in_dir, check_out_dir
from xomni.decoder.model import grow_levels as grow_decoder
from xomni.errors import XomniError
from xomni.pipeline import Pipeline
from xomni.tokenizer.images import load_split
from xomni.tokenizer.levels import add_levels, check_same_level0, residual_norms
from xomni.tokenizer.model import ImageTokenizer
from xomni.utils import emit_json, log, set_threads


def add_levels_cmd(
    model: str = typer.Option(..., "--model", help="One-level pipeline directory (the bundled model already has "
                              "residual levels).", callback=_cb(check_in_dir, "--model")),
    data: str = typer.Option(..., "--data", help="Dataset whose train split the k-means reads.",
                             callback=_cb(check_in_dir, "--data")),
    out: str = typer.Option(..., "--out", "-o", help="New pipeline directory (must not exist or be empty).",
                            callback=_cb(check_out_dir, "--out")),
    tokenizer: Optional[str] = typer.Option(
        None, "--tokenizer", help="A trained multi-level tokenizer whose level 0 is the pipeline's (trained with "
        "model.freeze_level0): used as it is instead of the k-means fit (--levels, --images, --iters unused).",
        callback=_cb(check_in_dir, "--tokenizer")),
    levels: int = typer.Option(3, "--levels", help="Codes per patch, 2..4.", callback=IntRange("--levels", 2, 4)),
    images: int = typer.Option(8000, "--images", help="Training images the k-means reads (64 vectors each).",
                               callback=IntRange("--images", 100, 10_000_000)),
    iters: int = typer.Option(20, "--iters", help="k-means iterations per level.",
                              callback=IntRange("--iters", 1, 1000)),
    read_levels: int = typer.Option(1, "--read-levels", help="Codes per patch the grown AR reads when it captions: "
                                    "1 (level 0: the captions stay the one-level model's) or 0 (every level; the "
                                    "new levels' rows are untrained).", callback=IntRange("--read-levels", 0, 4)),
    seed: int = typer.Option(0, "--seed", help="k-means seed.", callback=IntRange("--seed", 0, 2 ** 63 - 1)),
    threads: int = ThreadsOpt,
    json_path: Optional[str] = typer.Option(None, "--json", help="Also save the JSON result here."),
):
    """Residual image codes on top of a trained pipeline: prints the residual norms per level as JSON."""
    set_threads(threads)
    t0 = time.time()
    pipe = Pipeline.from_pretrained(model)
    tok = pipe.image_tokenizer
    if tok.levels != 1 or pipe.ar.cfg.levels != 1:
        raise XomniError(f"--model {model} already writes {pipe.ar.cfg.levels} codes per patch; add-levels grows a "
                         f"one-level pipeline")
    h, w = tok.grid
    if tokenizer:
        new_tok = ImageTokenizer.from_pretrained(tokenizer)
        if new_tok.levels < 2:
            raise XomniError(f"--tokenizer {tokenizer} has one level; add-levels needs residual levels")
        check_same_level0(tok, new_tok, f"--tokenizer {tokenizer}")
        levels, fitted = new_tok.levels, {"tokenizer": tokenizer}
    if read_levels > levels:  # before the k-means fit, which takes minutes
        raise XomniError(f"--read-levels {read_levels} is more than the {levels} levels")
    if not tokenizer:
        train = load_split(data, "train", tok.config.image_size, images, desc="load train")
        batches = (train.tensor(list(range(i, min(len(train), i + 256)))) for i in range(0, len(train), 256))
        new_tok = add_levels(tok, batches, levels, iters=iters, max_vectors=images * h * w, seed=seed)
        fitted = {"kmeans_vectors": min(len(train), images) * h * w}
    ar = grow_ar(pipe.ar.float(), levels, max_seq_len=pipe.ar.cfg.max_seq_len + (levels - 1) * h * w,
                 read_levels=read_levels)
    # a trained tokenizer's head learnt all its levels: the decoder's recon hint starts from it
    dec = grow_decoder(pipe.decoder.float(), new_tok, hint_from_tokenizer=bool(tokenizer))
    grown = Pipeline(pipe.text_tokenizer, new_tok, ar, dec,
                     index={**pipe.index, "eval": {}, "grown_from": str(pipe.path)})
    grown.save_pretrained(out)
    val = load_split(data, "val", tok.config.image_size, 256, desc="load val")
    x = val.tensor(list(range(len(val))))
    res = {"out": out, "levels": levels, "token_grid": list(new_tok.grid), "vocab": new_tok.vocab_size,
           "ar_max_seq_len": ar.cfg.max_seq_len, **fitted,
           "val_residual_norm_per_level": residual_norms(new_tok, x), "wall_s": round(time.time() - t0, 1)}
    log(f"[add-levels] {out}: train the decoder and AR model from it (--init {out}/decoder, {out}/ar)")
    emit_json(res, json_path)


def register(apps: dict) -> None:
    apps["root"].command("add-levels")(add_levels_cmd)
