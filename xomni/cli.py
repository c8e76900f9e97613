"""`xomni` command line. Thin: each pipeline stage registers its own commands from `xomni/<stage>/cli.py`.

Conventions: JSON results on stdout (`--json FILE` also saves them), `-o/--out` for the main artefact,
logs and progress on stderr, exit code 2 with one clear line for bad input.
"""
from __future__ import annotations

import os
import sys

import typer

from xomni.errors import XomniError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="xomni: train, RL-tune, evaluate and serve discrete-token AR text-to-image models.")
data_app = typer.Typer(no_args_is_help=True, help="Synthesise, import, check and preview datasets.")
train_app = typer.Typer(no_args_is_help=True, help="Train a component on the shared training loop.")
eval_app = typer.Typer(no_args_is_help=True, help="Evaluate images or models (JSON on stdout).")
bench_app = typer.Typer(no_args_is_help=True, help="Speed benchmarks (JSON on stdout).")
app.add_typer(data_app, name="data")
app.add_typer(train_app, name="train")
app.add_typer(eval_app, name="eval")
app.add_typer(bench_app, name="bench")

APPS = {"root": app, "data": data_app, "train": train_app, "eval": eval_app, "bench": bench_app}

# Each stage module defines `register(apps: dict)`; a stage that is not built yet is simply absent.
_STAGES = ["xomni.data.cli", "xomni.generate_cli", "xomni.eval.cli", "xomni.tokenizer.cli", "xomni.decoder.cli",
           "xomni.ar.cli", "xomni.recipe_cli", "xomni.rl.cli", "xomni.serve.cli", "xomni.demo"]
for _mod in _STAGES:
    try:
        _m = __import__(_mod, fromlist=["register"])
    except ModuleNotFoundError as _e:  # stage not present in this build
        if _e.name and _mod.startswith(_e.name):
            continue
        raise
    _m.register(APPS)


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        app()
    except XomniError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
