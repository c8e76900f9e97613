"""AR fine-tune on a wall-clock budget (for a GPU lease), exported as float16 with its validation losses.

    python scripts/timed_finetune.py --budget-s 300 --config configs/ar_mini.yaml --data TOKEN_CACHE \
        --tokenizer PIPE/image_tokenizer --init PIPE/ar --out runs/ft --val VAL_TOKEN_CACHE \
        --export runs/ft/export --set t2i_ratio=0.5 --set train.lr=3e-4 --set train.batch_size=128

The budget is the loop's own `train.budget_s`: it times its first steps and then sets the step count, so that the
cosine schedule ends on time instead of being cut off (the config's `train.steps` is the most it runs). The training
itself is `xomni train ar`'s (`train_ar_main`, the shared loop: checkpoints, `--resume`-able). The result is
exported as a float16 model directory (model.safetensors + config.json) and its validation losses are printed as
JSON. `--export-only` exports the latest checkpoint of --out instead (after a run was stopped).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def export(out_dir: Path, export_dir: Path, val: str | None, cfg, tokenizer: str) -> dict:
    """The model of out_dir/final (or its latest checkpoint) -> export_dir as float16, plus its val losses."""
    from xomni.ar.data import TokenDataset
    from xomni.ar.trainer import build_model, val_loss
    from xomni.checkpoint import find_latest_checkpoint, load_model_weights, save_model_dir
    from xomni.data.text_tokenizer import load_text_tokenizer
    from xomni.tokenizer import ImageTokenizer
    text_tok = load_text_tokenizer(cfg.text_tokenizer)
    image_tok = ImageTokenizer.from_pretrained(tokenizer)
    model = build_model(cfg, text_tok, image_tok)
    src = out_dir / "final"
    if not (src / "model.safetensors").is_file():
        src = find_latest_checkpoint(out_dir / "checkpoints")
    if src is None:
        from xomni.errors import XomniError
        raise XomniError(f"nothing to export in {out_dir}: no final/ model and no checkpoint")
    load_model_weights(model, src)
    res = {"exported_from": str(src)}
    if val:
        res["val"] = val_loss(model, text_tok, cfg, TokenDataset(val), 256)
    from xomni.config import to_dict
    save_model_dir(export_dir, model, {"ar": to_dict(model.cfg), "grid": list(image_tok.grid),
                                       "text_tokenizer": cfg.text_tokenizer}, dtype=torch.float16)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget-s", type=float, required=True, help="Wall-clock seconds for the training steps.")
    ap.add_argument("--config", default=None)
    ap.add_argument("--data", required=True)
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--init", default=None)
    ap.add_argument("--out", required=True)
    ap.add_argument("--val", default=None, help="Validation token cache for the final val losses.")
    ap.add_argument("--export", required=True, help="Directory for the float16 model.")
    ap.add_argument("--set", dest="sets", action="append", default=[])
    ap.add_argument("--export-only", action="store_true")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    from xomni.errors import XomniError
    try:
        run(a)
    except XomniError as e:  # bad input: one line, exit 2
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


def run(a) -> None:
    from xomni.ar.train import ARTrainConfig
    from xomni.ar.trainer import train_ar_main
    from xomni.train_cli import trainer_config
    cfg = trainer_config(ARTrainConfig, a.config, a.sets, a.out)
    res: dict = {"sets": a.sets}
    if not a.export_only:
        if not a.budget_s > 0:
            from xomni.errors import XomniError
            raise XomniError(f"--budget-s must be > 0 seconds for a training run, got {a.budget_s:g}")
        cfg.train.budget_s = a.budget_s
        if not any(x.split("=", 1)[0].strip() == "train.ckpt_every" for x in a.sets):
            cfg.train.ckpt_every = 500  # the config's 50 would checkpoint every few seconds on a GPU
        res["train"] = train_ar_main(cfg, a.data, a.tokenizer, resume="auto", init=a.init)
    res.update(export(Path(a.out), Path(a.export), a.val, cfg, a.tokenizer))
    text = json.dumps(res, indent=1, default=str)
    print(text)
    if a.json:
        Path(a.json).write_text(text)


if __name__ == "__main__":
    main()
