"""Training and sampling memory computed from model configs: `xomni bench memory` (JSON; --markdown for a table).

For each model (the bundled mini AR, xomni's AR over Qwen2.5-0.5B / 1.5B backbones, X-Omni-7B) and each way of
training it (full fine-tune, LoRA, GRPO = policy + frozen reference) the table gives, in bytes:

  weights       parameters held (fp32 as xomni's loop trains; LoRA: the frozen base plus the adapter; GRPO: the
                policy plus a frozen reference copy)
  gradients     fp32, one per trainable parameter
  adam          AdamW's two fp32 moments per trainable parameter
  activations   what autograd keeps for backward for one training sequence (fp32), without and with activation
                checkpointing (each block keeps only its input; one block is recomputed at a time)
  kv_cache      keys and values of one image's sequence when sampling (prompt + image tokens), fp32 and bf16
  fsdp_per_rank weights + gradients + Adam states divided over `ranks` FSDP ranks (activations are per rank's
                sequences and not divided)

Counts per block of a Qwen2-style decoder layer (d = hidden, kv = key/value width, I = SwiGLU width, H = heads):
parameters 2 d^2 + 2 d kv + d + 2 kv (q, k, v with bias, o without) + 3 d I + 2 d (two RMSNorms); saved
activations per token 8 d + 2 kv + H + 2 + 4 I (two RMSNorms 2 d + 1 each, the q/k/v input d, RoPE'd q, k, v and
the attention output and log-sum-exp d + 2 kv + d + H, the MLP input d and gate, SiLU, up, product 4 I), plus the
final norm and RoPE tables (2 d + 1 + 2 head_dim) per token; the loss head keeps V + 2 d + 2 per target token (the
image norm, the head input and the log-softmax over V image codes). tests/test_memory.py checks the bundled model's
rows against torch: parameter bytes and LoRA parameters exactly, saved activations within a few per cent, the KV
cache of the sampler exactly.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Optional

import typer

from xomni.checkpoint import read_json
from xomni.cliargs import IntRange, JsonOpt, _cb, check_in_dir
from xomni.errors import XomniError
from xomni.pipeline import BUNDLED
from xomni.utils import emit_json

QWEN2_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclasses.dataclass(frozen=True)
class Arch:
    name: str
    hidden: int
    layers: int                 # every block the sequence goes through (X-Omni: image-only blocks included)
    heads: int
    kv_heads: int
    intermediate: int
    text_rows: int              # text-side embedding rows (= text head rows)
    image_rows: int             # image embedding rows (= image head rows)
    tie_text: bool              # text head tied to the text embedding
    unused_rows: int            # rows of an embedding table the model holds but never reads
    image_norm: str             # layernorm (weight + bias) | rmsnorm (weight)
    prompt_tokens: int          # text tokens of a prompt (sequence = prompt + header + image)
    image_tokens: int           # image tokens of one image
    image_vocab: int            # codes the loss head scores per image token
    note: str = ""

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim

    @property
    def seq_tokens(self) -> int:
        return 1 + self.prompt_tokens + 4 + self.image_tokens + 1


def block_params(a: Arch) -> int:
    d, kv, i = a.hidden, a.kv_dim, a.intermediate
    return 2 * d * d + 2 * d * kv + d + 2 * kv + 3 * d * i + 2 * d


def params(a: Arch) -> dict:
    d = a.hidden
    emb = a.text_rows * d * (1 if a.tie_text else 2) + a.image_rows * d * 2 + a.unused_rows * d
    norms = d + (2 * d if a.image_norm == "layernorm" else d)
    blocks = a.layers * block_params(a)
    return {"total": blocks + emb + norms, "blocks": blocks, "embeddings_and_heads": emb, "norms": norms,
            "per_block": block_params(a)}


def lora_params(a: Arch, rank: int, targets=QWEN2_TARGETS) -> int:
    d, kv, i = a.hidden, a.kv_dim, a.intermediate
    shapes = {"q_proj": (d, d), "k_proj": (d, kv), "v_proj": (d, kv), "o_proj": (d, d), "gate_proj": (d, i),
              "up_proj": (d, i), "down_proj": (i, d)}
    unknown = [t for t in targets if t not in shapes]
    if unknown:
        raise XomniError(f"memory: LoRA target {unknown[0]!r} is not a block projection ({', '.join(shapes)})")
    return a.layers * sum(rank * (shapes[t][0] + shapes[t][1]) for t in targets)


def activation_elems(a: Arch, tokens: int, loss_tokens: int, checkpointing: bool = False) -> int:
    """Elements autograd keeps for one sequence of `tokens` with `loss_tokens` image targets (see the module doc)."""
    d = a.hidden
    per_block = 8 * d + 2 * a.kv_dim + a.heads + 2 + 4 * a.intermediate
    top = 2 * d + 1 + 2 * a.head_dim
    head = loss_tokens * (a.image_vocab + 2 * d + 2)
    if checkpointing:
        return tokens * (a.layers * d + per_block + top) + head
    return tokens * (a.layers * per_block + top) + head


def kv_cache_bytes(a: Arch, tokens: int, dtype_bytes: int) -> int:
    return 2 * a.layers * a.kv_dim * tokens * dtype_bytes


def rows(a: Arch, rank: int = 8, ranks: int = 8, targets=QWEN2_TARGETS) -> list[dict]:
    p = params(a)["total"]
    pl = lora_params(a, rank, targets)
    tokens = a.seq_tokens
    act = 4 * activation_elems(a, tokens, a.image_tokens)
    act_ck = 4 * activation_elems(a, tokens, a.image_tokens, checkpointing=True)
    kv_tokens = 1 + a.prompt_tokens + 4 + a.image_tokens
    out = []
    for mode, w, trainable in (("full", 4 * p, p), ("lora", 4 * p + 4 * pl, pl), ("grpo", 8 * p, p)):
        g, adam = 4 * trainable, 8 * trainable
        out.append({"model": a.name, "mode": mode, "params": p, "trainable_params": trainable,
                    "weights": w, "gradients": g, "adam": adam, "activations": act,
                    "activations_checkpointed": act_ck, "seq_tokens": tokens,
                    "kv_cache_per_image_fp32": kv_cache_bytes(a, kv_tokens, 4),
                    "kv_cache_per_image_bf16": kv_cache_bytes(a, kv_tokens, 2),
                    "total": w + g + adam + act, "total_checkpointed": w + g + adam + act_ck,
                    "fsdp_ranks": ranks, "fsdp_per_rank": (w + g + adam) // ranks,
                    **({"lora_rank": rank} if mode == "lora" else {})})
    return out


def bundled_arch(model_dir: str | Path | None = None) -> Arch:
    """The bundled (or given) pipeline's AR model, from its ar/config.json."""
    p = Path(model_dir) if model_dir else BUNDLED
    cfg = read_json(p / "ar" / "config.json")
    ar = cfg.get("ar") or {}
    if ar.get("backbone", "tiny") != "tiny":
        raise XomniError(f"{p}: memory rows are computed for the tiny backbone config only")
    grid = cfg.get("grid") or [4, 16]
    n_textside = ar["n_text"] + 3 + ar["max_grid"]
    return Arch(name=f"{'bundled mini' if model_dir is None else p.name} AR", hidden=ar["hidden_size"],
                layers=ar["n_layers"], heads=ar["n_heads"], kv_heads=ar["n_kv_heads"],
                intermediate=ar["intermediate_size"], text_rows=n_textside, image_rows=ar["image_vocab"],
                tie_text=False, unused_rows=0, image_norm="layernorm",
                prompt_tokens=ar["max_seq_len"] - (1 + 4 + grid[0] * grid[1] + 1),
                image_tokens=grid[0] * grid[1], image_vocab=ar["image_vocab"],
                note="ar/config.json; the longest prompt the context allows")


# Qwen2.5 config.json numbers. As an xomni UnifiedAR backbone, the checkpoint's own embed_tokens stays loaded but
# unused (UnifiedAR has its own text table and head, untied); images: 1024 tokens (a 512 x 512 image at 16 px per
# token) over a 16,384-code SigLIP-VQ-sized vocabulary.
QWEN = {"qwen2.5-0.5b": dict(hidden=896, layers=24, heads=14, kv_heads=2, intermediate=4864, vocab=151936),
        "qwen2.5-1.5b": dict(hidden=1536, layers=28, heads=12, kv_heads=2, intermediate=8960, vocab=151936)}


def qwen_unified(name: str) -> Arch:
    q = QWEN[name]
    return Arch(name=f"xomni AR on {name}", hidden=q["hidden"], layers=q["layers"], heads=q["heads"],
                kv_heads=q["kv_heads"], intermediate=q["intermediate"], text_rows=q["vocab"] + 3 + 64,
                image_rows=16384, tie_text=False, unused_rows=q["vocab"], image_norm="layernorm",
                prompt_tokens=64, image_tokens=1024, image_vocab=16384,
                note="Qwen2.5 config; UnifiedAR keeps the backbone's embed_tokens (unused) beside its own text table")


def xomni_7b() -> Arch:
    """X-Omni-7B: the Qwen2.5-7B backbone (hidden 3584, 28 blocks, 28 heads, 4 kv heads, SwiGLU 18944, vocab
    152064, untied head) with 4 image-only blocks before and 4 after it (36 in all), an image embedding table and
    head of 16,448 rows and an image RMSNorm (xomni/xomni_arch/config.py). The SigLIP-VQ tokenizer and the FLUX
    decoder are frozen and not counted."""
    return Arch(name="X-Omni-7B", hidden=3584, layers=36, heads=28, kv_heads=4, intermediate=18944,
                text_rows=152064, image_rows=16448, tie_text=False, unused_rows=0, image_norm="rmsnorm",
                prompt_tokens=64, image_tokens=1024, image_vocab=16384,
                note="Qwen2.5-7B + 8 image-only blocks; tokenizer and decoder not counted")


def all_archs(model_dir: str | None = None) -> list[Arch]:
    return [bundled_arch(model_dir), qwen_unified("qwen2.5-0.5b"), qwen_unified("qwen2.5-1.5b"), xomni_7b()]


def memory_table(rank: int = 8, ranks: int = 8, model_dir: str | None = None) -> dict:
    archs = all_archs(model_dir)
    return {"rows": [r for a in archs for r in rows(a, rank, ranks)],
            "models": {a.name: dict(dataclasses.asdict(a), params=params(a), seq_tokens=a.seq_tokens)
                       for a in archs},
            "units": "bytes", "lora_targets": list(QWEN2_TARGETS), "lora_rank": rank, "fsdp_ranks": ranks,
            "training_precision": "fp32 parameters, gradients, Adam moments and activations (xomni's loop)"}


def _gib(b: int) -> str:
    if b >= 2 ** 30:
        return f"{b / 2 ** 30:.1f} GiB"
    if b >= 2 ** 20:
        return f"{b / 2 ** 20:.1f} MiB"
    return f"{b / 2 ** 10:.0f} KiB"


def markdown(table: dict) -> str:
    head = ("| model | mode | params | trainable | weights | gradients | Adam | activations / seq | with ckpt | "
            "KV cache / image (bf16) | total | total with ckpt | FSDP / rank |")
    lines = [head, "|" + "---|" * 13]
    for r in table["rows"]:
        lines.append(f"| {r['model']} | {r['mode']} | {r['params'] / 1e6:,.1f} M | {r['trainable_params'] / 1e6:,.2f} M"
                     f" | {_gib(r['weights'])} | {_gib(r['gradients'])} | {_gib(r['adam'])} | {_gib(r['activations'])}"
                     f" | {_gib(r['activations_checkpointed'])} | {_gib(r['kv_cache_per_image_bf16'])} | "
                     f"{_gib(r['total'])} | {_gib(r['total_checkpointed'])} | {_gib(r['fsdp_per_rank'])} |")
    return "\n".join(lines) + "\n"


def register(apps: dict) -> None:
    @apps["bench"].command("memory")
    def memory_cmd(rank: int = typer.Option(8, "--rank", help="LoRA rank of the lora rows.",
                                            callback=IntRange("--rank", 1, 4096)),
                   ranks: int = typer.Option(8, "--ranks", help="FSDP ranks of the fsdp_per_rank column.",
                                             callback=IntRange("--ranks", 1, 65536)),
                   model: Optional[str] = typer.Option(None, "--model", help="Pipeline whose AR config gives the "
                                                       "first rows (default: the bundled model).",
                                                       callback=_cb(check_in_dir, "--model")),
                   md: bool = typer.Option(False, "--markdown", help="Print the table as Markdown instead of JSON."),
                   json_path: Optional[str] = JsonOpt):
        """Memory of training and sampling, computed from the model configs (no model is loaded)."""
        t = memory_table(rank, ranks, model)
        if md:
            typer.echo(markdown(t), nl=False)
            if json_path:
                Path(json_path).write_text(json.dumps(t, indent=2))
            return
        emit_json(t, json_path)
