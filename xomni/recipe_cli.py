"""`xomni pipeline --preset tiny --out DIR`: the whole training recipe from scratch (see xomni/recipe.py)."""
from __future__ import annotations

from typing import List, Optional

import typer

from xomni.cliargs import JsonOpt, _cb, check_out_dir
from xomni.recipe import main_cli
from xomni.train_cli import ConfigOpt, SetOpt
from xomni.utils import emit_json


def pipeline_cmd(preset: str = typer.Option("tiny", "--preset", help="Recipe preset: mini (the bundled model's "
                                                                      "domain, about 2 h on 2 cores), tiny (harder, "
                                                                      "longer) or smoke (minutes; the CI end-to-end "
                                                                      "test)."),
                 out: str = typer.Option("runs/tiny", "--out", "-o", help="Output directory (stages resume here).",
                                         callback=_cb(check_out_dir, "--out")),
                 config: Optional[str] = ConfigOpt, set_: Optional[List[str]] = SetOpt,
                 json_path: Optional[str] = JsonOpt):
    """Run data -> tokenizer -> decoder -> AR -> pipeline -> eval; rerun the same command to resume."""
    emit_json(main_cli(preset, out, config, set_), json_path)


def register(apps: dict) -> None:
    apps["root"].command("pipeline")(pipeline_cmd)
