"""`xomni eval all`: HTML report + metrics.json on a few ground-truth renders (with a damaged copy)."""
import json

from PIL import ImageFilter


def test_report(tmp_path):
    from xomni.data.io import write_imagefolder
    from xomni.data.presets import get_preset
    from xomni.data.render import render
    from xomni.data.scene import sample_scene
    from xomni.eval.report import build_report
    p = get_preset("tiny")
    metas = [sample_scene(p, 0, "val", i) for i in range(10)]
    write_imagefolder(tmp_path / "ref", [(render(m), m) for m in metas])
    # "generated": half of them blurred beyond reading
    gen = [(render(m).filter(ImageFilter.GaussianBlur(4)) if i % 2 else render(m), m) for i, m in enumerate(metas)]
    write_imagefolder(tmp_path / "gen", gen)
    res = build_report(str(tmp_path / "gen"), str(tmp_path / "out"), reference=str(tmp_path / "ref"), fid=False)
    assert res["fid"] is None
    assert res["n"] == 10 and res["n_skipped"] == 0
    assert 0.3 <= res["exact_match"] <= 0.7
    page = (tmp_path / "out" / "index.html").read_text()
    for needle in ("Summary", "By text length", "By font", "Failures", "by_length.png", "by_font.png", "reference"):
        assert needle in page
    m = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert m["text"]["n"] == 10 and "by_font" in m["text"] and "by_length" in m["text"]
    imgs = list((tmp_path / "out" / "img").glob("*.png"))
    assert any(f.name.startswith("r-") for f in imgs) and any(f.name.startswith("g-") for f in imgs)
    # every <img> in the page points to a file that exists (self-contained directory)
    import re
    for src in re.findall(r"src='([^']+)'", page):
        assert (tmp_path / "out" / src).is_file(), src
