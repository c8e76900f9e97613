"""Semantic VQ tokenizer: shapes (paper / summary settings), persistence, training on the shared loop, metrics,
bad input. Tiny sizes, random or rendered data."""
import json
import math

import numpy as np
import pytest
import torch

from xomni.errors import XomniError
from xomni.tokenizer.config import TokenizerConfig
from xomni.tokenizer.images import ImageSet, images_to_tensor, tensor_to_pil
from xomni.tokenizer.metrics import caption_scores, codebook_stats
from xomni.tokenizer.model import ImageTokenizer
from xomni.tokenizer.textdec import BOS, EOS, PAD, decode_bytes, encode_caption

TINY = dict(width=32, depth=1, code_dim=16, text_dim=32, text_layers=1, text_heads=2, max_caption_bytes=48)


def rendered(n, split="train", seed=0):
    from xomni.data.presets import TINY as P
    from xomni.data.render import render
    from xomni.data.scene import sample_scene
    metas = [sample_scene(P, seed, split, i) for i in range(n)]
    return [render(m) for m in metas], metas


@pytest.mark.parametrize("patch,K", [(16, 16384), (32, 65536)])  # the paper's and the popular summary's settings
def test_forward_paper_and_summary_settings(patch, K):
    torch.manual_seed(0)
    cfg = TokenizerConfig(patch=patch, codebook_size=K, **{**TINY, "code_dim": 64})
    tok = ImageTokenizer(cfg).train()
    x = torch.rand(2, 3, 64, 256) * 2 - 1
    caps = torch.stack([encode_caption('a red sign with the text "HI"', 48)] * 2)
    loss, m = tok(x, caps)
    assert torch.isfinite(loss) and m["tokens"] > 0
    loss.backward()
    codes = tok.encode(x)
    assert codes.shape == (2, 64 // patch, 256 // patch) and codes.dtype == torch.long
    assert int(codes.min()) >= 0 and int(codes.max()) < K
    assert tok.grid == (64 // patch, 256 // patch) and tok.vocab_size == K
    assert tok.code_vectors(codes).shape == (2, 64 // patch, 256 // patch, 64)


def test_config_validation():
    with pytest.raises(XomniError, match="patch"):
        TokenizerConfig(patch=12).validate()
    with pytest.raises(XomniError, match="codebook_size"):
        TokenizerConfig(codebook_size=70000).validate()
    with pytest.raises(XomniError, match="divisible"):
        TokenizerConfig(image_size=[40, 256]).validate()
    with pytest.raises(XomniError, match="recon_loss"):
        TokenizerConfig(recon_loss="l2").validate()
    tok = ImageTokenizer(TokenizerConfig(codebook_size=64, **TINY))
    with pytest.raises(XomniError, match=r"\[B, 3, 64, 256\]"):
        tok.encode(torch.zeros(1, 3, 32, 32))


def test_recon_loss_l1_is_the_heads_mean_absolute_error():
    """recon_loss=l1 trains the head on |pred - target| (the mse figure is still logged); same weights and inputs
    give losses that differ by exactly recon_weight x (l1 - mse)."""
    torch.manual_seed(0)
    kw = dict(codebook_size=64, patch=8, recon_down=1, recon_weight=2.0, diversity_weight=0.0, kmeans_init=False,
              **TINY)
    a = ImageTokenizer(TokenizerConfig(recon_loss="mse", **kw)).eval()
    b = ImageTokenizer(TokenizerConfig(recon_loss="l1", **kw)).eval()
    b.load_state_dict(a.state_dict())
    x = torch.rand(2, 3, 64, 256) * 2 - 1
    caps = torch.stack([encode_caption('a sign with the text "HI"', 48)] * 2)
    la, ma = a(x, caps)
    lb, mb = b(x, caps)
    with torch.no_grad():
        f = a.features(x)
        B, D, H, W = f.shape
        q, _, _ = a.vq(f.flatten(2).transpose(1, 2))
        pred = a.recon(q.transpose(1, 2).reshape(B, D, H, W))
    l1, mse = float((pred - x).abs().mean()), float(((pred - x) ** 2).mean())
    assert ma["recon_mse"] == pytest.approx(mse, rel=1e-5) and mb["recon_mse"] == pytest.approx(mse, rel=1e-5)
    assert float((lb - la).detach()) == pytest.approx(2.0 * (l1 - mse), rel=1e-4, abs=1e-6)
    assert abs(l1 - mse) > 1e-3   # the two losses really differ on these inputs


def test_save_load_roundtrip_identical_codes(tmp_path):
    torch.manual_seed(0)
    tok = ImageTokenizer(TokenizerConfig(codebook_size=64, **TINY)).train()
    x = torch.rand(4, 3, 64, 256) * 2 - 1
    caps = torch.stack([encode_caption("a blue label", 48)] * 4)
    tok(x, caps)  # k-means init + one EMA update, so the buffers matter
    tok.save_pretrained(tmp_path / "tok")
    assert (tmp_path / "tok" / "model.safetensors").is_file()
    assert json.loads((tmp_path / "tok" / "config.json").read_text())["kind"] == "xomni-tokenizer"
    tok2 = ImageTokenizer.from_pretrained(tmp_path / "tok")
    assert torch.equal(tok.encode(x), tok2.encode(x))
    assert tok2.captions(tok2.encode(x[:1]), max_new=5) == tok.captions(tok.encode(x[:1]), max_new=5)


def test_from_pretrained_errors(tmp_path):
    with pytest.raises(XomniError, match="not a tokenizer directory"):
        ImageTokenizer.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text('{"kind": "xomni-decoder", "model": {}}')
    with pytest.raises(XomniError, match="not a tokenizer config"):
        ImageTokenizer.from_pretrained(tmp_path)


def test_caption_bytes_roundtrip():
    ids = encode_caption('a "Café" sign', 32)
    assert ids[0] == BOS and ids.shape == (34,) and (ids == PAD).any() and (ids == EOS).sum() == 1
    assert decode_bytes(ids[1:].tolist()) == 'a "Café" sign'


def test_codebook_stats_hand_made():
    s = codebook_stats(torch.tensor([0, 1, 2, 3] * 5), 4)  # uniform over all codes
    assert s["usage"] == 1.0 and math.isclose(s["perplexity"], 4.0, rel_tol=1e-9)
    s = codebook_stats(torch.tensor([[0, 0], [0, 0]]), 8)  # one code of 8
    assert s["usage"] == 1 / 8 and math.isclose(s["perplexity"], 1.0) and s["codes_used"] == 1
    s = codebook_stats(torch.tensor([0, 0, 1, 1]), 4)  # two equiprobable codes of 4
    assert s["usage"] == 0.5 and math.isclose(s["perplexity"], 2.0) and math.isclose(s["perplexity_ratio"], 0.5)


def test_caption_scores():
    meta = {"caption": 'a red sign with the text "GO" in white serif letters', "text": "GO", "background": "red",
            "noun": "sign", "text_color": "white", "font_family": "serif", "font_style": "regular", "shapes": []}
    wrong_text = 'a red sign with the text "G0" in white serif letters'
    s = caption_scores([meta["caption"], wrong_text, "garbage"], [meta] * 3)
    assert s["caption_exact"] == pytest.approx(1 / 3) and s["text_exact"] == pytest.approx(1 / 3)
    assert s["attribute_accuracy"]["background"] == pytest.approx(2 / 3)


def test_resize_warning_on_odd_aspect(capsys):
    from PIL import Image
    imgs = [Image.new("RGB", (100, 100), (255, 0, 0)), Image.new("RGB", (100, 100), (0, 0, 255)),
            Image.new("RGB", (128, 32), (0, 255, 0))]  # same 4:1 aspect as 256x64: resized silently
    x = images_to_tensor(imgs, (64, 256))
    assert x.shape == (3, 3, 64, 256) and float(x.max()) <= 1 and float(x.min()) >= -1
    err = capsys.readouterr().err
    assert err.count("warning") == 1 and "aspect" in err and "100x100" in err
    back = tensor_to_pil(x[:1])[0]
    assert back.size == (256, 64) and back.getpixel((5, 5)) == (255, 0, 0)


def test_training_steps_reduce_loss_on_shared_loop(tmp_path):
    from xomni.tokenizer.trainer import CaptionedImages, tokenizer_loss
    from xomni.train import TrainConfig, run_training
    imgs, metas = rendered(16)
    arr = np.stack([np.asarray(im) for im in imgs])
    ds = CaptionedImages(ImageSet(arr, metas), 48)
    torch.manual_seed(0)
    tok = ImageTokenizer(TokenizerConfig(codebook_size=64, **TINY))
    cfg = TrainConfig(out_dir=str(tmp_path / "run"), steps=25, batch_size=8, lr=3e-3, warmup_steps=2, log_every=1,
                      ckpt_every=0, progress=False, num_threads=1)
    res = run_training(cfg, tok, ds, tokenizer_loss, config_dict=tok.config_dict())
    losses = [json.loads(l)["loss"] for l in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert np.mean(losses[-3:]) < 0.7 * np.mean(losses[:3])
    tok2 = ImageTokenizer.from_pretrained(tmp_path / "run")  # run dir -> final/
    x = ds.images.tensor([0, 1])
    assert torch.equal(res.model.encode(x), tok2.encode(x))


def test_effnet_encoder_frozen_trunk():
    tok = ImageTokenizer(TokenizerConfig(encoder="effnet", codebook_size=32, **TINY))
    assert tok.encoder.out_channels == 112  # stride-16 block of EfficientNet-Lite0
    assert not any(p.requires_grad for p in tok.encoder.trunk.parameters())
    tok.train()
    assert not tok.encoder.trunk.training  # BatchNorm statistics stay frozen
    assert tok.encode(torch.zeros(1, 3, 64, 256)).shape == (1, 4, 16)


def test_hf_encoder_from_local_dir(tmp_path):
    from transformers import SiglipVisionConfig, SiglipVisionModel
    vcfg = SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                              image_size=64, patch_size=16)
    SiglipVisionModel(vcfg).save_pretrained(tmp_path / "siglip")
    tok = ImageTokenizer(TokenizerConfig(encoder="hf", encoder_path=str(tmp_path / "siglip"), codebook_size=32,
                                         **TINY))
    assert tok.encoder.out_channels == 32
    assert tok.encode(torch.zeros(2, 3, 64, 256)).shape == (2, 4, 16)
    with pytest.raises(XomniError, match="not a Hugging Face model directory"):
        ImageTokenizer(TokenizerConfig(encoder="hf", encoder_path=str(tmp_path / "nope"), **TINY))


def test_vit_encoder_shapes():
    tok = ImageTokenizer(TokenizerConfig(encoder="vit", codebook_size=32, **{**TINY, "width": 64}))
    assert tok.encode(torch.zeros(1, 3, 64, 256)).shape == (1, 4, 16)


def test_recon_ocr_reads_the_heads_pixels():
    """recon_ocr runs Tesseract on what the reconstruction head draws: a head that returns the originals scores as
    the originals; a blank head scores 0."""
    from xomni.tokenizer.metrics import recon_ocr
    imgs, metas = rendered(6, split="val")
    iset = ImageSet(np.stack([np.asarray(im) for im in imgs]), metas)
    tok = ImageTokenizer(TokenizerConfig(codebook_size=64, patch=8, recon_down=1, **TINY)).eval()
    codes = tok.encode(iset.tensor(list(range(6))))

    class Echo(torch.nn.Module):  # returns the next images of the set, in order
        def __init__(self):
            super().__init__()
            self.i = 0

        def forward(self, q):
            out = iset.tensor(list(range(self.i, self.i + len(q))))
            self.i += len(q)
            return out

    class Blank(torch.nn.Module):
        def forward(self, q):
            return torch.ones(len(q), 3, 64, 256)

    tok.recon = Echo()
    echo = recon_ocr(tok, iset, codes, 6)
    assert echo["n"] == 6 and echo["original"]["exact_match"] >= 0.8
    assert echo["recon"] == echo["original"]
    tok.recon = Blank()
    blank = recon_ocr(tok, iset, codes, 6)
    assert blank["recon"]["exact_match"] == 0 and blank["recon"]["cer"] >= 0.9
    tok.recon = None
    assert recon_ocr(tok, iset, codes, 6) is None
    with pytest.raises(XomniError, match="no reconstruction head"):
        tok.reconstruct(codes)
