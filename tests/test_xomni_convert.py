"""X-Omni's own architecture and `xomni convert x-omni` (issue 26, item 3), on tiny random checkpoints written with
the official file layout, key names and (scaled-down) shapes of the released X-Omni models.

The official tensors are made from transformers' own Qwen2ForCausalLM and diffusers' own FluxTransformer2DModel,
renamed the way the official XOmniForCausalLM lays them out (lm_/mm_ embeddings and norms, lm_head + mm_head), so
the names do not come from the converter's own tables.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import run_inproc

V, M, K = 100, 72, 64          # text vocab (official vocab_size), mm_vocab_size, image_vocab_size
H, I, L, NH, NKV = 64, 96, 4, 4, 2
ADAP, HEAD = 1, 1
Z, CD = 32, 16                 # SigLIP-VQ z_channels, codebook_dim (codebook_size = K)
FLUX = dict(patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=8,
            num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=16, guidance_embeds=True,
            axes_dims_rope=[2, 2, 4])
DIGITS = list(range(15, 25))
SPACE, EOT, IM_START, IM_END = 30, 90, 91, 92


def _official_lm(seed: int) -> dict[str, torch.Tensor]:
    from transformers import Qwen2Config, Qwen2ForCausalLM
    torch.manual_seed(seed)
    hf = Qwen2ForCausalLM(Qwen2Config(vocab_size=V, hidden_size=H, intermediate_size=I, num_hidden_layers=L,
                                      num_attention_heads=NH, num_key_value_heads=NKV, tie_word_embeddings=False))
    sd = {}
    for k, v in hf.state_dict().items():
        k = k.replace("model.embed_tokens.", "model.lm_embed_tokens.").replace("model.norm.", "model.lm_norm.")
        sd[k] = v.clone()
    sd["model.mm_embed_tokens.weight"] = torch.randn(M, H) * 0.02
    sd["model.mm_norm.weight"] = 1 + 0.1 * torch.randn(H)
    sd["model.lm_norm.weight"] = 1 + 0.1 * torch.randn(H)
    sd["mm_head.weight"] = torch.randn(M, H) * 0.3
    for k in sd:  # non-trivial norms and biases
        if "layernorm" in k:
            sd[k] = 1 + 0.1 * torch.randn_like(sd[k])
        elif k.endswith(".bias"):
            sd[k] = 0.02 * torch.randn_like(sd[k])
    return {k: v.to(torch.bfloat16) for k, v in sd.items()}


def _official_projector(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    sd = {"quant_conv.weight": torch.randn(CD, Z, 1, 1, generator=g) * 0.2,
          "quant_conv.bias": torch.randn(CD, generator=g) * 0.1,
          "quantize.embedding.weight": torch.nn.functional.normalize(torch.randn(K, CD, generator=g), dim=-1),
          "post_quant_conv.weight": torch.randn(Z, CD, 1, 1, generator=g) * 0.2,
          "post_quant_conv.bias": torch.randn(Z, generator=g) * 0.1}
    for j in range(2):
        for part in ("conv1", "norm1", "conv2", "norm2"):
            w = (Z, Z, 3, 3) if part.startswith("conv") else (Z,)
            sd[f"post_conv.{j}.{part}.weight"] = torch.randn(*w, generator=g) * (0.05 if len(w) > 1 else 1)
            sd[f"post_conv.{j}.{part}.bias"] = torch.randn(Z, generator=g) * 0.05
    return sd


def _tokenizer_json(specials_in_mm: bool) -> dict:
    vocab = {str(d): i for d, i in zip(range(10), DIGITS)}
    vocab["\u0120"] = SPACE
    used = set(vocab.values()) | {EOT, IM_START, IM_END, 93, 94, 95}
    vocab.update({f"t{i}": i for i in range(V) if i not in used})
    names = ["<SOM>", "<EOM>", "<IMAGE>"]
    spec_ids = [V + K, V + K + 1, V + K + 2] if specials_in_mm else [93, 94, 95]
    added = [{"id": EOT, "content": "<|endoftext|>", "special": True},
             {"id": IM_START, "content": "<|im_start|>", "special": True},
             {"id": IM_END, "content": "<|im_end|>", "special": True}]
    added += [{"id": i, "content": n, "special": True} for n, i in zip(names, spec_ids)]
    added += [{"id": V + k, "content": f"<MM-Token-{k}>", "special": True} for k in range(K)]
    return {"version": "1.0", "added_tokens": added, "model": {"type": "BPE", "vocab": vocab, "merges": []}}


def write_official(root: Path, seed: int = 0, specials_in_mm: bool = False, adapter_name: str = "siglip_embedder"
                   ) -> Path:
    """A tiny X-Omni model folder: the official layout, key names and (scaled) shapes."""
    root.mkdir(parents=True, exist_ok=True)
    cfg = {"architectures": ["XOmniForCausalLM"],
           "auto_map": {"AutoConfig": "configuration_xomni.XOmniConfig",
                        "AutoModelForCausalLM": "modeling_xomni.XOmniForCausalLM"},
           "model_type": "x-omni", "hidden_act": "silu", "hidden_size": H, "intermediate_size": I,
           "num_hidden_layers": L, "num_attention_heads": NH, "num_key_value_heads": NKV,
           "num_mm_adap_layers": ADAP, "num_mm_head_layers": HEAD, "vocab_size": V, "mm_vocab_size": M,
           "image_vocab_size": K, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "max_position_embeddings": 256,
           "tie_word_embeddings": False, "use_sliding_window": False, "torch_dtype": "bfloat16",
           "mm_special_tokens": ["<SOM>", "<EOM>", "<IMAGE>"],
           "vision_config": {"dtype": "bfloat16",
                             "transform": {"short_size": 384, "long_size": 1152, "patch_size": 16,
                                           "random_ratio": None, "min_short_size": 128, "max_aspect_ratio": 2.5,
                                           "filtering": False},
                             "encoder": {"siglip_name": "siglip2_giant_patch16_384", "siglip_path": "vit/vit_g.pth",
                                         "projector_path": "vit/siglip_vq.pth", "z_channels": Z,
                                         "codebook_size": K, "codebook_dim": CD, "with_norm": True},
                             "decoder": {"model_path": "diffusers", "upscale_factor": 16, "num_inference_steps": 28,
                                         "cfg_scale": 1.0, "cfg_scale_2": 1.0}}}
    (root / "config.json").write_text(json.dumps(cfg, indent=2))
    (root / "tokenizer.json").write_text(json.dumps(_tokenizer_json(specials_in_mm)))
    (root / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 256}))
    (root / "modeling_xomni.py").write_text("# the official modeling code would be here\n")
    lm = _official_lm(seed)
    keys = list(lm)
    shards = {"model-00001-of-00002.safetensors": keys[: len(keys) // 2],
              "model-00002-of-00002.safetensors": keys[len(keys) // 2:]}
    for name, ks in shards.items():
        save_file({k: lm[k] for k in ks}, str(root / name), metadata={"format": "pt"})
    (root / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {"total_size": 0}, "weight_map": {k: n for n, ks in shards.items() for k in ks}}, indent=2))
    (root / "vit").mkdir()
    torch.save(_official_projector(seed), root / "vit" / "siglip_vq.pth")
    torch.save({"blocks.0.attn.qkv.weight": torch.randn(6, 4)}, root / "vit" / "vit_g.pth")
    from diffusers import FluxTransformer2DModel
    torch.manual_seed(seed)
    flux = FluxTransformer2DModel(**FLUX)
    dsd = {k: v.to(torch.bfloat16) for k, v in flux.state_dict().items()}
    dsd[f"{adapter_name}.weight"] = (torch.randn(flux.inner_dim, Z) * 0.2).to(torch.bfloat16)
    dsd[f"{adapter_name}.bias"] = (torch.randn(flux.inner_dim) * 0.1).to(torch.bfloat16)
    (root / "diffusers").mkdir()
    save_file(dsd, str(root / "diffusers" / "diffusion_pytorch_model.safetensors"), metadata={"format": "pt"})
    (root / "diffusers" / "config.json").write_text(json.dumps(
        {"_class_name": "FluxTransformer2DModelWithSigLIP", "_diffusers_version": "0.34.0", **FLUX}, indent=2))
    return root


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    from xomni.convert.x_omni import convert
    base = tmp_path_factory.mktemp("xomni")
    src = write_official(base / "official")
    convert(src, base / "xomni")
    return src, base / "xomni"


def _all_tensors(root: Path) -> dict[str, dict[str, torch.Tensor]]:
    out = {}
    for p in sorted(root.rglob("*")):
        if p.suffix == ".safetensors":
            out[str(p.relative_to(root))] = load_file(str(p))
        elif p.suffix == ".pth":
            out[str(p.relative_to(root))] = torch.load(p, weights_only=True)
    return out


# ------------------------------------------------------------------------------------------------ round trip
def test_round_trip_is_exact(converted, tmp_path):
    from xomni.convert.x_omni import convert
    src, xdir = converted
    back = tmp_path / "back"
    convert(xdir, back, reverse=True)
    a, b = _all_tensors(src), _all_tensors(back)
    assert a.keys() == b.keys()
    for f in a:
        assert list(a[f]) == list(b[f]) or set(a[f]) == set(b[f]), f
        for k in a[f]:
            assert a[f][k].dtype == b[f][k].dtype and torch.equal(a[f][k], b[f][k]), (f, k)
    for p in src.rglob("*"):  # every other file byte for byte
        if p.is_file() and p.suffix not in (".safetensors", ".pth"):
            assert (back / p.relative_to(src)).read_bytes() == p.read_bytes(), p
    assert {p.relative_to(back) for p in back.rglob("*")} == {p.relative_to(src) for p in src.rglob("*")}
    # safetensors metadata survives; the xomni side uses xomni's module names
    from xomni.convert.stfile import read_header
    assert read_header(back / "model-00001-of-00002.safetensors").metadata == {"format": "pt"}
    xnames = set(load_file(str(xdir / "ar" / "model-00001-of-00002.safetensors"))) | set(
        load_file(str(xdir / "ar" / "model-00002-of-00002.safetensors")))
    assert {"text_embed.weight", "image_embed.weight", "text_norm.weight", "image_norm.weight", "text_head.weight",
            "image_head.weight", "backbone.layers.3.mlp.down_proj.weight"} <= xnames
    assert set(load_file(str(xdir / "decoder" / "adapter.safetensors"))) == {"siglip_proj.weight", "siglip_proj.bias"}


def test_round_trip_keeps_any_adapter_name_and_specials_in_mm_range(tmp_path):
    from xomni.convert.x_omni import convert
    src = write_official(tmp_path / "o", seed=1, specials_in_mm=True, adapter_name="siglip_proj_in")
    convert(src, tmp_path / "x")
    convert(tmp_path / "x", tmp_path / "b", reverse=True)
    a, b = _all_tensors(src), _all_tensors(tmp_path / "b")
    assert all(torch.equal(a[f][k], b[f][k]) for f in a for k in a[f])
    man = json.loads((tmp_path / "x" / "xomni.json").read_text())
    assert man["ar"]["som_id"] == V + K and man["ar"]["img_id"] == V + K + 2


def test_language_model_only_checkpoint(tmp_path):
    """A folder without vision_config (e.g. a text-side export) converts the AR alone, and back."""
    import shutil

    from xomni.convert.x_omni import convert
    src = write_official(tmp_path / "o", seed=2)
    c = json.loads((src / "config.json").read_text())
    del c["vision_config"]
    (src / "config.json").write_text(json.dumps(c))
    shutil.rmtree(src / "vit")
    shutil.rmtree(src / "diffusers")
    res = convert(src, tmp_path / "x")
    assert not res["vq"] and not res["decoder"] and not (tmp_path / "x" / "decoder").exists()
    convert(tmp_path / "x", tmp_path / "b", reverse=True)
    a, b = _all_tensors(src), _all_tensors(tmp_path / "b")
    assert a.keys() == b.keys() and all(torch.equal(a[f][k], b[f][k]) for f in a for k in a[f])
    with pytest.raises(Exception, match="outside the source"):
        convert(src, src / "xomni")


# ------------------------------------------------------------------------------------------------ the AR model
def _ref_logits(sd: dict, ids: torch.Tensor, image: bool) -> torch.Tensor:
    """transformers' plain Qwen2 on the official weights: all-text input -> only the LM blocks run (image-only
    blocks leave text positions alone) with lm_norm / lm_head; all-image input -> every block with mm_* tables."""
    from transformers import Qwen2Config, Qwen2ForCausalLM
    blocks = list(range(L)) if image else list(range(ADAP, L - HEAD))
    hf = Qwen2ForCausalLM(Qwen2Config(vocab_size=M if image else V, hidden_size=H, intermediate_size=I,
                                      num_hidden_layers=len(blocks), num_attention_heads=NH, num_key_value_heads=NKV,
                                      rope_theta=1000000.0, rms_norm_eps=1e-6, max_position_embeddings=256,
                                      tie_word_embeddings=False)).float().eval()
    p = "mm" if image else "lm"
    new = {"model.embed_tokens.weight": sd[f"model.{p}_embed_tokens.weight"], "model.norm.weight":
           sd[f"model.{p}_norm.weight"], "lm_head.weight": sd[f"{p}_head.weight"]}
    for j, i in enumerate(blocks):
        new.update({k.replace(f"model.layers.{i}.", f"model.layers.{j}."): v for k, v in sd.items()
                    if k.startswith(f"model.layers.{i}.")})
    hf.load_state_dict({k: v.float() for k, v in new.items()})
    with torch.no_grad():
        return hf(input_ids=ids - (V if image else 0)).logits


def test_xomni_ar_matches_plain_qwen2_on_text_and_on_image_tokens(converted):
    from xomni.xomni_arch.load import load_ar
    src, xdir = converted
    ar = load_ar(xdir, dtype=torch.float32)
    sd = {}
    for f in ("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"):
        sd.update(load_file(str(src / f)))
    g = torch.Generator().manual_seed(0)
    text = torch.randint(0, V, (2, 9), generator=g)
    img = V + torch.randint(0, K, (2, 9), generator=g)
    with torch.no_grad():
        t = ar.text_logits(ar.hidden(text)[0])
        i = ar.image_logits(ar.hidden(img)[0])
    assert (t - _ref_logits(sd, text, image=False)).abs().max() < 1e-4
    assert (i - _ref_logits(sd, img, image=True)[..., :K]).abs().max() < 1e-4
    assert i.shape[-1] == K  # the image logits are the image codes only (mm rows beyond K are never emitted)
    assert not __import__("xomni.ar.fastdecode", fromlist=["supports"]).supports(ar)  # no plain-Qwen2 fast path


def test_image_only_blocks_leave_text_positions_alone(converted):
    from xomni.xomni_arch.load import load_ar
    _, xdir = converted
    ar = load_ar(xdir, dtype=torch.float32)
    ids = torch.tensor([[EOT, 40, 41, 93, DIGITS[2], SPACE, DIGITS[3], 95, V + 5, V + 9, V + 1]])
    with torch.no_grad():
        h0 = ar.hidden(ids)[0]
        for i in (0, L - 1):  # the image-only blocks
            ar.backbone.layers[i].mlp.down_proj.weight.mul_(3)
        h1 = ar.hidden(ids)[0]
    txt = ids[0] < V
    assert torch.allclose(h0[0, txt], h1[0, txt], atol=1e-6) and not torch.allclose(h0[0, ~txt], h1[0, ~txt])


def test_header_and_sampler_cache_agree_with_full_forward(converted):
    from xomni.ar.sampler import SamplingConfig, sample_images, sequence_logprobs
    from xomni.xomni_arch.load import load_ar
    _, xdir = converted
    ar = load_ar(xdir, dtype=torch.float32)
    assert ar.layout.image_header(2, 12) == [93, DIGITS[2], SPACE, DIGITS[1], DIGITS[2], 95]  # "<SOM>2 12<IMAGE>"
    s = SamplingConfig(temperature=0.9, top_k=0, min_p=0.0, cfg_scale=1.5)
    prompts = [[40, 41, 42], [43]]
    out = sample_images(ar, prompts, (2, 3), s, generator=torch.Generator().manual_seed(0))
    assert out.codes_BHW.shape == (2, 2, 3) and int(out.codes_BHW.max()) < K
    lp = sequence_logprobs(ar, prompts, out.codes_BHW, s)
    assert (lp - out.logprobs_BN).abs().max() < 1e-4  # KV-cached incremental decoding == one full forward


# ------------------------------------------------------------------------------------------------ training
class _Tok:
    """A stand-in text tokenizer over the tiny vocabulary (ids 40..89, no specials)."""
    def encode(self, s: str, add_special_tokens: bool = False) -> list[int]:
        return [40 + b % 50 for b in s.encode()]


def _data(n: int = 8):
    g = torch.Generator().manual_seed(3)
    return [{"caption": f"sign {i}", "codes": torch.randint(0, K, (2, 3), generator=g)} for i in range(n)]


def test_sft_on_the_shared_loop(converted, tmp_path):
    from xomni.ar.train import ARTrainConfig, build_loss_fn
    from xomni.train import TrainConfig, run_training
    from xomni.xomni_arch.load import load_ar
    _, xdir = converted
    ar = load_ar(xdir, dtype=torch.float32).train()
    tc = TrainConfig(out_dir=str(tmp_path / "sft"), steps=8, batch_size=4, lr=3e-3, warmup_steps=0, log_every=1,
                     ckpt_every=0, progress=False, min_lr_ratio=1.0)
    cfg = ARTrainConfig(train=tc, t2i_ratio=0.5, uncond_prob=0.0)
    run_training(tc, ar, _data(), build_loss_fn(ar, _Tok(), cfg), collate=list, move_batch=False)
    losses = [json.loads(x)["loss"] for x in (tmp_path / "sft" / "log.jsonl").read_text().splitlines()]
    assert len(losses) == 8 and np.mean(losses[-3:]) < np.mean(losses[:3])


def test_lora_trains_only_the_adapter_and_merges(converted):
    from xomni.ar.train import ARTrainConfig, make_sequences
    from xomni.lora.adapter import LoRAConfig, add_lora, merge_lora, n_adapter_params
    from xomni.xomni_arch.load import load_ar
    _, xdir = converted
    ar = load_ar(xdir, dtype=torch.float32)
    base = {k: v.clone() for k, v in ar.state_dict().items()}
    add_lora(ar, LoRAConfig(rank=4))
    assert 0 < n_adapter_params(ar) < 0.2 * sum(v.numel() for v in base.values())
    opt = torch.optim.AdamW([p for p in ar.parameters() if p.requires_grad], lr=1e-2)
    ids, tgt, mask = make_sequences(_data(4), ar, _Tok(), ARTrainConfig(t2i_ratio=1.0, uncond_prob=0.0),
                                    torch.Generator().manual_seed(0))
    first = None
    for _ in range(6):
        loss, _ = ar(ids, tgt, attention_mask=mask)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first
    with torch.no_grad():
        adapted = ar(ids, tgt, attention_mask=mask)[0].item()
    merge_lora(ar)
    merged = ar.state_dict()
    assert set(merged) == set(base)
    assert torch.equal(merged["text_embed.weight"], base["text_embed.weight"])
    assert not torch.equal(merged["backbone.layers.0.self_attn.q_proj.weight"],
                           base["backbone.layers.0.self_attn.q_proj.weight"])
    with torch.no_grad():
        assert abs(ar(ids, tgt, attention_mask=mask)[0].item() - adapted) < 1e-4


def test_grpo_step_is_on_policy(converted):
    from PIL import Image

    from xomni.ar.sampler import SamplingConfig
    from xomni.rl.config import load_rl_config
    from xomni.rl.grpo import GRPOLoss, PolicyLogprobs
    from xomni.xomni_arch.load import load_ar
    _, xdir = converted

    def decode(codes, seed):
        arr = (codes.cpu() * 4).to(torch.uint8)[..., None].repeat(1, 1, 1, 3).repeat_interleave(8, 1)
        return [Image.fromarray(a.repeat_interleave(8, 1).numpy(), "RGB") for a in arr]

    class Pool:
        def submit(self, images, prompts, meta):
            from concurrent.futures import Future
            r = [float(np.asarray(im, dtype=np.float32).mean() / 255) for im in images]
            f = Future()
            f.set_result((r, {"bright": r}, 0.0, {}))
            return f
    s = SamplingConfig(temperature=1.0, top_k=0, min_p=0.0, cfg_scale=1.5)
    cfg = load_rl_config({"group_size": 4, "rewards": {"aesthetic": 1.0}, "sampling": dataclasses.asdict(s)})
    pol = PolicyLogprobs(load_ar(xdir, dtype=torch.float32))
    loss_fn = GRPOLoss(cfg, load_ar(xdir, dtype=torch.float32), decode, Pool(), (2, 3))
    batch = [{"prompt": p, "ids": _Tok().encode(p), "text": None} for p in ("a red sign", "a blue sign")]
    loss, m = loss_fn(pol, batch, torch.Generator().manual_seed(0))
    assert m["ratio_dev_first"] <= 1e-4 and m["kl"] == 0.0 and 0 < m["reward"] <= 1
    loss.backward()
    assert pol.image_head.weight.grad.abs().sum() > 0 and pol.text_head.weight.grad is None
    assert pol.backbone.layers[0].mlp.up_proj.weight.grad.abs().sum() > 0  # the image-only blocks learn too


# ------------------------------------------------------------------------------------------------ image side
def test_siglip_vq_matches_the_official_math(converted):
    import torch.nn.functional as F

    from xomni.xomni_arch.load import load_vq
    src, xdir = converted
    vq = load_vq(xdir)
    sd = torch.load(src / "vit" / "siglip_vq.pth", weights_only=True)
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(2, 6, Z, generator=g)
    # official VQConvProjector.encode / decode, written out with functional ops on the official names
    x = feats.transpose(1, 2).reshape(2, Z, 2, 3)
    z = F.conv2d(x, sd["quant_conv.weight"], sd["quant_conv.bias"]).permute(0, 2, 3, 1).reshape(-1, CD)
    zn, en = F.normalize(z, dim=-1), F.normalize(sd["quantize.embedding.weight"], dim=-1)
    d = (zn ** 2).sum(1, keepdim=True) + (en ** 2).sum(1) - 2 * zn @ en.t()
    ref_codes = d.argmin(1).view(2, 2, 3)
    assert torch.equal(vq.encode(feats, 2, 3), ref_codes)
    y = F.conv2d(F.embedding(ref_codes, sd["quantize.embedding.weight"]).permute(0, 3, 1, 2),
                 sd["post_quant_conv.weight"], sd["post_quant_conv.bias"])
    for j in range(2):
        p = f"post_conv.{j}."
        r = y
        y = F.conv2d(F.gelu(F.group_norm(y, 32, sd[p + "norm1.weight"], sd[p + "norm1.bias"])),
                     sd[p + "conv1.weight"], sd[p + "conv1.bias"], padding=1)
        y = F.conv2d(F.gelu(F.group_norm(y, 32, sd[p + "norm2.weight"], sd[p + "norm2.bias"])),
                     sd[p + "conv2.weight"], sd[p + "conv2.bias"], padding=1) + r
    with torch.no_grad():
        assert torch.allclose(vq.decode(ref_codes), y.reshape(2, Z, 6).transpose(1, 2), atol=1e-5)


def test_flux_decoder_with_adapter_runs(converted):
    from diffusers import FluxTransformer2DModel

    from xomni.xomni_arch.load import load_decoder, load_vq
    src, xdir = converted
    dec = load_decoder(xdir, dtype=torch.float32)
    assert isinstance(dec.transformer, FluxTransformer2DModel)
    official = load_file(str(src / "diffusers" / "diffusion_pytorch_model.safetensors"))
    assert torch.equal(dec.siglip_proj.weight, official["siglip_embedder.weight"].float())
    plain = FluxTransformer2DModel.from_pretrained(str(xdir / "decoder" / "transformer")).float().eval()
    g = torch.Generator().manual_seed(0)
    h, w = 2, 3
    lat = torch.randn(1, h * w, 16, generator=g)
    img_ids = torch.stack(torch.meshgrid(torch.zeros(1), torch.arange(h).float(), torch.arange(w).float(), indexing="ij"),
                          -1).reshape(-1, 3).float()
    kw = dict(encoder_hidden_states=torch.randn(1, 4, 32, generator=g), pooled_projections=torch.randn(1, 16, generator=g),
              timestep=torch.tensor([0.5]), img_ids=img_ids, txt_ids=torch.zeros(4, 3), guidance=torch.tensor([1.0]),
              return_dict=False)
    feats = load_vq(xdir).decode(torch.randint(0, K, (1, h, w), generator=g))
    with torch.no_grad():
        out = dec(lat, feats, **kw)[0]
        zero = dec(lat, torch.zeros_like(feats), **kw)[0]
        ref = plain(hidden_states=lat, **kw)[0]
    assert out.shape == lat.shape and torch.isfinite(out).all()
    assert not torch.allclose(out, ref)  # the SigLIP features condition the output
    dec.siglip_proj.bias.data.zero_()
    with torch.no_grad():  # a zero adapter output is plain diffusers FLUX
        assert torch.allclose(dec(lat, torch.zeros_like(feats), **kw)[0], ref, atol=1e-5)
    assert not torch.allclose(zero, ref)  # (the adapter bias alone shifts it)


# ------------------------------------------------------------------------------------------------ bad input
def _break(root: Path, how: str) -> str:
    """Damage a copy of the tiny checkpoint; returns what the error line must name."""
    if how == "no_config":
        (root / "config.json").unlink()
        return "config.json"
    if how == "no_shard":
        (root / "model-00002-of-00002.safetensors").unlink()
        return "model-00002-of-00002.safetensors"
    if how == "shape":
        f = root / json.loads((root / "model.safetensors.index.json").read_text())["weight_map"][
            "model.mm_embed_tokens.weight"]
        sd = load_file(str(f))
        sd["model.mm_embed_tokens.weight"] = sd["model.mm_embed_tokens.weight"][:-1].clone()
        save_file(sd, str(f))
        return "model.mm_embed_tokens.weight"
    if how == "missing_tensor":
        f = root / "model-00002-of-00002.safetensors"
        sd = load_file(str(f))
        sd.pop("mm_head.weight")
        save_file(sd, str(f))
        idx = json.loads((root / "model.safetensors.index.json").read_text())
        idx["weight_map"].pop("mm_head.weight")
        (root / "model.safetensors.index.json").write_text(json.dumps(idx))
        return "mm_head.weight"
    if how == "projector":
        sd = torch.load(root / "vit" / "siglip_vq.pth", weights_only=True)
        sd.pop("post_quant_conv.bias")
        torch.save(sd, root / "vit" / "siglip_vq.pth")
        return "post_quant_conv.bias"
    if how == "decoder":
        (root / "diffusers" / "diffusion_pytorch_model.safetensors").unlink()
        return "diffusers/diffusion_pytorch_model.safetensors"
    if how == "flux_shape":
        cfgp = root / "diffusers" / "config.json"
        c = json.loads(cfgp.read_text())
        c["joint_attention_dim"] = 48
        cfgp.write_text(json.dumps(c))
        return "context_embedder.weight"
    if how == "model_type":
        c = json.loads((root / "config.json").read_text())
        c["model_type"] = "qwen2"
        (root / "config.json").write_text(json.dumps(c))
        return "model_type"
    raise AssertionError(how)


@pytest.mark.parametrize("how", ["no_config", "no_shard", "shape", "missing_tensor", "projector", "decoder",
                                 "flux_shape", "model_type"])
def test_wrong_directory_exits_2_with_one_line(converted, tmp_path, how, monkeypatch, capsys):
    import shutil
    src, _ = converted
    bad = tmp_path / "bad"
    shutil.copytree(src, bad)
    needle = _break(bad, how)
    r = run_inproc(["convert", "x-omni", str(bad), "--out", str(tmp_path / "o")], monkeypatch, capsys)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and needle in lines[0], (r.returncode, r.stderr)
    assert not (tmp_path / "o").exists() and r.stdout == ""


def test_cli_both_directions_and_corrupt_xomni_dir(converted, tmp_path, monkeypatch, capsys):
    src, xdir = converted
    r = run_inproc(["convert", "x-omni", str(src), "--out", str(tmp_path / "x")], monkeypatch, capsys)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["direction"] == "official->xomni" and res["vq"] and res["decoder"] and res["ar_files"] == 2
    r = run_inproc(["convert", "x-omni", str(src), "--out", str(tmp_path / "x")], monkeypatch, capsys)
    assert r.returncode == 2 and "--overwrite" in r.stderr  # an existing output is only replaced on request
    r = run_inproc(["convert", "x-omni", str(tmp_path / "x"), "--out", str(tmp_path / "b"), "--reverse"],
                   monkeypatch, capsys)
    assert r.returncode == 0 and json.loads(r.stdout)["direction"] == "xomni->official"
    f = tmp_path / "x" / "ar" / json.loads((tmp_path / "x" / "ar" / "model.safetensors.index.json").read_text())[
        "weight_map"]["image_embed.weight"]
    sd = load_file(str(f))
    sd.pop("image_embed.weight")
    save_file(sd, str(f))
    r = run_inproc(["convert", "x-omni", str(tmp_path / "x"), "--out", str(tmp_path / "b2"), "--reverse"],
                   monkeypatch, capsys)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and "image_embed.weight" in lines[0]
    r = run_inproc(["convert", "x-omni", str(src), "--out", str(tmp_path / "b3"), "--reverse"], monkeypatch, capsys)
    assert r.returncode == 2 and "xomni.json" in r.stderr
