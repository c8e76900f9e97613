"""The sign preset's text distribution (xomni.data.signtext), its clean splits, and `xomni data targets`."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections import Counter

import pytest
from conftest import run_inproc

from xomni.data import signtext as ST
from xomni.data.presets import MINI, PRESETS, SIGN, TINY, get_preset
from xomni.data.scene import sample_rng, sample_scene
from xomni.data.words import SPLITS, longtext_excluded_words, split_words, wordlist_sha256


def _texts(split: str, n: int, seed: int = 0) -> list[tuple[str, str, str]]:
    return [ST.sample_sign_text(sample_rng(seed, split, i), split, SIGN) for i in range(n)]


@pytest.fixture(scope="module")
def train_texts():
    return _texts("train", 3000)


def test_sign_preset_is_the_mini_image_with_a_text_mix():
    assert PRESETS["sign"] is SIGN and get_preset("sign") is SIGN
    differ = {f.name for f in dataclasses.fields(SIGN) if getattr(SIGN, f.name) != getattr(MINI, f.name)}
    assert differ == {"name", "text_mix", "confusable_boost"}
    assert MINI.text_mix == () and TINY.text_mix == ()
    assert abs(sum(w for _, w in SIGN.text_mix) - 1) < 1e-9 and {k for k, _ in SIGN.text_mix} == set(ST.KINDS)
    from xomni.data.caption import parse_caption
    from xomni.metrics.ocr import resolve_region
    reg = resolve_region([], preset="sign")   # `xomni eval text --preset sign` reads the mini OCR region
    assert reg.box == MINI.ocr_region and reg.size == (128, 32)
    for i in range(20):
        m = sample_scene(SIGN, 0, "val", i)
        assert m["preset"] == "sign" and m["text_kind"] in ST.KINDS and (m["width"], m["height"]) == (128, 32)
        assert m["font"] == "dejavu-sans-bold" and parse_caption(m["caption"])["text"] == m["text"]


def test_kind_shares_shapes_and_punctuation(train_texts):
    n = len(train_texts)
    shares = Counter(k for _, _, k in train_texts)
    for kind, w in SIGN.text_mix:
        assert abs(shares[kind] / n - w) < 0.03, (kind, shares[kind] / n, w)
    by = {k: [t for t, _, kk in train_texts if kk == k] for k in ST.KINDS}
    assert all(len(t) <= SIGN.max_chars and t == t.strip() and '"' not in t for t, _, _ in train_texts)
    assert all(re.fullmatch(r"[A-Za-z]+", t) for t in by["word"])
    assert all(re.fullmatch(r"[0-9,.:/#\- a-z-]+", t) and re.search(r"[0-9]", t) for t in by["number"])
    assert all(re.fullmatch(r"-?\$?[0-9][0-9,.]*%?", t) for t in by["price"])
    assert all(re.fullmatch(r"[A-Z0-9-]+", t) and not re.search(r"[IOJ]", t) for t in by["code"])
    assert all(ST.code_readable(t) for t in by["code"])
    cases = Counter(c for t, c, k in train_texts if k == "word")
    assert set(cases) == {"lower", "title", "upper", "camel"} and min(cases.values()) > 0.08 * len(by["word"])
    punct = Counter(c for t, _, _ in train_texts for c in t if not c.isalnum() and c != " ")
    assert set(".:-'&!?/#%$,") <= set(punct)
    assert len({t for t, _, _ in train_texts}) > 0.85 * n   # a broad distribution, not a few favourites


def test_confusable_characters_are_boosted(train_texts):
    sign = [t for t, _, _ in train_texts]
    mini = [sample_scene(MINI, 0, "train", i)["text"] for i in range(1500)]
    ratio = ST.confusable_share(sign) / ST.confusable_share(mini)
    assert ratio > 1.8, ratio

    def freq(texts):
        chars = [c for t in texts for c in t if not c.isspace()]
        cnt = Counter(chars)
        return {c: cnt[c] / len(chars) for c in ST.CONFUSABLE}
    fs, fm = freq(sign), freq(mini)
    for c in ST.CONFUSABLE:   # every one of them more often than in the mini preset's text
        assert fs[c] > 1.1 * fm[c], (c, fs[c], fm[c])
    # the weight of a word: (1 + boost) per confusable character, up to the cap
    words, cum = ST._weighted_words("train", "upper", SIGN.confusable_boost)
    w = dict(zip(words, [cum[0]] + [b - a for a, b in zip(cum, cum[1:])]))
    b = 1 + SIGN.confusable_boost
    assert all(w[x] == b ** min(ST.WORD_MAX_BOOSTED, ST.confusable_count(x.upper())) for x in words[:3000])
    assert {w[x] for x in words} == {b ** k for k in range(ST.WORD_MAX_BOOSTED + 1)}
    assert ST.confusable_count("quiz") == 4 and ST.confusable_count("QUIZ") == 1   # q counts twice


def test_splits_are_clean_and_disjoint(train_texts):
    texts = {"train": [t for t, _, _ in train_texts]}
    texts.update({s: [t for t, _, _ in _texts(s, 600)] for s in ("val", "test")})
    own = {s: set(split_words(s)) for s in SPLITS}
    dictionary = ST._dictionary()
    folded = {s: {t.lower() for t in ts} for s, ts in texts.items()}
    assert not (folded["train"] & folded["val"]) and not (folded["train"] & folded["test"]) \
        and not (folded["val"] & folded["test"])
    for s, ts in texts.items():
        for t in ts:
            assert ST.string_split(t) == s, (s, t)
            for r in ST.letter_runs(t):
                assert r not in dictionary or r in own[s], (s, t, r)
    banned, excluded = ST.longtext_strings(), longtext_excluded_words()
    assert {"$4.50", "gate: b14", "b14", "23a", "00:47:23"} <= banned
    for t in texts["train"]:
        assert t.lower() not in banned and not any(x.strip(ST._STRIP).lower() in banned for x in t.split())
        assert not any(r in excluded for r in ST.letter_runs(t))
    # the rules themselves
    assert not ST.is_clean("B14", "train") and not ST.is_clean("$4.50", "train")
    val_word = split_words("val")[0]
    assert ST.is_clean(val_word, "val") and ST.is_clean(val_word.upper(), "val") and not ST.is_clean(val_word, "train")
    assert ST.letter_runs("TasteBuds 3") == {"tastebuds", "taste", "buds"}
    assert ST.case_of("B14") == "upper" and ST.case_of("$4.50") == "none" and ST.case_of("Gate 3") == "title"


# sha256 of the full metadata of mini (seed 3, 40 per split) and tiny (seed 3, 20 per split) scenes, computed with
# the code before the sign preset existed (same word list): mini and tiny must not change.
FROZEN = {"wordlist": "9f513f1ceadb6a01c5485b7dbdfd5118dc66cd70b59cae2851292112d4066a32",
          "mini": "3a02c73211da219991aa575455ed4a772bfbd9f96cd711cb5cb97ed48ba2661a",
          "tiny": "bfaad666da98428abafd04db966476bc014ca2fb9f3f15544ad2d354a49901a7"}


def test_mini_and_tiny_scenes_unchanged():
    if wordlist_sha256() != FROZEN["wordlist"]:
        pytest.skip("another word list than the one the hashes were computed with")
    for name, seed, n in (("mini", 3, 40), ("tiny", 3, 20)):
        h = hashlib.sha256()
        for split in SPLITS:
            for i in range(n):
                m = sample_scene(get_preset(name), seed, split, i)
                assert "text_kind" not in m
                h.update(json.dumps(m, sort_keys=True).encode())
        assert h.hexdigest() == FROZEN[name], name


def test_tesseract_reads_sign_renders():
    from xomni.data.render import render
    from xomni.metrics.ocr import exact_match, tesseract_batch
    metas = [sample_scene(SIGN, 0, "val", i) for i in range(80)]
    reads = tesseract_batch([render(m) for m in metas], region=SIGN.ocr_region)
    assert sum(exact_match(r, m["text"]) for r, m in zip(reads, metas)) >= 76


def test_targets_command(tmp_path, monkeypatch, capsys):
    from xomni.metrics.images import read_targets
    up = tmp_path / "upper.txt"
    r = run_inproc(["data", "targets", "--kind", "upper", "--n", "60", "--seed", "0", "-o", str(up)], monkeypatch,
                   capsys)
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    lines = read_targets(up)
    assert info["n"] == 60 and info["sha256"] == hashlib.sha256(up.read_bytes()).hexdigest()
    assert len(set(lines)) == 60 and all(re.fullmatch(r"[A-Z]{4,7}", s) for s in lines)
    assert all(ST.string_split(s) == "test" for s in lines)
    assert {len(s) for s in lines} == {4, 5, 6, 7}
    assert lines == ST.upper_targets(60, 0)                    # reproducible
    assert ST.upper_targets(60, 1) != lines                    # and seeded

    sg = tmp_path / "sign.txt"
    r = run_inproc(["data", "targets", "--kind", "sign", "--n", "40", "-o", str(sg)], monkeypatch, capsys)
    assert r.returncode == 0, r.stderr
    want: list[str] = []
    for i in range(json.loads(r.stdout)["samples_read"]):
        t = sample_scene(SIGN, 0, "test", i)["text"]
        if t not in want:
            want.append(t)
    assert read_targets(sg) == want and len(want) == 40   # the synth test split's first distinct texts

    for bad in (["--kind", "nope"], ["--kind", "upper", "--n", "0"], ["--kind", "upper", "--split", "dev"],
                ["--kind", "upper", "--seed", "-1"]):
        r = run_inproc(["data", "targets", *bad, "-o", str(tmp_path / "x.txt")], monkeypatch, capsys)
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and not r.stdout, (bad, r.stderr)
