"""OCR helpers: exact-match semantics, batched Tesseract (list file, form-feed split), RapidOCR, damaged renders."""
from __future__ import annotations

import pytest
from PIL import Image, ImageFilter

from xomni.metrics import ocr
from xomni.data.presets import TINY
from xomni.data.render import fit_font_size, place_text, render
from xomni.data.scene import sample_scene
from xomni.errors import XomniError

R = TINY.ocr_region


def _renders(n, split="test", seed=11):
    metas = [sample_scene(TINY, seed, split, i) for i in range(n)]
    return metas, [render(m) for m in metas]


def _rate(preds, metas):
    return sum(ocr.exact_match(p, m["text"]) for p, m in zip(preds, metas)) / len(metas)


def test_exact_match_semantics():
    assert ocr.normalize_ws("  OPEN \n 24\t HOURS ") == "OPEN 24 HOURS"
    assert ocr.exact_match(" OPEN  24 HOURS\n", "OPEN 24 HOURS")
    assert not ocr.exact_match("open 24 hours", "OPEN 24 HOURS")     # case counts
    assert not ocr.exact_match("OPEN 24 HOURS.", "OPEN 24 HOURS")    # punctuation counts
    assert not ocr.exact_match("OPEN24 HOURS", "OPEN 24 HOURS")


def test_preprocess_is_image_only_and_inverts_dark_backgrounds():
    m = {**sample_scene(TINY, 0, "val", 0), "shapes": []}
    light = render({**m, "background": "white", "background_rgb": [255, 255, 255], "text_color_rgb": [0, 0, 0]})
    dark = render({**m, "background": "black", "background_rgb": [0, 0, 0], "text_color_rgb": [255, 255, 255]})
    a, b = ocr.preprocess_for_ocr(light, R), ocr.preprocess_for_ocr(dark, R)
    assert a.mode == "L" and a.size == ((R[2] - R[0]) * 2 + 32, (R[3] - R[1]) * 2 + 32)
    assert a.getpixel((0, 0)) > 200 and b.getpixel((0, 0)) > 200       # both end up dark text on light
    assert ocr.preprocess_for_ocr(light, R).tobytes() == a.tobytes()


def test_tesseract_batch_reads_ground_truth_renders():
    metas, imgs = _renders(40)
    preds = ocr.tesseract_batch(imgs, region=R, workers=2)
    assert len(preds) == 40
    assert _rate(preds, metas) >= 0.9, [(m["text"], p) for p, m in zip(preds, metas)]


def test_tesseract_pages_stay_aligned_with_blank_images():
    metas, imgs = _renders(6)
    blank = Image.new("RGB", imgs[0].size, (255, 255, 255))
    mixed = [blank, imgs[0], blank, blank, imgs[1], imgs[2], blank, imgs[3], imgs[4], imgs[5], blank]
    preds = ocr.tesseract_batch(mixed, region=R, workers=1)
    assert len(preds) == len(mixed)
    got = [preds[i] for i in (1, 4, 5, 7, 8, 9)]
    assert _rate(got, metas) >= 5 / 6, list(zip(got, [m["text"] for m in metas]))
    assert ocr.tesseract_batch([]) == []


def test_ocr_fails_on_damaged_renders():
    """A check that cannot fail is a defect: blurred text and replaced text must not match."""
    metas, imgs = _renders(20)
    blurred = [im.filter(ImageFilter.GaussianBlur(4)) for im in imgs]
    assert _rate(ocr.tesseract_batch(blurred, region=R), metas) <= 0.2
    swapped = []  # same scene, different words drawn
    for m in metas:
        other = "WRONG WORDS" if m["text"] != "WRONG WORDS" else "OTHER"
        size = fit_font_size(m["font"], other, 26, 16, TINY.text_box)
        origin, _ = place_text(m["font"], size, other, TINY.text_box)
        swapped.append(render({**m, "text": other, "font_size": size, "text_origin": list(origin)}))
    preds = ocr.tesseract_batch(swapped, region=R)
    assert _rate(preds, metas) == 0.0
    assert sum(p == "WRONG WORDS" for p in preds) >= 16       # and it reads what is actually there


def test_rapidocr_reads_renders_and_rejects_blur():
    pytest.importorskip("rapidocr")
    metas, imgs = _renders(12)
    assert _rate(ocr.rapidocr_batch(imgs, region=R), metas) >= 0.8
    blurred = [im.filter(ImageFilter.GaussianBlur(4)) for im in imgs[:6]]
    assert _rate(ocr.rapidocr_batch(blurred, region=R), metas[:6]) <= 0.34


def test_missing_tesseract_binary_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("XOMNI_TESSERACT", "/nonexistent/tesseract")
    with pytest.raises(XomniError, match="tesseract-ocr"):
        ocr.tesseract_batch([Image.new("RGB", (10, 10))])
