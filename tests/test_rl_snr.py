"""xomni.rl.snr (`xomni bench rl-snr`): the signal/noise estimates recover a known mean and covariance."""
import torch


def _mod():
    import xomni.rl.snr
    return xomni.rl.snr


def test_gradient_snr_recovers_signal_and_noise():
    mod = _mod()

    def stats(g_PD):
        return mod.stats_from_gram(mod.gram(g_PD, chunk=1000))  # several chunks: the sum over chunks is exact
    g = torch.Generator().manual_seed(0)
    P, D = 256, 4000
    mu = torch.randn(D, generator=g)
    mu = mu / mu.norm()                                   # |mu|^2 = 1
    noise = torch.randn(P, D, generator=g) * (16 / D) ** 0.5  # tr(Sigma) = 16
    s = stats(mu + noise)
    assert abs(s["mu_sq"] - 1) < 0.15 and abs(s["trace_sigma"] - 16) < 1.5
    assert 12 < s["groups_for_cos_0.5"] < 20
    # halves of 128 groups: expected cosine 1 / (1 + 16 / 128) = 0.89
    assert abs(s["half_split_cos_mean"] - 1 / (1 + 16 / 128)) < 0.05
    assert abs(s["expected_cos_8_groups"] - 1 / (1 + 16 / 8)) < 0.06
    pure = stats(noise)                                   # no signal: the halves are unrelated
    assert abs(pure["half_split_cos_mean"]) < 0.1 and pure["groups_for_cos_0.5"] > 100


def test_pair_cosines_tell_prompt_specific_signal_from_noise():
    mod = _mod()

    def pair(g_PD, repeats):
        return mod.pair_cosines(mod.gram(g_PD), repeats)
    g = torch.Generator().manual_seed(0)
    P, D = 64, 2000
    own = torch.randn(P, D, generator=g)                  # each prompt's own direction, unrelated across prompts
    groups = own.repeat_interleave(2, 0) + 0.5 * torch.randn(2 * P, D, generator=g)
    s = pair(groups, 2)
    assert s["same_prompt_cos"] > 0.7 and abs(s["other_prompt_cos"]) < 0.05
    s = pair(torch.randn(2 * P, D, generator=g), 2)        # pure noise: neither
    assert abs(s["same_prompt_cos"]) < 0.05 and abs(s["other_prompt_cos"]) < 0.05
