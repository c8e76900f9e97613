"""CLI of the tokenizer stage: `xomni train tokenizer`, `xomni eval tokenizer`, `xomni bench tokenizer`."""
from __future__ import annotations

from typing import List, Optional

import typer

from xomni.cliargs import BatchesOpt, BatchSizeOpt, IntRange, ThreadsOpt, _cb, check_in_path, check_split
from xomni.pipeline import default_model_dir
from xomni.tokenizer.config import TRAIN_DEFAULTS, TokenizerTrainConfig
from xomni.tokenizer.trainer import bench_tokenizer, eval_tokenizer, train_tokenizer
from xomni.train_cli import ConfigOpt, HelpConfigOpt, InitOpt, JsonOpt, OutOpt, ResumeOpt, SetOpt, run_trainer_cli
from xomni.utils import emit_json, set_threads


def train_tokenizer_cmd(
    data: Optional[str] = typer.Option(None, "--data", help="Dataset directory (sets `data`)."),
    config: Optional[str] = ConfigOpt, set_: Optional[List[str]] = SetOpt, out: Optional[str] = OutOpt,
    resume: Optional[str] = ResumeOpt, init: Optional[str] = InitOpt,
    help_config: bool = HelpConfigOpt(TokenizerTrainConfig),
    json_path: Optional[str] = JsonOpt,
):
    """Train the semantic VQ tokenizer (caption-from-codes objective); prints val metrics as JSON at the end."""
    sets = list(set_ or []) + ([f"data={data}"] if data else [])
    run_trainer_cli(TokenizerTrainConfig, train_tokenizer, config, sets, out, resume, init, json_path,
                    base={"train": dict(TRAIN_DEFAULTS)})


def eval_tokenizer_cmd(
    model: Optional[str] = typer.Option(None, "--model", help="Tokenizer directory (a run dir or its final/; default: "
                                        "the bundled model's).", callback=_cb(check_in_path, "--model")),
    data: str = typer.Option(..., "--data", help="Dataset directory.", callback=_cb(check_in_path, "--data")),
    split: str = typer.Option("val", "--split", help="Split to evaluate (val = unseen words).",
                              callback=_cb(check_split)),
    n: int = typer.Option(0, "--n", help="First N samples (0 = all).", callback=IntRange("--n", 1, zero="all")),
    captions: int = typer.Option(0, "--captions", help="Greedy-decode captions for the first N only (0 = all).",
                                 callback=IntRange("--captions", 1, zero="all")),
    ocr: Optional[int] = typer.Option(None, "--ocr", help="Tesseract on the reconstruction head's output (and the "
                                                          "originals) for the first N (default 200; 0 = skip).",
                                      callback=IntRange("--ocr", 1, zero="skip")),
    threads: int = ThreadsOpt,
    json_path: Optional[str] = JsonOpt,
):
    """Codebook usage/perplexity (argmin), caption / text exact-match decoded from codes, Tesseract on the
    reconstruction head's pixels."""
    set_threads(threads)
    model = model or str(default_model_dir() / "image_tokenizer")
    emit_json(eval_tokenizer(model, data, split, n, captions, ocr), json_path)


def bench_tokenizer_cmd(
    model: Optional[str] = typer.Option(None, "--model", help="Tokenizer directory (default: untrained default).",
                                        callback=_cb(check_in_path, "--model")),
    batch_size: int = BatchSizeOpt("Images per encode call"),
    n_batches: int = BatchesOpt(8),
    threads: int = ThreadsOpt,
    json_path: Optional[str] = JsonOpt,
):
    """Encode speed (images/s)."""
    emit_json(bench_tokenizer(model, batch_size, n_batches, threads), json_path)


def register(apps: dict) -> None:
    apps["train"].command("tokenizer")(train_tokenizer_cmd)
    apps["eval"].command("tokenizer")(eval_tokenizer_cmd)
    apps["bench"].command("tokenizer")(bench_tokenizer_cmd)
