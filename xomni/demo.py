"""`xomni demo`: what `make demo` runs for now. Synthesises 16 tiny-preset samples and writes a preview grid.

(To be replaced by generation with the shipped pretrained model.)
"""
from __future__ import annotations

import tempfile

import typer

from xomni.utils import emit_json


def run_demo(out_dir: str = "demo_out", n: int = 16, seed: int = 0) -> dict:
    from pathlib import Path

    from xomni.data.preview import preview
    from xomni.data.synth import synth
    out = Path(out_dir)
    with tempfile.TemporaryDirectory(prefix="xomni-demo-") as d:
        synth(d, n, seed=seed, preset="tiny", split="val", fmt="imagefolder", progress=False,
              command=f"xomni demo -o {out_dir}")
        res = preview(d, out / "preview.png", n=n, split="val")
    return {"preview": res["grid"], "captions": res["captions"], "n": res["n"], "source": "synthetic tiny preset"}


def register(apps: dict) -> None:
    @apps["root"].command("demo")
    def demo_cmd(
        out: str = typer.Option("demo_out", "--out", "-o", help="Output directory for preview.png and captions.txt."),
        json_path: str = typer.Option(None, "--json", help="Also save the JSON result here."),
    ):
        """Render 16 sample images with captions into OUT/preview.png and OUT/captions.txt."""
        emit_json(run_demo(out), json_path)
