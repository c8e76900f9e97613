"""Text metrics on ground-truth renders (high) and on damaged renders (low): the damaged cases must fail."""
import json

import pytest
from PIL import Image, ImageFilter

from xomni.errors import XomniError
from xomni.eval import text as T
from xomni.metrics.images import ImageSource, Item, read_targets
from xomni.metrics.ocr import resolve_region
from xomni.metrics.text import pairs_from_images, score_items

N = 24


@pytest.fixture(scope="module")
def gt():
    from xomni.data.presets import get_preset
    from xomni.data.render import render
    from xomni.data.scene import sample_scene
    p = get_preset("tiny")
    metas = [sample_scene(p, 0, "val", i) for i in range(N)]
    return [Item(m["key"], render(m), m) for m in metas]


def _score(items, targets):
    reg = resolve_region([it.meta for it in items])
    return score_items(items, targets, region=reg, n_boot=200)


def test_ground_truth_scores_high(gt):
    res, rows = _score(gt, [it.meta["text"] for it in gt])
    assert res["n"] == N and res["n_skipped"] == 0
    assert res["exact_match"] >= 0.9 and res["cer"] <= 0.05
    assert res["ci95"]["exact_match"][0] <= res["exact_match"] <= res["ci95"]["exact_match"][1]
    assert "by_font" in res and "by_length" in res
    assert res["ocr"]["region"]["box"] == [4, 17, 252, 47]


def test_heavy_blur_fails(gt):
    blurred = [Item(it.key, it.image.filter(ImageFilter.GaussianBlur(4)), it.meta) for it in gt]
    res, _ = _score(blurred, [it.meta["text"] for it in gt])
    assert res["exact_match"] <= 0.3 and res["cer"] >= 0.4


def test_wrong_text_fails(gt):
    targets = [gt[(i + 1) % N].meta["text"] for i in range(N)]  # each image scored against another's text
    res, _ = _score(gt, targets)
    assert res["exact_match"] <= 0.1 and res["word_recall"] <= 0.2 and res["cer"] >= 0.5


def test_unreadable_image_is_counted(gt):
    items = gt[:4] + [Item("broken", None, {"key": "broken"}, "OSError: truncated")]
    res, rows = _score(items, [it.meta.get("text", "x") for it in items])
    assert res["n"] == 4 and res["n_skipped"] == 1
    assert res["skipped"][0]["key"] == "broken"
    assert any(r.get("skipped") for r in rows)


def test_image_dir_with_targets_any_mode(tmp_path, gt):
    # plain directory (no metadata): sorted file names map to target lines; odd modes/sizes are accepted
    for i, it in enumerate(gt[:3]):
        im = it.image
        im = {0: im.convert("L"), 1: im.convert("RGBA"), 2: im.resize((512, 128))}[i]
        im.save(tmp_path / f"{i:02d}.png")
    (tmp_path / "03.png").write_bytes(b"not a png")
    (tmp_path / "t.txt").write_text("\n".join(it.meta["text"] for it in gt[:4]) + "\n")
    items, tg = pairs_from_images(str(tmp_path), str(tmp_path / "t.txt"))
    assert [it.key for it in items] == ["00", "01", "02", "03"]
    assert items[3].image is None and items[0].image.mode == "RGB"
    res, _ = score_items(items, tg, region=resolve_region([], preset="tiny"), n_boot=100)
    assert res["n"] == 3 and res["n_skipped"] == 1 and res["exact_match"] >= 2 / 3


def test_count_mismatch_and_missing_metadata(tmp_path, gt):
    gt[0].image.save(tmp_path / "a.png")
    (tmp_path / "t.txt").write_text("ONE\nTWO\n")
    with pytest.raises(XomniError, match="1 images .* 2 lines"):
        pairs_from_images(str(tmp_path), str(tmp_path / "t.txt"))
    with pytest.raises(XomniError, match="no metadata"):
        pairs_from_images(str(tmp_path), None)
    (tmp_path / "e.txt").write_text("\n\n")
    with pytest.raises(XomniError, match="empty"):
        read_targets(tmp_path / "e.txt")


def test_imagefolder_metadata_targets(tmp_path, gt):
    from xomni.data.io import write_imagefolder
    write_imagefolder(tmp_path / "f", [(it.image, it.meta) for it in gt[:5]])
    src = ImageSource(tmp_path / "f")
    assert src.has_meta and len(src) == 5
    items, tg = pairs_from_images(str(tmp_path / "f"), None)
    assert tg == [it.meta["text"] for it in gt[:5]]


def test_model_path_fails_clearly(tmp_path):
    (tmp_path / "t.txt").write_text("HELLO\n")
    with pytest.raises(XomniError, match="model_index.json"):
        T.items_from_model(str(tmp_path), str(tmp_path / "t.txt"), 1, 0)
    (tmp_path / "model_index.json").write_text(json.dumps({}))
    try:
        import xomni.pipeline  # noqa: F401
    except ImportError:
        with pytest.raises(XomniError, match="xomni.pipeline"):
            T.items_from_model(str(tmp_path), str(tmp_path / "t.txt"), 1, 0)


class FakePipe:
    """Stands in for xomni.pipeline.Pipeline: draws the quoted text of the caption in black on white."""
    index = {"charset": " \"-ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcdefghijklmnopqrstuvwxyz"}
    prompt_template = 'a white poster with the text "{text}" in black sans-serif letters'
    charset = index["charset"]
    calls = []

    def caption_for_text(self, text):
        return self.prompt_template.format(text=text)

    def sampling_config(self, **overrides):
        from xomni.ar.sampler import SamplingConfig
        return SamplingConfig(**{k: v for k, v in overrides.items() if v is not None})

    def __call__(self, prompts, num_images=1, seed=0, **sampling):
        from PIL import ImageDraw, ImageFont

        from xomni.data.fonts import font_path
        self.calls.append((len(prompts), num_images, seed))
        FakePipe.sampling = sampling
        font = ImageFont.truetype(font_path("dejavu-sans"), 22)
        out = []
        for p in prompts:
            for _ in range(num_images):
                im = Image.new("RGB", (256, 64), "white")
                ImageDraw.Draw(im).text((8, 18), p.split('"')[1], font=font, fill="black")
                out.append(im)
        return out


def test_model_path_with_fake_pipeline(tmp_path, monkeypatch):
    from xomni.eval import longtext as L
    monkeypatch.setattr(T, "load_pipeline", lambda *a, **k: FakePipe())
    monkeypatch.setattr(L, "load_pipeline", lambda *a, **k: FakePipe())
    FakePipe.calls = []
    (tmp_path / "t.txt").write_text("HELLO\nOPEN 24\nsale now\n")
    items, tg = T.items_from_model("m", str(tmp_path / "t.txt"), samples=2, seed=5, batch=2,
                                   sampling={"temperature": 0.5, "top_k": None})
    assert [it.meta["text"] for it in items] == ["HELLO", "HELLO", "OPEN 24", "OPEN 24", "sale now", "sale now"]
    assert FakePipe.calls == [(2, 2, 5), (1, 2, 6)]  # chunk c of 2 strings: seed 5 + c
    # the resolved settings (override + the model's defaults) are what the pipeline got and what the metadata says
    assert FakePipe.sampling == items[0].meta["sampling"] == {"temperature": 0.5, "top_k": 0, "top_p": 1.0,
                                                              "min_p": 0.03, "cfg_scale": 1.0}
    res, _ = score_items(items, tg, region=None, n_boot=50)
    assert res["n"] == 6 and res["exact_match"] >= 5 / 6
    (tmp_path / "bad.txt").write_text("CAFÉ\n")
    with pytest.raises(XomniError, match="cannot draw"):
        T.items_from_model("m", str(tmp_path / "bad.txt"), 1, 0)
    # --unsupported zero: that string gets no image and scores as a failure in its place (paired lists stay aligned)
    (tmp_path / "mixed.txt").write_text("HELLO\nCAFÉ\nOPEN 24\n")
    FakePipe.calls = []
    items, tg = T.items_from_model("m", str(tmp_path / "mixed.txt"), 1, 0, batch=8, unsupported="zero")
    assert FakePipe.calls == [(2, 1, 0)] and items[1].image is None and items[1].meta["unsupported"] == "É"
    res, rows = score_items(items, tg, region=None, n_boot=50)
    assert res["n"] == 3 and res["n_unsupported"] == 1 and res["n_skipped"] == 0
    assert [r["target"] for r in rows] == ["HELLO", "CAFÉ", "OPEN 24"]
    assert rows[1]["exact_match"] == 0 and rows[1]["cer"] == 1.0 and rows[0]["exact_match"] == 1
    # longtext subset: strings with characters outside the charset score 0, never dropped
    bench = tmp_path / "b.jsonl"
    bench.write_text("\n".join(json.dumps(r) for r in [
        {"prompt_id": 0, "prompt": "p", "text": ["OPEN NOW", "a very long string that is dropped"]},
        {"prompt_id": 1, "prompt": "p", "text": ["Café!"]}]) + "\n")
    res, rows = L.run_longtext(str(bench), model="m", max_chars=10, region="none")
    assert res["n_kept"] == 2 and res["n_total"] == 3 and res["n_unsupported"] == 1
    assert res["target_units"] == 3 and res["matched"] == 2 and res["official"] is False
