"""LoRA adapters on the unified AR model with peft: add, save, load (merge-free) and merge.

peft's `inject_adapter_in_model` swaps the targeted `nn.Linear` modules of the model for LoRA layers in place
(y = W x + (alpha / r) B A x), so the model keeps its class, its attribute paths and every code path that calls its
modules (the transformers forward, the static-KV sampler, captioning): loading an adapter is merge-free. Only the
A and B matrices train; every base weight is frozen.

An adapter directory (`xomni train lora` writes one as OUT/final)::

    adapter_model.safetensors   the A/B matrices, peft's key names (base_model.model.<module>.lora_A.weight)
    adapter_config.json         peft's LoraConfig (r, lora_alpha, target_modules, ...): PeftModel.from_pretrained
                                on a UnifiedAR reads the same directory
    xomni_adapter.json          the base AR config and the sha256 of the base weights it was trained on
    image_rows.safetensors      keep-reader adapters only (below): the image output head and unread embedding rows

A keep-reader AR adapter (`xomni train lora --set keep_reader=true`) learns the drawing only: the backbone's
projections get LoRA, the image output head and the embedding rows of the levels captioning never reads
(`model.read_levels`) train in full, and the adapter is switched off whenever the model reads (`reading`), so
captions stay exactly the base model's.

Only safetensors is read: a directory with pickle files (.bin, .pt, .pth) and no adapter_model.safetensors is
refused, and nothing else in it is opened.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
from pathlib import Path

import torch
import torch.nn as nn

from xomni.checkpoint import read_json, read_safetensors, replace_dir
from xomni.config import field, in_range, to_dict
from xomni.errors import XomniError
from xomni.utils import log

WEIGHTS = "adapter_model.safetensors"
CONFIG = "adapter_config.json"
INFO = "xomni_adapter.json"
ROWS = "image_rows.safetensors"
KEEP_READER = "_xomni_keep_reader"
PEFT_PREFIX = "base_model.model."
ADAPTER = "default"
QWEN2_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
DECODER_TARGETS = ("conv1", "conv2")  # the 3x3 convolutions of the decoder UNet's ResNet blocks
COMPONENTS = ("ar", "decoder")


@dataclasses.dataclass
class LoRAConfig:
    rank: int = field(8, help="LoRA rank r: A is r x in, B is out x r (adapter size grows linearly with r).")
    alpha: float = field(16.0, help="LoRA alpha: the update is scaled by alpha / rank.")
    dropout: float = field(0.0, help="Dropout on the LoRA branch's input during training.")
    targets: list[str] = field(default_factory=list,
                               help="Module names (suffixes) that get an adapter; empty = the component's default: "
                                    "for the AR model the backbone's attention (q_proj, k_proj, v_proj, o_proj) and "
                                    "MLP (gate_proj, up_proj, down_proj) projections (image_head and text_head are "
                                    "linear layers too), for the decoder its UNet ResNet convolutions (conv1, "
                                    "conv2).")

    def check(self, where: str = "lora") -> "LoRAConfig":
        in_range(self, where, "rank", 1, 4096)
        in_range(self, where, "alpha", 0, lo_open=True)
        in_range(self, where, "dropout", 0, 1, hi_open=True)
        if not all(isinstance(t, str) and t.strip() for t in self.targets):
            raise XomniError(f"config {where}.targets must be module names, got {self.targets!r}")
        return self

    def resolved(self, component: str = "ar") -> "LoRAConfig":
        """This config with the component's default targets when none are given."""
        if self.targets:
            return self
        return dataclasses.replace(self, targets=list(DECODER_TARGETS if component == "decoder" else QWEN2_TARGETS))


def _peft_config(cfg: LoRAConfig):
    from peft import LoraConfig
    return LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=list(cfg.targets),
                      bias="none")


def add_lora(model: nn.Module, cfg: LoRAConfig) -> nn.Module:
    """Insert fresh LoRA layers (B = 0: the model's outputs are unchanged) and freeze every base parameter."""
    cfg = cfg.resolved("decoder" if not hasattr(model, "backbone") else "ar").check()
    from peft import inject_adapter_in_model
    if is_lora(model):  # before the target names: peft's layers hide them
        raise XomniError("the model already has a LoRA adapter" + (
            " (the pipeline's keep-reader ar_adapter/: train it further with keep_reader=true)" if is_keep_reader(model)
            else "; merge it first (xomni lora merge)"))
    names = {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))}
    missing = [t for t in cfg.targets if t not in names]
    if missing:
        raise XomniError(f"LoRA target {missing[0]!r} is not a linear or convolution layer of this model; they "
                         f"are: {', '.join(sorted(names))}")
    inject_adapter_in_model(_peft_config(cfg), model, adapter_name=ADAPTER)
    return train_adapter_only(model)


def train_adapter_only(model: nn.Module) -> nn.Module:
    """The adapter's A/B tensors train, every base parameter is frozen (a loaded adapter trains again)."""
    for n, p in model.named_parameters():
        p.requires_grad_("lora_" in n)
    return model


def read_rows(model: nn.Module) -> int:
    """Image embedding rows that captioning reads: the codes of the first `read_levels` levels (0 = all)."""
    cfg = model.cfg
    return (cfg.read_levels or cfg.levels) * (cfg.image_vocab // cfg.levels)


def train_draw_rows(model: nn.Module) -> int:
    """Make a LoRA'd AR model a keep-reader one: `image_head` trains in full and so do the embedding rows that
    captioning never reads (a gradient hook holds the read rows). Returns the number of rows kept."""
    if not hasattr(model, "image_head") or not is_lora(model):
        raise XomniError("keep_reader needs an AR model with a LoRA adapter")
    if type(model.image_head) is not nn.Linear:
        raise XomniError("keep_reader trains image_head in full: leave it out of lora.targets")
    k = read_rows(model)

    def hold_read_rows(g: torch.Tensor) -> torch.Tensor:  # on whatever device the model trains
        g = g.clone()
        g[:k] = 0
        return g

    model.image_head.weight.requires_grad_(True)
    if k < model.image_embed.weight.shape[0]:
        model.image_embed.weight.requires_grad_(True)
        model.image_embed.weight.register_hook(hold_read_rows)
    setattr(model, KEEP_READER, True)
    return k


def is_keep_reader(model: nn.Module) -> bool:
    return bool(getattr(model, KEEP_READER, False))


def lora_config_of(model: nn.Module) -> LoRAConfig:
    """The LoRAConfig of the adapter in `model` (from the peft config that injection attached)."""
    pc = getattr(model, "peft_config", {}).get(ADAPTER)
    if pc is None:
        raise XomniError("the model has no LoRA adapter")
    return LoRAConfig(rank=int(pc.r), alpha=float(pc.lora_alpha), dropout=float(pc.lora_dropout),
                      targets=sorted(pc.target_modules))


def base_model_of(model: nn.Module) -> nn.Module:
    """A copy of an AR model without its adapter (the base weights as they are, image rows included)."""
    plain = type(model)(model.cfg)
    sd = {k.replace(".base_layer.", "."): v for k, v in model.state_dict().items() if "lora_" not in k}
    plain.load_state_dict(sd)
    return plain.eval()


def merged_for_drawing(model: nn.Module) -> nn.Module:
    """A plain AR model with `model`'s adapter merged into its weights (W + alpha/r BA) and its image rows: what the
    sampler runs for a keep-reader model, without the adapter's two extra matmuls per projection. `model` keeps the
    unmerged adapter (reading switches it off; training and saving see the base weights untouched). Cached on
    `model` and rebuilt when any of its weights changes (storage, in-place version, dtype or device)."""
    from peft.tuners.lora import LoraLayer

    from xomni.ar.compiled import weights_key
    key = weights_key(model)
    hit = model.__dict__.get("_xomni_drawing")  # not a registered submodule: state_dict and .to() never see it
    if hit is not None and hit[0] == key:
        return hit[1]
    p0 = next(model.parameters())
    plain = base_model_of(model).to(p0.device)
    with torch.no_grad():
        for name, m in model.named_modules():
            if isinstance(m, LoraLayer):
                w = plain.get_submodule(name).weight
                w += m.get_delta_weight(ADAPTER).float()
    plain = plain.to(dtype=p0.dtype).requires_grad_(False).eval()
    model.__dict__["_xomni_drawing"] = (key, plain)
    return plain


def draw_rows(model: nn.Module) -> dict[str, torch.Tensor]:
    """Views of the image rows a keep-reader adapter trains in full (what image_rows.safetensors holds)."""
    k = read_rows(model)
    out = {"image_head.weight": model.image_head.weight}
    if k < model.image_embed.weight.shape[0]:
        out["image_embed.weight.unread"] = model.image_embed.weight[k:]
    return out


@contextlib.contextmanager
def reading(model: nn.Module):
    """The weights captioning uses: a keep-reader adapter is switched off inside this block (others stay on)."""
    if not is_keep_reader(model):
        yield model
        return
    from peft.tuners.lora import LoraLayer
    layers = [m for m in model.modules() if isinstance(m, LoraLayer)]
    grads = {p: p.requires_grad for m in layers for p in m.parameters()}  # peft's enable_adapters sets them
    for m in layers:
        m.enable_adapters(False)
    try:
        yield model
    finally:
        for m in layers:
            m.enable_adapters(True)
        for p, g in grads.items():
            p.requires_grad_(g)


def is_lora(model: nn.Module) -> bool:
    from peft.tuners.lora import LoraLayer
    return any(isinstance(m, LoraLayer) for m in model.modules())


def adapter_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """The adapter's A/B matrices under peft's saved names (base_model.model.<module>.lora_A.weight)."""
    out = {}
    for k, v in model.state_dict().items():
        if ".lora_A." in k or ".lora_B." in k:
            out[PEFT_PREFIX + k.replace(f".{ADAPTER}.", ".")] = v.detach().cpu().contiguous()
    return out


def adapter_bytes(path: str | Path) -> int:
    """Bytes of an adapter directory's weight file."""
    return (resolve_adapter_dir(path) / WEIGHTS).stat().st_size


def weights_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def base_info(model: nn.Module, base_dir: str | Path | None, component: str = "ar") -> dict:
    """What the adapter was trained on: the component, its config and the sha256 of its base weights file."""
    info: dict = {"component": component}
    if component == "ar" and hasattr(model, "cfg"):
        info["ar"] = to_dict(model.cfg)
    if base_dir is not None:
        f = Path(base_dir) / component / "model.safetensors"
        info["base_model"] = str(base_dir)
        if f.is_file():
            info["base_sha256"] = weights_sha256(f)
    return info


def save_adapter(model: nn.Module, out: str | Path, cfg: LoRAConfig, info: dict | None = None,
                 dtype: torch.dtype | None = None, rows: bool = True) -> Path:
    """Write the adapter directory atomically (temp dir + rename): safetensors + JSON only. `rows` False leaves a
    keep-reader adapter's image rows out (a pipeline's ar/ beside it holds them)."""
    from safetensors.torch import save_file
    cfg = cfg.resolved((info or {}).get("component", "ar"))
    tensors = adapter_tensors(model)
    if not tensors:
        raise XomniError("the model has no LoRA adapter to save")
    if dtype is not None:
        tensors = {k: v.to(dtype) for k, v in tensors.items()}
    out = Path(out)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(tensors, str(tmp / WEIGHTS), metadata={"format": "pt"})
    keep_reader = is_keep_reader(model)
    if keep_reader and rows:
        save_file({k: v.detach().to("cpu", dtype or v.dtype).contiguous() for k, v in draw_rows(model).items()},
                  str(tmp / ROWS), metadata={"format": "pt"})
    peft_cfg = {"peft_type": "LORA", "task_type": None, "r": cfg.rank, "lora_alpha": cfg.alpha,
                "lora_dropout": cfg.dropout, "target_modules": sorted(cfg.targets), "bias": "none",
                "fan_in_fan_out": False, "modules_to_save": None, "inference_mode": True,
                "base_model_name_or_path": (info or {}).get("base_model")}
    (tmp / CONFIG).write_text(json.dumps(peft_cfg, indent=2, sort_keys=True))
    meta = dict(info or {}, lora={"rank": cfg.rank, "alpha": cfg.alpha, "dropout": cfg.dropout,
                                  "targets": list(cfg.targets)},
                n_params=int(sum(v.numel() for v in tensors.values())), format="xomni-lora-v1")
    if keep_reader:
        meta["keep_reader"] = {"read_rows": read_rows(model), "rows_file": ROWS if rows else None}
    (tmp / INFO).write_text(json.dumps(meta, indent=2, sort_keys=True))
    replace_dir(tmp, out)
    return out


def resolve_adapter_dir(path: str | Path) -> Path:
    """`path` itself or its training run's final/; one clear line when it holds no adapter."""
    p = Path(path)
    if not p.exists():
        raise XomniError(f"LoRA adapter not found: {p}")
    if not p.is_dir():
        raise XomniError(f"LoRA adapter {p} is a file; give the adapter directory (with {WEIGHTS} and {CONFIG})")
    if not (p / CONFIG).is_file() and (p / "final" / CONFIG).is_file():
        p = p / "final"
    pickles = sorted(f.name for f in p.iterdir() if f.suffix in (".bin", ".pt", ".pth", ".pkl", ".ckpt"))
    if not (p / WEIGHTS).is_file():
        if pickles:
            raise XomniError(f"{p} holds {pickles[0]} but no {WEIGHTS}: only safetensors adapters are loaded "
                             f"(pickle files can run code when opened)")
        raise XomniError(f"{p} is not a LoRA adapter directory: {WEIGHTS} is missing (train one with "
                         f"`xomni train lora`)")
    if not (p / CONFIG).is_file():
        raise XomniError(f"{p} is not a LoRA adapter directory: {CONFIG} is missing")
    return p


def read_adapter_config(p: Path) -> LoRAConfig:
    d = read_json(p / CONFIG)
    if d.get("peft_type", "LORA") != "LORA":
        raise XomniError(f"{p / CONFIG}: peft_type {d.get('peft_type')!r} is not LORA")
    try:
        targets = d["target_modules"]
        if isinstance(targets, str):
            targets = [targets]
        cfg = LoRAConfig(rank=int(d["r"]), alpha=float(d.get("lora_alpha", d["r"])),
                         dropout=float(d.get("lora_dropout", 0.0)), targets=list(targets))
    except (KeyError, TypeError, ValueError) as e:
        raise XomniError(f"{p / CONFIG} is not a LoRA config: bad or missing field {e}") from None
    if d.get("bias", "none") != "none" or d.get("modules_to_save"):
        raise XomniError(f"{p / CONFIG}: only bias='none' adapters without modules_to_save are supported")
    return cfg.check(where=str(p / CONFIG))


def load_adapter(model: nn.Module, path: str | Path) -> nn.Module:
    """Add the adapter in `path` to `model` (merge-free): every tensor must match by name and shape."""
    p = resolve_adapter_dir(path)
    cfg = read_adapter_config(p)
    tensors = read_safetensors(p / WEIGHTS)
    info = read_json(p / INFO) if (p / INFO).is_file() else {}
    if info:
        want = info.get("base_sha256")
        have = getattr(model, "_xomni_base_sha256", None)
        if want and have and want != have:
            log(f"[lora] warning: {p} was trained on other base weights (sha256 {want[:12]}, this model "
                f"{have[:12]}); loading it anyway")
    try:
        add_lora(model, cfg)
    except XomniError as e:
        raise XomniError(f"adapter {p} does not fit this model: {e}") from None
    own = {PEFT_PREFIX + k.replace(f".{ADAPTER}.", "."): k for k in model.state_dict()
           if ".lora_A." in k or ".lora_B." in k}
    missing = [k for k in own if k not in tensors]
    unexpected = [k for k in tensors if k not in own]
    if missing or unexpected:
        what = f"missing tensor '{missing[0]}'" if missing else f"unexpected tensor '{unexpected[0]}'"
        raise XomniError(f"adapter {p / WEIGHTS} does not match the model: {what}")
    sd = model.state_dict()
    for k, name in own.items():
        if tuple(tensors[k].shape) != tuple(sd[name].shape):
            raise XomniError(f"adapter {p / WEIGHTS} does not match the model: tensor '{k}' has shape "
                             f"{list(tensors[k].shape)} in the file but {list(sd[name].shape)} in the model")
    keep = info.get("keep_reader")
    if keep is not None and not isinstance(keep, dict):
        raise XomniError(f"{p / INFO}: keep_reader must be a mapping, got {keep!r}")
    rows = _read_draw_rows(model, p) if keep and keep.get("rows_file", ROWS) else {}  # None: the base holds them
    with torch.no_grad():
        for k, name in own.items():
            sd[name].copy_(tensors[k].to(sd[name].dtype))
        views = draw_rows(model) if rows else {}
        for name, v in rows.items():
            views[name].copy_(v)
    if keep:
        setattr(model, KEEP_READER, True)
    for prm in model.parameters():
        prm.requires_grad_(False)
    return model


def _read_draw_rows(model: nn.Module, p: Path) -> dict[str, torch.Tensor]:
    """A keep-reader adapter's image rows, checked against the model's shapes."""
    if not (p / ROWS).is_file():
        raise XomniError(f"{p} is a keep-reader adapter but {ROWS} is missing")
    rows = read_safetensors(p / ROWS)
    want = {n: tuple(v.shape) for n, v in draw_rows(model).items()}
    have = {n: tuple(v.shape) for n, v in rows.items()}
    if have != want:
        raise XomniError(f"{p / ROWS} does not fit this model: tensors {have}, the model needs {want}")
    return rows


@torch.no_grad()
def merge_lora(model: nn.Module) -> nn.Module:
    """Bake the adapter into the base weights (W += alpha / r B A) and put plain nn.Linear layers back."""
    from peft.tuners.lora import LoraLayer
    targets = [(n, m) for n, m in model.named_modules() if isinstance(m, LoraLayer)]
    if not targets:
        raise XomniError("the model has no LoRA adapter to merge")
    if is_keep_reader(model):
        raise XomniError("a keep-reader adapter is switched off when the model captions; merging it would change "
                         "the captions: load it with --lora instead")
    for name, m in targets:
        m.merge(safe_merge=True)
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, m.get_base_layer())
    if hasattr(model, "peft_config"):
        del model.peft_config
    for prm in model.parameters():
        prm.requires_grad_(True)
    return model


def n_adapter_params(model: nn.Module) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if "lora_" in n)


def split_adapters(paths: str | Path) -> list[str]:
    """`--lora A[,B]`: one adapter directory per component (an AR adapter and a decoder adapter at most)."""
    parts = [s.strip() for s in str(paths).split(",") if s.strip()]
    if not parts:
        raise XomniError("--lora is empty")
    return parts


def adapter_component(path: str | Path) -> str:
    d = resolve_adapter_dir(path)
    comp = read_json(d / INFO).get("component", "ar") if (d / INFO).is_file() else "ar"
    if comp not in COMPONENTS:
        raise XomniError(f"{d / INFO}: component {comp!r} is not one of {', '.join(COMPONENTS)}")
    return comp


def adapter_keeps_reader(path: str | Path) -> bool:
    """Whether the adapter directory holds a keep-reader adapter (its xomni_adapter.json says so)."""
    d = resolve_adapter_dir(path)
    return bool((read_json(d / INFO) if (d / INFO).is_file() else {}).get("keep_reader"))


def load_into_pipeline(pipe, paths: str | Path):
    """Add the adapter(s) in `paths` (comma-separated: one for the AR model, one for the decoder) to a loaded
    Pipeline, merge-free; records them in pipe.index["lora"]."""
    done: dict[str, str] = {}
    for path in split_adapters(paths):
        comp = adapter_component(path)
        if comp in done:
            raise XomniError(f"--lora gives two {comp} adapters ({done[comp]}, {path}); give one per component")
        module = pipe.ar if comp == "ar" else pipe.decoder
        if comp == "ar" and is_keep_reader(module):
            raise XomniError(f"pipeline {pipe.path} already draws with its own AR adapter (ar_adapter/); --lora "
                             f"{path} would be a second one (a keep-reader adapter replaces it)")
        f = Path(pipe.path) / comp / "model.safetensors" if pipe.path is not None else None
        if f is not None and f.is_file():
            module._xomni_base_sha256 = weights_sha256(f)
        load_adapter(module, path)
        module.eval()
        done[comp] = str(resolve_adapter_dir(path))
    pipe.index = dict(pipe.index, lora=done)
    return pipe
