"""A small block model on the shared training loop, for the FSDP tests (tests/test_fsdp.py).

Usage: python tests/toy_fsdp_train.py OUT_DIR [--resume auto] [--set key=value ...] (also under torchrun).
The model has a ModuleList of residual blocks (one FSDP unit each) with widths that do not divide by 2, so the
ranks' shards differ in size.
"""
import sys

import torch
from torch import nn

from xomni.config import load_config
from xomni.train import TrainConfig, run_training


class Blocks(nn.Module):
    def __init__(self, d=8, h=25, n=3):
        super().__init__()
        self.inp = nn.Linear(d, h)
        self.layers = nn.ModuleList([nn.Sequential(nn.Linear(h, h), nn.Tanh(), nn.Linear(h, h)) for _ in range(n)])
        self.norm = nn.LayerNorm(h)
        self.out = nn.Linear(h, 1)

    def forward(self, x):
        x = self.inp(x)
        for layer in self.layers:
            x = x + layer(x)
        return self.out(self.norm(x))


class ToyData:
    def __init__(self, n=96, d=8, seed=123):
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, d, generator=g)
        self.y = torch.sin(self.x @ torch.randn(d, 1, generator=g))

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"x": self.x[i], "y": self.y[i]}


def main():
    out, args = sys.argv[1], sys.argv[2:]
    resume = None
    overrides = [f"out_dir={out}", "steps=12", "batch_size=8", "lr=0.01", "warmup_steps=3", "ckpt_every=3",
                 "log_every=1", "deterministic=true", "num_threads=1", "progress=false", "keep_last=10",
                 "device=cpu"]
    while args:
        a = args.pop(0)
        if a == "--resume":
            resume = args.pop(0)
        elif a == "--set":
            overrides.append(args.pop(0))
    cfg = load_config(TrainConfig, overrides=overrides)
    torch.manual_seed(cfg.seed)
    model = Blocks()

    def loss_fn(m, batch, gen):
        return nn.functional.mse_loss(m(batch["x"]), batch["y"]), {}

    run_training(cfg, model, ToyData(), loss_fn, config_dict={"kind": "toy-blocks"}, resume=resume)


if __name__ == "__main__":
    main()
