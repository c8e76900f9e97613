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


@pytest.fixture
def sampler_calls(monkeypatch):
    """(sjd_window, compile, forward passes) of every sample_images call the pipeline makes."""
    import xomni.pipeline
    seen = []
    real = xomni.pipeline.sample_images

    def spy(*args, **kw):
        out = real(*args, **kw)
        seen.append((kw["sjd_window"], kw["compile"], out.forward_passes))
        return out
    monkeypatch.setattr(xomni.pipeline, "sample_images", spy)
    return seen


def test_generate_sjd_window_and_compile_flags_reach_the_sampler(tmp_path, monkeypatch, capsys, sampler_calls):
    """`xomni generate --sjd-window W` samples with speculative Jacobi decoding; without --compile/--no-compile the
    sampler gets "auto" (the packages of `xomni compile`, eager where there are none)."""
    prompt = 'a white poster with the text "HELLO" in black bold sans-serif letters'
    for extra in (["--sjd-window", "8"], ["--no-compile"]):
        r = run_inproc(["generate", prompt, "--n", "2", "--steps", "1", "-o", str(tmp_path / "x.png"), *extra],
                       monkeypatch, capsys)
        assert r.returncode == 0, r.stderr
    from xomni.pipeline import Pipeline
    h, w = Pipeline.from_pretrained().grid
    (w1, c1, passes1), (w2, c2, passes2) = sampler_calls
    assert (w1, c1, w2, c2) == (8, "auto", 0, False)
    assert passes1 < passes2 == h * w  # one pass per image token without SJD, fewer with it


def test_eval_text_sjd_window_reaches_the_sampler(mini, tmp_path, monkeypatch, capsys, sampler_calls):
    """`xomni eval text --sjd-window W` samples with speculative Jacobi decoding and records W in its result and in
    the saved images' metadata."""
    (mini / "t.txt").write_text("OPEN\n")
    r = run_inproc(["eval", "text", "--targets", str(mini / "t.txt"), "--samples", "1", "--sjd-window", "8",
                    "--save-images", str(tmp_path / "s")], monkeypatch, capsys)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["sjd_window"] == 8
    assert [json.loads(x)["sjd_window"] for x in (tmp_path / "s" / "metadata.jsonl").read_text().splitlines()] == [8]
    from xomni.pipeline import Pipeline
    h, w_ = Pipeline.from_pretrained().grid
    (w, _, passes), = sampler_calls
    assert w == 8 and passes < h * w_
    r = run_inproc(["eval", "text", "--images", str(mini / "data"), "--split", "val", "--sjd-window", "8"],
                   monkeypatch, capsys)
    assert r.returncode == 2 and "--sjd-window applies to a model's samples" in r.stderr


def test_compile_failure_is_one_line(monkeypatch, capsys):
    """A machine where AOTInductor cannot build the step (no C++ compiler, say): exit 2 with one line, no traceback."""
    import xomni.generate_cli

    def broken(*a, **k):
        raise RuntimeError("C++ compile error\nlong compiler output")
    monkeypatch.setattr(xomni.generate_cli, "build_packages", broken)
    r = run_inproc(["compile", "--batch-sizes", "1"], monkeypatch, capsys)
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert r.returncode == 2 and len(lines) == 1 and "did not compile on this machine (RuntimeError: C++ compile error)" \
        in lines[0], r.stderr
