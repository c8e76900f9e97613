"""The memory table's bundled-model rows against torch on the CPU: parameters and LoRA parameters exactly, saved
activations (with and without checkpointing) closely, the sampler's KV cache exactly; the CLI prints JSON."""
import json

import pytest
import torch

from conftest import run_inproc
from xomni import memory as M


@pytest.fixture(scope="module")
def bundled():
    from xomni.ar.model import ARConfig, UnifiedAR
    from xomni.checkpoint import read_json
    from xomni.config import config_from_dict
    from xomni.pipeline import BUNDLED
    cfg = config_from_dict(ARConfig, read_json(BUNDLED / "ar" / "config.json")["ar"])
    torch.manual_seed(0)
    return M.bundled_arch(), UnifiedAR(cfg)


def _saved_activation_bytes(model, fn) -> int:
    """Bytes of the tensors autograd saves during fn(), parameters excluded, each storage once."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen = {}

    def pack(t):
        s = t.untyped_storage()
        if s.data_ptr() not in params:
            seen[s.data_ptr()] = max(seen.get(s.data_ptr(), 0), s.nbytes())
        return t
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values())


def _batch(arch, model):
    lay = model.layout
    T = arch.seq_tokens - 1  # inputs of one training sequence (targets shifted by one)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 259, (1, T), generator=g)
    tg = torch.full((1, T), -100)
    n = arch.image_tokens
    tg[0, -n:] = lay.image_offset + torch.randint(0, arch.image_vocab, (n,), generator=g)
    return ids, tg, torch.ones(1, T, dtype=torch.long), T, n


def test_parameter_bytes_and_lora_params_are_exact(bundled):
    arch, model = bundled
    p = M.params(arch)
    assert p["total"] == sum(t.numel() for t in model.parameters())
    row = M.rows(arch)[0]
    assert row["weights"] == sum(t.numel() * t.element_size() for t in model.parameters())
    assert row["adam"] == 2 * row["weights"] and row["gradients"] == row["weights"]
    import copy

    from xomni.lora.adapter import LoRAConfig, add_lora, n_adapter_params
    m = add_lora(copy.deepcopy(model), LoRAConfig(rank=8))
    lora = next(r for r in M.rows(arch, rank=8) if r["mode"] == "lora")
    assert lora["trainable_params"] == n_adapter_params(m) == M.lora_params(arch, 8)


def test_activations_match_torch(bundled):
    arch, model = bundled
    ids, tg, mask, T, n = _batch(arch, model)
    got = _saved_activation_bytes(model, lambda: model(ids, tg, attention_mask=mask)[0])
    want = 4 * M.activation_elems(arch, T, n)
    assert abs(got - want) / want < 0.05, (got, want)
    # checkpointed: the forward keeps each block's input; the formula adds the one block recomputed in backward
    import copy

    from xomni.fsdp import apply_activation_checkpointing
    ck = copy.deepcopy(model)
    apply_activation_checkpointing(ck)
    got_ck = _saved_activation_bytes(ck, lambda: ck(ids, tg, attention_mask=mask)[0])
    d = arch.hidden
    block = 8 * d + 2 * arch.kv_dim + arch.heads + 2 + 4 * arch.intermediate
    want_ck = 4 * (M.activation_elems(arch, T, n, checkpointing=True) - T * block)
    assert abs(got_ck - want_ck) / want_ck < 0.10, (got_ck, want_ck)
    assert got_ck < got / 2


def test_kv_cache_per_image_is_the_samplers(bundled):
    from xomni.ar.fastdecode import StaticKVDecoder
    arch, model = bundled
    tokens = 1 + arch.prompt_tokens + 4 + arch.image_tokens
    dec = StaticKVDecoder(model, rows=1, max_len=tokens, slot_valid=torch.ones(1, 1))
    got = sum(t.numel() * t.element_size() for t in dec.k + dec.v)
    assert got == M.rows(arch)[0]["kv_cache_per_image_fp32"]


def test_bench_memory_prints_json(monkeypatch, capsys):
    r = run_inproc(["bench", "memory", "--rank", "4"], monkeypatch, capsys)
    assert r.returncode == 0, r.stderr
    t = json.loads(r.stdout)
    names = {row["model"] for row in t["rows"]}
    assert {"X-Omni-7B", "xomni AR on qwen2.5-0.5b", "xomni AR on qwen2.5-1.5b"} <= names
    x = [row for row in t["rows"] if row["model"] == "X-Omni-7B"]
    assert {row["mode"] for row in x} == {"full", "lora", "grpo"}
    full = next(row for row in x if row["mode"] == "full")
    assert 9.5e9 < full["params"] < 9.7e9  # Qwen2.5-7B (7.6 B) + 8 image-only blocks + image tables
    grpo = next(row for row in x if row["mode"] == "grpo")
    assert grpo["weights"] == 2 * full["weights"]
