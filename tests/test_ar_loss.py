"""The AR training loss: a token mean over image and caption targets, with the caption tokens weighted."""
import pytest
import torch
import torch.nn.functional as F

from xomni.ar.model import ARConfig, UnifiedAR
from xomni.ar.train import ARTrainConfig, build_loss_fn
from xomni.data.text_tokenizer import load_text_tokenizer


def _setup():
    torch.manual_seed(0)
    tok = load_text_tokenizer("byte")
    cfg = ARConfig(hidden_size=32, n_layers=1, n_heads=2, n_kv_heads=2, intermediate_size=64, max_seq_len=64,
                   image_vocab=20, max_grid=4, n_text=tok.vocab_size, bos_id=tok.bos_id, eos_id=tok.eos_id,
                   pad_id=tok.pad_id)
    model = UnifiedAR(cfg)
    g = torch.Generator().manual_seed(1)
    batch = [{"caption": f"word {i}", "codes": torch.randint(0, 20, (2, 4), generator=g)} for i in range(8)]
    return tok, model, batch


def _by_hand(model, ids, targets, mask, w):
    """The weighted token mean computed from the per-token cross-entropies of both heads."""
    h, _ = model.hidden(ids, mask)
    off = model.layout.image_offset
    valid = targets != -100
    img, txt = valid & (targets >= off), valid & (targets < off)
    ce_img = F.cross_entropy(model.image_logits(h[img]), targets[img] - off, reduction="none")
    ce_txt = F.cross_entropy(model.text_logits(h[txt]), targets[txt], reduction="none")
    return (ce_img.sum() + w * ce_txt.sum()) / (img.sum() + w * txt.sum()), ce_img.mean(), ce_txt.mean()


@pytest.mark.parametrize("w", [1.0, 2.0, 5.0])
def test_caption_weight_gives_the_weighted_token_mean(w):
    tok, model, batch = _setup()
    cfg = ARTrainConfig(t2i_ratio=0.5, uncond_prob=0.0, caption_loss_weight=w)
    from xomni.ar.train import make_sequences
    ids, targets, mask = make_sequences(batch, model, tok, cfg, torch.Generator().manual_seed(3))
    loss, metrics = build_loss_fn(model, tok, cfg)(model, batch, torch.Generator().manual_seed(3))
    want, img_mean, txt_mean = _by_hand(model, ids, targets, mask, w)
    assert loss.item() == pytest.approx(want.item(), rel=1e-5)
    assert metrics["loss_image"] == pytest.approx(img_mean.item(), rel=1e-5)  # logged per-direction means stay
    assert metrics["loss_text"] == pytest.approx(txt_mean.item(), rel=1e-5)  # unweighted
    assert img_mean.item() != pytest.approx(txt_mean.item(), rel=1e-2)  # else any weight would give the same loss


def test_caption_weight_moves_the_gradient_towards_captions():
    tok, model, batch = _setup()
    grads = {}
    for w in (1.0, 4.0):
        model.zero_grad()
        cfg = ARTrainConfig(t2i_ratio=0.5, uncond_prob=0.0, caption_loss_weight=w)
        loss, _ = build_loss_fn(model, tok, cfg)(model, batch, torch.Generator().manual_seed(3))
        loss.backward()
        grads[w] = (model.text_head.weight.grad.norm().item(), model.image_head.weight.grad.norm().item())
    ratio = lambda g: g[0] / g[1]  # noqa: E731
    assert ratio(grads[4.0]) == pytest.approx(4 * ratio(grads[1.0]), rel=1e-4)


def test_bad_caption_weight_is_refused(tmp_path):
    from xomni.ar.trainer import train_ar_main
    from xomni.errors import XomniError
    cfg = ARTrainConfig(caption_loss_weight=0.0)
    cfg.train.out_dir = str(tmp_path / "ar")
    with pytest.raises(XomniError, match="caption_loss_weight"):
        train_ar_main(cfg, str(tmp_path / "nodata"), str(tmp_path / "notok"))
