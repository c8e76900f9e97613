"""`xomni convert x-omni`: a local copy of a released X-Omni checkpoint <-> xomni's modules.

Official layout (an X-Omni model repository as downloaded, e.g. X-Omni-En):
    config.json                         model_type "x-omni": Qwen2 keys + num_mm_adap_layers, num_mm_head_layers,
                                        mm_vocab_size, image_vocab_size, mm_special_tokens, vision_config
    model*.safetensors (+ .index.json)  XOmniForCausalLM: model.lm_embed_tokens, model.mm_embed_tokens,
                                        model.layers.N.*, model.lm_norm, model.mm_norm, lm_head, mm_head
    tokenizer.json, ...                 the Qwen2.5 tokenizer with <SOM> <EOM> <IMAGE> and <MM-Token-k>
    vision_config.encoder.projector_path   SigLIP-VQ quantiser state dict (quant_conv, quantize.embedding,
                                        post_quant_conv, post_conv.N.*), a torch pickle or safetensors
    vision_config.encoder.siglip_path   the SigLIP2-g ViT weights (carried along verbatim, not converted)
    vision_config.decoder.model_path/   diffusers folder: config.json + diffusion_pytorch_model*.safetensors =
                                        FluxTransformer2DModel's tensors + one adapter Linear (SigLIP -> FLUX width)

xomni layout written by the forward direction (DIR):
    xomni.json                 format, xomni's XOmniARConfig ("ar"), vq / decoder settings, and the record of the
                               official files (names, order, metadata) that the reverse direction rebuilds
    ar/<same shard names>      XOmniAR state dict (text_embed, image_embed, backbone.layers.N.*, text_norm,
                               image_norm, text_head, image_head)
    vq/model.safetensors       SigLIPVQ (proj_in, codebook, proj_out, refine.N.*)
    vit/<siglip_path>          verbatim
    decoder/transformer/       a plain diffusers FluxTransformer2DModel folder (tensor names unchanged)
    decoder/adapter.safetensors   siglip_proj.weight (+ .bias)
    official/<path>            every other file of the source, verbatim (tokenizer, code, index files, configs)

Tensors are renamed by copying their bytes (xomni.convert.stfile), so both directions are bit-exact. Any missing
or mismatched file or tensor is one XomniError line naming it (the CLI exits 2), checked before anything is written.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

from xomni.cliargs import refuse_existing
from xomni.convert.stfile import Entry, read_header, tensor_entries, write_file
from xomni.errors import XomniError
from xomni.xomni_arch.config import FORMAT, MANIFEST, XOmniARConfig, from_official_config

VQ_DEFAULTS = {"z_channels": 1536, "codebook_size": 16384, "codebook_dim": 2048}  # official SiglipTokenizer's


# ------------------------------------------------------------------------------------------------- name maps
def lm_names(cfg: XOmniARConfig) -> list[tuple[str, str, tuple[int, ...]]]:
    """(official name, xomni name, shape) of every AR tensor, in a canonical order."""
    H, I, V, M = cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size, cfg.mm_vocab_size
    hd = cfg.head_width()
    q, kv = cfg.num_attention_heads * hd, cfg.num_key_value_heads * hd
    out = [("model.lm_embed_tokens.weight", "text_embed.weight", (V, H)),
           ("model.mm_embed_tokens.weight", "image_embed.weight", (M, H))]
    block = [("self_attn.q_proj.weight", (q, H)), ("self_attn.q_proj.bias", (q,)),
             ("self_attn.k_proj.weight", (kv, H)), ("self_attn.k_proj.bias", (kv,)),
             ("self_attn.v_proj.weight", (kv, H)), ("self_attn.v_proj.bias", (kv,)),
             ("self_attn.o_proj.weight", (H, q)),
             ("mlp.gate_proj.weight", (I, H)), ("mlp.up_proj.weight", (I, H)), ("mlp.down_proj.weight", (H, I)),
             ("input_layernorm.weight", (H,)), ("post_attention_layernorm.weight", (H,))]
    for i in range(cfg.num_hidden_layers):
        out += [(f"model.layers.{i}.{s}", f"backbone.layers.{i}.{s}", shape) for s, shape in block]
    out += [("model.lm_norm.weight", "text_norm.weight", (H,)), ("model.mm_norm.weight", "image_norm.weight", (H,))]
    if not cfg.tie_word_embeddings:
        out.append(("lm_head.weight", "text_head.weight", (V, H)))
    out.append(("mm_head.weight", "image_head.weight", (M, H)))
    return out


def vq_names(z: int, K: int, cd: int, n_blocks: int) -> list[tuple[str, str, tuple[int, ...]]]:
    out = [("quant_conv.weight", "proj_in.weight", (cd, z, 1, 1)), ("quant_conv.bias", "proj_in.bias", (cd,)),
           ("quantize.embedding.weight", "codebook.weight", (K, cd)),
           ("post_quant_conv.weight", "proj_out.weight", (z, cd, 1, 1)), ("post_quant_conv.bias", "proj_out.bias", (z,))]
    for j in range(n_blocks):
        for part in ("norm1", "conv1", "norm2", "conv2"):
            wshape = (z, z, 3, 3) if part.startswith("conv") else (z,)
            out.append((f"post_conv.{j}.{part}.weight", f"refine.{j}.{part}.weight", wshape))
            out.append((f"post_conv.{j}.{part}.bias", f"refine.{j}.{part}.bias", (z,)))
    return out


# ------------------------------------------------------------------------------------------------- reading
def _read_json(p: Path, what: str) -> dict:
    if not p.is_file():
        raise XomniError(f"{what} not found")
    try:
        d = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise XomniError(f"{what} is not valid JSON ({str(e).splitlines()[0]})") from None
    if not isinstance(d, dict):
        raise XomniError(f"{what} is not a JSON object")
    return d


@dataclasses.dataclass
class WeightSet:
    """The tensors of a safetensors checkpoint (one file or an index + shards), in file then data order."""
    files: list[str]                        # file names relative to the set's folder
    found: dict[str, tuple[str, Entry]]     # tensor name -> (file name, entry)
    metadata: dict[str, dict | None]        # file name -> safetensors metadata
    index: str | None                       # index file name, when sharded


def read_weight_set(folder: Path, base: str, rel: str) -> WeightSet:
    """`base`.safetensors or `base`.safetensors.index.json + shards in `folder` (`rel`: its name in messages)."""
    index = folder / f"{base}.safetensors.index.json"
    if index.is_file():
        j = _read_json(index, f"{rel}{index.name}")
        wm = j.get("weight_map")
        if not isinstance(wm, dict) or not wm:
            raise XomniError(f"{rel}{index.name} has no weight_map")
        files = list(dict.fromkeys(wm.values()))
    else:
        single = folder / f"{base}.safetensors"
        if not single.is_file():
            others = sorted(p.name for p in folder.glob(f"{base}*.bin")) if folder.is_dir() else []
            hint = f" (found {others[0]}: only safetensors weights are supported)" if others else ""
            raise XomniError(f"{rel}{base}.safetensors (or {base}.safetensors.index.json) not found{hint}")
        wm, files = None, [single.name]
    found, metadata = {}, {}
    for f in files:
        h = read_header(folder / f, what=f"{rel}{f}")
        metadata[f] = h.metadata
        for k, en in h.entries.items():
            if k in found:
                raise XomniError(f"{rel}{f}: tensor {k} is also in {rel}{found[k][0]}")
            found[k] = (f, en)
    if wm is not None:
        for k, f in wm.items():
            if k not in found or found[k][0] != f:
                raise XomniError(f"{rel}{f}: tensor {k} listed in {rel}{index.name} is not in that file")
    return WeightSet(files, found, metadata, index.name if wm is not None else None)


def check_tensors(ws: WeightSet, expected: list[tuple[str, str, tuple[int, ...]]], rel: str, source: str) -> None:
    """Every expected tensor present with its shape, nothing else: the first problem is one error line."""
    names = set()
    for off, _, shape in expected:
        names.add(off)
        if off not in ws.found:
            raise XomniError(f"missing tensor {off} in {rel}{ws.index or ws.files[0]}")
        f, en = ws.found[off]
        if en.shape != tuple(shape):
            raise XomniError(f"{rel}{f}: tensor {off} has shape {list(en.shape)}, expected {list(shape)} "
                             f"(from {source})")
    for f in ws.files:
        for k, (ff, _) in ws.found.items():
            if ff == f and k not in names:
                raise XomniError(f"{rel}{f}: unexpected tensor {k} (not part of the X-Omni architecture)")


def tokenizer_ids(src: Path, cfg: dict) -> dict:
    """Special-token ids from the official tokenizer.json (<SOM> <EOM> <IMAGE>, digits, space, <|endoftext|>,
    <|im_end|>), and the check that image code 0 (<MM-Token-0>, when listed) is id vocab_size."""
    tj = _read_json(src / "tokenizer.json", "tokenizer.json")
    model = tj.get("model") if isinstance(tj.get("model"), dict) else {}
    vocab = model.get("vocab") if isinstance(model.get("vocab"), dict) else {}
    added = {t.get("content"): t.get("id") for t in tj.get("added_tokens", []) if isinstance(t, dict)}

    def tid(tok: str, required: bool = True):
        v = added.get(tok, vocab.get(tok))
        if v is None and required:
            raise XomniError(f"tokenizer.json has no token {tok!r}")
        return v
    specials = cfg.get("mm_special_tokens", ["<SOM>", "<EOM>", "<IMAGE>"])
    if not isinstance(specials, (list, tuple)) or len(specials) < 3:
        raise XomniError("config.json: mm_special_tokens must list <SOM>, <EOM> and <IMAGE>")
    eot = tid("<|endoftext|>")
    im_end = tid("<|im_end|>", required=False)
    mm0 = tid("<MM-Token-0>", required=False)
    if mm0 is not None and mm0 != cfg.get("vocab_size"):
        raise XomniError(f"tokenizer.json: <MM-Token-0> is id {mm0} but config.json vocab_size is "
                         f"{cfg.get('vocab_size')} (image code k must be id vocab_size + k)")
    return {"som_id": tid(specials[0]), "eom_id": tid(specials[1]), "img_id": tid(specials[2]),
            "digit_ids": [tid(str(d)) for d in range(10)], "space_id": tid("\u0120"),
            "bos_id": eot, "pad_id": eot, "eos_id": im_end if im_end is not None else eot}


def _rel_in(src: Path, rel: str, what: str) -> Path:
    """`rel` (a path from config.json) must stay inside the checkpoint folder."""
    if not isinstance(rel, str) or not rel or os.path.isabs(rel) or ".." in Path(rel).parts:
        raise XomniError(f"config.json: {what} must be a relative path inside the checkpoint, got {rel!r}")
    return src / rel


def _load_projector(p: Path, rel: str) -> tuple[str, dict | None, dict[str, Entry] | None]:
    """(format, torch state dict or None, safetensors entries or None)."""
    if not p.is_file():
        raise XomniError(f"{rel} not found (vision_config.encoder.projector_path)")
    if p.suffix == ".safetensors":
        return "safetensors", None, read_header(p, rel).entries
    import torch
    try:
        sd = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle errors come in many types
        raise XomniError(f"{rel} is not a readable torch state dict ({type(e).__name__})") from None
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise XomniError(f"{rel} is not a state dict of tensors")
    return "torch", sd, None


@dataclasses.dataclass
class _Plan:
    """What the forward direction will write, worked out (and checked) before anything is written."""
    ar: XOmniARConfig
    lm: WeightSet
    lm_map: dict[str, str]
    vq: dict | None = None
    vit: str | None = None
    dec: dict | None = None
    skip: set = dataclasses.field(default_factory=set)   # source paths handled as weights
    others: list = dataclasses.field(default_factory=list)  # every other source file (copied verbatim)


def _plan(src: Path) -> _Plan:
    cfg = _read_json(src / "config.json", "config.json")
    ar = from_official_config(cfg, tokenizer_ids(src, cfg))
    lm = read_weight_set(src, "model", "")
    names = lm_names(ar)
    check_tensors(lm, names, "", "config.json")
    plan = _Plan(ar, lm, {o: x for o, x, _ in names}, skip=set(lm.files))
    vc = cfg.get("vision_config")
    if vc is not None:
        _plan_vision(src, vc, ar, plan)
    plan.others = _other_files(src, plan.skip)
    return plan


def _plan_vision(src: Path, vc, ar: XOmniARConfig, plan: _Plan) -> None:
    if not isinstance(vc, dict) or not isinstance(vc.get("encoder"), dict):
        raise XomniError("config.json: vision_config.encoder is missing")
    enc = vc["encoder"]
    z, K, cd = (int(enc.get(k, d)) for k, d in VQ_DEFAULTS.items())
    if K != ar.image_vocab_size:
        raise XomniError(f"config.json: vision_config.encoder.codebook_size {K} differs from image_vocab_size "
                         f"{ar.image_vocab_size}")
    # SigLIP-VQ quantiser
    prel = enc.get("projector_path")
    fmt, sd, entries = _load_projector(_rel_in(src, prel, "vision_config.encoder.projector_path"), prel)
    keys = list(sd) if sd is not None else list(entries)
    shapes = {k: tuple(sd[k].shape) for k in sd} if sd is not None else {k: e.shape for k, e in entries.items()}
    n_blocks = len({k.split(".")[1] for k in keys if k.startswith("post_conv.")})
    expected = vq_names(z, K, cd, n_blocks)
    for off, _, shape in expected:
        if off not in shapes:
            raise XomniError(f"missing tensor {off} in {prel}")
        if shapes[off] != shape:
            raise XomniError(f"{prel}: tensor {off} has shape {list(shapes[off])}, expected {list(shape)} (from "
                             f"config.json vision_config.encoder)")
    extra = [k for k in keys if k not in {o for o, _, _ in expected}]
    if extra:
        raise XomniError(f"{prel}: unexpected tensor {extra[0]} (not part of the SigLIP-VQ projector)")
    plan.vq = {"path": prel, "format": fmt, "state": sd, "entries": entries, "keys": keys,
               "map": {o: x for o, x, _ in expected},
               "config": {"z_channels": z, "codebook_size": K, "codebook_dim": cd, "n_blocks": n_blocks}}
    plan.skip.add(prel)
    # SigLIP ViT (verbatim)
    srel = enc.get("siglip_path")
    sp = _rel_in(src, srel, "vision_config.encoder.siglip_path")
    if not sp.exists():
        raise XomniError(f"{srel} not found (vision_config.encoder.siglip_path)")
    plan.vit = srel
    plan.skip.add(srel)
    # FLUX decoder + adapter
    dec = vc.get("decoder")
    if not isinstance(dec, dict) or "model_path" not in dec:
        raise XomniError("config.json: vision_config.decoder.model_path is missing")
    drel = dec["model_path"]
    dpath = _rel_in(src, drel, "vision_config.decoder.model_path")
    if not dpath.is_dir():
        raise XomniError(f"{drel}/ not found (vision_config.decoder.model_path)")
    dcfg = _read_json(dpath / "config.json", f"{drel}/config.json")
    import inspect

    import torch
    from diffusers import FluxTransformer2DModel
    params = set(inspect.signature(FluxTransformer2DModel.__init__).parameters) - {"self"}
    fkw = {k: v for k, v in dcfg.items() if k in params}
    try:
        with torch.device("meta"):
            flux = FluxTransformer2DModel(**fkw)
    except Exception as e:
        raise XomniError(f"{drel}/config.json does not describe a FLUX transformer ({type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''})") from None
    fshapes = [(k, k, tuple(v.shape)) for k, v in flux.state_dict().items()]
    inner = flux.inner_dim
    del flux
    dws = read_weight_set(dpath, "diffusion_pytorch_model", f"{drel}/")
    for off, _, shape in fshapes:
        if off not in dws.found:
            raise XomniError(f"missing tensor {off} in {drel}/{dws.index or dws.files[0]}")
        f, en = dws.found[off]
        if en.shape != shape:
            raise XomniError(f"{drel}/{f}: tensor {off} has shape {list(en.shape)}, expected {list(shape)} (from "
                             f"{drel}/config.json)")
    flux_names = {k for k, _, _ in fshapes}
    extra = [k for k in dws.found if k not in flux_names]
    w2d = [k for k in extra if k.endswith(".weight") and len(dws.found[k][1].shape) == 2]
    if len(w2d) != 1:
        what = ("no tensor besides FLUX's own" if not extra else
                f"{len(w2d)} candidate weights ({', '.join(w2d[:3]) or extra[0]})")
        raise XomniError(f"{drel}/: expected the SigLIP adapter (one Linear {z} -> {inner}) besides the FLUX "
                         f"tensors, found {what}")
    aw = w2d[0]
    ab = aw[:-len(".weight")] + ".bias"
    f, en = dws.found[aw]
    if en.shape != (inner, z):
        raise XomniError(f"{drel}/{f}: adapter tensor {aw} has shape {list(en.shape)}, expected {[inner, z]} "
                         f"(FLUX width x vision_config.encoder.z_channels)")
    for k in extra:
        if k == ab and dws.found[k][1].shape == (inner,):
            continue
        if k != aw:
            raise XomniError(f"{drel}/{dws.found[k][0]}: unexpected tensor {k} (the adapter this converter knows is "
                             f"one Linear {z} -> {inner})")
    plan.dec = {"dir": drel, "ws": dws, "flux_config": fkw, "siglip_channels": z,
                "adapter": {"weight": aw, "bias": ab if ab in dws.found else None}}
    plan.skip.update(f"{drel}/{f}" for f in dws.files)


# ------------------------------------------------------------------------------------------------- writing
def _copy_path(a: Path, b: Path) -> None:
    b.parent.mkdir(parents=True, exist_ok=True)
    if a.is_dir():
        shutil.copytree(a, b)
    else:
        shutil.copyfile(a, b)


def _other_files(src: Path, skip: set[str]) -> list[str]:
    out = []
    for root, dirs, files in os.walk(src):
        dirs[:] = sorted(d for d in dirs if d not in (".git", ".cache", ".huggingface"))
        for fn in sorted(files):
            rel = os.path.relpath(os.path.join(root, fn), src)
            if rel in skip or any(rel.startswith(s.rstrip("/") + "/") for s in skip):
                continue
            out.append(rel)
    return out


def _file_record(ws: WeightSet, f: str) -> dict:
    return {"metadata": ws.metadata[f],
            "tensors": [[k, en.dtype, list(en.shape)] for k, (ff, en) in ws.found.items() if ff == f]}


def _write_official_to_xomni(src: Path, tmp: Path, plan: _Plan) -> dict:
    man: dict = {"format": FORMAT, "version": 1, "ar": plan.ar.to_dict(), "official": {}}
    rec = man["official"]
    # AR
    lm = plan.lm
    rec["lm"] = {"index": lm.index, "files": {f: _file_record(lm, f) for f in lm.files}}
    for f in lm.files:
        items = [(plan.lm_map[k], en) for k, (ff, en) in lm.found.items() if ff == f]
        write_file(tmp / "ar" / f, items, lm.metadata[f])
    if lm.index:
        wm = {plan.lm_map[k]: ff for k, (ff, _) in lm.found.items()}
        (tmp / "ar" / "model.safetensors.index.json").write_text(json.dumps({"weight_map": wm}, indent=2))
    n_tensors = len(lm.found)
    # SigLIP-VQ
    if plan.vq is not None:
        vq = plan.vq
        entries = vq["entries"]
        if entries is None:
            entries = tensor_entries(vq["state"], tmp / ".vq-src.safetensors")
        write_file(tmp / "vq" / "model.safetensors", [(vq["map"][k], entries[k]) for k in vq["keys"]])
        (tmp / ".vq-src.safetensors").unlink(missing_ok=True)
        man["vq"] = vq["config"]
        rec["projector"] = {"path": vq["path"], "format": vq["format"],
                            "tensors": [[k, entries[k].dtype, list(entries[k].shape)] for k in vq["keys"]]}
        n_tensors += len(vq["keys"])
    if plan.vit is not None:
        _copy_path(src / plan.vit, tmp / "vit" / plan.vit)
        man["vit"] = plan.vit
        rec["siglip"] = plan.vit
    # FLUX decoder
    if plan.dec is not None:
        d = plan.dec
        ws, ad = d["ws"], d["adapter"]
        adapter_names = {ad["weight"]: "siglip_proj.weight"}
        if ad["bias"]:
            adapter_names[ad["bias"]] = "siglip_proj.bias"
        for f in ws.files:
            items = [(k, en) for k, (ff, en) in ws.found.items() if ff == f and k not in adapter_names]
            write_file(tmp / "decoder" / "transformer" / f, items, ws.metadata[f])
        if ws.index:
            wm = {k: ff for k, (ff, _) in ws.found.items() if k not in adapter_names}
            (tmp / "decoder" / "transformer" / ws.index).write_text(json.dumps({"weight_map": wm}, indent=2))
        write_file(tmp / "decoder" / "adapter.safetensors", [(x, ws.found[o][1]) for o, x in adapter_names.items()])
        (tmp / "decoder" / "transformer" / "config.json").write_text(
            json.dumps({"_class_name": "FluxTransformer2DModel", **d["flux_config"]}, indent=2))
        man["decoder"] = {"flux_config": d["flux_config"], "siglip_channels": d["siglip_channels"],
                          "adapter_bias": bool(ad["bias"])}
        rec["decoder"] = {"dir": d["dir"], "index": ws.index, "adapter": adapter_names,
                          "files": {f: _file_record(ws, f) for f in ws.files}}
        n_tensors += len(ws.found)
    # everything else, verbatim
    others = plan.others
    for rel in others:
        _copy_path(src / rel, tmp / "official" / rel)
    rec["other_files"] = others
    (tmp / MANIFEST).write_text(json.dumps(man, indent=2))
    return {"tensors": n_tensors, "ar_tensors": len(lm.found), "ar_files": len(lm.files),
            "vq": plan.vq is not None, "decoder": plan.dec is not None, "siglip_vit": plan.vit,
            "copied_files": len(others)}


def _checked_entries(folder: Path, rel: str, fname: str, want: list, rename: dict[str, str] | None = None
                     ) -> list[tuple[str, Entry]]:
    """Entries of the official tensors `want` ([name, dtype, shape]) read from `folder/fname` under their xomni
    names (`rename`: official -> xomni), in the recorded order."""
    h = read_header(folder / fname, f"{rel}{fname}")
    out = []
    for name, dtype, shape in want:
        x = rename.get(name, name) if rename else name
        en = h.entries.get(x)
        if en is None:
            raise XomniError(f"missing tensor {x} in {rel}{fname}")
        if en.shape != tuple(shape) or en.dtype != dtype:
            raise XomniError(f"{rel}{fname}: tensor {x} is {en.dtype} {list(en.shape)}, expected {dtype} {shape}")
        out.append((name, en))
    return out


def _write_xomni_to_official(src: Path, tmp: Path) -> dict:
    man = _read_json(src / MANIFEST, MANIFEST)
    if man.get("format") != FORMAT:
        raise XomniError(f"{MANIFEST}: format is {man.get('format')!r}, expected {FORMAT!r} (a directory written by "
                         f"`xomni convert x-omni`)")
    rec = man.get("official") or {}
    ar = XOmniARConfig.from_dict(man.get("ar") or {}, f"{MANIFEST} ar")
    rename = {o: x for o, x, _ in lm_names(ar)}
    n = 0
    for f, fr in (rec.get("lm") or {}).get("files", {}).items():
        for name, _, _ in fr["tensors"]:
            if name not in rename:
                raise XomniError(f"{MANIFEST}: tensor {name} is not part of the X-Omni architecture of its 'ar' config")
        items = _checked_entries(src / "ar", "ar/", f, fr["tensors"], rename)
        write_file(tmp / f, items, fr["metadata"])
        n += len(items)
    if "projector" in rec:
        pr = rec["projector"]
        vc = man.get("vq") or {}
        vmap = {o: x for o, x, _ in vq_names(vc["z_channels"], vc["codebook_size"], vc["codebook_dim"],
                                             vc["n_blocks"])}
        items = _checked_entries(src / "vq", "vq/", "model.safetensors", pr["tensors"], vmap)
        dst = tmp / pr["path"]
        if pr["format"] == "safetensors":
            write_file(dst, items)
        else:
            import torch
            from safetensors.torch import load_file
            sd = load_file(str(src / "vq" / "model.safetensors"))
            dst.parent.mkdir(parents=True, exist_ok=True)
            torch.save({name: sd[vmap[name]] for name, _, _ in pr["tensors"]}, dst)
        n += len(items)
    if "siglip" in rec:
        v = src / "vit" / rec["siglip"]
        if not v.exists():
            raise XomniError(f"vit/{rec['siglip']} not found")
        _copy_path(v, tmp / rec["siglip"])
    if "decoder" in rec:
        dr = rec["decoder"]
        to_x = dict(dr["adapter"])
        adapter = read_header(src / "decoder" / "adapter.safetensors", "decoder/adapter.safetensors").entries
        for f, fr in dr["files"].items():
            flux_want = [t for t in fr["tensors"] if t[0] not in to_x]
            got = dict(_checked_entries(src / "decoder" / "transformer", "decoder/transformer/", f, flux_want))
            for name, dtype, shape in fr["tensors"]:
                if name in to_x:
                    en = adapter.get(to_x[name])
                    if en is None or en.shape != tuple(shape) or en.dtype != dtype:
                        raise XomniError(f"decoder/adapter.safetensors: tensor {to_x[name]} is missing or not "
                                         f"{dtype} {shape}")
                    got[name] = en
            items = [(name, got[name]) for name, _, _ in fr["tensors"]]
            write_file(tmp / dr["dir"] / f, items, fr["metadata"])
            n += len(items)
    for rel in rec.get("other_files", []):
        p = src / "official" / rel
        if not p.is_file():
            raise XomniError(f"official/{rel} not found")
        _copy_path(p, tmp / rel)
    return {"tensors": n, "copied_files": len(rec.get("other_files", []))}


def convert(src: str | Path, out: str | Path, reverse: bool = False, overwrite: bool = False) -> dict:
    """Official X-Omni folder -> xomni folder (or back with `reverse`). Everything is checked first; the output is
    written aside and swapped in when complete."""
    src, out = Path(src), Path(out)
    rs, ro = src.resolve(), out.resolve()
    if rs == ro or rs in ro.parents or ro in rs.parents:
        raise XomniError(f"--out {out} must be outside the source directory {src} (and not contain it)")
    refuse_existing(out, "--out", "files", overwrite)
    try:
        plan = None if reverse else _plan(src)
    except XomniError as e:
        raise XomniError(f"{src}: {e}") from None
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        summary = _write_xomni_to_official(src, tmp) if reverse else _write_official_to_xomni(src, tmp, plan)
    except XomniError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise XomniError(f"{src}: {e}") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    if out.exists():
        os.replace(out, old)
    os.replace(tmp, out)
    shutil.rmtree(old, ignore_errors=True)
    return {"direction": "xomni->official" if reverse else "official->xomni", "src": str(src), "out": str(out),
            **summary}
