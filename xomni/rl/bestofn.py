"""Best-of-N: sample N images per prompt, score them with the RL reward configuration, keep the best.

`best_of_n(pipe, prompts, n, reward_cfg, seed)` reads the rewards from the same RLConfig that `xomni train rl`
uses (a YAML preset, an RL run dir, a pipeline written by `xomni train rl`, an RLConfig or a dict), builds the same
callables with the same weights (`xomni.rl.rewards.build_reward_set`), and returns, per prompt, the candidate with
the highest combined reward (the first one on ties) and that reward. The paper compares RL against SFT best-of-N.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from xomni.cliargs import MAX_IMAGES
from xomni.errors import XomniError
from xomni.eval.text import generate
from xomni.rl import rewards
from xomni.rl.config import load_rl_config, model_defaults


def pick_best(scores_PN: torch.Tensor) -> list[int]:
    """Per row, the index of the highest reward (the first one on ties): the rule of best-of-N and of ReST."""
    return scores_PN.argmax(-1).tolist()


def best_of_n(pipe, prompts: str | list[str], n: int, reward_cfg: Any = None, seed: int = 0, sampling=None,
              steps: int | None = None, batch: int = 8, return_details: bool = False):
    """-> (images, scores): one PIL image and its combined reward per prompt (prompt order; a prompt may repeat,
    each occurrence gets its own N candidates). `sampling`: a SamplingConfig (default: the RL config's);
    `steps`: decoder steps. With return_details, a third value: per prompt {"scores": [N totals], "components":
    {name: [N values]}, "best": index}.

    The candidates come from `xomni.eval.text.generate` (`batch` prompts x N images per call, seed + call index),
    so with N = 1 the images are exactly those of `xomni eval text --samples 1` with the same seed and sampling."""
    import dataclasses

    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    if not prompts:
        raise XomniError("best_of_n: no prompts given")
    if not isinstance(n, int) or not 1 <= n <= MAX_IMAGES:  # the N candidates of a prompt are one pipeline call
        raise XomniError(f"best-of-N needs 1 <= N <= {MAX_IMAGES}, got {n!r}")
    if reward_cfg is None:  # the RL defaults with the model's own preset and sampling (as `xomni train rl` uses)
        reward_cfg = model_defaults(pipe.index)
    cfg = load_rl_config(reward_cfg)
    sampling = sampling or cfg.sampling
    sampling.validate()
    for p in prompts:
        pipe.check_prompt(p)
    model_dir = cfg.model if cfg.model and Path(cfg.model).is_dir() else None
    reward_set = rewards.build_reward_set(cfg, model_dir=model_dir, pipe=pipe)
    rows = [p for p in prompts for _ in range(n)]
    groups = generate(pipe, prompts, n, seed, batch, {**dataclasses.asdict(sampling), "steps": steps})
    images = [im for g in groups for im in g]
    total, comps = reward_set.scores(images, rows)
    scores = torch.tensor(total).view(len(prompts), n)
    best = pick_best(scores)
    out_images = [images[i * n + b] for i, b in enumerate(best)]
    out_scores = [float(scores[i, b]) for i, b in enumerate(best)]
    if not return_details:
        return out_images, out_scores
    details = [{"scores": scores[i].tolist(), "best": b,
                "components": {k: v[i * n:(i + 1) * n] for k, v in comps.items()}} for i, b in enumerate(best)]
    return out_images, out_scores, details
