"""XOmniAR: X-Omni's unified model with the interface of xomni's UnifiedAR (embed / hidden / image_logits /
text_logits / forward(ids, targets) / layout / cfg), so xomni's sampler, SFT (xomni.ar.train), GRPO
(xomni.rl.grpo) and LoRA run on it unchanged.

The forward reproduces the official XOmniForCausalLM (modeling_xomni.py of the released models):
  * a position is "multimodal" when its input id is >= vocab_size; its embedding comes from the image table
    (row id - vocab_size), a text position's from the text table;
  * every block runs on all positions; blocks [0, num_mm_adap_layers) and [L - num_mm_head_layers, L) keep their
    output only at multimodal positions (text positions keep their input), the others are ordinary LM blocks;
  * the final norm is the image norm at multimodal positions and the text norm elsewhere (chosen by the position's
    input, not by what it predicts: the <IMAGE> position that predicts the first code uses the text norm);
  * image logits are the image head's first image_vocab_size rows (the official model's image generation mode),
    text logits the text head's.
`hidden()` therefore returns the normed hidden states, and the two logit functions are plain heads.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from xomni.ar.model import token_loss
from xomni.errors import XomniError
from xomni.xomni_arch.config import XOmniARConfig


class XOmniBlocks(nn.Module):
    """The transformer blocks and the rotary embedding (no embedding tables, no norm: those live in XOmniAR).
    `config` is a Qwen2 config with model_type 'x-omni' (see XOmniARConfig.qwen2_config)."""

    def __init__(self, cfg: XOmniARConfig):
        super().__init__()
        from transformers.models.qwen2.modeling_qwen2 import Qwen2DecoderLayer, Qwen2RotaryEmbedding
        self.config = cfg.qwen2_config()
        self.layers = nn.ModuleList(Qwen2DecoderLayer(self.config, i) for i in range(cfg.num_hidden_layers))
        self.rotary_emb = Qwen2RotaryEmbedding(config=self.config)
        lm = cfg.lm_layers
        self.image_only = [not (lm.start <= i < lm.stop) for i in range(cfg.num_hidden_layers)]


class XOmniAR(nn.Module):
    def __init__(self, cfg: XOmniARConfig):
        super().__init__()
        from transformers.models.qwen2.modeling_qwen2 import Qwen2RMSNorm
        cfg.check()
        self.cfg = cfg
        self.layout = cfg.layout()
        d = cfg.hidden_size
        self.backbone = XOmniBlocks(cfg)
        self.text_embed = nn.Embedding(cfg.vocab_size, d)
        self.image_embed = nn.Embedding(cfg.mm_vocab_size, d)
        self.text_norm = Qwen2RMSNorm(d, eps=cfg.rms_norm_eps)
        self.image_norm = Qwen2RMSNorm(d, eps=cfg.rms_norm_eps)
        self.text_head = nn.Linear(d, cfg.vocab_size, bias=False)
        self.image_head = nn.Linear(d, cfg.mm_vocab_size, bias=False)
        if cfg.tie_word_embeddings:
            self.text_head.weight = self.text_embed.weight
        if not any(p.is_meta for p in self.parameters()):
            for m in (self.text_embed, self.image_embed, self.text_head, self.image_head):
                nn.init.normal_(m.weight, std=0.02)

    # --------------------------------------------------------------------------------------------------------
    def is_mm(self, ids_BL: torch.Tensor) -> torch.Tensor:
        return ids_BL >= self.cfg.vocab_size

    def embed(self, ids_BL: torch.Tensor) -> torch.Tensor:
        V = self.cfg.vocab_size
        mm = ids_BL >= V
        x = self.text_embed(torch.where(mm, torch.zeros_like(ids_BL), ids_BL))
        if mm.any():
            x = torch.where(mm.unsqueeze(-1), self.image_embed((ids_BL - V).clamp(min=0)), x)
        return x

    def hidden(self, ids_BL: torch.Tensor, attention_mask: torch.Tensor | None = None,
               position_ids: torch.Tensor | None = None, cache=None, use_cache: bool = False):
        """Normed hidden states [B, T, D] of the T new tokens (after `cache`'s, when given) and the cache.
        `attention_mask` is [B, past + T] (1 = a real token, left padding allowed), as for transformers."""
        B, T = ids_BL.shape
        x = self.embed(ids_BL)
        mm = self.is_mm(ids_BL).unsqueeze(-1)
        if use_cache and cache is None:
            from transformers.cache_utils import DynamicCache
            cache = DynamicCache()
        past = cache.get_seq_length() if cache is not None else 0
        S = past + T
        dev = x.device
        if attention_mask is None:
            attention_mask = torch.ones(B, S, dtype=torch.long, device=dev)
        if attention_mask.shape != (B, S):
            raise XomniError(f"attention_mask must be [batch, past + new] = [{B}, {S}], got "
                             f"{list(attention_mask.shape)}")
        if position_ids is None:
            position_ids = torch.arange(past, S, device=dev).expand(B, T)
        causal = torch.arange(S, device=dev)[None, :] <= (past + torch.arange(T, device=dev))[:, None]
        allowed = attention_mask.bool()[:, None, None, :] & causal[None, None]
        mask = torch.zeros(B, 1, T, S, dtype=x.dtype, device=dev).masked_fill(~allowed, torch.finfo(x.dtype).min)
        pe = self.backbone.rotary_emb(x, position_ids)
        for layer, image_only in zip(self.backbone.layers, self.backbone.image_only):
            y = layer(x, attention_mask=mask, position_ids=position_ids, cache=cache, use_cache=use_cache,
                      position_embeddings=pe)
            y = y[0] if isinstance(y, tuple) else y
            x = torch.where(mm, y, x) if image_only else y
        h = torch.where(mm, self.image_norm(x), self.text_norm(x))
        return h, (cache if use_cache else None)

    def image_logits(self, h_BLD: torch.Tensor) -> torch.Tensor:
        w = self.image_head.weight[:self.cfg.image_vocab_size]
        return F.linear(h_BLD, w).float()

    def text_logits(self, h_BLD: torch.Tensor) -> torch.Tensor:
        return self.text_head(h_BLD).float()

    def forward(self, ids_BL: torch.Tensor, targets_BL: torch.Tensor, attention_mask: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None, text_weight: float = 1.0) -> tuple[torch.Tensor, dict]:
        """Next-token loss, as UnifiedAR.forward: targets are unified ids (-100 = no loss); image-code targets
        (vocab_size .. vocab_size + image_vocab_size - 1) use the image logits, text targets the text logits."""
        dev = self.text_embed.weight.device
        ids_BL, targets_BL = ids_BL.to(dev), targets_BL.to(dev)
        attention_mask = attention_mask.to(dev) if attention_mask is not None else None
        position_ids = position_ids.to(dev) if position_ids is not None else None
        h_BLD, _ = self.hidden(ids_BL, attention_mask, position_ids)
        off, K = self.cfg.vocab_size, self.cfg.image_vocab_size

        def image_valid(is_img):
            if bool((targets_BL[is_img] >= off + K).any()):
                raise XomniError(f"a target id is >= vocab_size + image_vocab_size = {off + K}: only text tokens and "
                                 f"image codes can be trained on")

        return token_loss(self, h_BLD, targets_BL, off, text_weight, image_valid)

    def num_params(self, non_embedding: bool = True) -> int:
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.text_embed.weight.numel() + self.image_embed.weight.numel()
        return n
