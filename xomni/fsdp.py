"""FSDP for the shared training loop (`train.parallel=fsdp` under torchrun): torch's `fully_shard`, sharded
checkpoints, and their consolidation to the usual safetensors.

How the loop uses it (xomni.train.run_training):
  * `shard(model)` shards a deep copy of the model ("work"): each block of every nn.ModuleList (the transformer
    layers) is one FSDP unit, the rest (embeddings, heads, norms) the root unit. Each rank keeps 1/N of every
    parameter, gradient and Adam state; a unit's parameters are all-gathered for its forward and backward only.
    The caller's model keeps its module objects but gives up its parameter storage (`release`) until
    `gather_into` copies the trained weights back (for an evaluation hook and at the end), so references a trainer
    holds (a pipeline's AR model, say) see the trained weights afterwards.
  * A sharded checkpoint is one directory, as the usual ones are, with one file set per rank::

        checkpoints/step-0000100/
            model-rank00000.safetensors       this rank's shard of every parameter (+ the buffers)
            optimizer-rank00000.safetensors   this rank's shard of every Adam state
            rng-rank00000.safetensors         this rank's torch RNG state
            shards-rank00000.json             per tensor: global shape and the first row this rank holds
            state.json                        written last by rank 0 (format xomni-checkpoint-fsdp-v1)

    Resuming needs the same number of ranks (the shards are rows of dim 0, as fully_shard cuts them);
    `consolidate` (also `xomni train consolidate`) stitches the ranks' rows back into one model.safetensors.
"""
from __future__ import annotations

import copy
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any, Optional

import torch
import torch.distributed as dist
import torch.nn as nn
import typer

from xomni.checkpoint import (CKPT_PREFIX, _fsync_dir, _restore_rng, _rng_state, load_optimizer_state,
                              publish_checkpoint, read_json, read_safetensors, replace_dir)
from xomni.cliargs import JsonOpt, OverwriteOpt, _cb, check_in_dir, check_out_dir, refuse_existing
from xomni.errors import XomniError
from xomni.utils import emit_json

FORMAT = "xomni-checkpoint-fsdp-v1"


def _rank_file(kind: str, rank: int, ext: str = "safetensors") -> str:
    return f"{kind}-rank{rank:05d}.{ext}"


def blocks(model: nn.Module) -> list[nn.Module]:
    """The repeated blocks of a model: the children of every nn.ModuleList (transformer layers)."""
    out = []
    for m in model.modules():
        if isinstance(m, nn.ModuleList):
            out.extend(m)
    return out


def apply_activation_checkpointing(model: nn.Module) -> int:
    """Recompute each block's activations in backward instead of storing them (torch's composable checkpoint:
    parameter names are unchanged, so checkpoints stay interchangeable). Returns the number of blocks."""
    from torch.distributed._composable import checkpoint
    bl = blocks(model)
    for b in bl:
        checkpoint(b)
    return len(bl)


def shard(model: nn.Module, device: torch.device, mixed_precision: str = "fp32",
          activation_checkpointing: bool = False) -> nn.Module:
    """A fully_shard-ed deep copy of `model` (on `device`) over all ranks of the default process group."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
    work = copy.deepcopy(model)
    if activation_checkpointing:
        apply_activation_checkpointing(work)
    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) \
        if mixed_precision == "bf16" else MixedPrecisionPolicy()
    for b in blocks(work):
        if any(True for _ in b.parameters()):
            fully_shard(b, mesh=mesh, mp_policy=mp)
    fully_shard(work, mesh=mesh, mp_policy=mp)
    return work


def units(work: nn.Module) -> list[nn.Module]:
    from torch.distributed.fsdp import FSDPModule
    return [m for m in work.modules() if isinstance(m, FSDPModule)]


def unshard_all(work: nn.Module) -> None:
    """All-gather every unit's parameters (the modules then hold plain full tensors until `reshard_all`)."""
    for m in units(work):
        m.unshard()


def reshard_all(work: nn.Module) -> None:
    for m in units(work):
        m.reshard()


def release(model: nn.Module) -> None:
    """Free the parameter storage of the caller's model while its sharded copy trains (module objects, tied
    parameters and buffers stay)."""
    for p in model.parameters():
        p.data = torch.empty(0, dtype=p.dtype, device=p.device)


def full_state(work: nn.Module) -> dict[str, torch.Tensor]:
    """The full (unsharded) state dict on every rank (collective)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
    return get_model_state_dict(work, options=StateDictOptions(full_state_dict=True))


@torch.no_grad()
def gather_into(model: nn.Module, work: nn.Module) -> None:
    """Copy the sharded copy's weights back into the caller's model on every rank (collective)."""
    full = full_state(work)
    for name, p in model.named_parameters():
        p.data = full[name].detach().to(p.dtype).clone()
    wb = dict(work.named_buffers())
    for name, b in model.named_buffers():
        if name in wb:
            b.copy_(wb[name])


def grad_norm_value(g: Any) -> torch.Tensor:
    """clip_grad_norm_'s result as a plain tensor (a DTensor under FSDP)."""
    return g.full_tensor() if hasattr(g, "full_tensor") else g


# ----------------------------------------------------------------------------------------------------------------
# sharded checkpoints

def _local(t: torch.Tensor) -> torch.Tensor:
    return t.to_local() if hasattr(t, "to_local") else t


def _offset(t: torch.Tensor) -> int:
    """The first global row of dim 0 this rank holds (0 for a plain tensor)."""
    if not hasattr(t, "to_local") or t.dim() == 0:
        return 0
    from torch.distributed.tensor._utils import compute_local_shape_and_global_offset
    _, off = compute_local_shape_and_global_offset(t.shape, t.device_mesh, t.placements)
    return int(off[0]) if len(off) else 0


def save_sharded_checkpoint(root: Path, step: int, work: nn.Module, optimizer: torch.optim.Optimizer, state: dict,
                            rank: int, world: int, keep_last: int = 2) -> Path:
    """Every rank writes its files into one temp dir; rank 0 writes state.json last and renames it (atomic)."""
    from safetensors.torch import save_file
    root = Path(root)
    final = root / f"{CKPT_PREFIX}{step:07d}"
    tmp = root / f".tmp-{CKPT_PREFIX}{step:07d}-fsdp"
    if rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    dist.barrier()
    tensors, shards, seen = {}, {}, set()
    for k, v in work.state_dict().items():
        loc = _local(v).detach().cpu()
        key = (loc.untyped_storage().data_ptr(), loc.storage_offset(), tuple(loc.shape))
        tensors[k] = loc.clone() if key in seen and loc.numel() else loc.contiguous()  # tied: no shared storage
        seen.add(key)
        shards[k] = {"shape": list(v.shape), "offset": _offset(v), "sharded": hasattr(v, "to_local")}
    save_file(tensors, str(tmp / _rank_file("model", rank)))
    opt_t, opt_meta = _optimizer_local(optimizer)
    save_file(opt_t, str(tmp / _rank_file("optimizer", rank)))
    delay = float(os.environ.get("XOMNI_TEST_CKPT_DELAY", "0"))  # test hook: widen the window for a kill
    if delay:
        time.sleep(delay)
    rng_t, rng_meta = _rng_state()
    save_file(rng_t, str(tmp / _rank_file("rng", rank)))
    (tmp / _rank_file("shards", rank, "json")).write_text(json.dumps(
        {"rank": rank, "world_size": world, "tensors": shards, "optimizer": opt_meta, "rng": rng_meta}))
    _fsync_dir(tmp)
    dist.barrier()
    if rank == 0:
        (tmp / "state.json").write_text(json.dumps(dict(state, format=FORMAT, world_size=world), indent=1))
        publish_checkpoint(tmp, final, root, keep_last)
    dist.barrier()
    return final


def _optimizer_local(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    sd = opt.state_dict()
    tensors, scalars, dtensors = {}, {}, []
    for idx, st in sd["state"].items():
        for name, val in st.items():
            if isinstance(val, torch.Tensor):
                tensors[f"state.{idx}.{name}"] = _local(val).detach().cpu().contiguous()
                if hasattr(val, "to_local"):
                    dtensors.append(f"{idx}.{name}")
            else:
                scalars[f"{idx}.{name}"] = val
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in sd["param_groups"]]
    return tensors, {"param_groups": groups, "scalars": scalars, "dtensors": dtensors}


def is_sharded_checkpoint(path: Path) -> bool:
    return (Path(path) / "state.json").is_file() and read_json(Path(path) / "state.json").get("format") == FORMAT


def load_sharded_checkpoint(path: Path, work: nn.Module, optimizer: torch.optim.Optimizer, rank: int,
                            world: int) -> dict:
    """Restore this rank's shards of the model and the optimizer and its RNG state (same world size only)."""
    from torch.distributed.tensor import DTensor
    path = Path(path)
    state = read_json(path / "state.json")
    if state.get("format") != FORMAT:
        raise XomniError(f"{path} is not a sharded (FSDP) checkpoint (format={state.get('format')!r}): resume it "
                         f"with train.parallel=ddp, or start from its weights with --init")
    if state.get("world_size") != world:
        raise XomniError(f"sharded checkpoint {path} was written by {state.get('world_size')} ranks; this run has "
                         f"{world}: resume with the same number of processes, or consolidate it "
                         f"(xomni train consolidate) and start from the weights with --init")
    f = path / _rank_file("model", rank)
    sd = read_safetensors(f)
    own = work.state_dict()
    missing = [k for k in own if k not in sd]
    if missing:
        raise XomniError(f"checkpoint {f} does not match the model: missing tensor '{missing[0]}'")
    with torch.no_grad():
        for k, v in own.items():
            loc = _local(v)
            if tuple(sd[k].shape) != tuple(loc.shape):
                raise XomniError(f"checkpoint {f} does not match the model: tensor '{k}' has shard shape "
                                 f"{list(sd[k].shape)} in the file but {list(loc.shape)} here")
            loc.copy_(sd[k].to(loc.dtype))
    meta = read_json(path / _rank_file("shards", rank, "json"))
    opt_t = read_safetensors(path / _rank_file("optimizer", rank))
    params = [p for g in optimizer.param_groups for p in g["params"]]
    st: dict[int, dict[str, Any]] = {}
    dts = set(meta["optimizer"].get("dtensors", []))
    for key, val in opt_t.items():
        _, idx, name = key.split(".", 2)
        i = int(idx)
        if i >= len(params):
            raise XomniError(f"optimizer state in {path} does not match the model: parameter index {i}")
        p = params[i]
        if f"{idx}.{name}" in dts:
            val = DTensor.from_local(val.to(p.device), p.device_mesh, p.placements, run_check=False,
                                     shape=p.shape, stride=p.stride())
        st.setdefault(i, {})[name] = val
    load_optimizer_state(optimizer, st, meta["optimizer"], path)
    _restore_rng(read_safetensors(path / _rank_file("rng", rank)), meta["rng"])
    return state


def consolidate(ckpt: str | Path) -> dict[str, torch.Tensor]:
    """The full model state of a sharded checkpoint, stitched from every rank's rows (no process group needed)."""
    ckpt = Path(ckpt)
    if not (ckpt / "state.json").is_file():
        raise XomniError(f"{ckpt} is not a checkpoint directory (no state.json)")
    state = read_json(ckpt / "state.json")
    if state.get("format") != FORMAT:
        raise XomniError(f"{ckpt} is not a sharded (FSDP) checkpoint (format={state.get('format')!r}); its "
                         f"model.safetensors is already whole")
    world = int(state["world_size"])
    full: dict[str, torch.Tensor] = {}
    for r in range(world):
        for name in (_rank_file("model", r), _rank_file("shards", r, "json")):
            if not (ckpt / name).is_file():
                raise XomniError(f"sharded checkpoint {ckpt} is incomplete: {name} is missing")
        sd = read_safetensors(ckpt / _rank_file("model", r))
        meta = read_json(ckpt / _rank_file("shards", r, "json"))["tensors"]
        for k, t in sd.items():
            m = meta[k]
            if not m["sharded"]:
                full.setdefault(k, t)
                continue
            if k not in full:
                full[k] = torch.zeros(m["shape"], dtype=t.dtype)
            if t.numel():
                full[k][m["offset"]:m["offset"] + t.shape[0]] = t
    return full


def consolidate_to_dir(ckpt: str | Path, out: str | Path) -> dict:
    """Write a sharded checkpoint's full weights as a model directory (model.safetensors + config.json)."""
    from safetensors.torch import save_file
    full = consolidate(ckpt)
    state = read_json(Path(ckpt) / "state.json")
    out = Path(out)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in full.items()}, str(tmp / "model.safetensors"))
    (tmp / "config.json").write_text(json.dumps(state.get("config") or {}, indent=2, sort_keys=True))
    replace_dir(tmp, out)
    return {"checkpoint": str(ckpt), "out": str(out), "step": state.get("step"), "world_size": state.get("world_size"),
            "tensors": len(full), "parameters": int(sum(v.numel() for v in full.values()))}


def register(apps: dict) -> None:
    @apps["train"].command("consolidate")
    def consolidate_cmd(ckpt: str = typer.Argument(..., help="A sharded checkpoint directory (checkpoints/step-N "
                                                   "of a train.parallel=fsdp run).",
                                                   callback=_cb(check_in_dir, "checkpoint")),
                        out: str = typer.Option(..., "--out", "-o", help="Output model directory "
                                                "(model.safetensors + config.json).",
                                                callback=_cb(check_out_dir, "--out")),
                        overwrite: bool = OverwriteOpt("a non-empty --out"),
                        json_path: Optional[str] = JsonOpt):
        """Stitch an FSDP checkpoint's per-rank shards into one model.safetensors (no processes needed)."""
        refuse_existing(Path(out), "--out", "files", overwrite)
        emit_json(consolidate_to_dir(ckpt, out), json_path)
