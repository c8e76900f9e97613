"""The unified AR model: one decoder-only transformer over text tokens and image tokens.

As in X-Omni, image tokens have their own embedding table and output head (the text side keeps the language model's
table and head untouched, so a pretrained backbone keeps its text skills), and while an image is drawn only the
image head is used, i.e. logits are restricted to image tokens. Position encoding: plain 1-D RoPE (Qwen2's).

The backbone is a Hugging Face `Qwen2Model` built from a tiny config (CPU preset) or loaded from a local
Qwen2/Llama checkpoint (`backbone="/path/to/checkpoint"`).
"""
from __future__ import annotations

import dataclasses

import torch
import torch.nn as nn
import torch.nn.functional as F

from xomni.ar.vocab import VocabLayout
from xomni.config import check_error, field, in_range
from xomni.errors import XomniError
from xomni.modeling import PretrainedMixin


@dataclasses.dataclass
class ARConfig:
    backbone: str = field("tiny", help="'tiny' (Qwen2 architecture from the sizes below, trained from scratch) or "
                                       "a local Qwen2/Llama checkpoint directory.")
    hidden_size: int = field(256, help="Model width (tiny backbone).")
    n_layers: int = field(6, help="Transformer blocks (tiny backbone).")
    n_heads: int = field(4, help="Attention heads (tiny backbone).")
    n_kv_heads: int = field(4, help="Key/value heads, < n_heads for grouped-query attention (tiny backbone).")
    intermediate_size: int = field(768, help="SwiGLU hidden size (tiny backbone).")
    max_seq_len: int = field(256, help="Longest sequence (prompt + image header + image tokens + EOM).")
    rope_theta: float = field(10000.0, help="RoPE base.")
    n_text: int = field(259, help="Text tokenizer vocabulary size (set from the text tokenizer).")
    bos_id: int = field(257, help="Text tokenizer's BOS id.")
    eos_id: int = field(258, help="Text tokenizer's EOS id.")
    pad_id: int = field(256, help="Text tokenizer's PAD id.")
    image_vocab: int = field(1024, help="Image token vocabulary (from the image tokenizer: levels x K).")
    levels: int = field(1, help="Codes per patch (from the image tokenizer): with L > 1 the model writes every "
                                "patch's level-0 code, then level 1, ... (coarse to fine; xomni.ar.vocab).")
    read_levels: int = field(0, help="Codes per patch that captioning (image -> text) reads, level 0 first; 0 = all "
                                     "`levels`. Reading fewer than are written shortens the caption sequences "
                                     "(scripts/reading_probe.py measures what each choice learns).")
    max_grid: int = field(64, help="Largest grid height/width representable by size tokens.")
    dropout: float = field(0.0, help="Attention dropout.")
    tie_image_head: bool = field(False, help="Tie the image head to the image embedding table.")

    def check(self, where: str = "model") -> "ARConfig":
        """Ranges and shape constraints (heads divide the width, kv heads divide heads), checked at load."""
        for name in ("hidden_size", "n_layers", "n_heads", "n_kv_heads", "intermediate_size", "n_text", "max_grid"):
            in_range(self, where, name, 1)
        in_range(self, where, "image_vocab", 2)
        in_range(self, where, "levels", 1, 4)
        in_range(self, where, "read_levels", 0, 4)  # <= levels: checked by UnifiedAR (the trainer sets levels)
        in_range(self, where, "max_seq_len", 8)
        in_range(self, where, "rope_theta", 0, lo_open=True)
        in_range(self, where, "dropout", 0, 1, hi_open=True)
        for name in ("bos_id", "eos_id", "pad_id"):
            in_range(self, where, name, 0, self.n_text - 1)
        if self.backbone == "tiny":
            if self.hidden_size % self.n_heads:
                raise check_error(where, f"n_heads={self.n_heads} must divide hidden_size={self.hidden_size}")
            if self.n_heads % self.n_kv_heads:
                raise check_error(where, f"n_kv_heads={self.n_kv_heads} must divide n_heads={self.n_heads}")
            if (self.hidden_size // self.n_heads) % 2:
                raise check_error(where, f"the head width hidden_size / n_heads = {self.hidden_size // self.n_heads} "
                                         "must be even (RoPE)")
        return self

    def layout(self) -> VocabLayout:
        return VocabLayout(n_text=self.n_text, image_vocab=self.image_vocab, max_grid=self.max_grid,
                           bos_id=self.bos_id, eos_id=self.eos_id, pad_id=self.pad_id, levels=self.levels,
                           read_levels=self.read_levels)


def _build_backbone(cfg: ARConfig) -> tuple[nn.Module, int]:
    from transformers import Qwen2Config, Qwen2Model
    if cfg.backbone == "tiny":
        hf = Qwen2Config(vocab_size=8, hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
                         num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads,
                         num_key_value_heads=cfg.n_kv_heads, max_position_embeddings=cfg.max_seq_len,
                         rope_theta=cfg.rope_theta, attention_dropout=cfg.dropout, tie_word_embeddings=False)
        hf._attn_implementation = "sdpa"
        model = Qwen2Model(hf)
        model.embed_tokens = None  # we own the embedding tables
        return model, cfg.hidden_size
    from pathlib import Path

    from transformers import AutoConfig, AutoModel
    if not Path(cfg.backbone).is_dir():
        raise XomniError(f"backbone must be 'tiny' or a local checkpoint directory; not found: {cfg.backbone}")
    try:
        hf = AutoConfig.from_pretrained(cfg.backbone, local_files_only=True)
    except (OSError, ValueError) as e:
        raise XomniError(f"cannot read the backbone config in {cfg.backbone}: {e}") from None
    if hf.model_type not in ("qwen2", "llama", "qwen3", "mistral"):
        raise XomniError(f"backbone {cfg.backbone} is a '{hf.model_type}' model; supported: qwen2, llama")
    model = AutoModel.from_pretrained(cfg.backbone, local_files_only=True)
    return model, hf.hidden_size


def token_loss(model, h_BLD: torch.Tensor, targets_BL: torch.Tensor, off: int, text_weight: float = 1.0,
               image_valid=None) -> tuple[torch.Tensor, dict]:
    """(sum image CE + w x sum text CE) / (n_image + w x n_text) over the targets that are not -100; targets >=
    `off` are image codes (model.image_logits), the rest text (model.text_logits). `image_valid(is_img)` may check
    the image targets first."""
    valid = targets_BL != -100
    is_img = valid & (targets_BL >= off)
    if image_valid is not None:
        image_valid(is_img)
    is_txt = valid & ~is_img
    n_img, n_txt = int(is_img.sum()), int(is_txt.sum())
    metrics = {}
    total = h_BLD.new_zeros((), dtype=torch.float32)
    if n_img:
        li = F.cross_entropy(model.image_logits(h_BLD[is_img]), targets_BL[is_img] - off, reduction="sum")
        total = total + li
        metrics["loss_image"] = li.item() / n_img
    if n_txt:
        lt = F.cross_entropy(model.text_logits(h_BLD[is_txt]), targets_BL[is_txt], reduction="sum")
        total = total + text_weight * lt
        metrics["loss_text"] = lt.item() / n_txt
    return total / max(1.0, n_img + text_weight * n_txt), metrics


class UnifiedAR(PretrainedMixin, nn.Module):
    # config.json: {"ar": ARConfig fields, "grid": [h, w] of the pipeline it was saved from}
    config_class, config_attr, config_key, what, train_cmd = ARConfig, "cfg", "ar", "AR model", "xomni train ar"

    def __init__(self, cfg: ARConfig):
        super().__init__()
        if cfg.read_levels > cfg.levels:
            raise XomniError(f"model.read_levels={cfg.read_levels} is more than the {cfg.levels} code(s) per patch of "
                             f"the image tokenizer")
        self.cfg = cfg
        self.layout = cfg.layout()
        self.backbone, d = _build_backbone(cfg)
        self.text_embed = nn.Embedding(self.layout.n_textside, d)
        self.image_embed = nn.Embedding(cfg.image_vocab, d)
        self.text_head = nn.Linear(d, self.layout.n_textside, bias=False)
        self.image_norm = nn.LayerNorm(d)
        self.image_head = nn.Linear(d, cfg.image_vocab, bias=False)
        if cfg.tie_image_head:
            self.image_head.weight = self.image_embed.weight
        std = 0.02
        for m in (self.text_embed, self.image_embed):
            nn.init.normal_(m.weight, std=std)
        nn.init.normal_(self.text_head.weight, std=std)
        if not cfg.tie_image_head:
            nn.init.normal_(self.image_head.weight, std=std)

    # --------------------------------------------------------------------------------------------------------
    def embed(self, ids_BL: torch.Tensor) -> torch.Tensor:
        off = self.layout.image_offset
        is_img = ids_BL >= off
        x_BLD = self.text_embed(torch.where(is_img, torch.zeros_like(ids_BL), ids_BL))
        if is_img.any():
            x_img = self.image_embed((ids_BL - off).clamp(min=0))
            x_BLD = torch.where(is_img.unsqueeze(-1), x_img, x_BLD)
        return x_BLD

    def hidden(self, ids_BL: torch.Tensor, attention_mask: torch.Tensor | None = None,
               position_ids: torch.Tensor | None = None, cache=None, use_cache: bool = False):
        out = self.backbone(inputs_embeds=self.embed(ids_BL), attention_mask=attention_mask,
                            position_ids=position_ids, cache=cache, use_cache=use_cache)
        return out.last_hidden_state, (out.cache if use_cache else None)  # `past_key_values` is deprecated (warns)

    def image_logits(self, h_BLD: torch.Tensor) -> torch.Tensor:
        return self.image_head(self.image_norm(h_BLD)).float()

    def text_logits(self, h_BLD: torch.Tensor) -> torch.Tensor:
        return self.text_head(h_BLD).float()

    def forward(self, ids_BL: torch.Tensor, targets_BL: torch.Tensor, attention_mask: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None, text_weight: float = 1.0) -> tuple[torch.Tensor, dict]:
        """Next-token loss. `targets_BL` holds unified ids, -100 where no loss; image targets use the image head.
        The loss is a weighted token mean, (sum image CE + w x sum text CE) / (n_image + w x n_text) with
        w = `text_weight` (1: the plain token mean). Inputs built on the CPU are moved to the model's device."""
        dev = self.text_embed.weight.device
        ids_BL, targets_BL = ids_BL.to(dev), targets_BL.to(dev)
        attention_mask = attention_mask.to(dev) if attention_mask is not None else None
        position_ids = position_ids.to(dev) if position_ids is not None else None
        h_BLD, _ = self.hidden(ids_BL, attention_mask, position_ids)
        return token_loss(self, h_BLD, targets_BL, self.layout.image_offset, text_weight)

    def num_params(self, non_embedding: bool = True) -> int:
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.text_embed.weight.numel() + self.image_embed.weight.numel()
        return n


# The tensors whose rows index the image tokenizer's codes (the rest of the model does not depend on the tokenizer).
IMAGE_ROWS = ("image_embed.weight", "image_head.weight")


@torch.no_grad()
def grow_levels(ar: UnifiedAR, levels: int, max_seq_len: int | None = None, read_levels: int = 0) -> UnifiedAR:
    """An AR model for `levels` codes per patch that keeps everything a one-level model knows: every weight is
    copied, level 0's image embeddings and head rows included; the new levels' rows start small (random).
    `read_levels` 1 keeps the captions too (the model reads level 0, as before); 0 reads every level."""
    import dataclasses
    if ar.cfg.levels != 1:
        raise XomniError(f"grow_levels starts from a one-level AR model; this one writes {ar.cfg.levels} levels")
    K = ar.cfg.image_vocab
    cfg = dataclasses.replace(ar.cfg, levels=levels, image_vocab=levels * K,
                              max_seq_len=max_seq_len or ar.cfg.max_seq_len, read_levels=read_levels)
    new = UnifiedAR(cfg)
    new.load_state_dict({k: v for k, v in ar.state_dict().items() if k not in IMAGE_ROWS}, strict=False)
    for name in IMAGE_ROWS:
        new.get_parameter(name)[:K].copy_(ar.get_parameter(name))
    return new
