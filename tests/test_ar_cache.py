"""The AR trainer's token cache is reused only for the same data and the same tokenizer weights."""
from pathlib import Path

import torch

from xomni.ar.data import tokenizer_fingerprint
from xomni.ar.trainer import token_cache
from xomni.data.synth import synth
from xomni.tokenizer import ImageTokenizer

TOK = Path(__file__).resolve().parents[1] / "xomni" / "pretrained" / "mini" / "image_tokenizer"


def test_a_cache_is_encoded_again_for_another_tokenizer_of_the_same_vocabulary(tmp_path, capsys):
    data, run = str(tmp_path / "data"), tmp_path / "run"
    synth(tmp_path / "data", 6, seed=0, preset="mini", split="train", progress=False)
    a = ImageTokenizer.from_pretrained(TOK)
    first = token_cache(data, "train", a, run)
    codes_file = run / "tokens-train" / "codes.safetensors"
    made = codes_file.stat().st_mtime_ns
    assert torch.equal(token_cache(data, "train", a, run).codes, first.codes)
    assert codes_file.stat().st_mtime_ns == made  # reused, not encoded again
    b = ImageTokenizer.from_pretrained(TOK)
    with torch.no_grad():
        b.proj.bias += 0.5  # same vocabulary size and grid, other codes
    capsys.readouterr()
    third = token_cache(data, "train", b, run)
    assert "another tokenizer" in capsys.readouterr().err
    assert third.info["tokenizer_sha256"] == tokenizer_fingerprint(b) != first.info["tokenizer_sha256"]
    assert not torch.equal(third.codes, first.codes)
