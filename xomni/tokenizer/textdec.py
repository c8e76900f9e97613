"""Byte-level caption decoder: a small pre-norm transformer decoder that cross-attends to the quantised code
sequence. It is the tokenizer's semantic training objective (teacher forcing) and its evaluation (greedy decoding
with a KV cache): the codes are good when this decoder can reproduce the caption, exact text string included.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

BOS, EOS, PAD = 256, 257, 258
VOCAB = 259


def encode_caption(caption: str, max_bytes: int) -> torch.Tensor:
    """[BOS] + UTF-8 bytes (truncated to max_bytes) + [EOS], padded with PAD to max_bytes + 2."""
    b = list(caption.encode("utf-8"))[:max_bytes]
    ids = [BOS] + b + [EOS] + [PAD] * (max_bytes - len(b))
    return torch.tensor(ids, dtype=torch.long)


def decode_bytes(ids: list[int]) -> str:
    out = []
    for i in ids:
        if i == EOS:
            break
        if i < 256:
            out.append(i)
    return bytes(out).decode("utf-8", errors="replace")


class Block(nn.Module):
    def __init__(self, d: int, heads: int):
        super().__init__()
        self.h = heads
        self.ln1, self.qkv, self.o1 = nn.LayerNorm(d), nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.ln2, self.q2, self.kv2, self.o2 = nn.LayerNorm(d), nn.Linear(d, d), nn.Linear(d, 2 * d), nn.Linear(d, d)
        self.ln3 = nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))

    def _heads(self, x):  # B T D -> B h T D/h
        B, T, D = x.shape
        return x.view(B, T, self.h, D // self.h).transpose(1, 2)

    def _merge(self, x):
        B, h, T, d = x.shape
        return x.transpose(1, 2).reshape(B, T, h * d)

    def memory_kv(self, mem_BND):
        k, v = self.kv2(mem_BND).chunk(2, dim=-1)
        return self._heads(k), self._heads(v)

    def forward(self, x, mem_kv, cache: dict | None = None):
        q, k, v = (self._heads(t) for t in self.qkv(self.ln1(x)).chunk(3, dim=-1))
        if cache is not None and "k" in cache:
            k, v = torch.cat([cache["k"], k], 2), torch.cat([cache["v"], v], 2)
        if cache is not None:
            cache["k"], cache["v"] = k, v
        causal = q.shape[2] > 1
        x = x + self.o1(self._merge(F.scaled_dot_product_attention(q, k, v, is_causal=causal)))
        q2 = self._heads(self.q2(self.ln2(x)))
        x = x + self.o2(self._merge(F.scaled_dot_product_attention(q2, *mem_kv)))
        return x + self.mlp(self.ln3(x))


class CaptionDecoder(nn.Module):
    def __init__(self, mem_dim: int, n_mem: int, d: int = 192, layers: int = 2, heads: int = 4, max_len: int = 194):
        super().__init__()
        self.max_len = max_len
        self.tok = nn.Embedding(VOCAB, d)
        self.pos = nn.Parameter(torch.randn(1, max_len, d) * 0.02)
        self.mem_in = nn.Linear(mem_dim, d)
        self.mem_pos = nn.Parameter(torch.randn(1, n_mem, d) * 0.02)
        self.blocks = nn.ModuleList(Block(d, heads) for _ in range(layers))
        self.ln_f = nn.LayerNorm(d)
        self.head = nn.Linear(d, VOCAB)

    def _memory(self, mem_BND):
        m = self.mem_in(mem_BND) + self.mem_pos[:, :mem_BND.shape[1]]
        return [b.memory_kv(m) for b in self.blocks]

    def forward(self, tokens_BT, mem_BND):
        kv = self._memory(mem_BND)
        x = self.tok(tokens_BT) + self.pos[:, :tokens_BT.shape[1]]
        for b, mkv in zip(self.blocks, kv):
            x = b(x, mkv)
        return self.head(self.ln_f(x))

    def loss(self, captions_BT, mem_BND) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher-forced cross-entropy over caption bytes (+EOS); also returns the number of target tokens."""
        T = int((captions_BT != PAD).sum(1).max())  # trim shared padding
        cap = captions_BT[:, :T]
        logits = self(cap[:, :-1], mem_BND)
        tgt = cap[:, 1:]
        loss = F.cross_entropy(logits.reshape(-1, VOCAB), tgt.reshape(-1), ignore_index=PAD)
        return loss, (tgt != PAD).sum()

    @torch.no_grad()
    def generate(self, mem_BND, max_new: int | None = None) -> list[str]:
        """Greedy decoding with a KV cache; stops when every row has produced EOS."""
        B = mem_BND.shape[0]
        max_new = min(max_new or self.max_len - 1, self.max_len - 1)
        kv = self._memory(mem_BND)
        caches = [dict() for _ in self.blocks]
        tok = torch.full((B, 1), BOS, dtype=torch.long, device=mem_BND.device)
        out = torch.full((B, max_new), PAD, dtype=torch.long, device=mem_BND.device)
        done = torch.zeros(B, dtype=torch.bool, device=mem_BND.device)
        for t in range(max_new):
            x = self.tok(tok) + self.pos[:, t:t + 1]
            for b, mkv, c in zip(self.blocks, kv, caches):
                x = b(x, mkv, c)
            logits = self.head(self.ln_f(x[:, -1]))
            logits[:, [BOS, PAD]] = float("-inf")
            nxt = logits.argmax(-1)
            out[:, t] = torch.where(done, torch.full_like(nxt, PAD), nxt)
            done |= nxt == EOS
            if bool(done.all()):
                break
            tok = nxt[:, None]
        return [decode_bytes(r) for r in out.tolist()]
