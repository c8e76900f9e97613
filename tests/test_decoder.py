"""Diffusion decoder: shapes, bad grids, persistence, training on the shared loop, `reconstruct` on a small dataset
and on a folder of odd images. Tiny sizes."""
import json

import numpy as np
import pytest
import torch

from xomni.decoder.config import DecoderConfig
from xomni.decoder.model import Decoder, config_for_tokenizer
from xomni.errors import XomniError
from xomni.tokenizer.config import TokenizerConfig
from xomni.tokenizer.model import ImageTokenizer

TOK = dict(width=32, depth=1, code_dim=16, text_dim=32, text_layers=1, text_heads=2, max_caption_bytes=48)
DEC = dict(cond_channels=[32, 16], cond_blocks=1, cond_out=8, unet_channels=[16, 32], steps=2)


def tiny_decoder(**kw) -> Decoder:
    torch.manual_seed(0)
    return Decoder(DecoderConfig(**{**DEC, "codebook_size": 64, **kw}))


def test_decode_shapes_and_range():
    dec = tiny_decoder()
    codes = torch.randint(0, 64, (3, 4, 16))
    x = dec.decode(codes, generator=torch.Generator().manual_seed(0))
    assert x.shape == (3, 3, 64, 256) and float(x.abs().max()) <= 1
    assert dec.decode(codes[0], steps=1).shape == (1, 3, 64, 256)  # a single h x w grid is accepted
    pil = dec.decode_pil(codes[:1], steps=1)
    assert pil[0].size == (256, 64)


@pytest.mark.parametrize("shuffle,grid,size,pred", [(1, [4, 16], [64, 256], "x0"), (4, [2, 8], [64, 256], "x0"),
                                                    (2, [4, 4], [64, 64], "velocity")])
def test_other_geometries_and_velocity_prediction(shuffle, grid, size, pred):
    dec = tiny_decoder(shuffle=shuffle, grid=grid, image_size=size, prediction=pred)
    assert dec.decode(torch.zeros(1, *grid, dtype=torch.long), steps=1).shape == (1, 3, *size)
    loss, m = dec(torch.zeros(2, *grid, dtype=torch.long), torch.zeros(2, 3, *size), torch.Generator().manual_seed(0))
    assert torch.isfinite(loss) and set(m) == {"flow_mse", "preview_mse"}


def test_x0_prediction_starts_at_the_preview():
    dec = tiny_decoder()
    codes = torch.randint(0, 64, (2, 4, 16))
    _, preview = dec.cond(codes)
    x = dec.decode(codes, steps=3)  # zero-initialised UNet output: every step's clean estimate is the preview
    assert torch.allclose(x, torch.nn.functional.pixel_shuffle(preview, 4).clamp(-1, 1), atol=1e-4)


def test_strength_starts_from_the_noised_preview():
    """strength < 1 starts from the preview noised to that level: closer to the preview the lower it is; 1 is the
    default pure-noise start; out-of-range values are refused."""
    dec = tiny_decoder()
    torch.manual_seed(1)
    for p in dec.unet.parameters():  # a UNet with a non-zero output, so that the sampler moves away from the preview
        p.data.add_(0.05 * torch.randn_like(p))
    codes = torch.randint(0, 64, (2, 4, 16))
    with torch.no_grad():
        preview = torch.nn.functional.pixel_shuffle(dec.cond(codes)[1], 4).clamp(-1, 1)

    def dist(strength):
        x = dec.decode(codes, steps=4, generator=torch.Generator().manual_seed(0), strength=strength)
        return float((x - preview).abs().mean())

    d_full, d_half, d_low = dist(1.0), dist(0.5), dist(0.05)
    assert d_low < d_half < d_full
    default = dec.decode(codes, steps=4, generator=torch.Generator().manual_seed(0))
    assert torch.equal(default, dec.decode(codes, steps=4, generator=torch.Generator().manual_seed(0), strength=1.0))
    for bad in (0.0, 1.5):
        with pytest.raises(XomniError, match="strength"):
            dec.decode(codes, steps=2, strength=bad)
    with pytest.raises(XomniError, match="strength"):
        DecoderConfig(strength=0).validate()


@pytest.mark.parametrize("patch,down", [(8, 1), (16, 2)])
def test_recon_hint_starts_at_the_tokenizers_reconstruction(patch, down):
    """recon_hint: after init_from_tokenizer, decoding = the tokenizer's own pixel reconstruction of the codes."""
    torch.manual_seed(0)
    tok = ImageTokenizer(TokenizerConfig(codebook_size=64, patch=patch, recon_down=down, **TOK)).eval()
    dec = Decoder(config_for_tokenizer(DecoderConfig(**DEC), tok))
    assert dec.config.recon_hint and dec.cond.hint is not None
    dec.init_from_tokenizer(tok)
    codes = torch.randint(0, 64, (2, *tok.grid))
    assert torch.allclose(dec.decode(codes, steps=2), tok.reconstruct(codes), atol=1e-4)
    plain = Decoder(config_for_tokenizer(DecoderConfig(**DEC, recon_hint=False), tok))
    assert plain.cond.hint is None
    no_recon = ImageTokenizer(TokenizerConfig(codebook_size=64, patch=patch, recon_weight=0, **TOK))
    assert Decoder(config_for_tokenizer(DecoderConfig(**DEC), no_recon)).cond.hint is None


@pytest.mark.parametrize("codes,match", [
    (torch.zeros(2, 4, 15, dtype=torch.long), r"shape \[B, 4, 16\].*vocabulary size 64.*got shape \[2, 4, 15\]"),
    (torch.zeros(16, 4, dtype=torch.long), r"shape \[B, 4, 16\].*vocabulary size 64"),
    (torch.full((1, 4, 16), 64), r"vocabulary size 64.*got ids in \[64, 64\]"),
    (torch.full((1, 4, 16), -1), r"ids in \[0, 64\)"),
    (torch.zeros(1, 4, 16), r"dtype"),
])
def test_rejects_bad_grids(codes, match):
    with pytest.raises(XomniError, match=match):
        tiny_decoder().decode(codes)


def test_save_load_same_samples(tmp_path):
    dec = tiny_decoder()
    dec.save_pretrained(tmp_path / "dec")
    dec2 = Decoder.from_pretrained(tmp_path / "dec")
    codes = torch.randint(0, 64, (2, 4, 16))
    a = dec.decode(codes, generator=torch.Generator().manual_seed(3))
    b = dec2.decode(codes, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    with pytest.raises(XomniError, match="not a decoder"):
        Decoder.from_pretrained(tmp_path / "missing")


def test_save_float16_halves_the_file_and_loads_back_close(tmp_path):
    dec = tiny_decoder()
    dec.save_pretrained(tmp_path / "f32")
    dec.save_pretrained(tmp_path / "f16", dtype=torch.float16)
    a, b = (tmp_path / "f32" / "model.safetensors").stat().st_size, (tmp_path / "f16" / "model.safetensors").stat().st_size
    assert b < 0.6 * a
    back = Decoder.from_pretrained(tmp_path / "f16")
    assert all(p.dtype == torch.float32 for p in back.parameters())
    codes = torch.randint(0, 64, (2, 4, 16))
    x, y = (m.decode(codes, steps=2, generator=torch.Generator().manual_seed(0)) for m in (dec, back))
    assert 0 < float((x - y).abs().max()) < 1e-2  # rounded weights, nearly the same samples


def test_config_validation():
    with pytest.raises(XomniError, match="shuffle"):
        DecoderConfig(shuffle=3).validate()
    with pytest.raises(XomniError, match="divisible"):
        DecoderConfig(image_size=[60, 256]).validate()


def _rendered_set(n, split="train", size=(256, 64)):
    from xomni.data.presets import TINY
    from xomni.data.render import render
    from xomni.data.scene import sample_scene
    from xomni.tokenizer.images import ImageSet
    metas = [sample_scene(TINY, 0, split, i) for i in range(n)]
    return ImageSet(np.stack([np.asarray(render(m).resize(size)) for m in metas]), metas)


def test_training_steps_reduce_loss_on_shared_loop(tmp_path):
    from xomni.decoder.trainer import CodedImages, decoder_loss, encode_set
    from xomni.train import TrainConfig, run_training
    imgs = _rendered_set(16, size=(128, 32))  # half size: fast
    torch.manual_seed(0)
    tok = ImageTokenizer(TokenizerConfig(codebook_size=64, image_size=[32, 128], **TOK)).eval()
    codes = encode_set(tok, imgs)
    dec = Decoder(config_for_tokenizer(DecoderConfig(**DEC), tok))
    dec.init_from_tokenizer(tok)
    assert torch.allclose(dec.cond.embed.weight, tok.codebook())
    cfg = TrainConfig(out_dir=str(tmp_path / "run"), steps=30, batch_size=8, lr=3e-3, warmup_steps=2, log_every=1,
                      ckpt_every=15, progress=False, num_threads=1)
    run_training(cfg, dec, CodedImages(imgs, codes), decoder_loss, config_dict=dec.config_dict())
    losses = [json.loads(l)["loss"] for l in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert np.mean(losses[-10:]) < 0.8 * np.mean(losses[:3])
    assert Decoder.from_pretrained(tmp_path / "run").decode(codes[:1], steps=1).shape == (1, 3, 32, 128)


@pytest.fixture
def models(tmp_path):
    torch.manual_seed(0)
    tok = ImageTokenizer(TokenizerConfig(codebook_size=64, **TOK)).eval()
    tok.save_pretrained(tmp_path / "tok")
    dec = Decoder(config_for_tokenizer(DecoderConfig(**DEC), tok))
    dec.save_pretrained(tmp_path / "dec")
    return tmp_path / "tok", tmp_path / "dec"


def test_reconstruct_dataset_keeps_metadata(tmp_path, models):
    from xomni.data.io import open_dataset, write_imagefolder
    from xomni.decoder.reconstruct import reconstruct
    imgs = _rendered_set(5, "val")
    src = tmp_path / "src"
    write_imagefolder(src, [(im, m) for im, m in zip(
        [__import__("PIL.Image").Image.fromarray(a) for a in imgs.images], imgs.metas)])
    res = reconstruct(str(src), str(tmp_path / "out"), str(models[0]), str(models[1]), n=4, batch_size=3)
    assert res["written"] == 4 and res["skipped"] == 0 and res["steps"] == 2
    out = open_dataset(tmp_path / "out")
    assert len(out) == 4
    for i in range(4):
        s = out[i]
        assert s.image.size == (256, 64)
        for k in ("key", "text", "caption", "font", "shapes"):
            assert s.meta[k] == imgs.metas[i][k]


def test_reconstruct_image_folder_resizes_and_skips(tmp_path, models, capsys):
    from PIL import Image
    from xomni.decoder.reconstruct import reconstruct
    d = tmp_path / "imgs"
    d.mkdir()
    Image.new("RGB", (100, 100), (10, 200, 30)).save(d / "square.png")
    Image.new("RGB", (256, 64), (200, 10, 30)).save(d / "ok image.png")
    (d / "broken.png").write_bytes(b"not a png")
    res = reconstruct(str(d), str(tmp_path / "out"), str(models[0]), str(models[1]))
    assert res["written"] == 2 and res["skipped"] == 1
    err = capsys.readouterr().err
    assert "100x100" in err and "aspect" in err and "broken.png" in err
    rows = [json.loads(l) for l in (tmp_path / "out" / "metadata.jsonl").read_text().splitlines()]
    assert sorted(r["key"] for r in rows) == ["ok_image", "square"]
    assert all(Image.open(tmp_path / "out" / r["file_name"]).size == (256, 64) for r in rows)


def test_reconstruct_mismatched_models(tmp_path, models):
    from xomni.decoder.reconstruct import reconstruct
    Decoder(DecoderConfig(**DEC, codebook_size=32)).save_pretrained(tmp_path / "dec32")
    with pytest.raises(XomniError, match="do not match"):
        reconstruct(str(tmp_path), str(tmp_path / "o"), str(models[0]), str(tmp_path / "dec32"))


@pytest.mark.slow
def test_cli_end_to_end(tmp_path, cli_env):
    """synth -> train tokenizer -> eval tokenizer -> train decoder -> reconstruct -> eval text, through the CLI."""
    import subprocess
    import sys

    def run(*args):
        r = subprocess.run([sys.executable, "-m", "xomni.cli", *args], capture_output=True, text=True, env=cli_env,
                           cwd=tmp_path, timeout=600)
        assert r.returncode == 0, r.stderr[-2000:]
        return json.loads(r.stdout)

    run("data", "synth", "--out", "data", "--n", "32", "--seed", "1")
    tiny = ["--set", "train.progress=false", "--set", "train.warmup_steps=1", "--set", "train.batch_size=8"]
    res = run("train", "tokenizer", "--data", "data", "--out", "tok", "--set", "train.steps=3", "--set", "n_val=8",
              "--set", "model.width=32", "--set", "model.text_dim=32", "--set", "model.text_layers=1",
              "--set", "train.eval_every=0", *tiny)
    assert res["steps"] == 3 and 0 < res["val"]["usage"] <= 1
    ev = run("eval", "tokenizer", "--model", "tok", "--data", "data", "--n", "8")
    assert {"usage", "perplexity", "caption_exact", "text_exact"} <= set(ev)
    res = run("train", "decoder", "--tokenizer", "tok", "--data", "data", "--out", "dec", "--set", "train.steps=3",
              "--set", "n_val=0", "--set", "model.unet_channels=[16,32]", *tiny)
    assert res["steps"] == 3
    # --init-except-codes: the UNet from --init, the code embeddings and recon hint from --tokenizer
    res = run("train", "decoder", "--tokenizer", "tok", "--data", "data", "--out", "dec2", "--init", "dec/final",
              "--init-except-codes", "--set", "train.steps=1", "--set", "train.lr=1e-12", "--set", "n_val=0",
              "--set", "model.unet_channels=[16,32]", *tiny)
    src, new = Decoder.from_pretrained(tmp_path / "dec"), Decoder.from_pretrained(tmp_path / "dec2")
    table = ImageTokenizer.from_pretrained(tmp_path / "tok").code_table()
    assert torch.allclose(new.cond.embed.weight, table, atol=1e-6)
    assert not torch.allclose(src.cond.embed.weight, table, atol=1e-6)  # the init's own embeddings had moved
    assert all(torch.allclose(v, src.state_dict()[k], atol=1e-6) for k, v in new.state_dict().items()
               if k.startswith("unet."))
    bad = subprocess.run([sys.executable, "-m", "xomni.cli", "train", "decoder", "--tokenizer", "tok", "--data",
                          "data", "--out", "dec3", "--init-except-codes"], capture_output=True, text=True,
                         env=cli_env, cwd=tmp_path)
    assert bad.returncode == 2 and "--init-except-codes needs --init" in bad.stderr
    rec = run("reconstruct", "data", "--split", "val", "--n", "4", "-o", "rec", "--tokenizer", "tok",
              "--decoder", "dec", "--steps", "2")
    assert rec["written"] == 4
    txt = run("eval", "text", "--images", "rec")
    assert txt["n"] == 4
    bad = subprocess.run([sys.executable, "-m", "xomni.cli", "reconstruct", "data", "--split", "val", "-o", "x",
                          "--tokenizer", "tok", "--decoder", "tok"], capture_output=True, text=True, env=cli_env,
                         cwd=tmp_path)
    assert bad.returncode == 2 and "not a decoder config" in bad.stderr
