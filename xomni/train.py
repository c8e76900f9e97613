"""The one training loop every xomni trainer uses (tokenizer, decoder, AR, judge, RL).

Read it top to bottom: `run_training` sets up distributed state, the optimizer and the schedule, restores a
checkpoint if asked, then loops: global batch of this step -> loss -> backward -> NaN guard -> clip -> step ->
log -> checkpoint.

Exactness on resume: the global batch at step s is a pure function of (seed, s) (a seeded permutation per epoch),
per-step randomness comes from a generator seeded by (seed, step, rank), and checkpoints hold the model, the
optimizer, the schedule, the step and the RNG states. A run killed at any point (even while writing a checkpoint)
and resumed with `--resume auto` ends with bitwise-identical parameters to an uninterrupted run (deterministic mode).
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import math
import os
import random
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.distributed as dist

from xomni import fsdp as F
from xomni.checkpoint import (find_latest_checkpoint, load_checkpoint, load_model_weights, save_checkpoint,
                              save_model_dir)
from xomni.cliargs import max_threads
from xomni.config import field, in_range, to_dict
from xomni.errors import XomniError
from xomni.utils import atomic_write_text, log, resolve_device


@dataclasses.dataclass
class TrainConfig:
    out_dir: str = field("runs/train", help="Directory for checkpoints/, log.jsonl and final/.")
    steps: int = field(1000, help="Total optimizer steps (with budget_s: the most steps).")
    budget_s: float = field(0.0, help="Wall-clock seconds for this run's training steps (0 = off): the loop times "
                                      "its steps 5 to 25 and sets `steps` so that the cosine schedule ends on time "
                                      "(10 % kept in hand for checkpoints and evaluations). A resumed run gets the "
                                      "budget again for its remaining steps.")
    batch_size: int = field(32, help="Global batch size (split evenly across ranks under torchrun).")
    grad_accum: int = field(1, help="Micro-batches per optimizer step: each rank's share of the batch is split into "
                                    "this many equal parts, each with its own forward and backward (loss / k), so a "
                                    "big batch fits in memory; batch_size must divide by world size x grad_accum.")
    lr: float = field(1e-3, help="Peak learning rate (AdamW).")
    min_lr_ratio: float = field(0.1, help="Final learning rate as a fraction of `lr` at the end of the cosine decay.")
    warmup_steps: int = field(100, help="Linear warm-up steps from 0 to `lr`.")
    weight_decay: float = field(0.01, help="AdamW decoupled weight decay (applied to tensors with >= 2 dims only).")
    beta1: float = field(0.9, help="AdamW beta1.")
    beta2: float = field(0.95, help="AdamW beta2.")
    eps: float = field(1e-8, help="AdamW epsilon.")
    grad_clip: float = field(1.0, help="Clip the global gradient norm to this value (0 disables clipping).")
    seed: int = field(0, help="Seed for parameter init, data order and per-step randomness.")
    deterministic: bool = field(False, help="Deterministic CPU mode: torch.use_deterministic_algorithms(True).")
    num_threads: int = field(0, help="torch intra-op threads per process (0 = leave torch's default).")
    log_every: int = field(10, help="Write a log.jsonl line every N steps.")
    ckpt_every: int = field(200, help="Write a checkpoint every N steps (0 = only at the end).")
    keep_last: int = field(2, help="Keep only the last K checkpoints.")
    max_bad_steps: int = field(20, help="Abort after this many steps with a NaN/inf loss or gradient (they are skipped).")
    eval_every: int = field(0, help="Run the trainer's evaluation hook every N steps (0 = never).")
    progress: bool = field(True, help="Show a progress bar on stderr (rank 0).")
    device: str = field("auto", help="auto (CUDA when available, else CPU; under torchrun cuda:LOCAL_RANK), cpu, "
                                     "cuda or cuda:N. The model is moved there before training.")
    precision: str = field("fp32", help="fp32, or bf16: the loss is computed under bfloat16 autocast (parameters, "
                                        "gradients and optimizer state stay fp32). On CPUs without AMX bf16 is "
                                        "slower than fp32.")

    parallel: str = field("ddp", help="How several processes (torchrun) share the training: ddp (every rank holds "
                                      "the whole model, gradients are all-reduced) or fsdp (torch's fully_shard: "
                                      "each rank holds 1/N of the parameters, gradients and Adam states; each "
                                      "transformer block is all-gathered for its forward and backward only; "
                                      "checkpoints are sharded, see xomni/fsdp.py). One process: ignored.")
    fsdp_mixed_precision: str = field("fp32", help="fsdp only: fp32, or bf16 (parameters all-gathered and computed "
                                                   "in bfloat16, gradients reduced and stored in fp32).")
    activation_checkpointing: bool = field(False, help="Recompute each transformer block's activations in backward "
                                                       "instead of keeping them (less memory, one more forward per "
                                                       "block); any of one process, ddp, fsdp.")

    def check(self, where: str = "train") -> "TrainConfig":
        """Ranges of every field (called when a config is loaded and by run_training): one line before any work.
        steps may be 0 here (the recipe's "no RL stage"); run_training itself needs steps >= 1."""
        for name in ("steps", "warmup_steps", "ckpt_every", "max_bad_steps", "eval_every"):
            in_range(self, where, name, 0)
        in_range(self, where, "budget_s", 0)
        for name in ("batch_size", "grad_accum", "log_every", "keep_last"):
            in_range(self, where, name, 1)
        in_range(self, where, "lr", 0, lo_open=True)
        in_range(self, where, "eps", 0, lo_open=True)
        in_range(self, where, "min_lr_ratio", 0, 1)
        in_range(self, where, "weight_decay", 0)
        in_range(self, where, "grad_clip", 0)
        in_range(self, where, "beta1", 0, 1, hi_open=True)
        in_range(self, where, "beta2", 0, 1, hi_open=True)
        in_range(self, where, "seed", 0, 2 ** 32 - 1)
        in_range(self, where, "num_threads", 1, max_threads(), zero="torch's default")
        if self.parallel not in ("ddp", "fsdp"):
            raise XomniError(f"config {where}.parallel must be ddp or fsdp, got {self.parallel!r}")
        if self.fsdp_mixed_precision not in ("fp32", "bf16"):
            raise XomniError(f"config {where}.fsdp_mixed_precision must be fp32 or bf16, got "
                             f"{self.fsdp_mixed_precision!r}")
        if self.precision not in ("fp32", "bf16"):
            raise XomniError(f"config {where}.precision must be fp32 or bf16, got {self.precision!r}")
        if not str(self.out_dir).strip():
            raise XomniError(f"config {where}.out_dir is empty")
        return self


# ----------------------------------------------------------------------------------------------------------------
# distributed helpers

def dist_info() -> tuple[int, int]:
    """(rank, world_size); initialises the process group under torchrun: gloo on a CPU-only machine; with CUDA,
    gloo for CPU tensors and nccl for CUDA tensors (so that `train.device=cpu` also works there)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend)
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if torch.cuda.is_available() and local < torch.cuda.device_count():  # more ranks than GPUs: CPU ranks
            torch.cuda.set_device(local)
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "module") else model


def _all_reduce_mean(x: torch.Tensor, world: int) -> torch.Tensor:
    if world > 1:
        x = x.clone()
        dist.all_reduce(x)
        x /= world
    return x


# ----------------------------------------------------------------------------------------------------------------
# data order: the global batch of step s is a pure function of (seed, s)

@functools.lru_cache(maxsize=2)
def _epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The seeded permutation of epoch `epoch` (cached: drawing a permutation of a large dataset anew every step
    costs a visible share of a fast GPU step)."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))


def global_batch_indices(n: int, batch_size: int, step: int, seed: int) -> list[int]:
    """Indices of the global batch at `step`: consecutive slices of a per-epoch seeded permutation."""
    if n <= 0:
        raise XomniError("the training dataset is empty")
    out: list[int] = []
    pos = step * batch_size
    while len(out) < batch_size:
        epoch, offset = divmod(pos, n)
        perm = _epoch_permutation(n, seed, epoch)
        take = min(batch_size - len(out), n - offset)
        out.extend(perm[offset:offset + take].tolist())
        pos += take
    return out


def rank_slice(indices: list[int], rank: int, world: int) -> list[int]:
    """This rank's contiguous share of the global batch (ranks read disjoint samples)."""
    per = len(indices) // world
    return indices[rank * per:(rank + 1) * per]


def step_generator(seed: int, step: int, rank: int) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 7_919 + step * 104_729 + rank * 15_485_863) % (2 ** 63))


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to lr * min_lr_ratio at `steps`."""
    if cfg.warmup_steps > 0 and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    span = max(1, cfg.steps - cfg.warmup_steps)
    t = min(1.0, (step - cfg.warmup_steps) / span)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t)))


PROBE = (5, 25)  # budget_s: the steps of a run (counted from its start) between which the step time is measured


def budget_steps(cfg: TrainConfig, step: int, per_step: float, elapsed_s: float, world: int,
                 device: torch.device) -> int:
    """The total steps that end a run on its budget: `step` steps done at `per_step` seconds each (timed over
    PROBE), `elapsed_s` seconds of the budget spent. Every rank takes the smallest answer (one schedule)."""
    left = cfg.budget_s * 0.9 - elapsed_s
    want = torch.tensor([float(min(cfg.steps, step + max(1, int(left / max(per_step, 1e-9)))))], device=device)
    if world > 1:
        dist.all_reduce(want, op=dist.ReduceOp.MIN)
    return int(want.item())


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if p.requires_grad:
            (decay if p.dim() >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)


def default_collate(samples: list) -> Any:
    if isinstance(samples[0], dict):
        return {k: default_collate([s[k] for s in samples]) for k in samples[0]}
    if isinstance(samples[0], torch.Tensor):
        return torch.stack(samples)
    if isinstance(samples[0], (tuple, list)):
        return type(samples[0])(default_collate(list(x)) for x in zip(*samples))
    if isinstance(samples[0], (int, float)):
        return torch.tensor(samples)
    return samples


# ----------------------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class TrainResult:
    model: torch.nn.Module
    step: int
    bad_steps: int
    last_metrics: dict
    out_dir: Path


def run_training(cfg: TrainConfig, model: torch.nn.Module, dataset: Any,
                 loss_fn: Callable[[torch.nn.Module, Any, torch.Generator], tuple[torch.Tensor, dict]], *,
                 collate: Callable[[list], Any] | None = None, config_dict: dict | None = None,
                 init: str | None = None, init_keep_fresh: tuple[str, ...] = (), resume: str | None = None,
                 eval_fn: Callable[[torch.nn.Module, int], dict] | None = None,
                 flops_per_token: float | None = None, peak_flops: float | None = None,
                 extra_files: dict[str, str] | None = None, move_batch: bool = True,
                 extra_state: Any = None, save_final: Callable[[Path, torch.nn.Module], None] | None = None,
                 unshard_for_loss: bool = False) -> TrainResult:
    """Train `model` on `dataset` (map-style: len + __getitem__) with `loss_fn(model, batch, gen)`.

    `config_dict` is saved next to the weights (final/config.json) so the model can be rebuilt. `init` loads
    model weights only (a model dir or a .safetensors file), except the tensors named in `init_keep_fresh`;
    `resume` is "auto" (latest checkpoint in out_dir, or a fresh start when there is none) or a checkpoint
    directory. Inside `loss_fn`, call `model(...)` (it may be DDP-wrapped); use `xomni.train.unwrap(model)` for
    attribute access. If the metrics dict has "tokens", tokens/s (and MFU when `flops_per_token` and `peak_flops`
    are given) are logged. `move_batch=False` leaves the collated
    batch on the CPU for a loss function that builds its inputs there and moves them itself (the AR trainer: moving
    256 small code grids one by one to a GPU and reading them back cost as much as the step).
    `save_final(dir, model)` writes final/ instead of the full model directory (a LoRA run writes its adapter).
    Under `train.parallel=fsdp` the loop trains a sharded copy (xomni.fsdp) and copies the weights back into
    `model` at the end; `unshard_for_loss` all-gathers every parameter before `loss_fn` runs (for a loss that
    samples through the modules' weights outside their forward, as GRPO's rollouts do).
    """
    cfg.check()
    check_run_dir(cfg.out_dir, resume)
    rank, world = dist_info()
    if cfg.num_threads > 0:
        torch.set_num_threads(cfg.num_threads)
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True)
    if cfg.batch_size % (world * cfg.grad_accum):  # ranges were checked by cfg.check()
        raise XomniError(f"batch_size {cfg.batch_size} is not divisible by world size x grad_accum "
                         f"({world} x {cfg.grad_accum})")
    if cfg.steps <= 0:
        raise XomniError(f"steps must be > 0, got {cfg.steps}")
    device = resolve_device(cfg.device)
    collate = collate or default_collate
    out = Path(cfg.out_dir)
    ckpt_root = out / "checkpoints"
    if rank == 0:
        try:
            ckpt_root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise XomniError(f"cannot create output directory {out}: {e.strerror}") from None
    n = len(dataset)
    model.to(device)

    if init:
        load_model_weights(model, init, keep_fresh=init_keep_fresh)
        if rank == 0:
            kept = f" (kept fresh: {', '.join(init_keep_fresh)})" if init_keep_fresh else ""
            log(f"[train] initialised weights from {init}{kept}")
    fsdp = world > 1 and cfg.parallel == "fsdp"
    net = model  # the module that trains: the model itself, or its sharded copy under FSDP
    if fsdp:
        net = F.shard(model, device, cfg.fsdp_mixed_precision, cfg.activation_checkpointing)
        F.release(model)
    elif cfg.activation_checkpointing:
        F.apply_activation_checkpointing(model)
    optimizer = make_optimizer(net, cfg)
    start_step, bad_steps = 0, 0
    if resume:
        ck = find_latest_checkpoint(ckpt_root) if resume == "auto" else Path(resume)
        if ck is None:
            if rank == 0:
                log(f"[train] --resume auto: no checkpoint in {ckpt_root}, starting from step 0")
        else:
            if fsdp:
                state = F.load_sharded_checkpoint(ck, net, optimizer, rank, world)
            elif F.is_sharded_checkpoint(ck):
                raise XomniError(f"{ck} is a sharded (FSDP) checkpoint: resume it with train.parallel=fsdp and "
                                 f"the same number of processes, or consolidate it (xomni train consolidate)")
            else:
                state = load_checkpoint(ck, model, optimizer)
            start_step, bad_steps = state["step"], state.get("bad_steps", 0)
            if extra_state is not None and "extra_state" in state:
                extra_state.load_state_dict(state["extra_state"])
            if rank == 0:
                log(f"[train] resumed from {ck} at step {start_step}")
            _truncate_log(out / "log.jsonl", start_step)

    ddp_model = net
    if world > 1 and not fsdp:
        from torch.nn.parallel import DistributedDataParallel as DDP
        ddp_model = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)

    bar = None
    if rank == 0 and cfg.progress:
        from tqdm import tqdm
        bar = tqdm(total=cfg.steps, initial=start_step, file=sys.stderr, desc=out.name, dynamic_ncols=True,
                   mininterval=1.0)
    logf = open(out / "log.jsonl", "a") if rank == 0 else None
    metrics: dict = {}
    t_last, tokens_acc, warned_mfu = time.time(), 0.0, False
    step = start_step
    t_run, t_probe = time.time(), 0.0
    stop = _StopSignals()
    try:
        while step < cfg.steps:
            lr = lr_at(step, cfg)
            for g in optimizer.param_groups:
                g["lr"] = lr
            idx = rank_slice(global_batch_indices(n, cfg.batch_size, step, cfg.seed), rank, world)
            gen = step_generator(cfg.seed, step, rank)
            torch.manual_seed(gen.initial_seed())  # dropout etc. also reproducible per step
            net.train()
            optimizer.zero_grad(set_to_none=True)
            loss, m, finite = _accumulate(cfg, ddp_model, dataset, idx, collate, loss_fn, gen, device, world,
                                          move_batch, fsdp, unshard_for_loss)
            if fsdp:
                F.reshard_all(net)  # units left gathered (unshard_for_loss, a skipped backward) drop their copies
            gnorm = torch.tensor(0.0)
            if finite.item() > 0:
                params = [p for p in net.parameters() if p.grad is not None]
                if cfg.grad_clip > 0:
                    gnorm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                    gnorm = gnorm.full_tensor() if hasattr(gnorm, "full_tensor") else gnorm
                else:
                    gnorm = torch.norm(torch.stack([p.grad.detach().norm() for p in params])) if params else gnorm
                if not torch.isfinite(gnorm):
                    finite = torch.tensor([0.0])
            if finite.item() > 0:
                optimizer.step()
            else:
                optimizer.zero_grad(set_to_none=True)
                bad_steps += 1
                if rank == 0:
                    log(f"[train] step {step}: non-finite loss or gradient, step skipped ({bad_steps} so far)")
                if bad_steps >= cfg.max_bad_steps:
                    raise XomniError(f"training aborted at step {step}: {bad_steps} steps had a NaN/inf loss or "
                                     f"gradient (max_bad_steps={cfg.max_bad_steps}); lower the learning rate or "
                                     f"check the data; last checkpoint is in {ckpt_root}")
            step += 1
            if cfg.budget_s and step - start_step == PROBE[0]:
                t_probe = time.time()
            elif cfg.budget_s and step - start_step == PROBE[1]:
                now = time.time()
                per_step = (now - t_probe) / (PROBE[1] - PROBE[0])
                cfg = dataclasses.replace(cfg, steps=budget_steps(cfg, step, per_step, now - t_run, world, device))
                if rank == 0:
                    log(f"[train] budget {cfg.budget_s:g} s: {per_step:.4f} s/step, training to step {cfg.steps}")
                if bar is not None:
                    bar.total = cfg.steps
                    bar.refresh()
            tokens_acc += float(m.get("tokens", 0.0)) * world
            if step % cfg.log_every == 0 or step == cfg.steps:
                loss_avg = _all_reduce_mean(loss.detach().float().reshape(1), world).item()
            if rank == 0 and (step % cfg.log_every == 0 or step == cfg.steps):
                dt = max(1e-9, time.time() - t_last)
                metrics = {"step": step, "loss": loss_avg, "lr": lr, "grad_norm": float(gnorm), "bad_steps": bad_steps}
                metrics.update({k: float(v) for k, v in m.items() if k != "tokens"})
                if tokens_acc:
                    metrics["tokens_per_s"] = tokens_acc / dt
                    if flops_per_token and peak_flops:
                        metrics["mfu"] = tokens_acc / dt * flops_per_token / peak_flops
                        if metrics["mfu"] > 1.0 and not warned_mfu:
                            warned_mfu = True
                            log(f"[train] warning: MFU {metrics['mfu']:.2f} > 1: the peak it is divided by "
                                f"({peak_flops / 1e9:.0f} GFLOP/s, measured at start) is below the rate achieved "
                                f"(measured under other load, on another device than the model's, or per process "
                                f"while tokens count all ranks); the logged MFU is not a utilisation")
                metrics["time"] = time.time()
                logf.write(json.dumps(metrics) + "\n")
                logf.flush()
                t_last, tokens_acc = time.time(), 0.0
                if bar is not None:
                    bar.set_postfix(loss=f"{loss_avg:.4f}")
            if bar is not None:
                bar.update(1)
            if eval_fn is not None and cfg.eval_every and step % cfg.eval_every == 0:
                if fsdp:
                    F.gather_into(model, net)  # every rank takes part; rank 0 evaluates the whole model
                if rank == 0:
                    ev = eval_fn(model, step)
                    logf.write(json.dumps({"step": step, "eval": ev}) + "\n")
                    logf.flush()
                if fsdp:
                    dist.barrier()
                    F.release(model)
            stopping = stop.requested(world, device)
            if (cfg.ckpt_every and step % cfg.ckpt_every == 0) or step == cfg.steps or stopping:
                ck_state = {"step": step, "bad_steps": bad_steps, "config": config_dict or {}, "train": to_dict(cfg),
                            "world_size": world,
                            **({"extra_state": extra_state.state_dict()} if extra_state is not None else {})}
                if fsdp:
                    F.save_sharded_checkpoint(ckpt_root, step, net, optimizer, ck_state, rank, world,
                                              keep_last=cfg.keep_last)
                elif rank == 0:
                    save_checkpoint(ckpt_root, step, model, optimizer, ck_state, keep_last=cfg.keep_last)
                if world > 1:
                    dist.barrier()
            if stopping:
                if rank == 0:
                    log(f"[train] stopped by {stop.name} after step {step}: checkpoint saved in {ckpt_root}; "
                        f"continue with --resume auto")
                raise SystemExit(128 + stop.signum)
    finally:
        stop.restore()
        if bar is not None:
            bar.close()
        if logf is not None:
            logf.close()
    if fsdp:
        F.gather_into(model, net)  # the trained weights, whole, back in the caller's model on every rank
        del net, ddp_model, optimizer
    if rank == 0:
        if save_final is not None:
            save_final(out / "final", model)
        else:
            save_model_dir(out / "final", model, config_dict or {}, extra_files=extra_files)
    if world > 1:
        dist.barrier()
    return TrainResult(model=model, step=step, bad_steps=bad_steps, last_metrics=metrics, out_dir=out)


def _accumulate(cfg: TrainConfig, ddp_model, dataset, idx: list[int], collate, loss_fn, gen, device, world: int,
                move_batch: bool, fsdp: bool = False, unshard_for_loss: bool = False):
    """Forward + backward of this rank's indices in cfg.grad_accum equal micro-batches (loss / k each; DDP syncs
    gradients on the last only). Returns (mean loss, mean metrics with summed "tokens", all-ranks finite flag);
    after a non-finite micro-batch nothing more is run and the step is skipped."""
    k = cfg.grad_accum
    size = len(idx) // k
    losses, ms, finite = [], [], torch.tensor([1.0])
    for j in range(k):
        batch = collate([dataset[i] for i in idx[j * size:(j + 1) * size]])
        if move_batch:
            batch = _to_device(batch, device)
        if fsdp and unshard_for_loss:
            F.unshard_all(ddp_model)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16"):
            loss, m = loss_fn(ddp_model, batch, gen)
        # agree across ranks before backward (DDP all-reduces inside backward)
        ok = torch.tensor([1.0 if torch.isfinite(loss).all() else 0.0], device=device)
        finite = _all_reduce_min(ok, world)
        losses.append(loss.detach())
        ms.append(m)
        if finite.item() <= 0:
            break
        if fsdp:
            ddp_model.set_requires_gradient_sync(j == k - 1)  # reduce-scatter on the last micro-batch only
            sync = contextlib.nullcontext()
        else:
            sync = contextlib.nullcontext() if (j == k - 1 or world == 1) else ddp_model.no_sync()
        with sync:
            (loss / k).backward()
    m = {key: (sum(float(x.get(key, 0.0)) for x in ms) if key == "tokens" else
               sum(float(x[key]) for x in ms if key in x) / sum(1 for x in ms if key in x))
         for key in dict.fromkeys(kk for x in ms for kk in x)}
    return torch.stack([x.float().reshape(()) for x in losses]).mean(), m, finite


def check_run_dir(out_dir: str | Path, resume: str | None) -> None:
    """A fresh run (no --resume) never writes into a directory that holds another run: its final/ would be replaced,
    log.jsonl would interleave two runs and keep_last could delete the new checkpoints. Under torchrun rank 0 alone
    decides (its exit stops the others): a rank that starts late would find the log rank 0 has begun writing."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise XomniError(f"output directory {out} is a file")
    if resume is not None or not out.is_dir() or int(os.environ.get("RANK", "0")) != 0:
        return
    ck = out / "checkpoints"
    held = [name for name, hit in (("final/", (out / "final").exists()), ("log.jsonl", (out / "log.jsonl").exists()),
                                   ("checkpoints/", ck.is_dir() and any(ck.iterdir()))) if hit]
    if held:
        raise XomniError(f"output directory {out} already holds a run ({', '.join(held)}); pass --resume auto to "
                         f"continue it from its latest checkpoint, or choose a new --out")


def time_steps(cfg: TrainConfig, model: torch.nn.Module, dataset: Any, loss_fn, *, steps: int = 20,
               warmup: int = 5, **run_kw) -> float:
    """Median seconds per step of `run_training` itself (its batch handling, device and precision) over `steps`
    steps after `warmup`, on a copy of `model` in a temporary directory: `model` and `cfg.out_dir` are untouched.
    `run_kw` are run_training's keyword arguments (collate, move_batch, ...), as the real run will use them."""
    import copy
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        c = dataclasses.replace(cfg, out_dir=d, steps=warmup + steps, log_every=1, ckpt_every=0, eval_every=0,
                                progress=False)
        run_training(c, copy.deepcopy(model), dataset, loss_fn, **run_kw)
        t = [json.loads(line)["time"] for line in (Path(d) / "log.jsonl").read_text().splitlines()]
    dts = sorted(b - a for a, b in zip(t[warmup:], t[warmup + 1:]))
    return dts[len(dts) // 2]


class _StopSignals:
    """SIGTERM/SIGINT during training: finish the current step, write a checkpoint, exit with 128 + signal
    (no work lost; `--resume auto` continues). Under torchrun the ranks agree by an all-reduce each step."""

    def __init__(self):
        import signal
        self.signum, self.old = 0, {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self.old[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, frame):
        self.signum = signum

    @property
    def name(self) -> str:
        import signal
        return signal.Signals(self.signum).name if self.signum else ""

    def requested(self, world: int, device: torch.device | None = None) -> bool:
        if world > 1:
            x = torch.tensor([float(self.signum)], device=device)
            dist.all_reduce(x, op=dist.ReduceOp.MAX)
            self.signum = int(x.item())
        return self.signum != 0

    def restore(self) -> None:
        import signal
        for sig, handler in self.old.items():
            signal.signal(sig, handler)
        self.old = {}


def _all_reduce_min(x: torch.Tensor, world: int) -> torch.Tensor:
    if world > 1:
        x = x.clone()
        dist.all_reduce(x, op=dist.ReduceOp.MIN)
    return x


def _to_device(batch: Any, device: torch.device) -> Any:
    if device.type == "cpu":
        return batch
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: _to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to_device(v, device) for v in batch)
    return batch


def _truncate_log(path: Path, step: int) -> None:
    """Drop log lines written after the checkpoint we resume from (they will be written again)."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line).get("step", 0) <= step:
                keep.append(line)
        except json.JSONDecodeError:
            continue  # a line cut by a kill
    atomic_write_text(path, "".join(k + "\n" for k in keep))


def remove_dir(p: Path) -> None:
    shutil.rmtree(p, ignore_errors=True)
