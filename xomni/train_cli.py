"""Shared CLI plumbing for every `xomni train ...` command: --config/--set/--out/--resume/--init handling."""
from __future__ import annotations

from typing import Any, List, Optional

import typer

from xomni import cliargs
from xomni.cliargs import _cb, check_in_file, check_in_path, check_out_dir
from xomni.config import help_rows, load_config
from xomni.errors import XomniError
from xomni.train import check_run_dir
from xomni.utils import emit_json

ConfigOpt = typer.Option(None, "--config", help="YAML config file (keys as in --help-config).",
                         callback=_cb(check_in_file, "--config"))
SetOpt = typer.Option(None, "--set", help="Override a config field: key.sub=value (repeatable).")
OutOpt = typer.Option(None, "--out", "-o", help="Output directory (sets train.out_dir).",
                      callback=_cb(check_out_dir, "--out"))
ResumeOpt = typer.Option(None, "--resume", help="'auto' (latest checkpoint in the output dir) or a checkpoint dir.",
                         callback=lambda v: v if v in (None, "auto") else check_in_path(v, "--resume"))
InitOpt = typer.Option(None, "--init", help="Start from the weights of a trained model directory.",
                       callback=_cb(check_in_path, "--init"))


def HelpConfigOpt(cls: type):
    """--help-config: list every field of `cls` with its default and help, then exit (before any other check)."""
    def show(value: bool) -> bool:
        if value:
            print_config_help(cls)
            raise typer.Exit()
        return value
    return typer.Option(False, "--help-config", help="List every config field with its default and help, and exit.",
                        is_eager=True, callback=show)


JsonOpt = cliargs.JsonOpt


def run_trainer_cli(cls: type, train_fn, config: Optional[str], sets: Optional[List[str]], out: Optional[str],
                    resume: Optional[str], init: Optional[str], json_path: Optional[str],
                    base: dict | None = None) -> None:
    """The body of a `xomni train STAGE` command: build the config (defaults <- base <- YAML <- --set <- --out), run
    `train_fn(cfg, resume=, init=)` and print its JSON result (rank 0 only under torchrun)."""
    cfg = trainer_config(cls, config, sets, out, base=base)
    check_before_training(cfg, resume)
    res = train_fn(cfg, resume=resume, init=init)
    if res is not None:
        emit_json(res, json_path)


def trainer_config(cls: type, config: Optional[str], sets: Optional[List[str]], out: Optional[str],
                   base: dict | None = None) -> Any:
    """Defaults <- base <- YAML <- --set; then --out wins over train.out_dir."""
    overrides = list(sets or [])
    if out:
        overrides.append(f"train.out_dir={out}")
    return load_config(cls, config, overrides, base=base)


def check_before_training(cfg: Any, resume: Optional[str]) -> None:
    """What a trainer would refuse only after loading data and models: no steps, an output dir holding a run."""
    if cfg.train.steps < 1:
        raise XomniError(f"config train.steps must be >= 1, got {cfg.train.steps}")
    check_out_dir(cfg.train.out_dir, "train.out_dir")
    check_run_dir(cfg.train.out_dir, resume)


def print_config_help(cls: type) -> None:
    rows = help_rows(cls)
    w = max(len(r[0]) for r in rows)
    for name, default, text in rows:
        typer.echo(f"{name:<{w}}  {default:<12}  {text}")
