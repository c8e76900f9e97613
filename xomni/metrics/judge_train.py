"""`xomni train judge`: train the compliance judge on ground-truth renders with the shared training loop.

    xomni train judge --data DATASET --out runs/judge [--config judge.yaml] [--set train.seed=1] [--resume auto]

The dataset's train split is read through xomni.data.io (each read decodes the PNG and resizes it to the judge's
input size). At the end the judge is evaluated on `eval_n` held-out samples of `eval_split` (accuracy per
attribute + swap rejection, see compliance.evaluate_judge) and the result is saved as OUT/final/judge_eval.json.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch

from xomni.cliargs import check_split
from xomni.config import field, in_range, to_dict
from xomni.errors import XomniError
from xomni.metrics.compliance import evaluate_judge
from xomni.metrics.images import ImageSource
from xomni.metrics.judge import (Judge, JudgeData, JudgeModelConfig, JudgeNet, judge_loss, schema_from_metas,
                                 schema_from_preset)
from xomni.train import TrainConfig, run_training
from xomni.utils import log

TRAIN_DEFAULTS = {"out_dir": "runs/judge", "steps": 800, "batch_size": 64, "lr": 2e-3, "warmup_steps": 50,
                  "ckpt_every": 200, "log_every": 25}


def _train_defaults() -> TrainConfig:
    return TrainConfig(**TRAIN_DEFAULTS)


def base_config() -> dict:
    """Defaults for load_config(base=...): nested `train.*` overrides would otherwise reset the judge's training
    defaults to TrainConfig's."""
    return {"train": dict(TRAIN_DEFAULTS)}


@dataclasses.dataclass
class JudgeConfig:
    data: str = field("", help="Dataset root (shards or imagefolder) with a train split of ground-truth renders.")
    split: str = field("train", help="Split to train on.")
    eval_split: str = field("val", help="Held-out split for the final judge evaluation ('' to skip).")
    eval_n: int = field(1000, help="Held-out samples for the final evaluation (accuracy and swap rejection).")
    model: JudgeModelConfig = field(default_factory=JudgeModelConfig, help="Judge network.")
    train: TrainConfig = field(default_factory=_train_defaults, help="Shared training loop settings; the judge's "
                               "defaults differ from the loop's: " + ", ".join(f"{k}={v}" for k, v in
                                                                           TRAIN_DEFAULTS.items()) + ".")

    def check(self, where: str = "") -> "JudgeConfig":
        in_range(self, where, "eval_n", 0)
        check_split(self.split, "config split")
        if self.eval_split:
            check_split(self.eval_split, "config eval_split")
        return self


def make_schema(src) -> dict:
    first = next((src[i] for i in range(min(len(src), 50)) if src[i].meta.get("background")), None)
    if first is None:
        raise XomniError("the training data has no attribute metadata (background, text_color, noun, shapes)")
    name = first.meta.get("preset")
    if name:
        try:
            return schema_from_preset(name)
        except XomniError:
            pass
    return schema_from_metas([src[i].meta for i in range(min(len(src), 5000))])


def train_judge(cfg: JudgeConfig, resume: str | None = None, init: str | None = None, train_items=None,
                eval_items=None) -> dict:
    """Train; returns the final evaluation dict (empty when eval is skipped). `train_items`/`eval_items` (lists of
    Items) replace the dataset (tests)."""
    if train_items is None:
        if not cfg.data:
            raise XomniError("no training data: pass --data DIR")
        src = ImageSource(cfg.data, split=cfg.split)
        if not src.has_meta:
            raise XomniError(f"{cfg.data} has no metadata: the judge trains on dataset renders with attributes")
    else:
        src = train_items
    schema = make_schema(src)
    hw = (cfg.model.height, cfg.model.img_width)
    data = JudgeData(src, schema, hw)  # PNG decode per read (~0.3 ms) is cheap next to a training step
    torch.manual_seed(cfg.train.seed)
    net = JudgeNet(schema, cfg.model)
    config_dict = {"kind": "xomni-judge", "schema": schema, "model": to_dict(cfg.model), "seed": cfg.train.seed,
                   "data": cfg.data, "split": cfg.split, "steps": cfg.train.steps}
    log(f"[judge] {sum(p.numel() for p in net.parameters()) / 1e6:.2f}M params, {len(data)} training samples, "
        f"seed {cfg.train.seed}")
    run_training(cfg.train, net, data, judge_loss, config_dict=config_dict, resume=resume, init=init)
    if data.n_bad:
        log(f"[judge] {data.n_bad} unreadable training image reads were replaced by the next sample")
    res: dict = {"out_dir": cfg.train.out_dir, "seed": cfg.train.seed, "n_train": len(data)}
    if eval_items is None and cfg.eval_split and cfg.data:
        try:
            ev_src = ImageSource(cfg.data, split=cfg.eval_split)
            eval_items = [ev_src[i] for i in range(min(cfg.eval_n, len(ev_src)))]
        except XomniError as e:
            log(f"[judge] skipping the held-out evaluation: {e}")
    if eval_items:
        judge = Judge.load(Path(cfg.train.out_dir) / "final")
        ev = evaluate_judge(judge.predict, eval_items, seed=cfg.train.seed)
        (Path(cfg.train.out_dir) / "final" / "judge_eval.json").write_text(json.dumps(ev, indent=2))
        res["eval"] = ev
    return res
