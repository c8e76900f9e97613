"""RL engine: gradient accumulation equals one big batch, skipping flat groups leaves the gradient unchanged, the
prompt pool's weighting and exact resume, ReST's filter = best-of-N's rule, the RL sampling starts from the model's
shipped settings, and the sampler's and the trainer's log-probs agree at the bundled model's shipped settings."""
import dataclasses
import json
from pathlib import Path

import pytest
import torch

from test_rl import PROMPTS, _grpo_loss, _ListPool, brightness, mock_decode
from xomni.ar.sampler import SamplingConfig, sample_images, sequence_logprobs
from xomni.errors import XomniError
from xomni.rl.bestofn import pick_best
from xomni.rl.config import RLConfig, load_run_config
from xomni.rl.grpo import collect_rollouts, rest_selection
from xomni.rl.pool import PromptPool
from xomni.train import TrainConfig, run_training

BUNDLED = Path(__file__).resolve().parent.parent / "xomni" / "pretrained" / "mini"


class Lin(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.l = torch.nn.Linear(4, 1)

    def forward(self, x):
        return self.l(x)


def _mse(model, batch, gen):
    x = torch.stack([b[0] for b in batch])
    y = torch.stack([b[1] for b in batch])
    return ((model(x).squeeze(-1) - y) ** 2).mean(), {"tokens": float(len(batch))}


@pytest.mark.parametrize("k", [2, 4])
def test_grad_accum_equals_one_big_batch(tmp_path, k):
    g = torch.Generator().manual_seed(0)
    data = [(torch.randn(4, generator=g), torch.randn((), generator=g)) for _ in range(32)]
    final = []
    for accum in (1, k):
        tc = TrainConfig(out_dir=str(tmp_path / f"a{accum}"), steps=3, batch_size=8, grad_accum=accum, lr=1e-1,
                         warmup_steps=0, ckpt_every=0, progress=False, grad_clip=0.0)
        m = Lin()
        run_training(tc, m, data, _mse, collate=list)
        final.append(m.l.weight.detach().clone())
        logs = [json.loads(x) for x in (tmp_path / f"a{accum}" / "log.jsonl").read_text().splitlines()]
        assert all(r["tokens_per_s"] > 0 for r in logs)
    assert torch.allclose(final[0], final[1], atol=1e-6)
    with pytest.raises(XomniError, match="grad_accum"):
        run_training(TrainConfig(out_dir=str(tmp_path / "bad"), steps=1, batch_size=8, grad_accum=3,
                                 progress=False), Lin(), data, _mse, collate=list)


def test_grpo_accumulation_and_skip_flat_keep_the_gradient():
    """Two micro-batches of one prompt each (loss / 2 each) give the gradient of the two-prompt batch, and leaving
    out rollouts whose advantages are all 0 changes nothing when beta = 0."""
    s = SamplingConfig(min_p=0.0)
    grads = {}
    for skip in (False, True):
        loss_fn, pol, batch = _grpo_loss(s, beta=0.0, skip_flat=skip)
        ro = collect_rollouts(pol.ar, batch, (4, 16), 4, s, mock_decode, _ListPool(brightness),
                              torch.Generator().manual_seed(0), 64, 1e-4)
        ro.adv[:4] = 0.0  # the first group: flat
        loss_fn.cache = ro
        loss_fn.cfg = dataclasses.replace(loss_fn.cfg, inner_epochs=10 ** 6)  # reuse these rollouts
        loss, m = loss_fn(pol, batch, torch.Generator())
        loss.backward()
        assert m["trained_frac"] == (0.5 if skip else 1.0)
        grads[skip] = pol.image_head.weight.grad.clone()
    assert torch.allclose(grads[False], grads[True], atol=1e-7)
    # accumulation: per-prompt halves of the same rollouts, each loss / 2
    loss_fn, pol, batch = _grpo_loss(s, beta=0.0)
    loss_fn.cfg = dataclasses.replace(loss_fn.cfg, inner_epochs=10 ** 6)
    for j in range(2):
        sub = dataclasses.replace(ro, ids=ro.ids[4 * j:4 * j + 4], codes=ro.codes[4 * j:4 * j + 4],
                                  old_lp=ro.old_lp[4 * j:4 * j + 4], total=ro.total[4 * j:4 * j + 4],
                                  adv=ro.adv[4 * j:4 * j + 4], uses=0)
        loss_fn.cache = sub
        (loss_fn(pol, batch, torch.Generator())[0] / 2).backward()
    assert torch.allclose(pol.image_head.weight.grad, grads[False], atol=1e-7)


def test_prompt_pool_favours_partly_right_prompts_and_resumes_exactly():
    pool = PromptPool(4, prior=2.0, floor=0.0)
    assert torch.allclose(pool.weights(), torch.full((4,), 0.25, dtype=torch.float64))  # unseen: m(1-m), m=0.5
    pool.update([0, 1, 2], [8, 4, 0], G=8)  # all right, half right, all wrong
    m = pool.mean_pass()
    assert m == pytest.approx(12 / 24)
    p = pool.pass_rates()
    assert p[0] == pytest.approx((8 + 2 * m) / 10) and p[1] == pytest.approx(0.5) and p[3] == pytest.approx(m)
    w = pool.weights()
    assert w[1] > w[0] and w[1] > w[2] and w[0] == pytest.approx(w[2])  # symmetric in right / wrong
    counts = torch.zeros(4)
    g = torch.Generator().manual_seed(0)
    for _ in range(2000):
        counts[pool.draw(1, g)] += 1
    assert counts[1] > 1.2 * counts[0] and counts[1] > 1.2 * counts[2]
    assert sorted(pool.draw(10, g)) == [0, 1, 2, 3]  # k > pool: each prompt once
    again = PromptPool(4, prior=2.0, floor=0.0)
    again.load_state_dict(json.loads(json.dumps(pool.state_dict())))
    assert pool.draw(3, torch.Generator().manual_seed(5)) == again.draw(3, torch.Generator().manual_seed(5))
    with pytest.raises(XomniError, match="same prompts"):
        PromptPool(5).load_state_dict(pool.state_dict())
    with pytest.raises(XomniError, match="passes out of"):
        pool.update([0], [9], G=8)


def test_prompt_pool_in_the_loss_draws_and_counts(tmp_path):
    loss_fn, pol, batch = _grpo_loss(SamplingConfig(min_p=0.0), exact_entropy=False)
    rows = [dict(b, idx=i) for i, b in enumerate(batch * 3)]
    loss_fn.prompt_pool, loss_fn.rows = PromptPool(len(rows)), rows
    _, m = loss_fn(pol, batch, torch.Generator().manual_seed(0))
    assert sum(loss_fn.prompt_pool.draws) == len(batch) * 4 and "pool_mean_pass" in m
    # on the shared loop, the pool's counts are saved in the checkpoint and a resumed run continues them
    tc = TrainConfig(out_dir=str(tmp_path / "rl"), steps=2, batch_size=2, lr=1e-3, ckpt_every=1, progress=False)
    run_training(tc, pol, rows, loss_fn, collate=list, extra_state=loss_fn.prompt_pool)
    saved = json.loads(sorted((tmp_path / "rl" / "checkpoints").glob("step-*"))[-1].joinpath("state.json")
                       .read_text())["extra_state"]
    assert saved == loss_fn.prompt_pool.state_dict() and sum(saved["draws"]) == (1 + 2) * 2 * 4
    fresh = loss_fn.prompt_pool = PromptPool(len(rows))
    run_training(dataclasses.replace(tc, steps=3), pol, rows, loss_fn, collate=list, extra_state=fresh,
                 resume="auto")
    assert sum(fresh.draws) == sum(saved["draws"]) + 2 * 4


def test_rest_keeps_exactly_the_best_of_n_pick():
    total = torch.tensor([[0.2, 1.0, 1.0, 0.5], [0.1, 0.9, 0.3, 0.9], [0.0, 0.0, 0.0, 0.0]])
    assert pick_best(total) == [1, 1, 0]  # first maximum on ties, as best_of_n
    w = rest_selection(total, 1.0).view(3, 4)
    assert w.tolist() == [[0, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]
    assert rest_selection(total, 0.9).view(3, 4)[1].tolist() == [0, 1, 0, 0]
    # the loss trains only the kept rollouts, on the raw model's log-probs
    loss_fn, pol, batch = _grpo_loss(SamplingConfig(min_p=0.0), algo="rest", rest_min_reward=0.0)
    loss, m = loss_fn(pol, batch, torch.Generator().manual_seed(0))
    assert m["rest_kept"] == 1.0 and m["trained_frac"] == pytest.approx(2 / 8)
    loss.backward()
    assert pol.image_head.weight.grad.abs().sum() > 0


def test_rl_config_starts_from_the_model_and_set_fields_win(tmp_path):
    """A run on a model samples with its shipped settings and reads its data preset's OCR region, unless the
    config or --set says otherwise (even when the value set equals the class default)."""
    index = json.loads((BUNDLED / "model_index.json").read_text())
    shipped, preset = index["sampling"], index["data_preset"]
    m = f"model={BUNDLED}"
    cfg = load_run_config(None, [m])
    assert cfg.sampling.temperature == shipped["temperature"] != SamplingConfig().temperature
    assert cfg.preset == preset != RLConfig().preset
    cfg = load_run_config(None, [m, "sampling.temperature=1.0", "preset=tiny"])
    assert cfg.sampling.temperature == 1.0 and cfg.preset == "tiny"
    y = tmp_path / "c.yaml"
    y.write_text("sampling: {min_p: 0.1}\nsampling_from_model: false\n")
    cfg = load_run_config(y, [m])
    assert cfg.sampling.temperature == 1.0 and cfg.sampling.min_p == 0.1 and cfg.preset == preset
    assert load_run_config(None, []).preset == RLConfig().preset  # no model: the class defaults
    bad = tmp_path / "m"
    bad.mkdir()
    (bad / "model_index.json").write_text(json.dumps({"sampling": "hot"}))
    with pytest.raises(XomniError, match="'sampling' must be a mapping"):
        load_run_config(None, [f"model={bad}"])


def test_sampler_and_trainer_logprobs_agree_at_the_shipped_settings():
    """The bundled model at its shipped sampling settings: the log-probs the sampler returns are those the GRPO
    loss recomputes with one full forward (ratio 1 at the first inner step). min-p can flip a token that sits on
    its threshold by float rounding, which renormalises that one position, so the bound is on nearly all tokens."""
    from xomni.pipeline import Pipeline
    pipe = Pipeline.from_pretrained(str(BUNDLED))
    s = pipe.sampling_config()
    prompts = [pipe.check_prompt(pipe.caption_for_text(w)) for w in ("lilac", "QUIZ", "Gate", "$450")]
    out = sample_images(pipe.ar.float(), [p for p in prompts for _ in range(4)], pipe.grid, s,
                        generator=torch.Generator().manual_seed(0))
    lp = sequence_logprobs(pipe.ar, [p for p in prompts for _ in range(4)], out.codes_BHW, s)
    d = (lp - out.logprobs_BN).abs()
    assert torch.isfinite(lp).all()
    assert d.median() < 1e-4 and (d > 1e-3).float().mean() < 0.01
    assert d.max() < 0.1


def test_bench_rl_and_rl_snr_commands(tmp_path, monkeypatch, capsys):
    """`xomni bench rl` reports rollouts/s and a step's split; `xomni bench rl-snr` the rollouts a half-signal step
    needs (tiny random pipeline, in-process rewards)."""
    from test_rl import tiny_pipeline
    from xomni.cli import app
    from xomni.data.synth import synth
    pipe = tiny_pipeline()
    pipe.save_pretrained(tmp_path / "pipe")
    synth(tmp_path / "data", n=8, seed=0, preset="tiny", split="train", progress=False)
    common = ["--model", str(tmp_path / "pipe"), "--data", str(tmp_path / "data"), "--set", "group_size=2",
              "--set", "reward_workers=0", "--set", "rewards={aesthetic: 1.0}", "--set", "preset=tiny",
              "--threads", "1"]
    from typer.testing import CliRunner
    r = CliRunner().invoke(app, ["bench", "rl", *common, "--prompts", "2", "--steps", "2"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["rollouts_per_s_collect"] > 0 and out["rollouts_per_s_step"] > 0 and len(out["steps"]) == 2
    assert abs(sum(out["share"].values()) - 1) < 0.05 and out["credit"] == "sequence"
    r = CliRunner().invoke(app, ["bench", "rl-snr", *common, "--groups", "4"])
    assert r.exit_code == 0, r.output
    snr = json.loads(r.stdout)
    assert snr["credit"] == "configured" and snr["rollouts_for_cos_0.5"] > 0 and snr["groups"] == 4


def test_best_of_n_without_a_reward_config_reads_the_models_own_preset(monkeypatch):
    """The RL defaults name the tiny preset; best-of-N on a model of another preset must read that preset's OCR
    region (the mini model's 128x32 signs lie mostly outside tiny's region)."""
    from test_rl import tiny_pipeline
    import xomni.rl.rewards as R
    from xomni.rl.bestofn import best_of_n
    seen = []

    def spy(cfg, model_dir=None, pipe=None):
        seen.append(cfg.preset)
        return R.RewardSet({"b": brightness}, {"b": 1.0})
    monkeypatch.setattr(R, "build_reward_set", spy)
    pipe = tiny_pipeline()
    pipe.index["data_preset"] = "mini"
    best_of_n(pipe, PROMPTS[:1], n=2, steps=1)
    best_of_n(pipe, PROMPTS[:1], n=2, steps=1, reward_cfg={"preset": "tiny"})
    assert seen == ["mini", "tiny"]
