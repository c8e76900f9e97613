"""Load the modules of a directory written by `xomni convert x-omni` (xomni.json + ar/ + vq/ + decoder/).

Models are built on the meta device and take the stored tensors as they are (no second copy, the file's dtype
unless `dtype` is given), so a 7B checkpoint needs its own size in memory, not twice or four times that.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from xomni.errors import XomniError
from xomni.xomni_arch.config import FORMAT, MANIFEST, XOmniARConfig
from xomni.xomni_arch.model import XOmniAR
from xomni.xomni_arch.vision import SigLIPVQ, XOmniFluxDecoder


def read_manifest(path: str | Path) -> dict:
    p = Path(path) / MANIFEST
    if not p.is_file():
        raise XomniError(f"{p} not found: not a directory written by `xomni convert x-omni`")
    man = json.loads(p.read_text())
    if man.get("format") != FORMAT:
        raise XomniError(f"{p}: format {man.get('format')!r}, expected {FORMAT!r}")
    return man


def _load_tensors(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise XomniError(f"no .safetensors files in {folder}")
    out = {}
    for f in files:
        out.update(load_file(str(f)))
    return out


def _assign(module: torch.nn.Module, state: dict, where: Path, allow_missing: tuple[str, ...] = ()) -> None:
    res = module.load_state_dict(state, strict=False, assign=True)
    missing = [k for k in res.missing_keys if k not in allow_missing]
    if missing or res.unexpected_keys:
        what = f"missing tensor {missing[0]}" if missing else f"unexpected tensor {res.unexpected_keys[0]}"
        raise XomniError(f"{where}: {what}")


def _cast(module: torch.nn.Module, dtype: torch.dtype | None) -> torch.nn.Module:
    return module.to(dtype) if dtype is not None else module


def load_ar(path: str | Path, dtype: torch.dtype | None = None):
    """The XOmniAR of a converted directory (eval mode)."""
    from transformers.models.qwen2.modeling_qwen2 import Qwen2RotaryEmbedding
    man = read_manifest(path)
    cfg = XOmniARConfig.from_dict(man["ar"], "xomni.json ar")
    with torch.device("meta"):
        model = XOmniAR(cfg)
    _assign(model, _load_tensors(Path(path) / "ar"), Path(path) / "ar",
            allow_missing=("text_head.weight",) if cfg.tie_word_embeddings else ())
    if cfg.tie_word_embeddings:
        model.text_head.weight = model.text_embed.weight
    model.backbone.rotary_emb = Qwen2RotaryEmbedding(config=model.backbone.config)  # its buffer is not stored
    return _cast(model, dtype).eval()


def load_vq(path: str | Path, dtype: torch.dtype | None = None):
    man = read_manifest(path)
    if not man.get("vq"):
        raise XomniError(f"{path} holds no SigLIP-VQ quantiser (the source had no vision_config)")
    with torch.device("meta"):
        vq = SigLIPVQ(**man["vq"])
    _assign(vq, _load_tensors(Path(path) / "vq"), Path(path) / "vq")
    return _cast(vq, dtype).eval()


def load_decoder(path: str | Path, dtype: torch.dtype | None = None):
    """The FLUX transformer (diffusers' FluxTransformer2DModel) with its SigLIP adapter."""
    man = read_manifest(path)
    d = man.get("decoder")
    if not d:
        raise XomniError(f"{path} holds no FLUX decoder (the source had no vision_config)")
    with torch.device("meta"):
        dec = XOmniFluxDecoder(d["flux_config"], d["siglip_channels"], d["adapter_bias"])
    root = Path(path) / "decoder"
    state = {f"transformer.{k}": v for k, v in _load_tensors(root / "transformer").items()}
    from safetensors.torch import load_file
    state.update(load_file(str(root / "adapter.safetensors")))
    _assign(dec, state, root)
    # buffers that are not stored (FLUX's rotary tables are computed per call; nothing else is expected)
    for name, b in dec.named_buffers():
        if b.is_meta:
            raise XomniError(f"{root}: buffer {name} is not in the checkpoint")
    return _cast(dec, dtype).eval()
