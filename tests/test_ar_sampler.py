"""The sampler's log-probabilities are exactly those of the distribution it sampled from."""
import math

import pytest
import torch

from xomni.ar.model import ARConfig, UnifiedAR
from xomni.ar.sampler import SamplingConfig, draw, process_logits, sample_images, sequence_logprobs


def _model(seed=0):
    torch.manual_seed(seed)
    cfg = ARConfig(hidden_size=64, n_layers=2, n_heads=4, n_kv_heads=2, intermediate_size=128, max_seq_len=128,
                   image_vocab=50, max_grid=8)
    m = UnifiedAR(cfg)
    with torch.no_grad():  # make the image head peaky enough that min-p actually filters
        m.image_head.weight.mul_(40)
    return m.eval()


PROMPTS = [[72, 73], [65, 66, 67, 68, 69], [70]]


@pytest.mark.parametrize("hf_cache", [False, True])
def test_sampler_logprobs_match_full_forward_with_cfg_minp_temperature(hf_cache):
    m = _model()
    s = SamplingConfig(temperature=0.7, min_p=0.05, top_p=0.95, top_k=30, cfg_scale=2.5)
    g = torch.Generator().manual_seed(0)
    out = sample_images(m, PROMPTS, (3, 4), s, generator=g, hf_cache=hf_cache)
    assert out.codes_BHW.shape == (3, 3, 4)
    full = sequence_logprobs(m, PROMPTS, out.codes_BHW, s)
    assert torch.isfinite(full).all()
    assert (full - out.logprobs_BN).abs().max().item() <= 1e-4
    # negative control: the unguided, unfiltered, T=1 distribution gives different log-probs
    raw = sequence_logprobs(m, PROMPTS, out.codes_BHW, SamplingConfig(temperature=1.0, min_p=0.0, cfg_scale=1.0))
    assert (raw - out.logprobs_BN).abs().max().item() > 1e-2
    # and the filters really removed tokens (min-p / top-k active)
    assert (full > raw).any()


def test_same_seed_same_image_and_streaming():
    m = _model()
    s = SamplingConfig()
    seen = []
    a = sample_images(m, PROMPTS, (2, 3), s, generator=torch.Generator().manual_seed(5),
                      callback=lambda t, c: seen.append((t, c.shape[1])), stream_every=2)
    b = sample_images(m, PROMPTS, (2, 3), s, generator=torch.Generator().manual_seed(5))
    c = sample_images(m, PROMPTS, (2, 3), s, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a.codes_BHW, b.codes_BHW)
    assert not torch.equal(a.codes_BHW, c.codes_BHW)
    assert seen == [(2, 2), (4, 4), (6, 6)]


def test_sequence_logprobs_has_gradients():
    m = _model()
    m.train()
    s = SamplingConfig(temperature=0.9, cfg_scale=1.5)
    codes = torch.randint(0, 50, (3, 2, 2))
    lp = sequence_logprobs(m, PROMPTS, codes, SamplingConfig(temperature=0.9, min_p=0.0, cfg_scale=1.5))
    lp.sum().backward()
    assert m.image_head.weight.grad is not None and m.image_head.weight.grad.abs().sum() > 0
    del s


def test_inverse_cdf_draw_matches_distribution():
    torch.manual_seed(0)
    logits = torch.randn(1, 10) * 2
    s = SamplingConfig(min_p=0.05, top_k=6)
    lp = process_logits(logits, None, s)
    g = torch.Generator().manual_seed(1)
    n = 20000
    draws = draw(lp.expand(n, -1), g)
    freq = torch.bincount(draws, minlength=10).float() / n
    assert (freq - lp.exp()[0]).abs().max().item() < 0.012
    assert (freq[torch.isinf(lp[0])] == 0).all()  # filtered tokens are never drawn


def test_drawn_tokens_stay_in_the_support_when_scored():
    """A drawn token that a recomputed forward puts just past the min-p cut keeps a finite log-prob when it is
    scored (keep_idx): the support grows by that token only, and tokens inside the cut score as before."""
    s = SamplingConfig(temperature=1.0, min_p=0.1)
    logits = torch.tensor([[0.0, math.log(0.1) - 1e-4, -5.0, math.log(0.5)]])  # token 1 just below 0.1 x max
    plain = process_logits(logits, None, s)
    assert torch.isinf(plain[0, 1]) and torch.isinf(plain[0, 2])
    kept = process_logits(logits, None, s, keep_idx=torch.tensor([1]))
    want = torch.log_softmax(logits[0, [0, 1, 3]], -1)
    assert torch.allclose(kept[0, [0, 1, 3]], want) and torch.isinf(kept[0, 2])
    inside = process_logits(logits, None, s, keep_idx=torch.tensor([3]))
    assert torch.equal(inside, plain)
    m = _model()  # sequence_logprobs(keep_drawn=True) scores every code, even one outside the support
    codes = torch.randint(0, 50, (3, 2, 2))
    s1 = SamplingConfig(temperature=0.5, top_k=1, min_p=0.0)
    assert torch.isfinite(sequence_logprobs(m, PROMPTS, codes, s1, keep_drawn=True)).all()
    assert torch.isinf(sequence_logprobs(m, PROMPTS, codes, s1)).any()  # without it: -inf outside the support


def test_fast_path_and_transformers_cache_draw_the_same_tokens():
    m = _model()
    s = SamplingConfig(temperature=0.8, cfg_scale=1.5)
    a = sample_images(m, PROMPTS, (3, 4), s, generator=torch.Generator().manual_seed(2))
    b = sample_images(m, PROMPTS, (3, 4), s, generator=torch.Generator().manual_seed(2), hf_cache=True)
    assert torch.equal(a.codes_BHW, b.codes_BHW)
    assert (a.logprobs_BN - b.logprobs_BN).abs().max().item() <= 1e-4


@pytest.mark.parametrize("cfg_scale", [1.0, 1.5])
def test_bench_baseline_generate_draws_what_the_sampler_draws_greedily(cfg_scale):
    """The benches' transformers baseline samples the same distribution (CFG through generate's own guidance), so
    the speed ratios compare like with like: greedy, both give the same tokens."""
    from xomni.ar.bench import _hf_generate, _hf_twin
    m = _model()
    s = SamplingConfig(temperature=0.8, top_k=1, cfg_scale=cfg_scale)
    ours = sample_images(m, PROMPTS, (3, 4), s, generator=torch.Generator().manual_seed(0))
    hf = _hf_generate(_hf_twin(m), m, PROMPTS, (3, 4), s, seed=0, image_only=True)
    assert torch.equal(m.layout.image_grid(hf, 3, 4), ours.codes_BHW)
    if cfg_scale != 1.0:  # guidance changes the draw: the check above sees it
        plain = sample_images(m, PROMPTS, (3, 4), SamplingConfig(top_k=1), generator=torch.Generator().manual_seed(0))
        assert not torch.equal(plain.codes_BHW, ours.codes_BHW)


def test_bench_sample_reports_ratios_of_its_own_medians():
    from xomni.ar.bench import bench_sample_impl
    m = _model()
    res = bench_sample_impl(m, (2, 3), batches=(1, 2), repeats=2, compile=False, sjd_window=2)
    b = res["batch2"]
    assert set(b) == {"eager", "eager_sjd", "generate", "nocache"}  # no compiled path when not asked
    for k, v in b.items():
        assert v["tokens_per_s"] == pytest.approx(2 * 6 / v["median_s"])
        assert v["images_per_s"] == pytest.approx(2 / v["median_s"])
        assert v["speedup_vs_generate"] == pytest.approx(b["generate"]["median_s"] / v["median_s"])
    assert res["default_speedup_vs_generate"] == b["eager"]["speedup_vs_generate"]
    assert res["best_path"] in ("eager", "eager_sjd")
    assert res["best_speedup_vs_generate"] == max(b["eager"]["speedup_vs_generate"],
                                                  b["eager_sjd"]["speedup_vs_generate"])
    passes = res["forward_passes_per_image"]
    assert passes["eager"] == passes["generate"] == passes["nocache"] == 6 and 1 < passes["eager_sjd"] <= 6
    assert res["compile_s"] == {}
    assert 0 < res["bandwidth_fraction"] and res["peak_rss_mb"] > 0


def test_bench_generate_reports_each_path_against_generate():
    from test_rl import tiny_pipeline
    from xomni.ar.bench import bench_generate_impl
    pipe = tiny_pipeline()
    res = bench_generate_impl(pipe, '"HI"', n_images=2, runs=1, steps=1, sjd_window=3)
    assert set(res["paths"]) == {"default", "sjd", "generate"}
    for v in res["paths"].values():
        assert v["speedup_vs_generate"] == pytest.approx(res["paths"]["generate"]["latency_p50_s"] / v["latency_p50_s"])
        assert v["images_per_s"] == pytest.approx(2 / v["latency_p50_s"]) and v["ar_tokens_per_s"] > 0
    n = pipe.grid[0] * pipe.grid[1]
    assert res["forward_passes_per_image"]["default"] == res["forward_passes_per_image"]["generate"] == n
    assert res["forward_passes_per_image"]["sjd"] <= n
    assert res["latency_p50_s"] == res["paths"]["default"]["latency_p50_s"]
    assert pipe.sjd_window == 0 and pipe.compile_sampler == "auto"  # the pipeline is left as it was
