"""Residual VQ (`levels` codes per patch): the token grid layout, what the residual level adds, and the decoder,
AR-facing properties and persistence on that layout. Tiny sizes, rendered images."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from xomni.decoder.config import DecoderConfig
from xomni.decoder.model import Decoder, config_for_tokenizer
from xomni.errors import XomniError
from xomni.tokenizer.config import TokenizerConfig
from xomni.tokenizer.images import images_to_tensor
from xomni.tokenizer.model import ImageTokenizer
from xomni.tokenizer.textdec import encode_caption

TOK = dict(width=32, depth=1, code_dim=16, text_dim=32, text_layers=1, text_heads=2, max_caption_bytes=48,
           codebook_size=32, patch=8, recon_down=1)
DEC = dict(cond_channels=[32, 16], cond_blocks=1, cond_out=8, unet_channels=[16, 32], steps=2)


def renders(n):
    from xomni.data.presets import TINY as P
    from xomni.data.render import render
    from xomni.data.scene import sample_scene
    metas = [sample_scene(P, 0, "train", i) for i in range(n)]
    return images_to_tensor([render(m) for m in metas], (64, 256)), metas


@pytest.fixture(scope="module")
def two_level():
    """A 2-level tokenizer after one training forward on 8 renders (k-means initialises both codebooks)."""
    torch.manual_seed(0)
    tok = ImageTokenizer(TokenizerConfig(levels=2, **TOK)).train()
    x, metas = renders(8)
    caps = torch.stack([encode_caption(m["caption"], 48) for m in metas])
    tok(x, caps)
    return tok.eval(), x


def test_token_grid_layout_and_vocabulary(two_level):
    tok, x = two_level
    K = 32
    assert tok.grid == (8, 64) and tok.vocab_size == 2 * K and tok.config.grid == (8, 32)
    codes = tok.encode(x)
    assert codes.shape == (8, 8, 64)
    assert int(codes[..., 0::2].max()) < K <= int(codes[..., 1::2].min()) and int(codes.max()) < 2 * K
    # the level-0 codes are the nearest unit-norm codes by cosine, as with one level
    f = F.normalize(tok.features(x), dim=1).permute(0, 2, 3, 1)
    assert torch.equal(codes[..., 0::2], (f @ tok.codebook().t()).argmax(-1))
    assert tok.code_table().shape == (2 * K, 16)


def test_the_residual_level_brings_the_codes_closer_to_the_features(two_level):
    tok, x = two_level
    codes = tok.encode(x)
    with torch.no_grad():
        f = F.normalize(tok.features(x), dim=1).permute(0, 2, 3, 1)
    err0 = (f - tok.codebook()[codes[..., 0::2]]).norm(dim=-1).mean()
    err2 = (f - tok.code_vectors(codes)).norm(dim=-1).mean()
    assert float(err2) < 0.8 * float(err0)
    # code_vectors sums the two levels' vectors
    table = tok.code_table()
    assert torch.allclose(tok.code_vectors(codes), table[codes[..., 0::2]] + table[codes[..., 1::2]])


def test_eval_reports_each_levels_usage(two_level):
    from xomni.tokenizer.images import ImageSet
    from xomni.tokenizer.metrics import evaluate
    tok, x = two_level
    _, metas = renders(8)
    arr = ((x.permute(0, 2, 3, 1) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()
    imgs = ImageSet(arr, metas)
    out = evaluate(tok, imgs, max_caption=2)
    codes = tok.encode(imgs.tensor(list(range(8))))
    assert out["vocab_size"] == 64 and len(out["per_level"]) == 2
    for lv, st in enumerate(out["per_level"]):
        assert st["vocab_size"] == 32 and st["n_tokens"] == 8 * 8 * 32
        assert st["codes_used"] == int(codes[..., lv::2].unique().numel())


def test_save_load_and_decoder_on_the_two_level_grid(two_level, tmp_path):
    tok, x = two_level
    tok.save_pretrained(tmp_path / "tok")
    tok2 = ImageTokenizer.from_pretrained(tmp_path / "tok")
    codes = tok2.encode(x[:2])
    assert torch.equal(codes, tok.encode(x[:2]))
    dec = Decoder(config_for_tokenizer(DecoderConfig(**DEC), tok2))
    assert dec.grid == tok2.grid and dec.vocab_size == tok2.vocab_size
    dec.init_from_tokenizer(tok2)
    # the decoder starts at the tokenizer's reconstruction of the summed codes
    assert torch.allclose(dec.decode(codes, steps=2), tok2.reconstruct(codes), atol=1e-4)
    dec.save_pretrained(tmp_path / "dec")
    dec2 = Decoder.from_pretrained(tmp_path / "dec")
    assert dec2.grid == (8, 64)
    with pytest.raises(XomniError, match=r"shape \[B, 8, 64\].*vocabulary size 64"):
        dec2.decode(codes[..., :32])
    with pytest.raises(XomniError, match=r"vocabulary size 64"):
        dec2.decode(codes + 64)


def test_levels_validation():
    with pytest.raises(XomniError, match="levels"):
        TokenizerConfig(levels=0).validate()
    with pytest.raises(XomniError, match="65,536"):
        TokenizerConfig(levels=2, codebook_size=65536).validate()
    one = TokenizerConfig(**TOK)
    assert one.token_grid == one.grid and one.vocab_size == 32


def two_level_pipeline():
    from xomni.ar.model import ARConfig, UnifiedAR
    from xomni.data.text_tokenizer import ByteTokenizer
    from xomni.pipeline import Pipeline
    torch.manual_seed(0)
    tok = ImageTokenizer(TokenizerConfig(levels=2, **{**TOK, "patch": 16, "recon_down": 2})).eval()
    dec = Decoder(config_for_tokenizer(DecoderConfig(**DEC), tok)).eval()
    ar = UnifiedAR(ARConfig(hidden_size=32, n_layers=1, n_heads=2, n_kv_heads=1, intermediate_size=64,
                            max_seq_len=256, image_vocab=tok.vocab_size)).eval()
    return Pipeline(ByteTokenizer(), tok, ar, dec, index={"prompt_template": '"{text}"'})


def test_pipeline_writes_and_reads_the_two_level_grid(tmp_path, monkeypatch):
    """The AR model needs nothing new: a 2-level tokenizer's token grid (4 x 32 for 4 x 16 patches) is just a wider
    grid with a vocabulary of 2K; a pipeline built on it samples, decodes, saves and loads."""
    from xomni.ar.model import ARConfig, UnifiedAR
    from xomni.data.text_tokenizer import ByteTokenizer
    from xomni.pipeline import Pipeline
    pipe = two_level_pipeline()
    tok, dec = pipe.image_tokenizer, pipe.decoder
    with pytest.raises(XomniError, match="do not match"):
        Pipeline(ByteTokenizer(), tok, UnifiedAR(ARConfig(hidden_size=32, n_layers=1, n_heads=2, n_kv_heads=1,
                                                          intermediate_size=64, image_vocab=32)), dec)
    assert pipe.grid == (4, 32)
    codes = pipe.generate_codes(["HI"], seed=0).codes_BHW
    assert codes.shape == (1, 4, 32) and int(codes.max()) < 64
    images = pipe(["HI", "OK"], seed=0, steps=1)
    assert len(images) == 2 and images[0].size == (256, 64)
    from xomni.ar import caption
    read = []
    real = caption.caption_codes
    monkeypatch.setattr(caption, "caption_codes", lambda m, codes, **kw: read.append(codes) or real(m, codes, **kw))
    caps = pipe.caption(images)  # image -> the 2-level tokenizer's 4 x 32 grid -> the AR reads it
    assert len(caps) == 2 and read[0].shape == (2, 4, 32) and int(read[0][..., 1::2].min()) >= 32
    pipe.save_pretrained(tmp_path / "p")
    again = Pipeline.from_pretrained(tmp_path / "p")
    assert again.grid == (4, 32) and again.decoder.vocab_size == 64
    assert np.array_equal(np.asarray(again(["HI"], seed=0, steps=1)[0]), np.asarray(pipe(["HI"], seed=0, steps=1)[0]))


def test_grpo_with_column_credit_runs_on_the_two_level_grid(tmp_path, monkeypatch):
    """GRPO with column credit on a 2-level pipeline: one step; the credit is told the tokenizer's 2 codes per
    patch, so a patch's two token columns share one reward (tests/test_rl_credit.py checks that mapping)."""
    from xomni.rl import credit
    from xomni.rl.config import load_rl_config
    from xomni.rl.trainer import train_rl
    seen = []
    real = credit.column_rewards

    def spy(*args, **kw):
        out = real(*args, **kw)
        seen.append((args[4], args[6] if len(args) > 6 else kw.get("levels", 1), out.shape))
        return out
    monkeypatch.setattr(credit, "column_rewards", spy)
    two_level_pipeline().save_pretrained(tmp_path / "pipe")
    (tmp_path / "prompts.txt").write_text("HI\nOK\n")
    cfg = load_rl_config({"model": str(tmp_path / "pipe"), "prompts": str(tmp_path / "prompts.txt"),
                          "credit": "column", "preset": "mini", "group_size": 2, "rewards": {"ocr": 1.0},
                          "reward_workers": 0, "val_n": 0,
                          "train": {"out_dir": str(tmp_path / "rl"), "steps": 1, "batch_size": 2, "lr": 1e-3,
                                    "warmup_steps": 0, "log_every": 1, "progress": False}})
    assert train_rl(cfg)["steps"] == 1
    assert seen and all(s == (32, 2, (4, 32)) for s in seen)


def test_a_checkpoint_whose_config_claims_other_levels_is_refused(two_level, tmp_path):
    import json
    tok, _ = two_level
    tok.save_pretrained(tmp_path / "tok")
    cfg = json.loads((tmp_path / "tok" / "config.json").read_text())
    cfg["model"]["levels"] = 3
    (tmp_path / "tok" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(XomniError, match=r"does not match the model: missing .*rvq\.1"):
        ImageTokenizer.from_pretrained(tmp_path / "tok")


def test_add_levels_keeps_level0_and_lowers_the_residual():
    """Residual levels fitted by k-means on a frozen one-level tokenizer: level-0 codes are the source's exactly,
    every other weight is carried over, and each level leaves less of the feature."""
    from xomni.tokenizer.levels import add_levels, residual_norms
    torch.manual_seed(0)
    one = ImageTokenizer(TokenizerConfig(**TOK)).train()
    x, metas = renders(12)
    one(x, torch.stack([encode_caption(m["caption"], 48) for m in metas]))  # k-means-initialises level 0
    one.eval()
    three = add_levels(one, [x[:6], x[6:]], levels=3, iters=5)
    assert three.levels == 3 and three.grid == (one.grid[0], one.grid[1] * 3)
    codes = three.encode(x)
    assert torch.equal(codes[..., 0::3], one.encode(x))
    assert int(codes[..., 1::3].min()) >= 32 and int(codes[..., 2::3].min()) >= 64
    norms = residual_norms(three, x)
    assert norms[0] > norms[1] > norms[2]
    new_state = three.state_dict()
    assert all(torch.equal(v, new_state[k]) for k, v in one.state_dict().items())
    with pytest.raises(XomniError, match="one-level"):
        add_levels(three, [x], levels=3)


def test_grow_levels_decoder_and_ar_keep_level0():
    """The grown decoder and AR model hold the one-level weights; the AR's level-0 logits are unchanged."""
    from xomni.ar.model import ARConfig, UnifiedAR, grow_levels as grow_ar
    from xomni.decoder.model import grow_levels as grow_dec
    from xomni.tokenizer.levels import add_levels
    torch.manual_seed(0)
    one = ImageTokenizer(TokenizerConfig(**TOK)).train()
    x, metas = renders(8)
    one(x, torch.stack([encode_caption(m["caption"], 48) for m in metas]))
    one.eval()
    two = add_levels(one, [x], levels=2, iters=3)
    dec = Decoder(config_for_tokenizer(DecoderConfig(**DEC), one)).eval()
    dec2 = grow_dec(dec, two)
    assert dec2.grid == two.grid and dec2.vocab_size == 64
    assert torch.equal(dec2.cond.embed.weight[:32], dec.cond.embed.weight)
    assert torch.allclose(dec2.cond.embed.weight[32:], two.code_table()[32:])
    assert torch.equal(dec2.unet.conv_in.weight, dec.unet.conv_in.weight)
    ar = UnifiedAR(ARConfig(hidden_size=32, n_layers=1, n_heads=2, n_kv_heads=1, intermediate_size=64,
                            max_seq_len=64, image_vocab=32)).eval()
    ar2 = grow_ar(ar, 2, max_seq_len=128).eval()
    assert ar2.cfg.image_vocab == 64 and ar2.layout.levels == 2
    ids = torch.tensor([[257, 72, 73] + ar.layout.image_header(2, 2) + [ar.layout.image_offset + 5]])
    h1, _ = ar.hidden(ids)
    h2, _ = ar2.hidden(ids)
    assert torch.allclose(ar.image_logits(h1), ar2.image_logits(h2)[..., :32], atol=1e-5)


def test_init_except_image_copies_all_but_the_image_rows(tmp_path):
    """An AR warm start across image tokenizers (`xomni train ar --init M --init-except-image`): every tensor but
    the image embeddings and output rows comes from M; those keep the new model's init. A plain --init refuses."""
    from xomni.ar.model import IMAGE_ROWS, ARConfig, UnifiedAR
    from xomni.checkpoint import load_model_weights, save_model_dir
    small = dict(hidden_size=32, n_layers=1, n_heads=2, n_kv_heads=1, intermediate_size=64)
    torch.manual_seed(0)
    old = UnifiedAR(ARConfig(max_seq_len=64, image_vocab=32, **small))
    save_model_dir(tmp_path / "old", old, {})
    torch.manual_seed(1)
    new = UnifiedAR(ARConfig(max_seq_len=128, image_vocab=96, levels=3, **small))
    fresh = {k: v.clone() for k, v in new.state_dict().items()}
    with pytest.raises(XomniError, match="image_embed.weight"):
        load_model_weights(new, tmp_path / "old")
    load_model_weights(new, tmp_path / "old", keep_fresh=IMAGE_ROWS)
    got, want = new.state_dict(), old.state_dict()
    for k in got:
        assert torch.equal(got[k], fresh[k] if k in IMAGE_ROWS else want[k]), k
    assert not torch.equal(got["text_embed.weight"], fresh["text_embed.weight"])


def test_residual_branch_learns_on_a_frozen_level0(tmp_path):
    """freeze_level0 + residual_branch grown from a one-level tokenizer: level-0 weights and codes stay the
    source's while the branch learns; without freeze_level0 the same training moves level 0, which
    check_same_level0 catches."""
    from xomni.tokenizer.levels import check_same_level0
    from xomni.tokenizer.trainer import init_tokenizer
    torch.manual_seed(0)
    one = ImageTokenizer(TokenizerConfig(**TOK)).train()
    x, metas = renders(12)
    caps = torch.stack([encode_caption(m["caption"], 48) for m in metas])
    one(x, caps)
    one.eval().save_pretrained(tmp_path / "one")

    def grown(freeze):
        m = ImageTokenizer(TokenizerConfig(levels=3, residual_branch=True, freeze_level0=freeze, **TOK))
        init_tokenizer(m, str(tmp_path / "one"))
        src = one.encoder.state_dict()
        assert all(torch.equal(v, src[k]) for k, v in m.res_encoder.state_dict().items())  # starts as a copy
        opt = torch.optim.Adam([p for p in m.parameters() if p.requires_grad], lr=1e-2)
        m.train()
        for _ in range(3):
            loss, _ = m(x, caps)
            opt.zero_grad()
            loss.backward()
            opt.step()
        return m.eval()

    frozen = grown(True)
    assert not any(p.requires_grad for p in frozen.encoder.parameters())
    assert frozen.res_proj.weight.abs().sum() > 0  # the branch's correction is no longer zero
    codes = frozen.encode(x)
    assert torch.equal(codes[..., 0::3], one.encode(x))
    assert int(codes[..., 1::3].min()) >= 32 and int(codes[..., 2::3].min()) >= 64
    check_same_level0(one, frozen)
    with pytest.raises(XomniError, match="level 0 differs"):
        check_same_level0(one, grown(False))
    with pytest.raises(XomniError, match="need residual levels"):
        TokenizerConfig(freeze_level0=True).validate()
    from xomni.tokenizer.config import TokenizerTrainConfig
    from xomni.tokenizer.trainer import train_tokenizer
    with pytest.raises(XomniError, match="give --init"):
        train_tokenizer(TokenizerTrainConfig(model=TokenizerConfig(levels=3, freeze_level0=True, **TOK)))
