"""`xomni bench rl`: the rollout engine's speed, step by step as `xomni train rl` runs it.

Each step draws `prompts` x G rollouts (sampler -> one decoder call per chunk -> OCR in the reward workers,
overlapped with the next chunk), then the GRPO loss's forward and backward (no optimizer step, so every step
measures the same policy). Reported: rollouts/s end to end (collection only, and with the update), and the split of
a step's wall time into sample / decode / reward wait / update.
"""
from __future__ import annotations

import time

import torch

from xomni.errors import XomniError
from xomni.pipeline import Pipeline
from xomni.rl.config import effective_credit, load_run_config
from xomni.rl.grpo import GRPOLoss, PolicyLogprobs
from xomni.rl.rewards import RewardPool, reward_spec
from xomni.rl.trainer import freeze, make_decode_fn, read_dataset_prompts
from xomni.utils import log


def bench_rl(model: str, data: str, config: str | None = None, sets: list[str] | None = None, prompts: int = 16,
             steps: int = 2, seed: int = 0, threads: int = 2) -> dict:
    import copy

    if prompts < 1 or steps < 1:
        raise XomniError(f"--prompts and --steps must be >= 1, got {prompts} and {steps}")
    if threads:
        torch.set_num_threads(threads)
    sets = list(sets or []) + [f"model={model}"]
    cfg = load_run_config(config, sets)
    pipe = Pipeline.from_pretrained(model)
    rows = read_dataset_prompts(data, cfg.data_split)
    for r in rows[:prompts * steps]:
        r["ids"] = pipe.check_prompt(r["prompt"])
    G = cfg.group_size
    with RewardPool(reward_spec(cfg, model), workers=cfg.reward_workers) as pool:
        pool.warmup()
        loss_fn = GRPOLoss(cfg, freeze(copy.deepcopy(pipe.ar)), make_decode_fn(pipe, cfg.decode_steps), pool, pipe.grid,
                           levels=pipe.image_tokenizer.levels)
        policy = PolicyLogprobs(pipe.ar)
        per_step = []
        for s in range(steps):
            gen = torch.Generator().manual_seed(seed + s)
            t0 = time.time()
            loss, m = loss_fn(policy, rows[s * prompts:(s + 1) * prompts], gen)
            t1 = time.time()
            loss.backward()
            policy.zero_grad(set_to_none=True)
            t2 = time.time()
            collect = m["sample_s"] + m["decode_s"] + m["reward_wait_s"]
            update = (t1 - t0 - collect) + (t2 - t1)  # the loss's own forwards + the backward
            wall = t2 - t0
            per_step.append({"rollouts": prompts * G, "wall_s": wall, "collect_s": collect,
                             "sample_s": m["sample_s"], "decode_s": m["decode_s"],
                             "reward_wait_s": m["reward_wait_s"], "reward_cpu_s": m["reward_cpu_s"],
                             "update_s": update, "trained_frac": m["trained_frac"],
                             "zero_std_groups": m["zero_std_groups"]})
            log(f"[bench rl] step {s + 1}/{steps}: {prompts * G} rollouts in {wall:.1f} s")
    last = per_step[-1] if steps == 1 else {k: sum(p[k] for p in per_step[1:]) / (steps - 1) for k in per_step[0]}
    out = {"model": model, "config": config, "overrides": list(sets), "group_size": G, "prompts_per_step": prompts,
           "credit": effective_credit(cfg), "decode_steps": cfg.decode_steps, "reward_workers": cfg.reward_workers,
           "sampling": {k: getattr(cfg.sampling, k) for k in ("temperature", "top_k", "top_p", "min_p", "cfg_scale")},
           "threads": threads, "steps": per_step,
           "rollouts_per_s_collect": last["rollouts"] / last["collect_s"],
           "rollouts_per_s_step": last["rollouts"] / last["wall_s"],
           "share": {k: last[f"{k}_s"] / last["wall_s"] for k in ("sample", "decode", "reward_wait", "update")},
           "reward_share_of_step": last["reward_wait_s"] / last["wall_s"],
           "note": "means over steps after the first (warm-up) when steps > 1"}
    return out
