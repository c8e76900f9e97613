"""CLI of the AR stage: `xomni train ar`."""
from __future__ import annotations

from typing import List, Optional

import typer

from xomni.ar.bench import register_bench
from xomni.ar.train import ARTrainConfig
from xomni.ar.trainer import train_ar_main
from xomni.cliargs import IntRange, check_in_path
from xomni.errors import XomniError
from xomni.train_cli import (ConfigOpt, HelpConfigOpt, InitOpt, JsonOpt, OutOpt, ResumeOpt, SetOpt,
                             check_before_training, trainer_config)
from xomni.utils import emit_json


def train_ar(data: str = typer.Option(None, "--data", help="Dataset directory (shards/imagefolder) with a train "
                                                           "split, or a token cache directory."),
             tokenizer: str = typer.Option(None, "--tokenizer", help="Trained image tokenizer directory."),
             config: Optional[str] = ConfigOpt, set_: Optional[List[str]] = SetOpt, out: Optional[str] = OutOpt,
             resume: Optional[str] = ResumeOpt, init: Optional[str] = InitOpt,
             val_n: int = typer.Option(256, "--val-n", help="Validation grids for the periodic val loss (>= 1).",
                                       callback=IntRange("--val-n", 1)),
             init_except_image: bool = typer.Option(
                 False, "--init-except-image", help="With --init from an AR model of another image tokenizer: copy "
                 "everything but the image-code embeddings and output rows, which start fresh."),
             help_config: bool = HelpConfigOpt(ARTrainConfig),
             json_path: Optional[str] = JsonOpt):
    """Supervised training (SFT) of the unified AR model: text->image and image->text together."""
    if not data or not tokenizer:
        raise XomniError("train ar needs --data DIR and --tokenizer DIR")
    cfg = trainer_config(ARTrainConfig, config, set_, out)
    check_in_path(data, "--data")
    check_in_path(tokenizer, "--tokenizer")
    if init_except_image and not init:
        raise XomniError("--init-except-image needs --init MODEL")
    check_before_training(cfg, resume)
    emit_json(train_ar_main(cfg, data, tokenizer, resume=resume, init=init, val_n=val_n,
                            init_except_image=init_except_image), json_path)


def register(apps: dict) -> None:
    apps["train"].command("ar")(train_ar)
    register_bench(apps)
