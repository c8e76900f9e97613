"""Commands that need a model run on the bundled one when none is named; `xomni bench device` describes the machine."""
from __future__ import annotations

import json

import pytest
from conftest import run_inproc


@pytest.fixture(scope="module")
def mini(tmp_path_factory):
    from xomni.data.synth import synth
    d = tmp_path_factory.mktemp("mini")
    synth(d / "data", 2, preset="mini", split="all", fmt="imagefolder", progress=False)
    return d


def test_reconstruct_defaults_to_the_bundled_tokenizer_and_decoder(mini, monkeypatch, capsys):
    r = run_inproc(["reconstruct", str(mini / "data"), "--split", "val", "-o", str(mini / "rec"), "--n", "1",
                    "--steps", "1"], monkeypatch, capsys)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["written"] == 1


def test_eval_text_targets_default_to_the_bundled_model(mini, monkeypatch, capsys):
    (mini / "t.txt").write_text("OPEN\n")
    r = run_inproc(["eval", "text", "--targets", str(mini / "t.txt"), "--samples", "1"], monkeypatch, capsys)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["n"] == 1 and res["source"].endswith("mini") and "sampling" in res
    r = run_inproc(["eval", "text"], monkeypatch, capsys)
    assert r.returncode == 2 and "pass --images DIR, or --targets FILE" in r.stderr


def test_eval_tokenizer_defaults_to_the_bundled_tokenizer(mini, monkeypatch, capsys):
    r = run_inproc(["eval", "tokenizer", "--data", str(mini / "data"), "--split", "val", "--n", "2", "--ocr", "0"],
                   monkeypatch, capsys)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["n_images"] >= 1


def test_bench_device(monkeypatch, capsys):
    r = run_inproc(["bench", "device"], monkeypatch, capsys)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["torch_threads"] >= 1 and res["cpu_fp32_gflops"] > 0 and isinstance(res["cuda"]["devices"], list)
