"""Column credit for the OCR reward (xomni.rl.credit): alignment, layout, advantages, and that it is a better
policy-gradient estimate than one reward per rollout on a model whose columns each draw one letter."""
import numpy as np
import pytest
import torch

from xomni.errors import XomniError
from xomni.rl.credit import char_correct, char_spans, column_advantages, column_rewards


@pytest.mark.parametrize("pred,target,want", [
    ("HELLO", "HELLO", [1, 1, 1, 1, 1]),
    ("HELL0", "HELLO", [1, 1, 1, 1, 0]),       # substitution
    ("HLLO", "HELLO", [1, 0, 1, 1, 1]),        # dropped E (either L may be the one aligned; one char is wrong)
    ("HEXLLO", "HELLO", [1, 1, 0, 1, 1]),      # spurious X marks its right neighbour
    ("HELLOX", "HELLO", [1, 1, 1, 1, 0]),      # spurious char at the end marks the last one
    ("", "AB", [0, 0]),
    ("hello", "HELLO", [0, 0, 0, 0, 0]),       # case counts, as in the evaluation's exact match
])
def test_char_correct(pred, target, want):
    got = char_correct(pred, target)
    assert len(got) == len(target)
    if pred == "HLLO":
        assert sum(got) == 4 and got[0] == 1 and got[-1] == 1
    else:
        assert got == want


def test_char_correct_with_confidences():
    """With ocr_confidence a character read right counts its reading's probability; wrong ones stay 0, and the
    alignment is the plain one (the confidences of spurious characters count nowhere)."""
    assert char_correct("HELLO", "HELLO", [0.9, 1.0, 0.5, 1.0, 0.7]) == [0.9, 1.0, 0.5, 1.0, 0.7]
    assert char_correct("HELL0", "HELLO", [0.9, 1.0, 0.5, 1.0, 0.99]) == [0.9, 1.0, 0.5, 1.0, 0.0]
    assert char_correct("HEXLLO", "HELLO", [1.0, 0.8, 0.99, 0.6, 1.0, 1.0]) == [1.0, 0.8, 0.0, 1.0, 1.0]
    assert char_correct("A B", "A B", [0.5, 1.0, 0.25]) == [0.5, 1.0, 0.25]
    with pytest.raises(XomniError, match="2 confidences for a reading of 3"):
        char_correct("ABC", "ABC", [1.0, 1.0])
    t = "ABCDEFGH"
    confs = [[1.0] * 8, [1.0] * 7 + [0.5]]
    plain = column_rewards([t, t], [t, t], "mini", 128, 16, [1.0, 1.0])
    soft = column_rewards([t, t], [t, t], "mini", 128, 16, [1.0, 1.0], confs=confs)
    assert np.array_equal(soft[0], plain[0])
    sp = char_spans(t, "mini")  # the columns the last letter is drawn over score less in the less sure reading
    last = [c for c in range(16) if c * 8 < sp[-1][1] and (c + 1) * 8 > sp[-1][0]]
    first = [c for c in range(16) if (c + 1) * 8 <= sp[-1][0] and c * 8 >= sp[0][0]]
    assert all(soft[1, c] < plain[1, c] for c in last) and all(soft[1, c] == plain[1, c] for c in first)


def test_char_spans_follow_the_renderer():
    """The spans tile the ink of the text exactly where xomni.data renders it (mini preset)."""
    from xomni.data.presets import get_preset
    from xomni.data.scene import sample_scene
    p = get_preset("mini")
    for i in range(20):
        m = sample_scene(p, 0, "test", i)
        sp = char_spans(m["text"], "mini")
        assert len(sp) == len(m["text"])
        assert all(a < b for a, b in sp) and all(sp[k][1] == pytest.approx(sp[k + 1][0]) for k in range(len(sp) - 1))
        x0, _, x1, _ = m["text_box"]  # ink box of the real render
        assert sp[0][0] == m["text_origin"][0]  # the same origin as the renderer's draw call
        assert abs(sp[0][0] - x0) <= 3 and abs(sp[-1][1] - x1) <= 3  # and the ink within a side bearing


def test_column_rewards_give_a_patchs_codes_one_reward():
    """With 2 codes per patch side by side (tokenizer levels=2) the 32 token columns cover 16 patches: each pair
    gets its patch's reward, not the reward of half-patch pixel ranges."""
    t = "ABCDEFGH"
    whole = [1.0, 7 / 8]
    one = column_rewards(["ABCDEFGH", "ABCDEFGX"], [t, t], "mini", 128, 16, whole)
    two = column_rewards(["ABCDEFGH", "ABCDEFGX"], [t, t], "mini", 128, 32, whole, levels=2)
    assert two.shape == (2, 32) and np.array_equal(two, np.repeat(one, 2, axis=1))
    naive = column_rewards(["ABCDEFGH", "ABCDEFGX"], [t, t], "mini", 128, 32, whole)  # 4 px per token column
    assert not np.array_equal(two, naive)


def test_column_rewards_and_advantages_localise():
    t = "ABCDEFGH"
    sp = char_spans(t, "mini")
    # G = 2: one sample reads everything, the other misreads only the last letter
    whole = [1.0, 7 / 8]
    col = column_rewards(["ABCDEFGH", "ABCDEFGX"], [t, t], "mini", 128, 16, whole)
    assert col.shape == (2, 16)
    last = int(sp[-1][0] // 8)  # the column where H starts
    assert col[1, last] < 1.0 and col[0, last] == 1.0
    first_cols = [c for c in range(16) if (c + 1) * 8 <= sp[0][0]]  # margin columns keep the whole reward
    assert all(col[1, c] == whole[1] for c in first_cols)
    A = column_advantages(col, whole, G=2, h=4)
    assert A.shape == (2, 64)
    A = A.view(2, 4, 16)
    assert torch.all(A[:, :, last] != 0) and torch.all(A[0] >= 0) and torch.all(A[1] <= 0)
    mid = int((sp[2][0] + sp[2][1]) / 2 // 8)  # a column inside C: both read it right -> no credit at all
    assert torch.all(A[:, :, mid] == 0)
    # the same rows get the same advantage (broadcast over the grid height)
    assert torch.all(A[:, 0] == A[:, 3])


def test_column_credit_beats_one_reward_per_rollout_on_a_column_model():
    """A policy with one independent categorical per column; a letter is read right iff its column drew the
    right token. The exact policy gradient of the expected whole-string reward is known in closed form;
    column credit estimates it with a much higher cosine than GRPO's one-advantage-per-rollout, at the same
    number of rollouts."""
    rng = np.random.default_rng(0)
    W, V, G, P = 16, 64, 8, 8
    logits = torch.tensor(rng.normal(size=(W, V)) + np.eye(V)[np.zeros(W, dtype=int)] * 6.0)  # token 0 is right
    p = torch.softmax(logits, -1)
    # E[mean_c 1{x_c = 0}] -> d/dlogits_c = (1/W) (onehot_0 - p_c) p_c0
    true = ((torch.eye(V)[0] - p) * p[:, :1] / W).reshape(-1)

    def estimate(column: bool, seed: int):
        g = torch.Generator().manual_seed(seed)
        x = torch.multinomial(p, P * G, replacement=True, generator=g).T  # (P*G) x W
        ok = (x == 0).double()
        whole = ok.mean(1)
        if column:
            A = column_advantages(ok.numpy(), whole.tolist(), G=G, h=1, scale=False).double()  # B x W
        else:
            w = whole.view(P, G)
            A = (w - w.mean(1, keepdim=True)).reshape(-1, 1).expand(-1, W)
        # grad of sum_c A_c log p(x_c) w.r.t. logits: A_c (onehot(x_c) - p_c)
        grad = (A.unsqueeze(-1) * (torch.nn.functional.one_hot(x, V).double() - p)).mean(0)
        return grad.reshape(-1)

    cos = {k: np.mean([float(torch.nn.functional.cosine_similarity(estimate(k, s), true, dim=0)) for s in range(20)])
           for k in (False, True)}
    print(f"p(right token) {float(p[:, 0].mean()):.2f}; cosine to the true gradient: one advantage per rollout "
          f"{cos[False]:.3f}, column credit {cos[True]:.3f}")
    # cos^2 / (1 - cos^2) is the signal-to-noise ratio of the estimate, proportional to the rollouts it used:
    # column credit must be worth several times the rollouts (measured: ~8x here)
    snr = {k: c * c / (1 - c * c) for k, c in cos.items()}
    assert snr[True] > 3 * snr[False], cos


class _ColumnOcrPool:
    """A stand-in OCR for mock-decoded images (16 px cells, 4 x 16 grid): character k of the target is read right
    iff the top cell of the token column under its centre (the mini layout) is bright."""

    def __init__(self, text):
        self.text = text
        self.cols = [int((a + b) / 2 // 8) for a, b in char_spans(text, "mini")]

    def submit(self, images, prompts, meta):
        from concurrent.futures import Future
        from xomni.rl.rewards import text_similarity
        reads = []
        for im in images:
            a = np.asarray(im, dtype=np.float32)
            reads.append("".join(ch if a[:16, 16 * c:16 * c + 16].mean() > 110 else "x"
                                 for ch, c in zip(self.text, self.cols)))
        sims = [text_similarity(r, self.text) for r in reads]
        f = Future()
        f.set_result((sims, {"ocr": sims}, 0.0, {"ocr": reads}))
        return f


def test_grpo_with_column_credit_token_advantages_and_sign(tmp_path):
    """credit=column: advantages are B x N, zero in every column the whole group read alike; and GRPO with them on
    the shared training loop raises the (column-structured) OCR reward."""
    import dataclasses
    import json
    from test_rl import mock_decode, tiny_ar
    from xomni.ar.sampler import SamplingConfig
    from xomni.rl.config import load_rl_config
    from xomni.rl.grpo import GRPOLoss, PolicyLogprobs
    from xomni.train import TrainConfig, run_training
    text = "ABCDEFGH"
    cfg = load_rl_config({"group_size": 6, "rewards": {"ocr": 1.0}, "preset": "mini", "credit": "column", "beta": 0.0,
                          "exact_entropy": False, "sampling": dataclasses.asdict(SamplingConfig(min_p=0.0))})
    pool = _ColumnOcrPool(text)
    batch = [{"prompt": f'a white sign with the text "{text}" in black bold sans-serif letters',
              "ids": list(b"sign " + bytes([65 + i])), "text": text} for i in range(2)]
    loss_fn = GRPOLoss(cfg, tiny_ar(peaky=False), mock_decode, pool, (4, 16))
    pol = PolicyLogprobs(tiny_ar(peaky=False))
    loss, m = loss_fn(pol, batch, torch.Generator().manual_seed(0))
    A = loss_fn.cache.adv
    assert A.shape == (12, 64) and loss_fn.cache.targets == [text] * 12
    reads = loss_fn.cache.reads
    for g in range(2):
        for k, c in enumerate(pool.cols):
            same = len({reads[g * 6 + i][k] for i in range(6)}) == 1
            others = [kk for kk, cc in enumerate(pool.cols) if cc == c]
            if same and all(len({reads[g * 6 + i][kk] for i in range(6)}) == 1 for kk in others):
                assert torch.all(A[g * 6:(g + 1) * 6].view(6, 4, 16)[:, :, c] == 0)
    loss.backward()
    tc = TrainConfig(out_dir=str(tmp_path / "rl"), steps=8, batch_size=2, lr=5e-2, warmup_steps=0, min_lr_ratio=1.0,
                     weight_decay=0.0, log_every=1, ckpt_every=0, progress=False)
    loss_fn = GRPOLoss(cfg, tiny_ar(peaky=False), mock_decode, pool, (4, 16))
    run_training(tc, PolicyLogprobs(tiny_ar(peaky=False)), batch, loss_fn, collate=list)
    rewards = [json.loads(x)["reward"] for x in (tmp_path / "rl" / "log.jsonl").read_text().splitlines()]
    assert rewards[-1] > rewards[0] + 0.1 and max(rewards[:2]) < max(rewards[-2:]), rewards


def test_column_credit_config_errors():
    from xomni.errors import XomniError
    from xomni.rl.config import load_rl_config
    with pytest.raises(XomniError, match="credit must be"):
        load_rl_config({"credit": "token"})
    with pytest.raises(XomniError, match="needs rewards.ocr"):
        load_rl_config({"credit": "column", "rewards": {"aesthetic": 1.0}, "preset": "mini"})
    # tiny has 12 fonts and a size range: the layout cannot be recomputed from the text alone
    with pytest.raises(XomniError, match="one font, one size"):
        load_rl_config({"credit": "column", "preset": "tiny"})
    assert load_rl_config({"credit": "column", "preset": "mini"}).credit == "column"
    with pytest.raises(XomniError, match="not whole groups"):
        column_advantages(np.zeros((6, 16)), [0.0] * 6, G=4, h=4)


def test_column_advantages_scale_ignores_columns_the_group_agrees_on():
    """All 8 samples misread the last letter, one also the first: the advantage of that first column must not be
    shrunk by the last column's shared error (the divisor is the spread of the *centred* rewards)."""
    col = np.ones((8, 16))
    col[:, 12] = 0.0           # every sample: last letter wrong
    col[0, 3] = 0.0            # one sample: first letter wrong too
    whole = [6 / 8] + [7 / 8] * 7
    A = column_advantages(col, whole, G=8, h=1).view(8, 16)
    assert torch.all(A[:, 12] == 0)                       # nobody differs there
    assert A[0, 3] < -5.0 and torch.all(A[1:, 3] > 0)     # the one misread stands out (raw spread: -2.4)
