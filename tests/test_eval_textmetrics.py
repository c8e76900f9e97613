"""Exact match, word recall, CER and bootstrap intervals."""
import math

import numpy as np
import pytest

from xomni.metrics import textmetrics as tm


def test_exact_match_rules():
    assert tm.exact_match("  OPEN   24 HOURS \n", "OPEN 24 HOURS")
    assert not tm.exact_match("open 24 hours", "OPEN 24 HOURS")  # case counts
    assert not tm.exact_match("OPEN 24 HOURS.", "OPEN 24 HOURS")  # punctuation counts
    assert not tm.exact_match(None, "A")


def test_agrees_with_xomni_ocr_definition():
    ocr = pytest.importorskip("xomni.metrics.ocr")
    for p, t in [(" a  b ", "a b"), ("A b", "a b"), ("a\tb\n", "a b")]:
        assert tm.exact_match(p, t) == ocr.exact_match(p, t)


def test_word_recall_multiset():
    assert tm.word_recall("SALE TODAY", "BIG SALE TODAY") == pytest.approx(2 / 3)
    assert tm.word_recall("sale sale", "SALE") == 0.0          # case counts
    assert tm.word_recall("go", "go go") == 0.5                 # repeated target words must be read as often
    assert tm.word_recall("go go go extra", "go go") == 1.0     # extra words are free
    assert tm.word_recall("", "a b") == 0.0


def test_cer():
    assert tm.levenshtein("kitten", "sitting") == 3
    assert tm.cer("HELLO", "HELLO") == 0.0
    assert tm.cer("HELO", "HELLO") == pytest.approx(1 / 5)
    assert tm.cer("", "ABC") == 1.0
    assert tm.cer("ABCDEFGHIJ", "AB") == pytest.approx(8 / 2)  # can exceed 1
    with pytest.raises(ValueError):
        tm.score_pair("x", "   ")


def test_bootstrap_contains_mean_and_narrows():
    rng = np.random.default_rng(0)
    small = (rng.random(30) < 0.7).astype(float)
    big = (rng.random(3000) < 0.7).astype(float)
    lo_s, hi_s = tm.bootstrap_ci(small)
    lo_b, hi_b = tm.bootstrap_ci(big)
    assert lo_s <= small.mean() <= hi_s
    assert lo_b <= big.mean() <= hi_b
    assert (hi_b - lo_b) < (hi_s - lo_s) / 4
    assert tm.bootstrap_ci([1.0]) == [1.0, 1.0]
    assert all(math.isnan(v) for v in tm.bootstrap_ci([]))
    assert tm.bootstrap_ci(small) == tm.bootstrap_ci(small)  # fixed seed: reproducible


def test_aggregate_and_breakdowns():
    rows = tm.score_rows(["HELLO", "WORLD", "x"], ["HELLO", "WORLD!", "LONGER TEXT HERE"],
                         [{"font": "a"}, {"font": "a"}, {"font": "b"}])
    agg = tm.aggregate(rows)
    assert agg["n"] == 3 and agg["exact_match"] == pytest.approx(1 / 3)
    assert set(agg["ci95"]) == {"exact_match", "word_recall", "cer"}
    by_font = tm.breakdown(rows, "font")
    assert by_font["a"]["n"] == 2 and by_font["b"]["exact_match"] == 0.0
    by_len = tm.breakdown(rows, "length_bucket")
    assert list(by_len) == [k for k in tm.LENGTH_ORDER if k in by_len]


def test_caption_scores_exact_and_per_attribute():
    from xomni.eval.captioning import caption_scores
    t1 = 'a white poster with the text "HELLO" in black sans-serif letters'
    t2 = 'a black banner with the text "AROMA" in white bold serif letters'
    wrong_text = t2.replace("AROMA", "AROMAS")
    res = caption_scores([t1, wrong_text, "garbage"], [t1, t2, t2])
    assert res["n"] == 3 and abs(res["caption_exact"] - 1 / 3) < 1e-9
    assert abs(res["text_exact"] - 1 / 3) < 1e-9  # only the first caption has the right string
    assert abs(res["per_attribute"]["background"] - 2 / 3) < 1e-9  # the garbage caption has no attributes
