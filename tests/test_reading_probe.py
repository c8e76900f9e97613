"""scripts/reading_probe.py: the reading (image -> caption) of a token cache, trained from an AR model with fresh
image rows, under one arrangement of the codes."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
from reading_probe import Arranged, codebook_embeddings  # noqa: E402


class _Cache:
    def __init__(self, codes):
        self.codes = codes
        self.meta = [{"caption": f"c{i}", "text": f"t{i}"} for i in range(len(codes))]


def test_arrangements_keep_or_drop_the_residual_codes():
    grid = torch.arange(2 * 2 * 6).reshape(2, 2, 6)  # 2 images, 2 x 2 patches, 3 codes each side by side
    assert torch.equal(Arranged(_Cache(grid), 3, "coarse")[1]["codes"], grid[1])
    assert torch.equal(Arranged(_Cache(grid), 3, "patch")[1]["codes"], grid[1])
    assert Arranged(_Cache(grid), 3, "level0")[0]["codes"].tolist() == [[0, 3], [6, 9]]


def test_codebook_embeddings_keep_which_codes_are_alike():
    g = torch.Generator().manual_seed(0)
    table = torch.randn(2 * 64, 8, generator=g)
    table[1] = table[0] + 0.01 * torch.randn(8, generator=g)  # two alike level-0 codes
    e = codebook_embeddings(table, levels=2, d=48)
    assert e.shape == (128, 48)
    assert e[:64].std().item() == pytest.approx(0.02, rel=1e-4) and e[64:].std().item() == pytest.approx(0.02, rel=1e-4)
    cos = torch.nn.functional.cosine_similarity
    assert cos(e[0], e[1], dim=0) > 0.99 and cos(e[0], e[2], dim=0).abs() < 0.9
    # the same vector at another level lands elsewhere (each level has its own projection)
    table[64] = table[0]
    e = codebook_embeddings(table, levels=2, d=48)
    assert cos(e[0], e[64], dim=0).abs() < 0.9


def test_probe_trains_and_scores_a_cache(tmp_path):
    from xomni.ar.data import encode_to_cache
    from xomni.data.synth import synth
    from xomni.tokenizer import ImageTokenizer
    tok_dir = REPO / "xomni" / "pretrained" / "mini" / "image_tokenizer"
    synth(tmp_path / "data", 12, seed=0, preset="mini", split="train", progress=False)
    tok = ImageTokenizer.from_pretrained(str(tok_dir))
    cache = encode_to_cache(tok, str(tmp_path / "data"), "train", tmp_path / "cache")
    out = tmp_path / "run"
    r = subprocess.run([sys.executable, str(REPO / "scripts" / "reading_probe.py"), "--train", str(cache),
                        "--val", f"v={cache}", "--levels", str(tok.levels), "--arrange", "coarse", "--embed-init", "codebook",
                        "--tokenizer", str(tok_dir), "--init", str(REPO / "xomni" / "pretrained" / "mini" / "ar"),
                        "--out", str(out), "--steps", "2", "--batch-size", "4"], capture_output=True, text=True,
                       timeout=300, cwd=REPO)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(r.stdout)
    assert res["steps"] == 2 and res["image_tokens"] == tok.grid[0] * tok.grid[1] and res["embed_init"] == "codebook"
    assert res["v"]["n"] == 12 and 0 <= res["v"]["caption_exact"] <= 1 and res["v"]["loss_text"] > 0
    rows = [json.loads(x) for x in (out / "captions_v.jsonl").read_text().splitlines()]
    exact = sum(x["predicted"] == x["caption"] for x in rows) / 12
    assert len(rows) == 12 and exact == pytest.approx(res["v"]["caption_exact"], abs=1e-4)
    lo, hi = res["v"]["ci95"]
    assert lo <= res["v"]["caption_exact"] <= hi

    # the probe's text-only val loss is the trainer's caption loss, without the image pass
    from xomni.ar.data import TokenDataset
    from xomni.ar.model import UnifiedAR
    from xomni.ar.train import ARTrainConfig
    from xomni.ar.trainer import val_loss
    from xomni.data.text_tokenizer import load_text_tokenizer
    m, tt, ds = UnifiedAR.from_pretrained(str(out / "final")), load_text_tokenizer("byte"), TokenDataset(cache)
    both = val_loss(m, tt, ARTrainConfig(), ds, 12)
    text = val_loss(m, tt, ARTrainConfig(), ds, 12, parts=("text",))
    assert set(both) == {"val_loss_image", "val_loss_text"} and set(text) == {"val_loss_text"}
    assert text["val_loss_text"] == pytest.approx(both["val_loss_text"], rel=1e-6)
    assert text["val_loss_text"] == pytest.approx(res["v"]["loss_text"], abs=1e-4)
