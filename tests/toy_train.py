"""A small regression task on the shared training loop, run as a subprocess by tests/test_train.py.

Usage: python tests/toy_train.py OUT_DIR [--steps N] [--resume auto] [--set key=value ...]
(also under `torchrun --nproc_per_node=2`). Each rank appends the sample indices it read to OUT_DIR/reads-rank{R}.txt.
"""
import os
import sys

import torch

from xomni.config import load_config
from xomni.train import TrainConfig, dist_info, run_training


class ToyData:
    def __init__(self, n=96, d=8, seed=123):
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, d, generator=g)
        w = torch.randn(d, 1, generator=g)
        self.y = torch.sin(self.x @ w) + 0.1 * torch.randn(n, 1, generator=g)
        self.reads = []

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        self.reads.append(i)
        return {"x": self.x[i], "y": self.y[i], "i": i}


def main():
    out = sys.argv[1]
    args = sys.argv[2:]
    resume = None
    overrides = [f"out_dir={out}", "steps=40", "batch_size=8", "lr=0.01", "warmup_steps=5", "ckpt_every=5",
                 "log_every=1", "deterministic=true", "num_threads=1", "progress=false", "keep_last=3",
                 "device=cpu"]  # CPU exactness tests, also on a machine with a GPU
    while args:
        a = args.pop(0)
        if a == "--resume":
            resume = args.pop(0)
        elif a == "--set":
            overrides.append(args.pop(0))
    cfg = load_config(TrainConfig, overrides=overrides)
    torch.manual_seed(cfg.seed)
    no_random = os.environ.get("TOY_NO_RANDOM") == "1"  # for the 1-process vs 2-process comparison
    model = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.Tanh(), torch.nn.Dropout(0.0 if no_random else 0.1),
                                torch.nn.Linear(32, 1))
    data = ToyData()

    def loss_fn(m, batch, gen):
        noise = 0.01 * torch.randn(batch["x"].shape, generator=gen).to(batch["x"].device)  # the loop's generator
        if no_random:
            noise = noise * 0
        pred = m(batch["x"] + noise)
        return torch.nn.functional.mse_loss(pred, batch["y"]), {}

    rank, world = dist_info()
    run_training(cfg, model, data, loss_fn, config_dict={"kind": "toy"}, resume=resume)
    with open(os.path.join(out, f"reads-rank{rank}.txt"), "a") as f:
        f.write(" ".join(map(str, data.reads)) + "\n")


if __name__ == "__main__":
    main()
