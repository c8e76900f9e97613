"""Captioning decoders (greedy and beam search) against full-sequence forward passes without a KV cache."""
import pytest
import torch

from xomni.ar.caption import caption_codes, caption_codes_scored
from xomni.ar.model import ARConfig, UnifiedAR


def _model(seed=0, peak=30.0):
    torch.manual_seed(seed)
    cfg = ARConfig(hidden_size=64, n_layers=2, n_heads=4, n_kv_heads=2, intermediate_size=128, max_seq_len=64,
                   image_vocab=50, max_grid=8)
    m = UnifiedAR(cfg)
    with torch.no_grad():  # a peaky text head, so that greedy and beam search can disagree
        m.text_head.weight.mul_(peak)
    return m.eval()


def _codes(B=3, seed=1):
    return torch.randint(0, 50, (B, 2, 3), generator=torch.Generator().manual_seed(seed))


def _prefix(m, codes_HW):
    lay = m.layout
    h, w = codes_HW.shape
    return [lay.bos_id] + lay.image_header(h, w) + (codes_HW.reshape(-1) + lay.image_offset).tolist() + [lay.eom]


@torch.no_grad()
def _next_logprobs(m, ids):
    """Text log-probs of the next token after `ids`, from one full forward (no cache)."""
    h, _ = m.hidden(torch.tensor([ids]))
    logits = m.text_logits(h[:, -1])[0]
    logits[m.layout.n_text:] = float("-inf")
    return torch.log_softmax(logits, -1)


def _score(m, codes_HW, caption, ended):
    ids, total = _prefix(m, codes_HW), 0.0
    for t in caption + ([m.layout.eos_id] if ended else []):
        total += _next_logprobs(m, ids)[t].item()
        ids = ids + [t]
    return total


def test_greedy_matches_a_cache_free_argmax_loop():
    m, codes = _model(), _codes()
    got = caption_codes(m, codes, max_new_tokens=6)
    for b in range(codes.shape[0]):
        ids, want = _prefix(m, codes[b]), []
        for _ in range(6):
            t = int(_next_logprobs(m, ids).argmax())
            if t == m.layout.eos_id:
                break
            want.append(t)
            ids = ids + [t]
        assert got[b] == want


@pytest.mark.parametrize("nb", [1, 4])
def test_beam_scores_are_the_sequences_log_probabilities(nb):
    """The KV cache is reordered with the beams: each returned score equals a fresh forward's log-probability
    (8 steps at this peakiness make the beams swap ancestors; without the reordering image 2 is off by 0.45)."""
    m, codes = _model(peak=10.0), _codes()
    caps, scores = caption_codes_scored(m, codes, max_new_tokens=8, num_beams=nb)
    for b in range(codes.shape[0]):
        ended = len(caps[b]) < 8
        assert abs(_score(m, codes[b], caps[b], ended) - scores[b]) <= 1e-3


def test_wide_beam_finds_the_most_probable_two_token_caption():
    """With one beam per vocabulary entry, two steps of beam search are exhaustive; greedy is not always optimal."""
    m, codes = _model(), _codes(B=4, seed=3)
    lay, V = m.layout, m.layout.n_text
    caps, scores = caption_codes_scored(m, codes, max_new_tokens=2, num_beams=V)
    _, greedy = caption_codes_scored(m, codes, max_new_tokens=2, num_beams=1)
    gaps = []
    for b in range(codes.shape[0]):
        pre = _prefix(m, codes[b])
        lp1 = _next_logprobs(m, pre)
        best, best_seq = lp1[lay.eos_id].item(), []
        for a in range(V):
            if a == lay.eos_id:
                continue
            lp2 = _next_logprobs(m, pre + [a])
            t = int(lp2.argmax())
            s = lp1[a].item() + lp2[t].item()
            if s > best:
                best, best_seq = s, [a] + ([] if t == lay.eos_id else [t])
        assert abs(scores[b] - best) <= 1e-3 and caps[b] == best_seq
        assert greedy[b] <= scores[b] + 1e-4
        gaps.append(scores[b] - greedy[b])
    assert max(gaps) > 1e-3, "the test model never separates beam search from greedy: make its head peakier"


def test_bad_beam_count_is_refused():
    with pytest.raises(ValueError, match="num_beams"):
        caption_codes(_model(), _codes(), num_beams=0)
