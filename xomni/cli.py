"""`xomni` command line. Thin: each pipeline stage registers its own commands from `xomni/<stage>/cli.py`.

Conventions: JSON results on stdout (`--json FILE` also saves them), `-o/--out` for the main artefact,
logs and progress on stderr, exit code 2 with one clear line for bad input.
"""
from __future__ import annotations

import importlib
import os
import sys

import typer

from xomni.cliargs import JsonOpt
from xomni.errors import XomniError
from xomni.hwbench import device_report
from xomni.utils import emit_json

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

# Each stage module defines `register(apps: dict)`.
_STAGES = ["xomni.data.cli", "xomni.generate_cli", "xomni.eval.cli", "xomni.tokenizer.cli", "xomni.decoder.cli",
           "xomni.ar.cli", "xomni.lora.cli", "xomni.fsdp",
           "xomni.memory", "xomni.recipe_cli", "xomni.rl.cli", "xomni.serve.cli", "xomni.demo",
           "xomni.convert.cli", "xomni.levels_cli"]
for _mod in _STAGES:
    importlib.import_module(_mod).register(APPS)


@bench_app.command("device")
def bench_device(json_path: str = JsonOpt):
    """What this machine is: torch version, threads, CPU matmul GFLOP/s, CUDA devices (JSON on stdout)."""
    emit_json(device_report(), json_path)


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
