"""CLI of the converters: `xomni convert x-omni SRC_DIR --out DIR [--reverse]`."""
from __future__ import annotations

from typing import Optional

import typer

from xomni.cliargs import JsonOpt, OverwriteOpt, _cb, check_in_dir, check_out_dir
from xomni.convert.x_omni import convert
from xomni.utils import emit_json

convert_app = typer.Typer(no_args_is_help=True, help="Convert other projects' checkpoints into xomni's modules "
                                                     "(and back). Local files only: nothing is downloaded.")


@convert_app.callback()
def _group() -> None:
    """Convert other projects' checkpoints into xomni's modules (and back)."""


@convert_app.command("x-omni")
def convert_x_omni(src: str = typer.Argument(..., help="A local copy of a released X-Omni model (config.json, "
                                                       "model*.safetensors, tokenizer.json, the SigLIP-VQ files and "
                                                       "the diffusers/ FLUX folder); with --reverse, a directory "
                                                       "written by this command.",
                                             callback=_cb(check_in_dir, "SRC_DIR")),
                   out: str = typer.Option(..., "--out", help="Output directory.",
                                           callback=_cb(check_out_dir, "--out")),
                   reverse: bool = typer.Option(False, "--reverse", help="Write the official layout and names back "
                                                                         "from an xomni directory (round trip)."),
                   overwrite: bool = OverwriteOpt("--out"),
                   json_path: Optional[str] = JsonOpt):
    """X-Omni's released weights <-> xomni's XOmniAR, SigLIP-VQ and FLUX-decoder modules (docs/XOMNI.md).
    Every file and tensor is checked against config.json before anything is written; a missing or mismatched
    one is one error line (exit 2)."""
    emit_json(convert(src, out, reverse=reverse, overwrite=overwrite), json_path)


def register(apps: dict) -> None:
    apps["root"].add_typer(convert_app, name="convert")
    apps["convert"] = convert_app
