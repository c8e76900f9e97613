"""The compiled decode step (xomni.ar.compiled) samples the same distribution as the eager sampler."""
from pathlib import Path

import pytest
import torch

from xomni.ar import compiled
from xomni.ar.sampler import SamplingConfig, build_packages, sample_images, sequence_logprobs
from xomni.ar.vocab import generation_length
from test_ar_sampler import PROMPTS, _model

S_ALL = SamplingConfig(temperature=0.7, min_p=0.05, top_p=0.95, top_k=30, cfg_scale=2.5)


def _sample(m, s, seed, **kw):
    return sample_images(m, PROMPTS, (3, 4), s, generator=torch.Generator().manual_seed(seed), **kw)


@pytest.mark.slow
@pytest.mark.smoke  # compiles (~20 s on 2 cores), so it runs with the smoke set
def test_compiled_step_matches_full_forward_eager_and_follows_weight_updates(monkeypatch):
    monkeypatch.setattr(compiled, "_failed", set())
    m = _model()
    frames = []
    out = _sample(m, S_ALL, 0, compile=True, callback=lambda n, c: frames.append((n, c)), stream_every=5)
    assert m.__dict__.get("_xomni_compiled"), "the compiled step was not built"
    assert not compiled._failed, "the compiled step failed and the sampler fell back to eager"
    full = sequence_logprobs(m, PROMPTS, out.codes_BHW, S_ALL)  # prompts of 2, 5, 1 tokens: left padding
    assert (full - out.logprobs_BN).abs().max().item() <= 1e-4
    eager = _sample(m, S_ALL, 0)
    assert torch.equal(eager.codes_BHW, out.codes_BHW)  # same seed, same uniforms, same tokens
    assert [n for n, _ in frames] == [5, 10, 12]
    assert torch.equal(frames[-1][1], out.codes_BHW.view(3, 12))

    # the weights are frozen into the graph: an in-place update must rebuild it, not sample the old model
    with torch.no_grad():
        m.image_head.weight.mul_(-0.5)
    out2 = _sample(m, S_ALL, 0, compile=True)
    full2 = sequence_logprobs(m, PROMPTS, out2.codes_BHW, S_ALL)
    assert (full2 - out2.logprobs_BN).abs().max().item() <= 1e-4
    assert not torch.equal(out2.codes_BHW, out.codes_BHW)


@pytest.mark.parametrize("fail_at", [1, 5])
def test_step_code_and_fallback_to_eager_midway(monkeypatch, capsys, fail_at):
    """The step's own code, run uncompiled (no compile time), then failing at call `fail_at`: a compile error
    (call 1) or one later. The sampler must go on eagerly from the cache the step wrote, with the same tokens."""
    monkeypatch.setattr(compiled, "_failed", set())
    m = _model()
    calls = []

    def flaky(model, sampling):
        step = compiled._step_fn(model, sampling, sampling.cfg_scale != 1.0)

        def fn(*args):
            calls.append(1)
            if len(calls) >= fail_at:
                raise RuntimeError("inductor gave up")
            return step(*args)
        return fn
    monkeypatch.setattr(compiled, "compiled_step", flaky)
    out = _sample(m, S_ALL, 3, compile=True)
    assert len(calls) == fail_at  # tried once more after `fail_at - 1` good steps, then never again
    eager = _sample(m, S_ALL, 3)
    assert torch.equal(out.codes_BHW, eager.codes_BHW)
    full = sequence_logprobs(m, PROMPTS, out.codes_BHW, S_ALL)
    assert (full - out.logprobs_BN).abs().max().item() <= 1e-4
    assert "compiled sampler failed" in capsys.readouterr().err
    assert compiled._failed == {"cpu"}


def test_cache_length_buckets():
    assert compiled.cache_length(109, 192) == 128
    assert compiled.cache_length(128, 192) == 128
    assert compiled.cache_length(180, 192) == 192  # never past the context
    assert compiled.cache_length(1, 192) == 64


def test_auto_loads_a_package_only_where_xomni_compile_built_one(monkeypatch, tmp_path):
    """compile="auto" (the default of generate / eval / serve): eager until a package for the same weights,
    sampling, rows and cache length is in the cache dir, then that package; other batch sizes, other sampling
    settings, changed weights, SJD or XOMNI_AUTO_COMPILE=0 stay eager. (The loader is replaced by the step's own
    code, counted; the real package is built in the test below.)"""
    monkeypatch.setattr(compiled, "_failed", set())
    monkeypatch.setenv("XOMNI_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("XOMNI_AUTO_COMPILE", "1")
    m = _model()
    calls = []
    step = compiled._step_fn(m, S_ALL, S_ALL.cfg_on)
    monkeypatch.setattr(torch._inductor, "aoti_load_package", lambda path: lambda *a: calls.append(1) or step(*a))
    eager = _sample(m, S_ALL, 0, compile="auto")
    assert not calls
    need = generation_length(max(map(len, PROMPTS)), 3, 4)
    path = compiled.package_path(m, S_ALL, 2 * len(PROMPTS), compiled.cache_length(need, m.cfg.max_seq_len))
    path.write_bytes(b"stands in for the package")
    auto = _sample(m, S_ALL, 0, compile="auto")
    n = len(calls)
    assert n == 11 and torch.equal(auto.codes_BHW, eager.codes_BHW)  # 12 tokens: 11 steps after the prefill
    sample_images(m, PROMPTS[:2], (3, 4), S_ALL, compile="auto")  # another batch size: no package
    _sample(m, SamplingConfig(temperature=0.9), 0, compile="auto")  # other sampling settings
    _sample(m, S_ALL, 0, compile="auto", sjd_window=4)
    monkeypatch.setenv("XOMNI_AUTO_COMPILE", "0")
    _sample(m, S_ALL, 0, compile="auto")
    monkeypatch.setenv("XOMNI_AUTO_COMPILE", "1")
    with torch.no_grad():
        m.image_head.weight.mul_(-0.5)  # other weights: the package froze the old ones
    _sample(m, S_ALL, 0, compile="auto")
    assert len(calls) == n


@pytest.mark.slow
@pytest.mark.smoke  # two AOTInductor builds (~1 min on 2 cores)
def test_xomni_compile_packages_sample_like_the_eager_sampler(monkeypatch, tmp_path):
    """The packages `xomni compile` builds (sampler.build_packages: one per cache length) load in a fresh state and
    give the eager sampler's tokens for the same seed, with log-probs equal to a full forward pass. Without CFG the
    step is fed a strided column of the token buffer: the package must not read it as contiguous."""
    monkeypatch.setattr(compiled, "_failed", set())
    monkeypatch.setattr(compiled, "_CPU_OPTIONS", {"freezing": True})  # no autotuning: a quicker build
    monkeypatch.setenv("XOMNI_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("XOMNI_AUTO_COMPILE", "1")
    m = _model()
    s = SamplingConfig(temperature=0.7, min_p=0.05, top_p=0.95, top_k=30)
    rows = build_packages(m, (3, 4), s, [len(PROMPTS)])
    assert [r["cache_length"] for r in rows] == [64, 128] and all(Path(r["path"]).is_file() for r in rows)
    out = _sample(m, s, 0, compile="auto")
    assert m.__dict__.get("_xomni_packages") and not compiled._failed
    assert "step" not in {kind for kind, _ in m.__dict__.get("_xomni_compiled", {})}  # no torch.compile of the step
    assert torch.equal(out.codes_BHW, _sample(m, s, 0).codes_BHW)
    full = sequence_logprobs(m, PROMPTS, out.codes_BHW, s)
    assert (full - out.logprobs_BN).abs().max().item() <= 1e-4
