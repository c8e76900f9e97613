"""Residual codes in the AR model: coarse-to-fine sequence order, and the pieces that keep level 0 as it was."""
import pytest
import torch

from xomni.ar.model import ARConfig, UnifiedAR
from xomni.ar.sampler import SamplingConfig, sample_images, sequence_logprobs
from xomni.ar.vocab import VocabLayout
from xomni.errors import XomniError


def test_coarse_to_fine_order_and_inverse():
    lay = VocabLayout(n_text=10, image_vocab=24, levels=3)
    # 2 x 2 patches, 3 codes each: patch (r, c) level l holds 100 r + 10 c + l
    grid = torch.tensor([[[100 * r + 10 * c + l for c in range(2) for l in range(3)] for r in range(2)]])
    seq = lay.image_tokens(grid)
    assert seq.tolist() == [[0, 10, 100, 110, 1, 11, 101, 111, 2, 12, 102, 112]]
    assert torch.equal(lay.image_grid(seq, 2, 6), grid)
    one = VocabLayout(n_text=10, image_vocab=24)
    assert torch.equal(one.image_tokens(grid), grid.reshape(1, 12))
    seq_t2i, start = lay.t2i_sequence([5], grid[0])
    assert [i - lay.image_offset for i in seq_t2i[start:start + 12]] == seq[0].tolist()


def test_read_levels_caption_the_first_codes_of_every_patch():
    """Captioning reads every patch's first `read_levels` codes, coarse to fine, under a header of the read width;
    drawing still writes all levels."""
    grid = torch.tensor([[100 * r + 10 * c + l for c in range(2) for l in range(3)] for r in range(2)])
    full = VocabLayout(n_text=10, image_vocab=300, levels=3)
    off = full.image_offset
    for r, want in ((1, [0, 10, 100, 110]), (2, [0, 10, 100, 110, 1, 11, 101, 111])):
        lay = VocabLayout(n_text=10, image_vocab=300, levels=3, read_levels=r)
        pre = lay.i2t_prefix(grid)
        assert pre[:5] == [lay.bos_id] + lay.image_header(2, 2 * r)
        assert [i - off for i in pre[5:-1]] == want and pre[-1] == lay.eom
        seq, start = lay.i2t_sequence(grid, [7, 8])
        assert seq[:start] == pre and seq[start:] == [7, 8, lay.eos_id]
        assert lay.t2i_sequence([5], grid) == full.t2i_sequence([5], grid)  # drawing: all levels
    assert VocabLayout(n_text=10, image_vocab=300, levels=3, read_levels=3).i2t_prefix(grid) == full.i2t_prefix(grid)


def test_read_levels_reach_the_model_and_are_bounded():
    cfg = dict(hidden_size=64, n_layers=2, n_heads=4, n_kv_heads=2, intermediate_size=128, max_seq_len=96,
               image_vocab=30, max_grid=8, levels=3)
    torch.manual_seed(0)
    m = UnifiedAR(ARConfig(**cfg, read_levels=1)).eval()
    from xomni.ar.caption import caption_codes_scored
    grid = torch.randint(0, 10, (2, 2, 6))
    fine = grid.clone()
    fine[..., 1::3] = (fine[..., 1::3] + 3) % 10  # other level-1 and level-2 codes: the same reading
    fine[..., 2::3] = (fine[..., 2::3] + 5) % 10
    coarse = grid.clone()
    coarse[..., 0::3] = (coarse[..., 0::3] + 1) % 10  # other level-0 codes: another reading
    _, s0 = caption_codes_scored(m, grid, max_new_tokens=3)
    assert caption_codes_scored(m, fine, max_new_tokens=3)[1] == pytest.approx(s0, abs=1e-5)
    assert caption_codes_scored(m, coarse, max_new_tokens=3)[1] != pytest.approx(s0, abs=1e-3)
    with pytest.raises(XomniError, match="read_levels=2 is more than the 1 code"):
        UnifiedAR(ARConfig(**{**cfg, "levels": 1}, read_levels=2))


def _model(levels):
    torch.manual_seed(0)
    m = UnifiedAR(ARConfig(hidden_size=64, n_layers=2, n_heads=4, n_kv_heads=2, intermediate_size=128,
                           max_seq_len=96, image_vocab=30, max_grid=8, levels=levels))
    with torch.no_grad():
        m.image_head.weight.mul_(20)
    return m.eval()


@pytest.mark.parametrize("hf_cache", [False, True])
def test_sampler_and_trainer_agree_on_residual_order(hf_cache):
    """The sampler writes level 0 of every patch first; its log-probs (in token grid order) equal a full forward's,
    and a model told the wrong order scores the same codes differently."""
    m = _model(levels=3)
    s = SamplingConfig(temperature=0.8, min_p=0.02, cfg_scale=2.0)
    prompts = [[72, 73], [65, 66, 67]]
    out = sample_images(m, prompts, (2, 6), s, generator=torch.Generator().manual_seed(1), hf_cache=hf_cache)
    full = sequence_logprobs(m, prompts, out.codes_BHW, s)
    assert (full - out.logprobs_BN).abs().max().item() <= 1e-4
    raster = _model(levels=1)  # the same weights, read in raster order
    assert (sequence_logprobs(raster, prompts, out.codes_BHW, s) - full).abs().max().item() > 1e-2
    # streaming: the first h * patches-per-row tokens are the whole level-0 sketch
    seen = []
    sample_images(m, prompts, (2, 6), s, generator=torch.Generator().manual_seed(1),
                  callback=lambda t, c: seen.append(c.clone()), stream_every=4)
    assert torch.equal(seen[0][:, :4], m.layout.image_tokens(out.codes_BHW)[:, :4])


def _one_level_pipeline(out):
    """A one-level pipeline of the bundled model's shapes with random weights (add-levels grows any one-level
    pipeline; the bundled one already has residual levels)."""
    import dataclasses

    from xomni.ar.model import UnifiedAR
    from xomni.decoder.model import Decoder
    from xomni.pipeline import Pipeline
    from xomni.tokenizer.model import ImageTokenizer
    from xomni.tokenizer.textdec import encode_caption
    b = Pipeline.from_pretrained()
    torch.manual_seed(0)
    cfg = dataclasses.replace(b.image_tokenizer.config, levels=1, residual_branch=False, freeze_level0=False)
    tok = ImageTokenizer(cfg)
    tok.train()(torch.rand(8, 3, *cfg.image_size), torch.stack([encode_caption("a", cfg.max_caption_bytes)] * 8))
    L, (h, w) = b.ar.cfg.levels, b.grid
    ar = UnifiedAR(dataclasses.replace(b.ar.cfg, levels=1, read_levels=0, image_vocab=b.ar.cfg.image_vocab // L,
                                       max_seq_len=b.ar.cfg.max_seq_len - (L - 1) * h * w // L))
    dec = Decoder(dataclasses.replace(b.decoder.config, grid_levels=1))
    index = {k: b.index[k] for k in ("prompt_template", "data_preset", "charset")}
    Pipeline(b.text_tokenizer, tok.eval(), ar.eval(), dec.eval(), index=index).save_pretrained(out)
    return out


def test_add_levels_command_grows_a_one_level_pipeline(tmp_path, monkeypatch, capsys):
    """`xomni add-levels` writes a loadable 3-level pipeline whose level-0 codes and AR level-0 logits are the
    one-level model's; bad input (the bundled model, which has levels already) is one line."""
    import json

    from conftest import run_inproc
    from xomni.pipeline import Pipeline
    one = ["--model", str(_one_level_pipeline(tmp_path / "one"))]
    data = tmp_path / "d"
    r = run_inproc(["data", "synth", "--preset", "mini", "--out", str(data), "--n", "100", "--seed", "3"],
                   monkeypatch, capsys)
    assert r.returncode == 0, r.stderr
    out = tmp_path / "grown"
    r = run_inproc(["add-levels", "--data", str(data), "-o", str(out), "--levels", "3", "--images", "100",
                    "--iters", "2", *one], monkeypatch, capsys)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["token_grid"] == [4, 48] and res["vocab"] == 3 * 4096
    norms = res["val_residual_norm_per_level"]
    assert norms[0] > norms[1] > norms[2]
    base, grown = Pipeline.from_pretrained(one[1]), Pipeline.from_pretrained(out)
    assert grown.grid == (4, 48) and grown.ar.layout.levels == 3
    from xomni.tokenizer.images import load_split
    x = load_split(str(data), "val", (32, 128), 8).tensor(list(range(8)))
    assert torch.equal(grown.image_tokenizer.encode(x)[..., 0::3], base.image_tokenizer.encode(x))
    from xomni.ar.caption import caption_codes  # it reads level 0 (--read-levels 1): the captions carry over
    assert grown.ar.cfg.read_levels == 1
    n = 8  # a random model's text logits are near ties: a longer caption flips on float noise
    assert caption_codes(grown.ar, grown.image_tokenizer.encode(x), max_new_tokens=n) == caption_codes(
        base.ar, base.image_tokenizer.encode(x), max_new_tokens=n)
    for args, what in ((["--levels", "7"], "--levels"), (["--levels", "2", "--read-levels", "3"], "--read-levels")):
        bad = run_inproc(["add-levels", "--data", str(data), "-o", str(tmp_path / "x"), *args, *one], monkeypatch,
                         capsys)
        assert bad.returncode == 2 and what in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    bad = run_inproc(["add-levels", "--data", str(data), "-o", str(tmp_path / "x"), "--model",
                      str(Pipeline.from_pretrained().path)], monkeypatch, capsys)
    assert bad.returncode == 2 and "one-level" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()

    # --tokenizer: a residual tokenizer trained on the bundled one's frozen level 0 (here one training forward,
    # which k-means-initialises its residual level) is taken as it is
    import dataclasses

    from xomni.tokenizer.model import ImageTokenizer
    from xomni.tokenizer.textdec import encode_caption
    from xomni.tokenizer.trainer import init_tokenizer
    cfg = dataclasses.replace(base.image_tokenizer.config, levels=2, residual_branch=True, freeze_level0=True)
    tok = ImageTokenizer(cfg)
    init_tokenizer(tok, str(base.path / "image_tokenizer"))
    tok.train()(x, torch.stack([encode_caption("a", cfg.max_caption_bytes)] * len(x)))
    tok.eval().save_pretrained(tmp_path / "tok2")
    r = run_inproc(["add-levels", "--data", str(data), "-o", str(tmp_path / "g2"), "--tokenizer",
                    str(tmp_path / "tok2"), *one], monkeypatch, capsys)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["token_grid"] == [4, 32]
    g2 = Pipeline.from_pretrained(tmp_path / "g2")
    assert g2.ar.layout.levels == 2
    # the decoder's recon hint starts as the trained tokenizer's head (the k-means path keeps the decoder's own)
    hint2, head = g2.decoder.cond.hint.state_dict(), tok.recon.state_dict()
    assert all(torch.equal(v, head[k].to(v.dtype)) for k, v in hint2.items())
    hint1, own = grown.decoder.cond.hint.state_dict(), base.decoder.cond.hint.state_dict()
    assert all(torch.equal(v, own[k].to(v.dtype)) for k, v in hint1.items())
    assert not all(torch.equal(v, own[k].to(v.dtype)) for k, v in hint2.items())
    assert torch.equal(g2.image_tokenizer.encode(x)[..., 0::2], base.image_tokenizer.encode(x))
    with torch.no_grad():
        tok.proj.bias += 0.01  # level 0 no longer the bundled one's
    tok.save_pretrained(tmp_path / "tok3")
    bad = run_inproc(["add-levels", "--data", str(data), "-o", str(tmp_path / "g3"), "--tokenizer",
                      str(tmp_path / "tok3"), *one], monkeypatch, capsys)
    assert bad.returncode == 2 and "level 0 differs" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "g3").exists()
