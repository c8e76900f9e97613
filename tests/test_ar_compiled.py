"""The compiled decode step (xomni.ar.compiled) samples the same distribution as the eager sampler."""
import pytest
import torch

from xomni.ar import compiled
from xomni.ar.sampler import SamplingConfig, sample_images, sequence_logprobs
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
