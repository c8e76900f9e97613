"""`xomni bench rl-snr`: how much of a GRPO step is signal at the start of RL, measured on rollouts drawn exactly as
`xomni train rl` draws them (same sampler, decoder and reward pool). It reports the reward repeatability across two
decodes of the same tokens, the gradient signal-to-noise of several advantage definitions (as configured, unscaled,
OCR only, column credit, ...) and `rollouts_for_cos_0.5`: the rollouts one optimizer step needs for half of it to be
signal, i.e. the batch to train with. The estimators are written out in docs/RL.md.
"""
from __future__ import annotations

import json
import math
import random
import sys
import time

import numpy as np
import torch

from xomni.errors import XomniError
from xomni.pipeline import Pipeline
from xomni.rl.config import effective_credit, load_run_config
from xomni.rl.credit import ColumnCredit
from xomni.rl.grpo import PolicyLogprobs, collect_rollouts, group_advantages
from xomni.rl.rewards import RewardPool, read_exactly, reward_spec
from xomni.rl.trainer import make_decode_fn, read_dataset_prompts
from xomni.utils import log


def gram(g_PD: torch.Tensor, chunk: int = 1 << 20) -> torch.Tensor:
    """g g^T in float64 (P x P), over chunks of parameters: every statistic below is a function of it."""
    K = torch.zeros(g_PD.shape[0], g_PD.shape[0], dtype=torch.float64)
    for c in range(0, g_PD.shape[1], chunk):
        x = g_PD[:, c:c + chunk].double()
        K += x @ x.T
    return K


def stats_from_gram(K: torch.Tensor, splits: int = 20, seed: int = 0) -> dict:
    """Signal/noise of the mean of P per-group gradients, from their Gram matrix K (see the module doc)."""
    P = K.shape[0]
    sq = float(K.diagonal().sum())
    mu2 = (float(K.sum()) - sq) / (P * (P - 1))
    tr = sq / P - mu2
    rng = random.Random(seed)
    cos = []
    for _ in range(splits):
        idx = list(range(P))
        rng.shuffle(idx)
        a, b = idx[:P // 2], idx[P // 2:2 * (P // 2)]
        ab, aa, bb = (float(K[x][:, y].sum()) for x, y in ((a, b), (a, a), (b, b)))
        cos.append(ab / (math.sqrt(aa * bb) + 1e-30))
    out = {"mu_sq": mu2, "trace_sigma": tr, "half_split_cos_mean": float(np.mean(cos)),
           "half_split_cos_std": float(np.std(cos)), "half_split_groups": P // 2}
    for n in (8, 32, 128, 512):
        out[f"expected_cos_{n}_groups"] = mu2 / (mu2 + tr / n) if mu2 > 0 else 0.0
    out["groups_for_cos_0.5"] = tr / mu2 if mu2 > 0 else math.inf
    return out


def pair_cosines(K: torch.Tensor, repeats: int) -> dict:
    """From the Gram matrix K: mean cosine between the two groups of one prompt (rows p*repeats, p*repeats + 1)
    and between groups of consecutive, different prompts."""
    d = K.diagonal().sqrt()
    C = K / (d[:, None] * d[None, :] + 1e-30)
    P = K.shape[0] // repeats
    same = [float(C[p * repeats, p * repeats + 1]) for p in range(P)]
    other = [float(C[p * repeats, ((p + 1) % P) * repeats + 1]) for p in range(P)]
    return {"same_prompt_cos": float(np.mean(same)), "same_prompt_cos_sem": float(np.std(same) / math.sqrt(P)),
            "other_prompt_cos": float(np.mean(other)), "other_prompt_cos_sem": float(np.std(other) / math.sqrt(P))}


def measure(model: str, data: str, config: str | None = None, sets: list[str] | None = None, groups: int = 64,
            repeats: int = 1, seed: int = 0, threads: int = 2) -> dict:
    """Draw `groups` prompts x G rollouts as `xomni train rl` would (the model's shipped sampling unless the
    config says otherwise) and measure reward repeatability and gradient signal/noise (see the module doc)."""
    if repeats not in (1, 2):
        raise XomniError(f"--repeats must be 1 or 2, got {repeats}")
    if groups < 4:
        raise XomniError(f"--groups must be >= 4, got {groups}")
    if groups % repeats:
        raise XomniError(f"--groups {groups} is not a multiple of --repeats {repeats}")
    t0 = time.time()
    if threads:
        torch.set_num_threads(threads)
    sets = list(sets or [])
    cfg = load_run_config(config, sets + [f"model={model}"])
    G = cfg.group_size
    pipe = Pipeline.from_pretrained(model)
    rows = read_dataset_prompts(data, cfg.data_split)
    random.Random(seed).shuffle(rows)
    batch = [dict(r) for r in rows[:groups // repeats] for _ in range(repeats)]
    for r in batch:
        r["ids"] = pipe.check_prompt(r["prompt"])
    decode_fn = make_decode_fn(pipe, cfg.decode_steps)
    gen = torch.Generator().manual_seed(seed)
    with RewardPool(reward_spec(cfg, model), workers=cfg.reward_workers) as pool:
        pool.warmup()
        log(f"[snr] {groups} prompts x G={G} rollouts, rewards {cfg.rewards} ...")
        ro = collect_rollouts(pipe.ar, batch, pipe.grid, G, cfg.sampling, decode_fn, pool, gen, cfg.rollout_batch,
                              cfg.adv_eps, cfg.scale_rewards)
        log(f"[snr] rollouts in {time.time() - t0:.0f} s; decoding and scoring them again (another decoder seed)")
        futs = []
        for p in range(groups):
            imgs = decode_fn(ro.codes[p * G:(p + 1) * G], 10_000 + p)
            futs.append(pool.submit(imgs, [batch[p]["prompt"]] * G, {"text": [batch[p].get("text")] * G}))
        total2, ocr2, reads2 = [], [], []
        for f in futs:
            t, c, _, det = f.result()
            total2.extend(t)
            ocr2.extend(c.get("ocr", t))
            reads2.extend(det.get("ocr", [""] * len(t)))
    r1, r2 = ro.total.double(), torch.tensor(total2, dtype=torch.float64)
    ocr1 = ro.comps.get("ocr", ro.total).double()
    ocr2_t = torch.tensor(ocr2, dtype=torch.float64)
    if "ocr" in ro.comps:
        exact1, exact2 = read_exactly(ro.reads, ro.targets), read_exactly(reads2, ro.targets)
    else:
        exact1, exact2 = ocr1 >= 1.0, ocr2_t >= 1.0
    within = float(r1.view(-1, G).var(-1, unbiased=False).mean())
    within_ocr = float(ocr1.view(-1, G).var(-1, unbiased=False).mean())
    rep = {"reward_mean": float(r1.mean()), "reward_corr_two_decodes": float(np.corrcoef(r1, r2)[0, 1]),
           "within_group_var": within, "decode_noise_var": float((r1 - r2).var() / 2),
           "decode_noise_share": float((r1 - r2).var() / 2) / within if within else None,
           "ocr_exact_rate": float(exact1.double().mean()),
           "ocr_exact_agree_two_decodes": float((exact1 == exact2).double().mean()),
           "ocr_decode_noise_share": float((ocr1 - ocr2_t).var() / 2) / within_ocr if within_ocr else None,
           "zero_var_groups": float((r1.view(-1, G).std(-1) == 0).double().mean())}
    log(f"[snr] repeatability {json.dumps(rep)}")

    adv = {"configured": ro.adv.double(),
           "unscaled": group_advantages(r1.view(-1, G).float(), cfg.adv_eps, False).reshape(-1).double(),
           "ocr_only_scaled": group_advantages(ocr1.view(-1, G).float(), cfg.adv_eps, True).reshape(-1).double(),
           "exact_only_scaled": group_advantages(exact1.float().view(-1, G), cfg.adv_eps,
                                                 True).reshape(-1).double(),
           "two_decode_mean_scaled": group_advantages(((r1 + r2) / 2).view(-1, G).float(), cfg.adv_eps,
                                                      True).reshape(-1).double()}
    # column credit (xomni.rl.credit) from the same OCR readings (the first decode's, made by the reward pool):
    # against "configured" (all rewards) and "ocr_only_scaled" (OCR alone) only where the credit goes differs
    comps = {k: v.tolist() for k, v in ro.comps.items()}
    token_adv = {}
    lv = pipe.image_tokenizer.levels
    if "ocr" in comps:
        token_adv["column_configured"] = ColumnCredit(cfg.rewards, cfg.preset, cfg.adv_eps, cfg.scale_rewards, lv)(
            ro.total.tolist(), comps, ro.reads, ro.targets, G, pipe.grid, ro.confs).double()
        token_adv["column_ocr_only"] = ColumnCredit({"ocr": 1.0}, cfg.preset, cfg.adv_eps, cfg.scale_rewards, lv)(
            comps["ocr"], comps, ro.reads, ro.targets, G, pipe.grid, ro.confs).double()
    policy = PolicyLogprobs(pipe.ar)
    params = [p for p in policy.parameters() if p.requires_grad]
    D = sum(p.numel() for p in params)
    N = ro.codes.shape[1] * ro.codes.shape[2]
    grads = {k: torch.zeros(groups, D) for k in list(adv) + list(token_adv)}
    from tqdm import tqdm
    for p in tqdm(range(groups), desc="per-rollout gradients", file=sys.stderr, mininterval=5):
        sl = slice(p * G, (p + 1) * G)
        lp_GN = policy(ro.ids[sl], ro.codes[sl], cfg.sampling)
        for i in range(G):
            gi = torch.autograd.grad(lp_GN[i].sum(), params, retain_graph=i < G - 1 or bool(token_adv))
            flat = torch.cat([x.reshape(-1) for x in gi])
            for k, A in adv.items():
                grads[k][p].add_(flat, alpha=-float(A[p * G + i]) / (G * N))
            for j, (k, A_BN) in enumerate(token_adv.items()):  # token-level advantages: their own backward
                gi = torch.autograd.grad((lp_GN[i] * A_BN[p * G + i].to(lp_GN.dtype)).sum(), params,
                                         retain_graph=i < G - 1 or j < len(token_adv) - 1)
                grads[k][p].add_(torch.cat([x.reshape(-1) for x in gi]), alpha=-1.0 / (G * N))
    out = {"model": model, "config": config, "overrides": sets, "groups": groups, "group_size": G,
           "repeats": repeats,
           "rewards": dict(cfg.rewards), "sampling": {k: getattr(cfg.sampling, k) for k in
                                                      ("temperature", "top_k", "top_p", "min_p", "cfg_scale")},
           "params": D, "tokens_per_rollout": N, "seed": seed, "repeatability": rep,
           "gradient": {k: {**stats_from_gram(K, seed=seed), **(pair_cosines(K, repeats) if repeats > 1 else {})}
                        for k, K in ((k, gram(g)) for k, g in grads.items())},
           "wall_s": round(time.time() - t0, 1)}
    key = "column_configured" if effective_credit(cfg) == "column" and "column_configured" in out["gradient"] \
        else "configured"
    out["credit"] = key
    out["rollouts_for_cos_0.5"] = out["gradient"][key]["groups_for_cos_0.5"] * G
    return out
