"""GRPO on the unified AR policy (X-Omni's RL stage), as a `loss_fn` for the shared training loop.

One call (`GRPOLoss.__call__(model, batch, gen)`, one micro-batch of prompts; the loop accumulates micro-batches):
  1. prompts: this micro-batch's, or drawn from the pass-rate pool (xomni.rl.pool) when one is attached;
  2. rollouts, no grad: G token grids per prompt from `sample_images`, with log p_old of each drawn token under the
     exact sampling distribution (`process_logits`); decoded a chunk at a time; the reward pool scores a chunk's
     groups in worker processes while the next chunk samples;
  3. advantages: A = (r - mean_group(r)) / (std_group(r) + adv_eps) per rollout (scale_rewards=false: centred only,
     Dr. GRPO), or per token with column credit (xomni.rl.credit: the OCR reward goes to the columns that drew each
     character); algo=rest instead marks each group's best-of-N pick when it passes rest_min_reward;
  4. loss with gradients through `model(prompts, codes, sampling)` (`sequence_logprobs` with the SAME sampling
     settings, so ratio == 1 at the first inner step):
        pg_t = -min(r_t A, clip(r_t, 1 - eps, 1 + eps) A),  r_t = exp(lp_t - lp_old_t)
        kl_t = exp(ref_t - lp_t) - (ref_t - lp_t) - 1       (k3, against the frozen reference's sampling dist.)
        loss = sum over tokens of (pg_t + beta kl_t) / (all tokens of the micro-batch)
     Rollouts whose advantages are all 0 have pg_t = 0: with skip_flat they stay out of the gradient-carrying pass
     (only their KL term is dropped). The denominator counts every rollout, so k micro-batches of loss / k give the
     gradient of one big batch. rest: loss = -sum of the kept rollouts' token log-probs under the raw model / same.

DDP: `PolicyLogprobs` registers the AR's own submodules (its state_dict is a drop-in `ar/` folder) and its forward
is `sequence_logprobs`, so the gradient-carrying call goes through DDP; sampling and the no-grad passes use the
unwrapped AR. The text head is frozen (unused by image log-probs) and the AR stays in eval mode (no dropout).
"""
from __future__ import annotations

import dataclasses
import time
from typing import Callable

import torch
import torch.distributed as dist
from torch import nn

from xomni.ar.sampler import SamplingConfig, _left_pad, build_rows, process_logits, sample_images, sequence_logprobs
from xomni.errors import XomniError
from xomni.rl.bestofn import pick_best
from xomni.rl.config import effective_credit
from xomni.rl.credit import ColumnCredit
from xomni.rl.rewards import read_exactly, target_texts
from xomni.train import unwrap
from xomni.utils import log

LOG_RATIO_CLAMP = 20.0
RAW_SAMPLING = SamplingConfig(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, cfg_scale=1.0)  # the model itself


# ------------------------------------------------------------------ math
def group_advantages(rewards_PG: torch.Tensor, eps: float = 1e-4, scale: bool = True) -> torch.Tensor:
    """Rewards of P groups x G rollouts -> advantages centred within each group and, with `scale`, divided by the
    group's population std + eps."""
    r = rewards_PG.double()
    a = r - r.mean(-1, keepdim=True)
    return (a / (r.std(-1, unbiased=False, keepdim=True) + eps) if scale else a).float()


def k3_kl(lp: torch.Tensor, ref_lp: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimator of KL(policy || reference) for tokens drawn from the policy: exp(d) - d - 1 with
    d = ref - lp (clamped to +-20); >= 0, and 0 exactly when lp == ref."""
    d = (ref_lp - lp).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    return torch.exp(d) - d - 1


def grpo_token_loss(lp: torch.Tensor, old_lp: torch.Tensor, ref_lp: torch.Tensor, adv_B: torch.Tensor,
                    clip_eps: float, beta: float, denom: int | None = None) -> tuple[torch.Tensor, dict]:
    """Clipped token-level policy-gradient loss + beta * k3 KL, summed over the given tokens and divided by
    `denom` tokens (default: their number, i.e. the mean; see module doc)."""
    log_ratio = (lp - old_lp).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    ratio = torch.exp(log_ratio)
    a = adv_B.to(lp.device)
    a = a if a.dim() == 2 else a.unsqueeze(-1)  # B x N token advantages (column credit) or one per rollout
    pg = -torch.minimum(ratio * a, ratio.clamp(1 - clip_eps, 1 + clip_eps) * a)
    kl = k3_kl(lp, ref_lp)
    loss = (pg + beta * kl).sum() / (denom or pg.numel())
    with torch.no_grad():
        stats = {"kl": kl.mean().item(), "pg_loss": pg.mean().item(),
                 "clip_frac": ((ratio - 1).abs() > clip_eps).float().mean().item(),
                 "ratio_max_dev": (ratio - 1).abs().max().item()}
    return loss, stats


@torch.no_grad()
def sampling_distribution_stats(model, prompts: list[list[int]], codes_BHW: torch.Tensor, sampling: SamplingConfig
                                ) -> tuple[torch.Tensor, torch.Tensor]:
    """(log-prob of each drawn token, entropy of the sampling distribution at each position), both B x N, from
    one no-grad forward built exactly as `sequence_logprobs(..., keep_drawn=True)` builds it (a test checks the
    log-probs agree)."""
    B, h, w = codes_BHW.shape
    N = h * w
    cfg_on = sampling.cfg_scale != 1.0
    rows = build_rows(model, prompts, (h, w), sampling.cfg_scale)
    lay = model.layout
    seq_BN = lay.image_tokens(codes_BHW)
    img = (seq_BN + lay.image_offset).tolist()
    rows = [r + img[i % B][:-1] for i, r in enumerate(rows)]
    ids, mask = _left_pad(rows, model.layout.pad_id)
    device = next(model.parameters()).device
    ids, mask = ids.to(device), mask.to(device)
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    h_RLD, _ = model.hidden(ids, attention_mask=mask, position_ids=pos)
    logits = model.image_logits(h_RLD[:, -N:])
    V = logits.shape[-1]
    tok = seq_BN.reshape(B * N).to(device)
    lp = process_logits(logits[:B].reshape(B * N, V), logits[B:].reshape(B * N, V) if cfg_on else None, sampling,
                        keep_idx=tok)
    finite = torch.isfinite(lp)
    ent = -(lp.exp() * lp.where(finite, torch.zeros_like(lp))).sum(-1)
    drawn = lp.gather(-1, tok[:, None])
    return (lay.image_grid(drawn.view(B, N), h, w).reshape(B, N),  # token grid order, as the sampler's
            lay.image_grid(ent.view(B, N), h, w).reshape(B, N))


# ------------------------------------------------------------------ the policy wrapper
class PolicyLogprobs(nn.Module):
    """DDP-compatible view of a UnifiedAR: forward(prompts, codes, sampling) = sequence_logprobs (with grad).

    The AR's submodules are registered directly (state_dict keys = the AR's), the AR object itself is reachable
    as `.ar`; train() keeps everything in eval mode (no dropout), text_head is frozen (unused by image tokens)."""

    def __init__(self, ar: nn.Module):
        super().__init__()
        object.__setattr__(self, "ar", ar)  # not registered: its children are, below
        for name, mod in ar.named_children():
            self.add_module(name, mod)
        ar.text_head.requires_grad_(False)
        ar.eval()

    def train(self, mode: bool = True):
        return super().train(False)

    def forward(self, prompts: list[list[int]], codes_BHW: torch.Tensor, sampling: SamplingConfig) -> torch.Tensor:
        return sequence_logprobs(self.ar, prompts, codes_BHW, sampling, keep_drawn=True)


# ------------------------------------------------------------------ rollouts
@dataclasses.dataclass
class Rollouts:
    ids: list[list[int]]          # prompt token ids per row (P*G rows, group-major)
    codes: torch.Tensor           # P*G x h x w
    old_lp: torch.Tensor          # P*G x N, log-probs under the sampling distribution at sampling time
    total: torch.Tensor           # P*G combined rewards
    comps: dict                   # name -> P*G tensor
    adv: torch.Tensor             # P*G (one per rollout) or P*G x N (column credit)
    times: dict                   # sample_s, decode_s, reward_wait_s, reward_cpu_s
    reads: list = dataclasses.field(default_factory=list)  # P*G OCR readings ('' without an OCR reward)
    targets: list = dataclasses.field(default_factory=list)  # P*G strings the prompts ask for
    confs: list | None = None     # P*G per-character probabilities of the readings (ocr_confidence)
    uses: int = 0


def collect_rollouts(ar, batch: list[dict], grid: tuple[int, int], G: int, sampling: SamplingConfig,
                     decode_fn: Callable, pool, gen: torch.Generator, rollout_batch: int, adv_eps: float,
                     scale_rewards: bool = True, credit: Callable | None = None) -> Rollouts:
    """Sample G grids per prompt (whole groups batched up to `rollout_batch` rows per sampler call), decode each
    chunk in one decoder call and hand its groups to the reward pool: their OCR runs in the workers while the next
    chunk is sampled and decoded. Then collect rewards and normalise them per group;
    with `credit` (an xomni.rl.credit.ColumnCredit) the advantages are per token instead."""
    per_call = max(1, rollout_batch // G)
    ids, codes, old_lp, futures, times = [], [], [], [], {"sample_s": 0.0, "decode_s": 0.0}
    for s in range(0, len(batch), per_call):
        chunk = batch[s:s + per_call]
        row_ids = [b["ids"] for b in chunk for _ in range(G)]
        t0 = time.time()
        out = sample_images(ar, row_ids, tuple(grid), sampling, generator=gen)
        times["sample_s"] += time.time() - t0
        t0 = time.time()
        seed = int(torch.randint(0, 2 ** 31 - 1, (1,), generator=gen))
        images = decode_fn(out.codes_BHW, seed)  # the whole chunk in one decoder call
        times["decode_s"] += time.time() - t0
        for j, b in enumerate(chunk):  # OCR of these groups runs in the workers while the next chunk samples
            futures.append(pool.submit(images[j * G:(j + 1) * G], [b["prompt"]] * G, {"text": [b.get("text")] * G}))
        ids.extend(row_ids)
        codes.append(out.codes_BHW)
        old_lp.append(out.logprobs_BN)
    t0 = time.time()
    total, comps, cpu, reads, confs = [], {}, 0.0, [], []
    for f in futures:
        t, c, cs, det = f.result()
        total.extend(t)
        if credit is not None and "ocr" not in det:
            raise XomniError("credit=column needs the OCR reward's readings, and the reward pool returned none")
        reads.extend(det.get("ocr", [""] * len(t)))
        confs.extend(det.get("ocr_confs", [None] * len(t)))
        cpu += cs
        for k, v in c.items():
            comps.setdefault(k, []).extend(v)
    times["reward_wait_s"], times["reward_cpu_s"] = time.time() - t0, cpu
    total_t = torch.tensor(total, dtype=torch.float32)
    targets = [t for t in target_texts([b["prompt"] for b in batch], [b.get("text") for b in batch]) for _ in range(G)]
    confs = None if any(c is None for c in confs) else confs
    if credit is None:
        adv = group_advantages(total_t.view(-1, G), adv_eps, scale_rewards).reshape(-1)
    else:
        adv = credit(total, comps, reads, targets, G, tuple(grid), confs)
    return Rollouts(ids=ids, codes=torch.cat(codes), old_lp=torch.cat(old_lp), total=total_t,
                    comps={k: torch.tensor(v) for k, v in comps.items()}, adv=adv, times=times, reads=reads,
                    targets=targets, confs=confs)


def passes_per_group(ro: Rollouts, G: int) -> list[int]:
    """Rollouts per group that OCR read exactly right (with ocr_confidence the OCR reward stays below 1 even
    then); without an OCR reward, those whose combined reward is 1."""
    ok = read_exactly(ro.reads, ro.targets) if "ocr" in ro.comps else ro.total >= 1.0
    return ok.view(-1, G).sum(-1).tolist()


def rest_selection(total_PG: torch.Tensor, min_reward: float) -> torch.Tensor:
    """ReST / RAFT filter, P*G weights: 1 for each group's best-of-N pick (`pick_best`, the rule best-of-N uses)
    when its reward is >= min_reward, else 0."""
    P, G = total_PG.shape
    w = torch.zeros(P, G)
    for p, b in enumerate(pick_best(total_PG)):
        w[p, b] = float(total_PG[p, b] >= min_reward)
    return w.reshape(-1)


# ------------------------------------------------------------------ the loss_fn
class GRPOLoss:
    """`loss_fn(model, batch, gen)` for xomni.train.run_training; `model` is a PolicyLogprobs, maybe DDP-wrapped.
    batch: list of {"prompt": str, "ids": [int], "text": str | None}; `grid` = (h, w) of the token grids, with
    `levels` codes per patch side by side (the image tokenizer's; column credit gives a patch's codes one reward);
    `decode_fn(codes_BHW, seed) -> list of PIL images`; `pool`: a RewardPool (or anything with that submit())."""

    def __init__(self, cfg, reference: nn.Module, decode_fn: Callable, pool, grid: tuple[int, int], world: int = 1,
                 levels: int = 1):
        self.cfg, self.ref, self.decode_fn, self.pool, self.world = cfg, reference, decode_fn, pool, world
        self.grid = tuple(grid)
        self.credit = None
        if effective_credit(cfg) == "column" and cfg.algo == "grpo":
            self.credit = ColumnCredit(cfg.rewards, cfg.preset, cfg.adv_eps, cfg.scale_rewards, levels)
        self.cache: Rollouts | None = None
        self.prompt_pool, self.rows = None, None
        self._t_end: float | None = None
        self._warned = False

    def __call__(self, model, batch: list[dict], gen: torch.Generator) -> tuple[torch.Tensor, dict]:
        cfg = self.cfg
        t_start = time.time()
        prev_update = t_start - self._t_end if self._t_end is not None else 0.0  # last step's backward + opt step
        ar = unwrap(model).ar
        fresh = self.cache is None or self.cache.uses >= cfg.inner_epochs
        if fresh:
            if self.prompt_pool is not None:  # this step's prompts come from the pool, not the loop's order
                batch = [self.rows[i] for i in self.prompt_pool.draw(len(batch), gen)]
            self.cache = collect_rollouts(ar, batch, self.grid, cfg.group_size, cfg.sampling, self.decode_fn,
                                          self.pool, gen, cfg.rollout_batch, cfg.adv_eps, cfg.scale_rewards,
                                          credit=self.credit)
            if cfg.algo == "rest":
                self.cache.adv = rest_selection(self.cache.total.view(-1, cfg.group_size), cfg.rest_min_reward)
            if self.prompt_pool is not None:
                self.prompt_pool.update([b["idx"] for b in batch], passes_per_group(self.cache, cfg.group_size),
                                        cfg.group_size)
        ro = self.cache
        ro.uses += 1
        t_fwd = time.time()
        keep = self._rows_to_train(ro)
        ids, codes = [ro.ids[i] for i in keep], ro.codes[keep]
        denom = ro.old_lp.numel()  # every rollout's tokens, trained or not: accumulation stays exact
        if cfg.algo == "rest":  # fine-tune on the kept rollouts under the raw model (SFT on filtered samples)
            lp = model(ids, codes, RAW_SAMPLING)
            w = ro.adv[keep].to(lp.device)
            loss = -(lp * w[:, None]).sum() / denom
            st = {"rest_kept": float(w.sum()) / (len(ro.ids) // cfg.group_size)}
        else:
            sub = dataclasses.replace(ro, ids=ids, codes=codes)
            ref_lp = self._no_grad_chunks(self.ref, sub, need_entropy=False)[0]
            lp = model(ids, codes, cfg.sampling)
            loss, st = grpo_token_loss(lp, ro.old_lp[keep].to(lp.device), ref_lp.to(lp.device), ro.adv[keep],
                                       cfg.clip_eps, cfg.beta, denom=denom)
        st["trained_frac"] = len(keep) / len(ro.ids)
        if fresh:
            if cfg.exact_entropy:
                st["entropy"] = self._no_grad_chunks(ar, ro, need_entropy=True)[1].mean().item()
            else:
                st["entropy"] = (-ro.old_lp).mean().item()
            st["ratio_dev_first"] = st.get("ratio_max_dev", 0.0)
            if st.get("ratio_max_dev", 0.0) > 1e-3 and not self._warned:
                self._warned = True
                log(f"[rl] warning: at the first inner step the policy/sampler ratio deviates from 1 by "
                    f"{st['ratio_max_dev']:.2e}: the loss log-probs are not those of the sampling distribution")
        t_end = time.time()
        m = {"reward": ro.total.mean().item(), "reward_max": ro.total.max().item(), **st,
             "adv_abs": ro.adv.abs().mean().item(),
             "zero_std_groups": (ro.total.view(-1, cfg.group_size).std(-1) == 0).float().mean().item()}
        for k, v in ro.comps.items():
            m[f"reward_{k}"], m[f"reward_{k}_max"] = v.mean().item(), v.max().item()
        times = dict(ro.times) if fresh else {"sample_s": 0.0, "decode_s": 0.0, "reward_wait_s": 0.0,
                                               "reward_cpu_s": 0.0}
        times["update_s"] = (t_end - t_fwd) + prev_update
        wall = sum(v for k, v in times.items() if k != "reward_cpu_s") or 1e-9
        for k in ("sample", "decode", "reward_wait", "update"):
            m[f"share_{k}"] = times[f"{k}_s"] / wall
        m.update({k: v for k, v in times.items()})
        if fresh:  # rollouts per second of collection (sampling + decoding + waiting for rewards)
            m["rollouts_per_s"] = len(ro.ids) / max(1e-9, times["sample_s"] + times["decode_s"] + times["reward_wait_s"])
        if self.prompt_pool is not None:
            m["pool_mean_pass"] = self.prompt_pool.mean_pass()
        m["tokens"] = float(ro.old_lp.numel())
        m = self._reduce(m)
        self._t_end = time.time()
        return loss, m

    def _rows_to_train(self, ro: Rollouts) -> list[int]:
        """Rows of the gradient-carrying pass: with skip_flat (grpo) or for rest, the rollouts with a non-zero
        advantage / selection weight; at least one row, so that every rank runs a backward."""
        if self.cfg.algo == "grpo" and not self.cfg.skip_flat:
            return list(range(len(ro.ids)))
        live = ro.adv.reshape(len(ro.ids), -1).abs().amax(-1) > 0
        return [i for i in range(len(ro.ids)) if live[i]] or [0]

    @torch.no_grad()
    def _no_grad_chunks(self, net, ro: Rollouts, need_entropy: bool):
        lps, ents = [], []
        n = self.cfg.rollout_batch
        for s in range(0, len(ro.ids), n):
            if need_entropy:
                lp, ent = sampling_distribution_stats(net, ro.ids[s:s + n], ro.codes[s:s + n], self.cfg.sampling)
                ents.append(ent)
            else:
                lp = sequence_logprobs(net, ro.ids[s:s + n], ro.codes[s:s + n], self.cfg.sampling, keep_drawn=True)
            lps.append(lp)
        return torch.cat(lps), (torch.cat(ents) if ents else None)

    def _reduce(self, m: dict) -> dict:
        """Average metrics over ranks (max for *_max and ratio deviations) so rank 0 logs the global numbers."""
        if self.world <= 1 or not dist.is_initialized():
            return m
        keys = sorted(k for k in m if k != "tokens")
        is_max = [k.endswith("_max") or "ratio" in k for k in keys]
        mean_t = torch.tensor([0.0 if mx else float(m[k]) for k, mx in zip(keys, is_max)], dtype=torch.float64)
        max_t = torch.tensor([float(m[k]) if mx else -1e30 for k, mx in zip(keys, is_max)], dtype=torch.float64)
        if torch.cuda.is_available():
            mean_t, max_t = mean_t.cuda(), max_t.cuda()
        dist.all_reduce(mean_t)
        dist.all_reduce(max_t, op=dist.ReduceOp.MAX)
        out = {k: (float(max_t[i]) if mx else float(mean_t[i]) / self.world) for i, (k, mx) in
               enumerate(zip(keys, is_max))}
        out["tokens"] = m["tokens"]
        return out
