"""A lean decode path over the backbone's own weights: static KV cache, one SDPA call per layer and step.

transformers' per-step bookkeeping (mask building, dynamic cache objects) costs more than the arithmetic of a
tiny model on a CPU, so sampling uses this path. It reads the Hugging Face Qwen2/Llama modules directly (same
weights, same RoPE helper), and the sampler's log-prob test checks it against the full transformers forward.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def supports(model) -> bool:
    bb = model.backbone
    cfg = bb.config
    return (cfg.model_type in ("qwen2", "llama") and not getattr(cfg, "use_sliding_window", False)
            and hasattr(bb, "layers") and hasattr(bb, "rotary_emb"))


class StaticKVDecoder:
    """Holds the cache for R rows and `max_len` slots; `step(ids, pos)` appends T tokens and returns hidden states."""

    def __init__(self, model, rows: int, max_len: int, slot_valid: torch.Tensor):
        from transformers.models.qwen2.modeling_qwen2 import apply_rotary_pos_emb
        self._rope = apply_rotary_pos_emb
        self.model = model
        bb = model.backbone
        cfg = bb.config
        self.n_heads = cfg.num_attention_heads
        self.n_kv = cfg.num_key_value_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        p = next(model.parameters())
        shape = (rows, self.n_kv, max_len, self.head_dim)
        self.k = [torch.zeros(shape, dtype=p.dtype, device=p.device) for _ in bb.layers]
        self.v = [torch.zeros(shape, dtype=p.dtype, device=p.device) for _ in bb.layers]
        self.valid = torch.zeros(rows, max_len, dtype=torch.bool, device=p.device)
        self.valid[:, :slot_valid.shape[1]] = slot_valid.bool()
        self.len = 0

    @torch.no_grad()
    def step(self, ids_RT: torch.Tensor, pos_RT: torch.Tensor) -> torch.Tensor:
        bb = self.model.backbone
        R, T = ids_RT.shape
        s0, s1 = self.len, self.len + T
        if s0 > 0:
            self.valid[:, s0:s1] = True
        x = self.model.embed(ids_RT)
        cos, sin = bb.rotary_emb(x, pos_RT)
        q_idx = torch.arange(s0, s1, device=x.device)
        k_idx = torch.arange(s1, device=x.device)
        causal = k_idx[None, :] <= q_idx[:, None]                                   # T x s1
        mask = (self.valid[:, None, :s1] & causal[None]) | (k_idx[None, None, :] == q_idx[None, :, None])
        mask = mask[:, None]                                                         # R x 1 x T x s1
        for li, layer in enumerate(bb.layers):
            attn = layer.self_attn
            h = layer.input_layernorm(x)
            q = attn.q_proj(h).view(R, T, self.n_heads, self.head_dim).transpose(1, 2)
            k = attn.k_proj(h).view(R, T, self.n_kv, self.head_dim).transpose(1, 2)
            v = attn.v_proj(h).view(R, T, self.n_kv, self.head_dim).transpose(1, 2)
            q, k = self._rope(q, k, cos, sin)
            self.k[li][:, :, s0:s1] = k
            self.v[li][:, :, s0:s1] = v
            keys, vals = self.k[li][:, :, :s1], self.v[li][:, :, :s1]
            if T == 1:  # one new token: two small matmuls beat the fused CPU kernel's set-up cost
                g = self.n_heads // self.n_kv
                qg = q.view(R, self.n_kv, g, self.head_dim)
                att = (qg @ keys.transpose(-1, -2)) * self.head_dim ** -0.5            # R x kv x g x s1
                att = att.masked_fill(~mask.view(R, 1, 1, s1), float("-inf")).softmax(-1)
                o = (att @ vals).view(R, self.n_heads, 1, self.head_dim)
            else:
                o = F.scaled_dot_product_attention(q, keys, vals, attn_mask=mask, enable_gqa=self.n_kv != self.n_heads)
            x = x + attn.o_proj(o.transpose(1, 2).reshape(R, T, -1))
            x = x + layer.mlp(layer.post_attention_layernorm(x))
        self.len = s1
        return bb.norm(x)
