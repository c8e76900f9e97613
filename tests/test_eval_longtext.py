"""LongText-Bench metric on hand-made cases, and bench-file validation."""
import json

import pytest

from xomni.errors import XomniError
from xomni.eval.longtext import run_longtext
from xomni.metrics import longtext as L

from conftest import BENCH_EN as BENCH  # noqa: E402


def test_units_english_normalisation():
    assert L.units("FRESH BREWS, EVERY  MORNING!", "en") == ["fresh", "brews", "every", "morning"]
    assert L.units("CENTRAL PARK - 2 BLOCKS", "en") == ["central", "park", "2", "blocks"]
    assert L.units("Wi-Fi & e-mail: 24/7", "en") == ["wifi", "email", "247"]
    assert L.units("  \n\t ", "en") == []


def test_units_chinese_characters():
    assert L.units("本地烘焙，始于1998", "zh") == list("本地烘焙始于1998")
    assert L.units("中央公园 - 2公里", "zh") == list("中央公园2公里")
    assert L.units("ＡＢＣ１", "zh") == list("ABC1")  # full-width forms folded


def test_score_image_basic_cases():
    # exact read
    assert L.score_image(["Hello World"], "hello world", "en") == (2, 2)
    # case and punctuation do not matter
    assert L.score_image(["OPEN 24 HOURS!"], "open, 24 hours", "en") == (3, 3)
    # extra OCR text is not penalised
    assert L.score_image(["big sale"], "huge big winter sale today", "en") == (2, 2)
    # missing word
    assert L.score_image(["big sale now"], "big now", "en") == (2, 3)
    # empty OCR
    assert L.score_image(["big sale"], "", "en") == (0, 2)


def test_repeated_words_are_a_multiset():
    # target has "every" twice: OCR with one "every" matches only one of them
    assert L.score_image(["EVERY MORNING, EVERY DAY"], "every morning day", "en") == (3, 4)
    assert L.score_image(["EVERY MORNING, EVERY DAY"], "every every every morning day", "en") == (4, 4)
    # several target strings of one image are pooled into one multiset
    assert L.score_image(["sale", "sale"], "sale", "en") == (1, 2)


def test_chinese_characters_multiset():
    assert L.score_image(["每日新鲜烘焙"], "每日新鲜", "zh") == (4, 6)
    assert L.score_image(["焙焙"], "焙", "zh") == (1, 2)
    assert L.score_image(["中央公园 - 2公里"], "中央 公园2 公里 附近", "zh") == (7, 7)


def test_pooled_score_is_not_mean_of_ratios():
    pairs = [(["a b c d"], "a b c d"), (["x y"], "")]  # 4/4 and 0/2
    r = L.pooled_score(pairs, "en")
    assert r["score"] == pytest.approx(4 / 6)
    assert r["matched"] == 4 and r["target_units"] == 6 and r["n"] == 2


def test_all_hallucination_keywords_removed():
    ocr = "addCriterion big addCriterion sale addCriterion"
    assert L.score_image(["addCriterion"], ocr, "en", keywords=["addCriterion"]) == (0, 1)
    # every occurrence goes, not only the last
    assert "addcriterion" not in L.units(L.strip_keywords(ocr, ["addCriterion"]), "en")


def test_subset_selection_and_labels():
    recs = L.load_bench(BENCH)
    assert len(recs) == 160
    full = L.select_units(recs)
    assert len(full) == 160 and sum(len(u["targets"]) for u in full) == 740
    sub = L.select_units(recs, max_chars=16)
    assert sub and all(len(u["targets"]) == 1 and len(u["targets"][0].strip()) <= 16 for u in sub)
    assert L.label(16, 0) == {"subset": "max_chars=16", "official": False}
    assert L.label(None, 0) == {"subset": "full", "official": True}
    assert L.label(None, 3)["official"] is False
    assert L.detect_lang(recs) == "en"


def test_bad_bench_files(tmp_path):
    p = tmp_path / "b.jsonl"
    p.write_text("not json\n")
    with pytest.raises(XomniError, match="not JSON"):
        L.load_bench(p)
    p.write_text(json.dumps({"prompt_id": 1, "prompt": "x"}) + "\n")
    with pytest.raises(XomniError, match="missing field"):
        L.load_bench(p)
    p.write_text(json.dumps({"prompt_id": 1, "prompt": "x", "text": []}) + "\n")
    with pytest.raises(XomniError, match="non-empty list"):
        L.load_bench(p)
    p.write_text("")
    with pytest.raises(XomniError, match="no prompts"):
        L.load_bench(p)
    with pytest.raises(XomniError, match="not found"):
        L.load_bench(tmp_path / "missing.jsonl")


def test_bench_prompts_ship_with_the_package(tmp_path):
    """A fresh clone (or a wheel) has the prompts, their licence and attribution; `run_longtext` reads them by
    default."""
    en, zh = L.load_bench(L.BENCH_EN), L.load_bench(L.BENCH_ZH)
    assert len(en) == len(zh) == 160 and sum(len(r["text"]) for r in en) == 740
    assert L.detect_lang(en) == "en" and L.detect_lang(zh) == "zh"
    assert (L.BENCH_DIR / "LICENSE").read_text().lstrip().startswith("Apache License")
    assert "Apache" in (L.BENCH_DIR / "README.md").read_text()
    from PIL import Image
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    with pytest.raises(XomniError, match="but 160 benchmark units"):  # no --bench: the shipped English prompts
        run_longtext(images=str(tmp_path))
