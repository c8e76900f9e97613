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


def _prefix(m, codes_HW):  # written out here, independently of VocabLayout.i2t_prefix
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


def _without_eos(m):
    """The same model, but its eos is a masked id: captions never end, so every beam runs to max_new_tokens and
    the beams swap ancestors (the KV cache must follow them)."""
    import dataclasses
    m.layout = dataclasses.replace(m.layout, eos_id=m.layout.n_text)
    return m


@pytest.mark.parametrize("nb", [1, 4])
@pytest.mark.parametrize("ends", [True, False])
def test_beam_scores_are_the_sequences_log_probabilities(nb, ends):
    """Each returned score equals a fresh forward's log-probability (both beam cases fail when the cache is not
    reordered with the beams)."""
    m, codes = (_model(peak=30.0), _codes()) if ends else (_without_eos(_model(peak=10.0)), _codes())
    caps, scores = caption_codes_scored(m, codes, max_new_tokens=8, num_beams=nb)
    for b in range(codes.shape[0]):
        ended = len(caps[b]) < 8
        assert abs(_score(m, codes[b], caps[b], ended) - scores[b]) <= 1e-3
    if not ends:
        assert all(len(c) == 8 for c in caps)


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


class _TableModel:
    """A fake AR model whose next-token distribution is a hand-written table over the caption so far (the cache
    holds each row's caption; `reorder_cache` / `batch_repeat_interleave` must move it with the beams)."""

    def __init__(self, table, eos=3, max_seq_len=64):
        import math
        from types import SimpleNamespace
        self.table = {k: torch.tensor([math.log(max(p, 1e-9)) for p in v]) for k, v in table.items()}
        self.layout = SimpleNamespace(eos_id=eos, n_text=4, i2t_prefix=lambda codes: [0])
        self.cfg = SimpleNamespace(max_seq_len=max_seq_len)
        self._keys: list[tuple] = []

    def parameters(self):
        return iter([torch.zeros(1)])

    def eval(self):
        return self

    class Cache:
        def __init__(self, rows):
            self.rows = rows

        def batch_repeat_interleave(self, n):
            self.rows = [list(r) for r in self.rows for _ in range(n)]

        def reorder_cache(self, idx):
            self.rows = [list(self.rows[i]) for i in idx.tolist()]

    def hidden(self, ids, position_ids=None, cache=None, use_cache=True):
        if cache is None:  # the prefix: captions start empty
            cache = self.Cache([[] for _ in range(ids.shape[0])])
        else:
            for r, t in zip(cache.rows, ids[:, -1].tolist()):
                r.append(t)
        self._keys = [tuple(r) for r in cache.rows]
        h = torch.arange(len(self._keys), dtype=torch.float32)[:, None, None].expand(-1, ids.shape[1], 1)
        return h, cache

    def text_logits(self, h_BD):
        return torch.stack([self.table.get(self._keys[int(i)], torch.zeros(4)) for i in h_BD[:, 0]])


def test_beam_search_keeps_a_finished_caption_that_live_beams_outscored_for_a_while():
    # A=0 B=1 C=2 eos=3. "A"+eos scores 0.3 * 0.67 = 0.2; "BA" and "BB" score 0.35 each at step 2 and so push
    # "A"+eos out of two beams, then decay to 0.35 / 3 per step; the best caption is "A"
    u = [1 / 3, 1 / 3, 1 / 3, 0.0]
    table = {(): [0.3, 0.7, 0.0, 0.0], (0,): [0.11, 0.11, 0.11, 0.67], (1,): [0.5, 0.5, 0.0, 0.0]}
    for a in (0, 1):
        for b in range(3):
            table[(1, a, b)] = u
        table[(1, a)] = u
    m = _TableModel(table)
    caps, scores = caption_codes_scored(m, torch.zeros(1, 1, 1, dtype=torch.long), max_new_tokens=5, num_beams=2)
    assert caps == [[0]] and scores[0] == pytest.approx(float(torch.tensor(0.3 * 0.67).log()), abs=1e-4)
    greedy, _ = caption_codes_scored(m, torch.zeros(1, 1, 1, dtype=torch.long), max_new_tokens=5, num_beams=1)
    assert len(greedy[0]) == 5 and greedy[0][:2] in ([1, 0], [1, 1])  # greedy follows B and is truncated


@pytest.mark.parametrize("index,arg,ok", [
    ({}, None, 1), ({"caption": {"num_beams": 4}}, None, 4), ({"caption": {"num_beams": 4}}, 1, 1),
    ({"caption": {"num_beams": "x"}}, None, None), ({"caption": {"num_beams": None}}, None, None),
    ({"caption": 4}, None, 4), ({}, 4.7, None), ({}, True, None), ({}, 65, None), ({}, 0, None),
])
def test_num_beams_from_argument_or_model_index(index, arg, ok):
    from types import SimpleNamespace

    from xomni.errors import XomniError
    from xomni.pipeline import Pipeline
    pipe = SimpleNamespace(index=index, path=None)
    if ok is None:
        with pytest.raises(XomniError, match="must be an integer from 1 to 64"):
            Pipeline.check_num_beams(pipe, arg)
    else:
        assert Pipeline.check_num_beams(pipe, arg) == ok


def test_training_length_is_the_longer_sequence_format():
    """training_length (the AR trainer's and the recipe's context check) = the captioning sequence's length, which is
    the t2i one's plus <eos>, for any grid and text length."""
    from xomni.ar.vocab import VocabLayout, training_length
    lay = VocabLayout(n_text=260, image_vocab=64, bos_id=1, eos_id=2)
    for h, w, n in ((4, 16, 7), (4, 32, 1), (2, 3, 0)):
        codes, text = torch.zeros(h, w, dtype=torch.long), list(range(10, 10 + n))
        i2t, _ = lay.i2t_sequence(codes, text)
        t2i, _ = lay.t2i_sequence(text, codes)
        assert training_length(n, h, w) == len(i2t) == len(t2i) + 1
