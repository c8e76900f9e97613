"""CLI of the decoder stage: `xomni train decoder`, `xomni bench decoder`, `xomni reconstruct`."""
from __future__ import annotations

import functools
from typing import List, Optional

import typer

from xomni.cliargs import (BatchesOpt, BatchSizeOpt, FloatRange, IntRange, OverwriteOpt, SeedOpt, ThreadsOpt, _cb,
                           check_in_path, check_out_dir, check_split)
from xomni.decoder.config import TRAIN_DEFAULTS, DecoderTrainConfig
from xomni.decoder.reconstruct import reconstruct
from xomni.decoder.trainer import bench_decoder, train_decoder
from xomni.errors import XomniError
from xomni.pipeline import default_model_dir
from xomni.train_cli import ConfigOpt, HelpConfigOpt, InitOpt, JsonOpt, OutOpt, ResumeOpt, SetOpt, run_trainer_cli
from xomni.utils import emit_json, set_threads


def train_decoder_cmd(
    tokenizer: Optional[str] = typer.Option(None, "--tokenizer", help="Trained tokenizer directory."),
    data: Optional[str] = typer.Option(None, "--data", help="Dataset directory."),
    config: Optional[str] = ConfigOpt, set_: Optional[List[str]] = SetOpt, out: Optional[str] = OutOpt,
    resume: Optional[str] = ResumeOpt, init: Optional[str] = InitOpt,
    init_except_codes: bool = typer.Option(
        False, "--init-except-codes", help="With --init from a decoder of another image tokenizer (same shapes): "
        "copy everything but the code embeddings and the recon hint, which start from this tokenizer."),
    help_config: bool = HelpConfigOpt(DecoderTrainConfig),
    json_path: Optional[str] = JsonOpt,
):
    """Train the diffusion decoder (token grid -> pixels, flow matching); JSON with a val OCR check at the end."""
    if init_except_codes and not init:
        raise XomniError("--init-except-codes needs --init DECODER")
    sets = list(set_ or []) + ([f"data={data}"] if data else []) + ([f"tokenizer={tokenizer}"] if tokenizer else [])
    run_trainer_cli(DecoderTrainConfig, functools.partial(train_decoder, init_except_codes=init_except_codes), config,
                    sets, out, resume, init, json_path, base={"train": dict(TRAIN_DEFAULTS)})


def bench_decoder_cmd(
    model: Optional[str] = typer.Option(None, "--model", help="Decoder directory (default: untrained default).",
                                        callback=_cb(check_in_path, "--model")),
    batch_size: int = BatchSizeOpt("Token grids per decode call"),
    n_batches: int = BatchesOpt(2),
    steps: Optional[int] = typer.Option(None, "--steps", help="Sampling steps, 1..1000 (default: the model's).",
                                        callback=IntRange("--steps", 1, 1000)),
    threads: int = ThreadsOpt,
    json_path: Optional[str] = JsonOpt,
):
    """Decode speed (images/s) at the default sampling steps."""
    emit_json(bench_decoder(model, batch_size, n_batches, steps, threads), json_path)


def reconstruct_cmd(
    inputs: str = typer.Argument(..., help="An image, a folder of images, or a dataset directory.",
                                 callback=_cb(check_in_path, "input")),
    out: str = typer.Option(..., "--out", "-o", help="Output imagefolder (PNG + metadata.jsonl).",
                            callback=_cb(check_out_dir, "--out")),
    tokenizer: Optional[str] = typer.Option(None, "--tokenizer", help="Tokenizer directory (default: the bundled "
                                            "model's).", callback=_cb(check_in_path, "--tokenizer")),
    decoder: Optional[str] = typer.Option(None, "--decoder", help="Decoder directory (default: the bundled model's).",
                                          callback=_cb(check_in_path, "--decoder")),
    split: Optional[str] = typer.Option(None, "--split", help="Split of a dataset root (train/val/test).",
                                        callback=_cb(check_split)),
    n: int = typer.Option(0, "--n", help="First N images only (0 = all).", callback=IntRange("--n", 1, zero="all")),
    steps: Optional[int] = typer.Option(None, "--steps", help="Sampling steps, 1..1000 (default: the decoder's).",
                                        callback=IntRange("--steps", 1, 1000)),
    strength: Optional[float] = typer.Option(None, "--strength", help="Start noise level in (0, 1] (default: the "
                                                                        "decoder's; 1 = pure noise).",
                                             callback=FloatRange("--strength", 0, 1, lo_open=True)),
    seed: int = SeedOpt(0, "Noise seed."),
    batch_size: int = BatchSizeOpt("Images per batch"),
    threads: int = ThreadsOpt,
    overwrite: bool = OverwriteOpt("a non-empty --out"),
    json_path: Optional[str] = JsonOpt,
):
    """Image -> codes -> pixels. A dataset's metadata is kept, so `xomni eval text --images OUT` scores the result."""
    set_threads(threads)
    tokenizer = tokenizer or str(default_model_dir() / "image_tokenizer")
    decoder = decoder or str(default_model_dir() / "decoder")
    emit_json(reconstruct(inputs, out, tokenizer, decoder, split, n, steps, seed, batch_size, strength, overwrite),
              json_path)


def register(apps: dict) -> None:
    apps["train"].command("decoder")(train_decoder_cmd)
    apps["bench"].command("decoder")(bench_decoder_cmd)
    apps["root"].command("reconstruct")(reconstruct_cmd)
