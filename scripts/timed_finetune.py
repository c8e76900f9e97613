"""AR fine-tune sized to a wall-clock budget (for a GPU lease): measure the step time, then train that many steps.

    python scripts/timed_finetune.py --budget-s 300 --config configs/ar_mini.yaml --data TOKEN_CACHE \
        --tokenizer PIPE/image_tokenizer --init PIPE/ar --out runs/ft --val VAL_TOKEN_CACHE \
        --export runs/ft/export --set t2i_ratio=0.5 --set train.lr=3e-4 --set train.batch_size=128

The step time is measured with the training loop itself (`xomni.train.time_steps`: 20 steps after 5 warm-up steps,
on a throw-away copy of the model), so that the cosine schedule ends on time instead of being cut off. The training itself is `xomni train ar`'s
(`train_ar_main`, the shared loop: checkpoints, `--resume`-able). The result is exported as a float16 model directory
(model.safetensors + config.json) and its validation losses are printed as JSON. `--export-only` exports the latest
checkpoint of --out instead (after a run was stopped).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def measure_step_s(cfg, data: str, tokenizer: str, init: str | None) -> float:
    """Seconds per step of the real training loop (xomni.train.time_steps) on this configuration."""
    from xomni.ar.trainer import build_model, token_cache
    from xomni.ar.train import build_loss_fn
    from xomni.checkpoint import load_model_weights
    from xomni.data.text_tokenizer import load_text_tokenizer
    from xomni.tokenizer import ImageTokenizer
    from xomni.train import time_steps
    text_tok = load_text_tokenizer(cfg.text_tokenizer)
    image_tok = ImageTokenizer.from_pretrained(tokenizer)
    ds = token_cache(data, "train", image_tok, Path(cfg.train.out_dir))
    model = build_model(cfg, text_tok, image_tok)
    if init:
        load_model_weights(model, init)
    return time_steps(cfg.train, model, ds, build_loss_fn(model, text_tok, cfg), collate=list, move_batch=False)


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
        t0 = time.time()
        s = measure_step_s(cfg, a.data, a.tokenizer, a.init)
        # the trainer's own start (token cache, matmul peak) takes ~20 s; keep 10 % in hand for checkpoints
        left = max(0.0, a.budget_s - (time.time() - t0) - 20)
        cfg.train.steps = max(10, int(left * 0.9 / s))
        cfg.train.ckpt_every = max(50, cfg.train.steps // 5)
        res.update({"measured_s_per_step": round(s, 5), "steps": cfg.train.steps})
        print(f"[timed_finetune] {s * 1e3:.1f} ms/step -> {cfg.train.steps} steps in {left:.0f} s", file=sys.stderr,
              flush=True)
        res["train"] = train_ar_main(cfg, a.data, a.tokenizer, resume="auto", init=a.init)
    res.update(export(Path(a.out), Path(a.export), a.val, cfg, a.tokenizer))
    text = json.dumps(res, indent=1, default=str)
    print(text)
    if a.json:
        Path(a.json).write_text(text)


if __name__ == "__main__":
    main()
