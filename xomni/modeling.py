"""`from_pretrained` / `save_pretrained` shared by the image tokenizer, the decoder and the AR model (as diffusers'
ModelMixin): a model directory is model.safetensors + config.json, and config.json holds the model's config
dataclass under one key (plus a `kind` where the class names one, so that a directory of another kind of model is
refused in one line instead of failing on tensor names)."""
from __future__ import annotations

from pathlib import Path

import torch

from xomni.checkpoint import load_model_weights, read_model_dir, save_model_dir
from xomni.config import config_from_dict, to_dict
from xomni.errors import XomniError


class PretrainedMixin:
    """Mix into an nn.Module whose constructor takes one config dataclass."""

    config_class: type           # the dataclass the constructor takes
    config_attr = "config"       # the attribute that holds it
    config_key = "model"         # its section in config.json
    kind: str | None = None      # config.json "kind"; None: the files carry none
    what = "model"               # what the messages call it
    train_cmd = ""               # the command that makes one

    def config_dict(self) -> dict:
        d = {self.config_key: to_dict(getattr(self, self.config_attr))}
        return d if self.kind is None else {"kind": self.kind, **d}

    def save_pretrained(self, out_dir: str | Path, dtype: torch.dtype | None = None, **extra) -> None:
        """model.safetensors + config.json (with the `extra` keys), replacing `out_dir` atomically; `dtype` (e.g.
        torch.float16) stores the floating-point tensors at that precision, loading casts them back."""
        save_model_dir(out_dir, self, {**self.config_dict(), **extra}, dtype=dtype)

    @classmethod
    def from_pretrained(cls, path: str | Path):
        """The model saved in `path` (or in its run's final/), in eval mode."""
        p, d = read_model_dir(path, cls.kind, cls.what, cls.train_cmd)
        if cls.config_key not in d:
            raise XomniError(f"{p / 'config.json'} has no '{cls.config_key}' section")
        model = cls(config_from_dict(cls.config_class, d[cls.config_key], source=p / "config.json"))
        load_model_weights(model, p)
        return model.eval()
