"""A lean decode path over the backbone's own weights: a static KV cache, and the window pass of the speculative
sampler (each row at its own cache slots).

transformers' per-step bookkeeping (mask building, dynamic cache objects) costs more than the arithmetic of a
tiny model on a CPU, so sampling uses this path. It reads the Hugging Face Qwen2/Llama modules directly (same
weights, same RoPE helper), and the sampler's log-prob test checks it against the full transformers forward.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from xomni.ar.distribution import SamplingConfig, process_logits


def supports(model) -> bool:
    bb = model.backbone
    cfg = bb.config
    return (cfg.model_type in ("qwen2", "llama") and not getattr(cfg, "use_sliding_window", False)
            and hasattr(bb, "layers") and hasattr(bb, "rotary_emb"))


def project_qkv(layer, x_RTD: torch.Tensor, heads: int, kv_heads: int, head_dim: int, cos, sin, rope):
    """A decoder layer's attention inputs: the normed x projected to queries, keys and values (R x heads x T x
    head_dim), `rope` (transformers' apply_rotary_pos_emb) applied to q and k."""
    R, T, _ = x_RTD.shape
    attn = layer.self_attn
    h = layer.input_layernorm(x_RTD)
    q = attn.q_proj(h).view(R, T, heads, head_dim).transpose(1, 2)
    k = attn.k_proj(h).view(R, T, kv_heads, head_dim).transpose(1, 2)
    v = attn.v_proj(h).view(R, T, kv_heads, head_dim).transpose(1, 2)
    q, k = rope(q, k, cos, sin)
    return q, k, v


def finish_layer(layer, x_RTD: torch.Tensor, o_RTX: torch.Tensor) -> torch.Tensor:
    """The rest of a decoder layer after attention output `o`: output projection, residual, MLP, residual."""
    x_RTD = x_RTD + layer.self_attn.o_proj(o_RTX)
    return x_RTD + layer.mlp(layer.post_attention_layernorm(x_RTD))


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
            q, k, v = project_qkv(layer, x, self.n_heads, self.n_kv, self.head_dim, cos, sin, self._rope)
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
            x = finish_layer(layer, x, o.transpose(1, 2).reshape(R, T, -1))
        self.len = s1
        return bb.norm(x)


def rope_tables(model, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin (n x head_dim) of positions 0..n-1, from the backbone's own rotary module."""
    p = next(model.parameters())
    pos = torch.arange(n, device=p.device)[None]
    cos, sin = model.backbone.rotary_emb(torch.zeros(1, device=p.device, dtype=p.dtype), pos)
    return cos[0], sin[0]


def window_forward(model, caches: list[torch.Tensor], valid_RS: torch.Tensor, codes_RT: torch.Tensor,
                   pos_RT: torch.Tensor, slot_RT: torch.Tensor, cos_PD: torch.Tensor, sin_PD: torch.Tensor
                   ) -> torch.Tensor:
    """Feed T image codes per row (no vocabulary offset) into cache slots `slot_RT`, each row at its own slots;
    return the final hidden states (R x T x D). The speculative sampler's verify pass, eager or compiled.

    `caches` = [K_0, V_0, K_1, V_1, ...] (R x kv heads x S x head_dim, written in place); `valid_RS` marks the slots
    a query may see besides causality (the prompt's left padding is False, image slots True); RoPE comes from
    `rope_tables`, so the same code compiles into one graph (xomni.ar.compiled)."""
    from transformers.models.qwen2.modeling_qwen2 import apply_rotary_pos_emb
    bb = model.backbone
    cfg = bb.config
    H, KV = cfg.num_attention_heads, cfg.num_key_value_heads
    hd = getattr(cfg, "head_dim", None) or cfg.hidden_size // H
    R, T = codes_RT.shape
    S = valid_RS.shape[1]
    x = model.image_embed(codes_RT)                                                  # R x T x D
    cos, sin = cos_PD[pos_RT], sin_PD[pos_RT]                                       # R x T x hd
    live = valid_RS[:, None, :] & (torch.arange(S, device=x.device)[None, None, :] <= slot_RT[:, :, None])
    mask = live[:, None]                                                            # R x 1 x T x S
    idx = slot_RT[:, None, :, None].expand(R, KV, T, hd)
    for li, layer in enumerate(bb.layers):
        q, k, v = project_qkv(layer, x, H, KV, hd, cos, sin, apply_rotary_pos_emb)
        K, V = caches[2 * li], caches[2 * li + 1]
        K.scatter_(2, idx, k)
        V.scatter_(2, idx, v)
        o = F.scaled_dot_product_attention(q, K, V, attn_mask=mask, enable_gqa=KV != H)   # R x H x T x hd
        x = finish_layer(layer, x, o.transpose(1, 2).reshape(R, T, H * hd))
    return bb.norm(x)


def window_step(model, sampling: SamplingConfig):
    """The speculative sampler's verify pass as one function of tensors, run eagerly by the sampler or compiled
    (xomni.ar.compiled): `window_forward`, the image head, then the sampling distribution's log-probs (B x T x V)."""
    cfg_on = sampling.cfg_on

    def window(codes_RT, pos_RT, slot_RT, valid_RS, cos_PD, sin_PD, caches):
        h_RTD = window_forward(model, caches, valid_RS, codes_RT, pos_RT, slot_RT, cos_PD, sin_PD)
        logits = model.image_logits(h_RTD)
        B = logits.shape[0] // 2 if cfg_on else logits.shape[0]
        return process_logits(logits[:B], logits[B:] if cfg_on else None, sampling)

    return window
