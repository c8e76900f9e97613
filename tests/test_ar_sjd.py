"""Speculative Jacobi decoding (xomni.ar.sjd) draws from the plain sampler's distribution in fewer forward passes."""
import itertools

import pytest
import torch

from xomni.ar import compiled, sjd
from xomni.ar.model import ARConfig, UnifiedAR
from xomni.ar.sampler import SamplingConfig, sample_images, sequence_logprobs
from test_ar_sampler import PROMPTS, _model

S_ALL = SamplingConfig(temperature=0.7, min_p=0.05, top_p=0.95, top_k=30, cfg_scale=2.5)


def _small_vocab_model():
    torch.manual_seed(3)
    m = UnifiedAR(ARConfig(hidden_size=32, n_layers=2, n_heads=2, n_kv_heads=1, intermediate_size=64, max_seq_len=32,
                           image_vocab=4, max_grid=4))
    with torch.no_grad():
        m.image_head.weight.mul_(20)  # strongly context-dependent distributions, far from uniform
    return m.eval()


def _chi2_pvalue(counts: torch.Tensor, probs: torch.Tensor) -> float:
    """Goodness of fit of `counts` to `probs`; cells expecting fewer than 5 draws are pooled into one."""
    n = counts.sum()
    exp = probs * n
    small = exp < 5
    obs_c = torch.cat([counts[~small], counts[small].sum()[None]])
    exp_c = torch.cat([exp[~small], exp[small].sum()[None]])
    stat = ((obs_c - exp_c) ** 2 / exp_c.clamp(min=1e-12)).sum()
    df = len(obs_c) - 1
    return float(torch.special.gammaincc(torch.tensor(df / 2, dtype=torch.float64), stat.double() / 2))


def test_chi_square_sjd_draws_the_plain_samplers_distribution(monkeypatch):
    """All 4^4 images of a 2 x 2 grid over a 4-code vocabulary: their exact probabilities under the sampling
    distribution (CFG, temperature, min-p) from full forwards; 4,000 draws of each sampler fit them; a sampler that
    keeps every draft without the acceptance test does not (the test has power)."""
    m = _small_vocab_model()
    s = SamplingConfig(temperature=1.3, min_p=0.02, cfg_scale=1.5)
    prompt = [72, 73]
    seqs = torch.tensor(list(itertools.product(range(4), repeat=4)))
    with torch.no_grad():
        lp = sequence_logprobs(m, [prompt] * len(seqs), seqs.view(-1, 2, 2), s).sum(-1)
    probs = lp.exp().double()
    assert abs(float(probs.sum()) - 1) < 1e-4 and probs.max() < 0.5  # a real distribution, not a point mass

    def counts(**kw):
        out = sample_images(m, [prompt] * 4000, (2, 2), s, generator=torch.Generator().manual_seed(11), **kw)
        idx = (out.codes_BHW.view(-1, 4) * torch.tensor([64, 16, 4, 1])).sum(-1)
        return torch.bincount(idx, minlength=256).double()

    plain = counts()
    spec = counts(sjd_window=2)
    assert _chi2_pvalue(plain, probs) > 1e-3
    assert _chi2_pvalue(spec, probs) > 1e-3

    speculate = sjd.speculate

    def keep_all(x, q, p, u_keep, u_draw):  # no acceptance test: drafts from stale proposals go through
        y, _ = speculate(x, q, p, u_keep, u_draw)
        has_draft = q.sum(-1) > 0
        return torch.where(has_draft, x, y), has_draft
    monkeypatch.setattr(sjd, "speculate", keep_all)
    wrong = counts(sjd_window=2)
    assert _chi2_pvalue(wrong, probs) < 1e-6


@pytest.mark.parametrize("s", [SamplingConfig(top_k=1, min_p=0.0), SamplingConfig(top_k=1, cfg_scale=2.0)])
def test_greedy_gives_the_same_tokens(s):
    m = _model()
    a = sample_images(m, PROMPTS, (3, 4), s, generator=torch.Generator().manual_seed(0))
    b = sample_images(m, PROMPTS, (3, 4), s, generator=torch.Generator().manual_seed(9), sjd_window=4)
    assert torch.equal(a.codes_BHW, b.codes_BHW)
    assert (a.logprobs_BN - b.logprobs_BN).abs().max().item() <= 1e-5
    assert a.forward_passes == 12 and b.forward_passes <= 12


@pytest.mark.parametrize("window", [1, 3, 16])
def test_logprobs_are_those_of_the_drawn_tokens_and_streaming(window):
    """The returned log-probs equal a full forward's (left-padded prompts, CFG, all filters on); a window longer
    than the image works; the stream shows final tokens at the same steps as the plain sampler."""
    m = _model()
    frames = []
    out = sample_images(m, PROMPTS, (3, 4), S_ALL, generator=torch.Generator().manual_seed(4), sjd_window=window,
                        callback=lambda t, c: frames.append((t, c)), stream_every=5)
    full = sequence_logprobs(m, PROMPTS, out.codes_BHW, S_ALL)
    assert (full - out.logprobs_BN).abs().max().item() <= 1e-4
    assert [t for t, _ in frames] == [5, 10, 12]
    for t, c in frames:
        assert torch.equal(c, out.codes_BHW.view(3, 12)[:, :t])
    assert 1 < out.forward_passes <= 12


def test_residual_levels_keep_the_grid_order_contract():
    from test_ar_levels import _model as levels_model
    m = levels_model(levels=3)
    s = SamplingConfig(temperature=0.8, min_p=0.02, cfg_scale=2.0)
    prompts = [[72, 73], [65, 66, 67]]
    out = sample_images(m, prompts, (2, 6), s, generator=torch.Generator().manual_seed(1), sjd_window=5)
    assert (sequence_logprobs(m, prompts, out.codes_BHW, s) - out.logprobs_BN).abs().max().item() <= 1e-4


def test_per_request_streams_draw_what_each_request_draws_alone():
    m = _model()
    s = SamplingConfig(temperature=0.9)
    merged = sample_images(m, PROMPTS, (3, 4), s, sjd_window=3,
                           generator=[(torch.Generator().manual_seed(10 + i), 1) for i in range(3)])
    for i, p in enumerate(PROMPTS):
        alone = sample_images(m, [p], (3, 4), s, sjd_window=3, generator=torch.Generator().manual_seed(10 + i))
        assert torch.equal(alone.codes_BHW[0], merged.codes_BHW[i])


def test_bundled_model_needs_half_the_passes_at_its_shipped_settings():
    """The bar of the speculative sampler: at most half as many forward passes as the image has tokens (the batch
    moves in lock step, so this counts the slowest of 8 rows), with log-probs equal to a full forward's."""
    from xomni.pipeline import Pipeline
    pipe = Pipeline.from_pretrained()
    s = pipe.sampling_config()
    prompts = [pipe.check_prompt(pipe.caption_for_text(w)) for w in ("lilac", "QUIZ", "Gate", "$450")] * 2
    out = sample_images(pipe.ar, prompts, pipe.grid, s, generator=torch.Generator().manual_seed(0), sjd_window=8)
    assert out.forward_passes <= pipe.grid[0] * pipe.grid[1] // 2
    d = (sequence_logprobs(pipe.ar, prompts, out.codes_BHW, s) - out.logprobs_BN).abs()
    assert d.median() < 1e-4 and d.max() < 0.1  # min-p can flip a token on its threshold (see test_rl_engine)


def test_needs_the_static_cache():
    from xomni.errors import XomniError
    with pytest.raises(XomniError, match="static KV cache"):
        sample_images(_model(), PROMPTS, (2, 2), SamplingConfig(), sjd_window=2, hf_cache=True)


@pytest.mark.parametrize("fail_at", [1, 3])
def test_compiled_window_code_and_fallback_to_eager(monkeypatch, capsys, fail_at):
    """The compiled path's window function run uncompiled (no compile time), failing at call `fail_at`: the sampler
    goes on eagerly with the same tokens as the eager SJD path."""
    monkeypatch.setattr(compiled, "_failed", set())
    m = _model()
    calls = []

    def flaky(model, sampling):
        from xomni.ar.fastdecode import window_step
        fn = window_step(model, sampling)

        def run(*args):
            calls.append(1)
            if len(calls) >= fail_at:
                raise RuntimeError("inductor gave up")
            return fn(*args)
        return run
    monkeypatch.setattr(compiled, "compiled_window", flaky)
    out = sample_images(m, PROMPTS, (3, 4), S_ALL, generator=torch.Generator().manual_seed(2), sjd_window=3,
                        compile=True)
    eager = sample_images(m, PROMPTS, (3, 4), S_ALL, generator=torch.Generator().manual_seed(2), sjd_window=3)
    assert len(calls) == fail_at
    assert torch.equal(out.codes_BHW, eager.codes_BHW)
    assert "compiled sampler failed" in capsys.readouterr().err


@pytest.mark.slow
def test_compiled_window_matches_eager():
    m = _model()
    out = sample_images(m, PROMPTS, (3, 4), S_ALL, generator=torch.Generator().manual_seed(5), sjd_window=3,
                        compile=True)
    assert not compiled._failed, "the compiled window failed and the sampler fell back to eager"
    eager = sample_images(m, PROMPTS, (3, 4), S_ALL, generator=torch.Generator().manual_seed(5), sjd_window=3)
    assert torch.equal(out.codes_BHW, eager.codes_BHW)
    full = sequence_logprobs(m, PROMPTS, out.codes_BHW, S_ALL)
    assert (full - out.logprobs_BN).abs().max().item() <= 1e-4
