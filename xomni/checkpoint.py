"""Checkpoints: safetensors + JSON only (never pickle), written atomically (temp dir + rename).

Layout of a training checkpoint ``checkpoints/step-0000100/``::

    model.safetensors      parameters and buffers
    optimizer.safetensors  optimizer state tensors (state.<param index>.<name>)
    rng.safetensors        torch CPU RNG state (+ CUDA when present)
    state.json             step, optimizer param groups, python/numpy RNG, config; written last

A model directory (``final/``, or a pipeline component) holds ``model.safetensors`` + ``config.json``.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from xomni.errors import XomniError
from xomni.utils import atomic_write_text

CKPT_PREFIX = "step-"


def read_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    """Load a safetensors file with a clear error for missing, truncated or corrupt files."""
    path = Path(path)
    if not path.is_file():
        raise XomniError(f"checkpoint file not found: {path}")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        size = path.stat().st_size
        raise XomniError(f"checkpoint file {path} is corrupt or truncated ({size} bytes): {str(e).splitlines()[0]}") \
            from None


def read_json(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise XomniError(f"file not found: {path}")
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise XomniError(f"{path} is not valid JSON (corrupt or truncated?): {e}") from None
    if not isinstance(d, dict):
        raise XomniError(f"{path} must hold a JSON object, got {type(d).__name__}")
    return d


def _state_for_save(module: torch.nn.Module, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    sd = module.state_dict()
    out, seen = {}, {}
    for k, v in sd.items():
        v = v.detach().cpu()
        if dtype is not None and v.is_floating_point():
            v = v.to(dtype)
        key = v.untyped_storage().data_ptr(), v.storage_offset(), tuple(v.shape)
        out[k] = v.clone() if key in seen else v.contiguous()  # tied weights: safetensors refuses shared storage
        seen[key] = k
    return out


def load_state_strict(module: torch.nn.Module, sd: dict[str, torch.Tensor], path: Path | str) -> None:
    """Copy `sd` into `module`, naming the file and the first mismatch on any difference."""
    own = module.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} tensor(s), e.g. '{missing[0]}'")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected tensor(s), e.g. '{unexpected[0]}'")
        raise XomniError(f"checkpoint {path} does not match the model: {'; '.join(parts)}")
    for k, v in own.items():
        if tuple(sd[k].shape) != tuple(v.shape):
            raise XomniError(f"checkpoint {path} does not match the model: tensor '{k}' has shape "
                             f"{list(sd[k].shape)} in the file but {list(v.shape)} in the model "
                             f"(was it trained with another config?)")
    module.load_state_dict({k: sd[k].to(own[k].dtype) for k in own}, strict=True)


def read_model_dir(path: str | Path, kind: str | None, what: str, train_cmd: str) -> tuple[Path, dict]:
    """(model dir, config dict) of a saved `kind` model: `path` itself or its run's final/; a clear XomniError
    when there is no config.json or it belongs to another kind of model."""
    p = Path(path)
    if (p / "final" / "config.json").is_file() and not (p / "config.json").is_file():
        p = p / "final"
    if not (p / "config.json").is_file():
        raise XomniError(f"{path} is not a {what} directory (no config.json; train one with `{train_cmd}`)")
    d = read_json(p / "config.json")
    if d.get("kind") != kind:
        raise XomniError(f"{p / 'config.json'} is not a {what} config (kind={d.get('kind')!r})")
    return p, d


def weights_file(path: str | Path) -> Path:
    """The .safetensors file behind a .safetensors path, a model dir (model.safetensors) or a run dir (final/)."""
    p = Path(path)
    if p.is_dir():
        for cand in (p / "model.safetensors", p / "final" / "model.safetensors"):
            if cand.is_file():
                return cand
        raise XomniError(f"no model.safetensors in {path}")
    return p


def load_model_weights(module: torch.nn.Module, path: str | Path, keep_fresh: tuple[str, ...] = ()) -> None:
    """Load weights from a .safetensors file, a model dir (model.safetensors) or a run dir (final/). Tensors named
    in `keep_fresh` keep the module's own values (they may have another shape in the file, or be absent)."""
    p = weights_file(path)
    sd = read_safetensors(p)
    if keep_fresh:
        own = module.state_dict()
        sd = {**{k: v for k, v in sd.items() if k not in keep_fresh}, **{k: own[k] for k in keep_fresh}}
    load_state_strict(module, sd, p)


def save_model_dir(out: str | Path, module: torch.nn.Module, config: dict,
                   extra_files: dict[str, str] | None = None, dtype: torch.dtype | None = None) -> None:
    """model.safetensors + config.json (+ extra text files), atomically replacing `out`. `dtype` (e.g.
    torch.float16) stores floating-point tensors at that precision; loading casts them back to the model's."""
    out = Path(out)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(_state_for_save(module, dtype), str(tmp / "model.safetensors"))
    (tmp / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
    for name, text in (extra_files or {}).items():
        (tmp / name).write_text(text)
    replace_dir(tmp, out)


def replace_dir(tmp: Path, out: Path) -> None:
    """Put the fully written directory `tmp` at `out` (an existing `out` is moved aside first, then removed)."""
    _fsync_dir(tmp)
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    if out.exists():
        os.replace(out, old)
    os.replace(tmp, out)
    shutil.rmtree(old, ignore_errors=True)


def load_optimizer_state(opt: torch.optim.Optimizer, state: dict, meta: dict, path) -> None:
    """Load per-parameter `state` (tensors gathered by index) plus `meta`'s scalars and param groups into `opt`."""
    for key, val in meta.get("scalars", {}).items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = val
    groups = []
    for g in meta["param_groups"]:
        g = dict(g)
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
        groups.append(g)
    try:
        opt.load_state_dict({"state": state, "param_groups": groups})
    except (ValueError, KeyError, RuntimeError) as e:
        raise XomniError(f"optimizer state in {path} does not match the model: {e}") from None


def _optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for idx, st in sd["state"].items():
        for name, val in st.items():
            if isinstance(val, torch.Tensor):
                tensors[f"state.{idx}.{name}"] = val.detach().cpu().contiguous()
            else:
                scalars[f"{idx}.{name}"] = val
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in sd["param_groups"]]
    return tensors, {"param_groups": groups, "scalars": scalars}


def _restore_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict, path: Path) -> None:
    state: dict[int, dict[str, Any]] = {}
    for key, val in tensors.items():
        _, idx, name = key.split(".", 2)
        state.setdefault(int(idx), {})[name] = val
    load_optimizer_state(opt, state, meta, path)
    n_params = sum(len(g["params"]) for g in opt.param_groups)
    for idx, st in state.items():
        if idx >= n_params:
            raise XomniError(f"optimizer state in {path} does not match the model: parameter index {idx}")


def _rng_state() -> tuple[dict[str, torch.Tensor], dict]:
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda.{i}"] = s
    py = random.getstate()
    npst = np.random.get_state()
    meta = {"python": [py[0], list(py[1]), py[2]],
            "numpy": [npst[0], npst[1].tolist(), int(npst[2]), int(npst[3]), float(npst[4])]}
    return tensors, meta


def _restore_rng(tensors: dict[str, torch.Tensor], meta: dict) -> None:
    torch.set_rng_state(tensors["torch"])
    if torch.cuda.is_available():
        states = [tensors[k] for k in sorted(tensors) if k.startswith("cuda.")]
        if states:
            torch.cuda.set_rng_state_all(states)
    py = meta["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = meta["numpy"]
    np.random.set_state((n[0], np.array(n[1], dtype=np.uint32), n[2], n[3], n[4]))


def save_checkpoint(root: Path, step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    state: dict, keep_last: int = 2) -> Path:
    """Write checkpoints/step-XXXXXXX atomically: everything into a temp dir, state.json last, then rename."""
    root = Path(root)
    final = root / f"{CKPT_PREFIX}{step:07d}"
    tmp = root / f".tmp-{CKPT_PREFIX}{step:07d}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(_state_for_save(model), str(tmp / "model.safetensors"))
    opt_t, opt_meta = _optimizer_tensors(optimizer)
    save_file(opt_t, str(tmp / "optimizer.safetensors"))
    delay = float(os.environ.get("XOMNI_TEST_CKPT_DELAY", "0"))  # test hook: widen the window for a kill
    if delay:
        time.sleep(delay)
    rng_t, rng_meta = _rng_state()
    save_file(rng_t, str(tmp / "rng.safetensors"))
    full = dict(state, optimizer=opt_meta, rng=rng_meta, format="xomni-checkpoint-v1")
    (tmp / "state.json").write_text(json.dumps(full, indent=1))
    publish_checkpoint(tmp, final, root, keep_last)
    return final


def publish_checkpoint(tmp: Path, final: Path, root: Path, keep_last: int) -> None:
    """Atomically move a fully written checkpoint dir into place, then keep only the newest `keep_last`."""
    _fsync_dir(tmp)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync_dir(root)
    ckpts = list_checkpoints(root)
    for old in ckpts[:-keep_last] if keep_last > 0 else []:
        shutil.rmtree(old, ignore_errors=True)


def list_checkpoints(root: Path) -> list[Path]:
    root = Path(root)
    if not root.is_dir():
        return []
    cks = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(CKPT_PREFIX) and (p / "state.json").exists()]
    return sorted(cks, key=lambda p: int(p.name[len(CKPT_PREFIX):]))


def find_latest_checkpoint(root: Path) -> Path | None:
    """The newest complete checkpoint; leftovers of a checkpoint write that was killed are removed."""
    root = Path(root)
    if root.is_dir():
        for p in root.iterdir():
            if p.name.startswith(".tmp-"):
                shutil.rmtree(p, ignore_errors=True)
    cks = list_checkpoints(root)
    return cks[-1] if cks else None


def load_checkpoint(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    path = Path(path)
    if not path.is_dir():
        raise XomniError(f"checkpoint directory not found: {path}")
    state = read_json(path / "state.json")
    if state.get("format") != "xomni-checkpoint-v1":
        raise XomniError(f"{path / 'state.json'} is not an xomni checkpoint (format={state.get('format')!r})")
    load_state_strict(model, read_safetensors(path / "model.safetensors"), path / "model.safetensors")
    _restore_optimizer(optimizer, read_safetensors(path / "optimizer.safetensors"), state["optimizer"],
                       path / "optimizer.safetensors")
    _restore_rng(read_safetensors(path / "rng.safetensors"), state["rng"])
    return state


def _fsync_dir(p: Path) -> None:
    for f in Path(p).iterdir() if Path(p).is_dir() else []:
        if f.is_file():
            try:
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
            except OSError:
                pass
    try:
        fd = os.open(str(p), os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
    except OSError:
        pass
