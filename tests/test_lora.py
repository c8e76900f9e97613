"""LoRA adapters: training touches only the adapter, merge-free loading = the merged model, safetensors only, bad
adapter directories exit 2 with one line; the font variant presets leave the registered presets untouched."""
import copy
import json

import pytest
import torch

from conftest import run_inproc
from xomni.errors import XomniError


@pytest.fixture(scope="module")
def trained(tmp_path_factory, base_pipeline):
    """A few plain LoRA steps on the bundled AR model without its drawing adapter (random code grids: only the
    mechanics matter here)."""
    from xomni.ar.train import build_loss_fn
    from xomni.lora.adapter import LoRAConfig, add_lora, save_adapter
    from xomni.lora.train import LoRATrainConfig
    from xomni.pipeline import Pipeline
    from xomni.train import TrainConfig, run_training
    out = tmp_path_factory.mktemp("lora")
    pipe = Pipeline.from_pretrained(base_pipeline)
    base = {k: v.clone() for k, v in pipe.ar.state_dict().items()}
    g = torch.Generator().manual_seed(0)
    h, w = pipe.grid
    data = [{"caption": f'a white poster with the text "W{i}" in black bold serif letters',
             "codes": torch.randint(0, pipe.ar.cfg.image_vocab, (h, w), generator=g)} for i in range(16)]
    cfg = LoRATrainConfig(train=TrainConfig(out_dir=str(out / "run"), steps=3, batch_size=4, lr=5e-2, warmup_steps=0,
                                            progress=False, ckpt_every=0, device="cpu"),
                          lora=LoRAConfig(rank=4, targets=["q_proj", "v_proj", "down_proj"]))
    add_lora(pipe.ar, cfg.lora)
    run_training(cfg.train, pipe.ar, data, build_loss_fn(pipe.ar, pipe.text_tokenizer, cfg), collate=list,
                 move_batch=False, save_final=lambda d, m: save_adapter(m, d, cfg.lora, {"base_model": "bundled"}))
    return {"pipe": pipe, "base": base, "adapter": out / "run", "out": out, "base_dir": base_pipeline}


def test_training_changes_only_the_adapter(trained):
    ar, base = trained["pipe"].ar, trained["base"]
    sd = ar.state_dict()
    changed_lora = 0
    for k, v in sd.items():
        if "lora_" in k:
            changed_lora += int("lora_B" in k and v.abs().sum() > 0)  # B starts at zero
            continue
        name = k.replace(".base_layer", "")
        assert torch.equal(v, base[name]), f"base weight {name} changed"
    assert changed_lora == 3 * ar.cfg.n_layers  # every targeted layer's B moved
    assert all(not p.requires_grad for n, p in ar.named_parameters() if "lora_" not in n)


def test_adapter_files_are_safetensors_and_json(trained):
    d = trained["adapter"] / "final"
    names = sorted(p.name for p in d.iterdir())
    assert names == ["adapter_config.json", "adapter_model.safetensors", "xomni_adapter.json"]
    with open(d / "adapter_model.safetensors", "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
    assert all(k.startswith("base_model.model.") for k in header if k != "__metadata__")
    cfg = json.loads((d / "adapter_config.json").read_text())
    assert cfg["peft_type"] == "LORA" and cfg["r"] == 4 and sorted(cfg["target_modules"]) == ["down_proj", "q_proj",
                                                                                              "v_proj"]
    assert (d / "adapter_model.safetensors").stat().st_size < 2 * 1024 * 1024


def test_merge_free_loading_equals_the_merged_model(trained, tmp_path):
    from xomni.ar.sampler import SamplingConfig
    from xomni.lora.adapter import merge_lora
    from xomni.lora.train import merge_main
    from xomni.pipeline import Pipeline
    loaded = Pipeline.from_pretrained(trained["base_dir"], lora=trained["adapter"])  # run dir: final/ is found
    merged = copy.deepcopy(loaded.ar)
    merge_lora(merged)
    assert not any("lora_" in k for k in merged.state_dict())
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 259, (3, 40), generator=g)
    with torch.no_grad():
        h1, _ = loaded.ar.hidden(ids)
        h2, _ = merged.hidden(ids)
        h0, _ = trained["pipe"].ar.hidden(ids)
    assert (h1 - h0).abs().max() < 1e-5  # loaded = the trained model in memory
    assert (h1 - h2).abs().max() < 1e-4
    assert (loaded.ar.image_logits(h1) - merged.image_logits(h2)).abs().max() < 1e-4
    # the sampler (static-KV fast path) draws the same tokens through the LoRA modules
    s = SamplingConfig(temperature=1.0, top_k=1)
    merge_main(str(trained["base_dir"]), str(trained["adapter"]), str(tmp_path / "merged"))
    baked = Pipeline.from_pretrained(tmp_path / "merged")
    assert "lora" not in baked.index and baked.index["lora_merged"]["ar"].endswith("final")
    a = loaded.generate_codes(["a", "b"], seed=0, sampling=s).codes_BHW
    b = baked.generate_codes(["a", "b"], seed=0, sampling=s).codes_BHW
    assert torch.equal(a, b)
    with torch.no_grad():
        h3, _ = baked.ar.hidden(ids)
    assert (h1 - h3).abs().max() < 1e-4


def test_bad_adapter_dirs_exit_2_with_one_line(trained, tmp_path, monkeypatch, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "adapter_model.bin").write_bytes(b"\x80\x04K\x01.")
    (pickled / "adapter_config.json").write_text("{}")
    wrong = tmp_path / "wrong"
    import shutil
    shutil.copytree(trained["adapter"] / "final", wrong)
    cfg = json.loads((wrong / "adapter_config.json").read_text())
    cfg["r"] = 8  # the file holds rank-4 matrices
    (wrong / "adapter_config.json").write_text(json.dumps(cfg))
    notdir = tmp_path / "file.txt"
    notdir.write_text("x")
    from PIL import Image
    Image.new("RGB", (128, 32)).save(tmp_path / "o.png")
    cases = [(empty, "adapter_model.safetensors is missing"), (pickled, "only safetensors"),
             (wrong, "does not match the model"), (notdir, "")]
    for path, want in cases:
        model = ["--model", str(trained["base_dir"])]
        for args in (["generate", "x", "--lora", str(path), "-o", str(tmp_path / "o.png"), *model],
                     ["caption", str(tmp_path / "o.png"), "--lora", str(path), *model]):
            if args[0] == "caption" and path != empty:
                continue
            r = run_inproc(args, monkeypatch, capsys)
            assert r.returncode == 2, (args, r.stderr[-2000:])
            assert len(r.stderr.strip().splitlines()) == 1 and want in r.stderr, r.stderr
    r = run_inproc(["serve", "--lora", str(empty), "--port", "1"], monkeypatch, capsys)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1


def test_add_lora_rejects_unknown_targets():
    from xomni.ar.model import ARConfig, UnifiedAR
    from xomni.lora.adapter import LoRAConfig, add_lora
    m = UnifiedAR(ARConfig(hidden_size=32, n_layers=1, n_heads=2, n_kv_heads=2, intermediate_size=64))
    with pytest.raises(XomniError, match="not a linear or convolution layer"):
        add_lora(m, LoRAConfig(targets=["qkv"]))


def test_font_variant_presets():
    from xomni.data.presets import MINI, get_preset
    from xomni.data.synth import make_sample
    v = get_preset("mini:dejavu-serif-bold")
    assert v.fonts == ("dejavu-serif-bold",) and v.ocr_region == MINI.ocr_region
    assert v.prompt_template == 'a white poster with the text "{text}" in black bold serif letters'
    assert get_preset("mini") is MINI  # the registered preset itself, untouched
    png, meta = make_sample(("mini:dejavu-serif-bold", 0, "train", 0))
    assert meta["font"] == "dejavu-serif-bold" and "bold serif letters" in meta["caption"]
    assert meta["preset"] == "mini:dejavu-serif-bold"
    png0, meta0 = make_sample(("mini", 0, "train", 0))
    assert meta0["font"] == "dejavu-sans-bold" and meta0["text"] == meta["text"]  # same draw, other font
    with pytest.raises(XomniError, match="unknown font"):
        get_preset("mini:comic-sans")
    from xomni.lora.fontpack import judge_check
    assert judge_check(["dejavu-serif-bold", "dejavu-sans-bold"], "mini", n=10) == {"dejavu-serif-bold": 1.0,
                                                                                   "dejavu-sans-bold": 1.0}


def test_decoder_adapter_and_two_adapters_at_once(trained, tmp_path, monkeypatch, capsys):
    """A decoder adapter (convolutions) loads merge-free beside an AR adapter and merges to the same decoder."""
    from xomni.lora.adapter import LoRAConfig, add_lora, merge_lora, save_adapter
    from xomni.pipeline import Pipeline
    pipe = Pipeline.from_pretrained(trained["base_dir"])
    add_lora(pipe.decoder, LoRAConfig(rank=2))
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for n, p in pipe.decoder.named_parameters():
            if "lora_B" in n:
                p.copy_(0.01 * torch.randn(p.shape, generator=g))
    save_adapter(pipe.decoder, tmp_path / "dec", LoRAConfig(rank=2), {"component": "decoder"})
    cfg = json.loads((tmp_path / "dec" / "adapter_config.json").read_text())
    assert sorted(cfg["target_modules"]) == ["conv1", "conv2"]
    both = Pipeline.from_pretrained(trained["base_dir"], lora=f"{trained['adapter']},{tmp_path / 'dec'}")
    assert set(both.index["lora"]) == {"ar", "decoder"}
    codes = torch.randint(0, both.ar.cfg.image_vocab, (2, *both.grid), generator=g)
    a = both.decoder.decode(codes, generator=torch.Generator().manual_seed(0))
    merged = copy.deepcopy(both.decoder)
    merge_lora(merged)
    b = merged.decode(codes, generator=torch.Generator().manual_seed(0))
    plain = Pipeline.from_pretrained().decoder.decode(codes, generator=torch.Generator().manual_seed(0))
    assert (a - b).abs().max() < 1e-4 and (a - plain).abs().max() > 1e-3
    r = run_inproc(["generate", "x", "--lora", f"{trained['adapter']},{trained['adapter']}", "-o",
                    str(tmp_path / "o.png"), "--model", str(trained["base_dir"])], monkeypatch, capsys)
    assert r.returncode == 2 and "two ar adapters" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_keep_reader_adapter_draws_and_captions_as_the_base(base_pipeline, tmp_path, monkeypatch, capsys):
    """keep_reader: the adapter, image_head and the unread level's embedding rows learn the drawing; captioning
    (pipeline.caption's `reading` block) sees the base weights bit for bit; merging is refused in one line."""
    import dataclasses
    from xomni.ar.caption import caption_codes
    from xomni.ar.train import build_loss_fn
    from xomni.lora.adapter import (ROWS, LoRAConfig, add_lora, load_adapter, merge_lora, reading, save_adapter,
                                    train_draw_rows)
    from xomni.lora.train import LoRATrainConfig
    from xomni.pipeline import Pipeline
    from xomni.train import TrainConfig, run_training
    pipe = Pipeline.from_pretrained(base_pipeline)
    base = pipe.ar.float().eval()
    L = base.cfg.levels
    assert L > 1 and base.cfg.read_levels == 1  # writes every level, reads level 0
    K = base.cfg.image_vocab // L
    before = {k: v.clone() for k, v in base.state_dict().items()}
    model = copy.deepcopy(base)
    h, w = pipe.grid
    g = torch.Generator().manual_seed(0)

    def grids(n):  # every patch's L codes, level l's offset by l * K (the tokenizer's global code ids)
        return (torch.randint(0, K, (n, h, w // L, L), generator=g) + K * torch.arange(L)).reshape(n, h, w)

    data = [{"caption": f"word{i}", "codes": c} for i, c in enumerate(grids(8))]
    cfg = LoRATrainConfig(train=TrainConfig(out_dir=str(tmp_path / "run"), steps=3, batch_size=4, lr=5e-2,
                                            warmup_steps=0, weight_decay=0.0, progress=False, ckpt_every=0,
                                            device="cpu"),
                          lora=LoRAConfig(rank=4, targets=["q_proj", "down_proj"]), keep_reader=True, t2i_ratio=1.0)
    add_lora(model, cfg.lora)
    assert train_draw_rows(model) == K
    run_training(cfg.train, model, data, build_loss_fn(model, pipe.text_tokenizer, cfg), collate=list,
                 move_batch=False, save_final=lambda d, m: save_adapter(m, d, cfg.lora, {"base_model": "test"}))
    sd = {k.replace(".base_layer", ""): v for k, v in model.state_dict().items() if "lora_" not in k}
    moved = {k for k, v in sd.items() if not torch.equal(v, before[k])}
    assert moved == {"image_head.weight", "image_embed.weight"}
    assert torch.equal(sd["image_embed.weight"][:K], before["image_embed.weight"][:K])  # the rows captions read
    assert not torch.equal(sd["image_embed.weight"][K:], before["image_embed.weight"][K:])
    final = tmp_path / "run" / "final"
    assert (final / ROWS).is_file() and json.loads((final / "xomni_adapter.json").read_text())["keep_reader"]
    loaded = load_adapter(copy.deepcopy(base), final)
    loaded.eval()
    codes = grids(2)
    ids = torch.randint(0, 259, (2, 30), generator=g)
    with torch.no_grad():
        h_base, _ = base.hidden(ids)
        h_draw, _ = loaded.hidden(ids)
        with reading(loaded):
            h_read, _ = loaded.hidden(ids)
            cap = caption_codes(loaded, codes, max_new_tokens=8)
        assert (h_draw - h_base).abs().max() > 1e-3  # drawing goes through the adapter
        assert torch.equal(h_read, h_base) and cap == caption_codes(base, codes, max_new_tokens=8)
        assert (loaded.image_logits(h_draw) - model.image_logits(h_draw)).abs().max() < 1e-5  # rows came back
    assert not any(p.requires_grad for p in loaded.parameters())  # peft's enable_adapters left them as they were
    with pytest.raises(XomniError, match="keep-reader"):
        merge_lora(loaded)
    # continued on a new schedule (--init): the trained adapter, its rows and its shape, training again
    from xomni.lora.train import start_adapter
    again = load_adapter(copy.deepcopy(base), final)
    c2 = start_adapter(again, dataclasses.replace(cfg, lora=LoRAConfig()), "A")
    assert c2.lora.rank == 4 and sorted(c2.lora.targets) == ["down_proj", "q_proj"]
    assert train_draw_rows(again) == K and all(p.requires_grad for n, p in again.named_parameters() if "lora_" in n)
    again.eval()
    with torch.no_grad():
        assert torch.equal(again.image_logits(again.hidden(ids)[0]), loaded.image_logits(h_draw))
    with pytest.raises(XomniError, match="keep_reader=true"):
        start_adapter(load_adapter(copy.deepcopy(base), final), dataclasses.replace(cfg, keep_reader=False), "A")
    assert start_adapter(load_adapter(copy.deepcopy(base), final), dataclasses.replace(cfg, keep_reader=None),
                         "A").lora.rank == 4  # unset: the adapter's own kind
    with pytest.raises(XomniError, match="rank 4"):
        start_adapter(load_adapter(copy.deepcopy(base), final), dataclasses.replace(cfg, lora=LoRAConfig(rank=16)),
                      "A")
    r = run_inproc(["train", "lora", "--data", str(tmp_path), "--out", str(tmp_path / "o"), "--init",
                    str(tmp_path / "nowhere")], monkeypatch, capsys)
    assert r.returncode == 2 and "nowhere" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = run_inproc(["train", "lora", "--data", str(tmp_path), "--out", str(tmp_path / "o"), "--set",
                    "keep_reader=true", "--set", "train.weight_decay=0.1"], monkeypatch, capsys)
    assert r.returncode == 2 and "weight_decay" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_keep_reader_adapter_in_a_pipeline(trained, tmp_path, monkeypatch, capsys):
    """On the base pipeline a keep-reader adapter trains the adapter, image_head and the unread levels' rows; loaded
    with --lora it changes what the pipeline draws and leaves pipeline.caption exactly as it was."""
    import numpy as np
    from PIL import Image
    from xomni.ar.sampler import SamplingConfig
    from xomni.ar.train import build_loss_fn
    from xomni.lora.adapter import LoRAConfig, add_lora, save_adapter, train_draw_rows
    from xomni.lora.train import LoRATrainConfig
    from xomni.pipeline import Pipeline
    from xomni.train import TrainConfig, run_training
    base_dir = trained["base_dir"]
    pipe = Pipeline.from_pretrained(base_dir)
    h, w = pipe.grid
    g = torch.Generator().manual_seed(0)
    data = [{"caption": f"w{i}", "codes": torch.randint(0, pipe.ar.cfg.image_vocab, (h, w), generator=g)}
            for i in range(8)]
    cfg = LoRATrainConfig(train=TrainConfig(out_dir=str(tmp_path / "run"), steps=2, batch_size=4, lr=5e-2,
                                            warmup_steps=0, weight_decay=0.0, progress=False, ckpt_every=0,
                                            device="cpu"), lora=LoRAConfig(rank=4), keep_reader=True)
    add_lora(pipe.ar, cfg.lora)
    K = train_draw_rows(pipe.ar)
    assert K == pipe.ar.cfg.image_vocab // pipe.ar.cfg.levels  # level 0 is read, the other levels' rows train
    run_training(cfg.train, pipe.ar, data, build_loss_fn(pipe.ar, pipe.text_tokenizer, cfg), collate=list,
                 move_batch=False, save_final=lambda d, m: save_adapter(m, d, cfg.lora, {"base_model": "bundled"}))
    plain, drawn = Pipeline.from_pretrained(base_dir), Pipeline.from_pretrained(base_dir, lora=tmp_path / "run")
    imgs = [Image.fromarray(np.random.default_rng(i).integers(0, 255, (32, 128, 3), dtype=np.uint8))
            for i in range(2)]
    assert drawn.caption(imgs) == plain.caption(imgs)
    s = SamplingConfig(temperature=1.0, top_k=1)
    codes = drawn.generate_codes(["a"], seed=0, sampling=s).codes_BHW
    assert not torch.equal(codes, plain.generate_codes(["a"], seed=0, sampling=s).codes_BHW)
    # a pipeline ships it as a component (ar/ keeps the base weights, ar_adapter/ the adapter and its rows)
    from xomni.lora.train import merge_main
    assert merge_main(str(base_dir), str(tmp_path / "run"), str(tmp_path / "shipped"))["kept_as_component"]
    index = json.loads((tmp_path / "shipped" / "model_index.json").read_text())
    assert index["components"]["ar_adapter"] == "ar_adapter/" and "lora" not in index and index["ar_adapter_from"]
    assert not (tmp_path / "shipped" / "ar_adapter" / "image_rows.safetensors").exists()  # ar/ holds the rows
    shipped = Pipeline.from_pretrained(tmp_path / "shipped")
    assert shipped.caption(imgs) == plain.caption(imgs)
    assert torch.equal(shipped.generate_codes(["a"], seed=0, sampling=s).codes_BHW, codes)
    # the sampler runs a merged copy: no LoRA layers, the adapter's logits; rebuilt when the adapter changes
    from xomni.ar.sampler import sample_images
    from xomni.lora.adapter import is_lora
    draw = shipped.drawing_model()
    ids = torch.randint(0, 259, (2, 30), generator=g)
    with torch.no_grad():
        assert not is_lora(draw) and draw is shipped.drawing_model()  # cached while the weights stay
        merged, lora = draw.image_logits(draw.hidden(ids)[0]), shipped.ar.image_logits(shipped.ar.hidden(ids)[0])
        assert (merged - lora).abs().max() < 1e-4
        prompt = [shipped.check_prompt("a")]
        assert torch.equal(sample_images(shipped.ar, prompt, shipped.grid, s, generator=torch.Generator().manual_seed(0)
                                         ).codes_BHW, codes)  # the unmerged adapter draws the same greedy codes
        next(p for n, p in shipped.ar.named_parameters() if "lora_B" in n).add_(0.5)
        assert shipped.drawing_model() is not draw and not torch.equal(
            shipped.drawing_model().image_logits(shipped.drawing_model().hidden(ids)[0]),
            draw.image_logits(draw.hidden(ids)[0]))
    shipped = Pipeline.from_pretrained(tmp_path / "shipped")
    from xomni.ar.model import UnifiedAR
    from xomni.lora.adapter import merge_lora
    on_disk, base = UnifiedAR.from_pretrained(tmp_path / "shipped" / "ar").state_dict(), plain.ar.state_dict()
    assert on_disk.keys() == base.keys()  # ar/ is a plain AR model: base weights, the trained image rows
    assert all(torch.equal(v, base[k]) for k, v in on_disk.items() if k not in ("image_head.weight",
                                                                               "image_embed.weight"))
    assert torch.equal(on_disk["image_embed.weight"][:K], base["image_embed.weight"][:K])  # the rows captions read
    with pytest.raises(XomniError, match="keep-reader"):
        merge_lora(shipped.ar)
    with pytest.raises(XomniError, match="already draws with its own AR adapter"):  # a plain adapter on top
        Pipeline.from_pretrained(tmp_path / "shipped", lora=trained["adapter"])
    # a keep-reader --lora replaces the shipped adapter; train lora continues the shipped one (keep_reader only)
    again = Pipeline.from_pretrained(tmp_path / "shipped", lora=tmp_path / "run")
    assert torch.equal(again.generate_codes(["a"], seed=0, sampling=s).codes_BHW, codes)
    from xomni.lora.train import start_adapter
    with pytest.raises(XomniError, match="keep_reader=true"):
        start_adapter(shipped.ar, LoRATrainConfig(keep_reader=False), "S")
    with pytest.raises(XomniError, match="already has a LoRA adapter .the pipeline's keep-reader"):
        add_lora(shipped.ar, LoRAConfig(rank=2))  # named as such, not as a missing target
    with pytest.raises(XomniError, match="already has a LoRA adapter; merge it first"):
        add_lora(trained["pipe"].ar, LoRAConfig(rank=2))
    c2 = start_adapter(shipped.ar, cfg, "S")
    assert c2.lora.rank == 4 and any(p.requires_grad for p in shipped.ar.parameters())
    drawn.save_pretrained(tmp_path / "saved")  # Pipeline.save_pretrained does the same
    assert Pipeline.from_pretrained(tmp_path / "saved").caption(imgs) == plain.caption(imgs)
    # `xomni train lora` on such a pipeline, keep_reader unset: it continues the shipped adapter as a keep-reader one
    d = tmp_path / "data"
    assert run_inproc(["data", "synth", "--preset", "mini", "--n", "8", "--split", "train", "-o", str(d)],
                      monkeypatch, capsys).returncode == 0
    r = run_inproc(["train", "lora", "--model", str(tmp_path / "shipped"), "--data", str(d), "--out",
                    str(tmp_path / "more"), "--set", "train.steps=1", "--set", "train.batch_size=2", "--set",
                    "val_n=0", "--set", "train.progress=false"], monkeypatch, capsys)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "continuing the adapter in" in r.stderr and json.loads(r.stdout)["row_params"] > 0
    info = json.loads((tmp_path / "more" / "final" / "xomni_adapter.json").read_text())
    assert info["keep_reader"] and info["train"]["keep_reader"] is True
    r = run_inproc(["train", "lora", "--model", str(tmp_path / "shipped"), "--data", str(d), "--out",
                    str(tmp_path / "plain"), "--set", "keep_reader=false"], monkeypatch, capsys)
    assert r.returncode == 2 and "keep_reader=true" in r.stderr and len(r.stderr.strip().splitlines()) == 1
