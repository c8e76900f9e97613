"""CLI of LoRA adapters: `xomni train lora`, `xomni lora merge`, `xomni eval fontpack`, and the `--lora` option that
generate, caption, eval text and serve share."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from xomni.cliargs import IntRange, OverwriteOpt, _cb, check_in_path, check_out_dir, refuse_existing
from xomni.errors import XomniError
from xomni.lora.adapter import split_adapters
from xomni.lora.fontpack import register_fontpack
from xomni.lora.train import LoRATrainConfig, merge_main, train_lora_main
from xomni.train import dist_info
from xomni.train_cli import (ConfigOpt, HelpConfigOpt, JsonOpt, OutOpt, ResumeOpt, SetOpt, check_before_training,
                             trainer_config)
from xomni.utils import emit_json


def check_lora(value: Optional[str], name: str = "--lora") -> Optional[str]:
    """Each comma-separated part of --lora exists (an adapter directory is checked when it is loaded)."""
    if value is None:
        return None
    for part in split_adapters(value):
        check_in_path(part, name)
    return value


LoraOpt = typer.Option(None, "--lora", help="LoRA adapter directory (xomni train lora's OUT or OUT/final), added "
                                            "without merging; an AR adapter and a decoder adapter together: A,B.",
                       callback=_cb(check_lora, "--lora"))

lora_app = typer.Typer(no_args_is_help=True, help="LoRA adapters: merge one into a pipeline.")


def train_lora(model: Optional[str] = typer.Option(None, "--model", help="Pipeline directory to adapt (default: "
                                                   "the bundled model).", callback=_cb(check_in_path, "--model")),
               data: str = typer.Option(None, "--data", help="Dataset directory (shards/imagefolder) with a train "
                                        "split, e.g. from `xomni data synth --font ...`."),
               component: Optional[str] = typer.Option(None, "--component", help="ar (default) or decoder "
                                                       "(sets component)."),
               rank: Optional[int] = typer.Option(None, "--rank", help="LoRA rank (sets lora.rank).",
                                                  callback=IntRange("--rank", 1, 4096)),
               targets: Optional[str] = typer.Option(None, "--targets", help="Comma-separated module names that get "
                                                     "an adapter (sets lora.targets), e.g. q_proj,v_proj."),
               init: Optional[str] = typer.Option(None, "--init", help="Adapter directory to continue (sets "
                                                  "init; its shape replaces lora.*).",
                                                  callback=_cb(check_in_path, "--init")),
               config: Optional[str] = ConfigOpt, set_: Optional[List[str]] = SetOpt, out: Optional[str] = OutOpt,
               resume: Optional[str] = ResumeOpt, help_config: bool = HelpConfigOpt(LoRATrainConfig),
               json_path: Optional[str] = JsonOpt):
    """LoRA fine-tuning of a pipeline's AR model (base weights frozen); OUT/final is the adapter."""
    if not data:
        raise XomniError("train lora needs --data DIR")
    check_in_path(data, "--data")
    sets = list(set_ or [])
    if component is not None:
        sets.append(f"component={component}")
    if rank is not None:
        sets.append(f"lora.rank={rank}")
    if targets is not None:
        sets.append(f"lora.targets={targets}")
    if init is not None:
        sets.append(f"init={init}")
    cfg = trainer_config(LoRATrainConfig, config, sets, out)
    cfg.check()
    check_before_training(cfg, resume)
    res = train_lora_main(cfg, model, data, resume=resume)
    if dist_info()[0] == 0:
        emit_json(res, json_path)


@lora_app.command("merge")
def merge(model: Optional[str] = typer.Option(None, "--model", help="Base pipeline directory (default: the bundled "
                                              "model).", callback=_cb(check_in_path, "--model")),
          lora: str = typer.Option(..., "--lora", help="Adapter directory (A,B: an AR and a decoder adapter).",
                                   callback=_cb(check_lora, "--lora")),
          out: str = typer.Option(..., "--out", "-o", help="Output pipeline directory.",
                                  callback=_cb(check_out_dir, "--out")),
          dtype: str = typer.Option("float32", "--dtype", help="Weight files: float32 (the merged weights exactly) "
                                    "| float16 | bfloat16."),
          overwrite: bool = OverwriteOpt("a non-empty --out"),
          json_path: Optional[str] = JsonOpt):
    """Bake an adapter into the AR weights: a full pipeline directory that loads without --lora."""
    if dtype not in ("float32", "float16", "bfloat16"):
        raise XomniError(f"--dtype must be float32, float16 or bfloat16, got {dtype!r}")
    refuse_existing(Path(out), "--out", "files", overwrite)
    emit_json(merge_main(model, lora, out, dtype), json_path)


def register(apps: dict) -> None:
    apps["train"].command("lora")(train_lora)
    apps["root"].add_typer(lora_app, name="lora")
    register_fontpack(apps)
