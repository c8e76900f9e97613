"""Guards on the bundled model (xomni/pretrained/mini): it is there, small, safetensors only, and it still writes
text: Tesseract exact match >= 0.65 on 32 fixed test-split prompts, greedy AR decoding, decoder seed 0 (the test
prints the figure: `pytest -s -m slow tests/test_bundled.py`).
It also still reads: its own captions (the model's default, beam search 4) of 32 rendered test-split scenes match
the true caption exactly >= 0.7 of the time.
A regression in the sampler, decoder, tokenizer or the weights fails the build. Also runs the README's Python example."""
import json
import re
from pathlib import Path

import pytest

from xomni.pipeline import BUNDLED

pytestmark = [pytest.mark.slow, pytest.mark.smoke]  # CI runs it (make test); ~30 s on 1 core


def test_bundled_model_files():
    assert (BUNDLED / "model_index.json").is_file(), f"no bundled model in {BUNDLED}"
    files = [p for p in BUNDLED.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) < 40 * 10 ** 6  # the package stays under 40 MB
    weights = [p for p in files if p.suffix in (".safetensors", ".bin", ".pt", ".pth", ".pkl", ".ckpt")]
    assert weights and all(p.suffix == ".safetensors" for p in weights)
    index = json.loads((BUNDLED / "model_index.json").read_text())
    assert index["data_preset"] == "sign" and (BUNDLED / index["provenance"]).is_file()
    assert set(index["components"]) == {p.name for p in BUNDLED.iterdir() if p.is_dir()}


def test_bundled_model_writes_test_split_words():
    from xomni.data.presets import get_preset
    from xomni.data.scene import sample_scene
    from xomni.metrics.ocr import OcrRegion, ocr_images
    from xomni.metrics.textmetrics import exact_match
    from xomni.pipeline import Pipeline
    pipe = Pipeline.from_pretrained()
    preset = get_preset("mini")
    metas = [sample_scene(preset, 0, "test", i) for i in range(32)]
    # greedy AR decoding (top-k 1): one stochastic sample per prompt on 32 prompts swings by +-0.1 between seeds,
    # too noisy for a regression guard; the default sampling is measured by `xomni eval text` (README)
    images = pipe([m["caption"] for m in metas], num_images=1, seed=0, top_k=1)
    reads = ocr_images(images, region=OcrRegion(preset.ocr_region, (preset.width, preset.height)))
    acc = sum(exact_match(r, m["text"]) for r, m in zip(reads, metas)) / len(metas)
    print(f"bundled model: greedy exact match {acc:.3f} on 32 test-split prompts")  # pytest -s shows the figure
    assert acc >= 0.65, f"bundled model: exact match {acc:.3f} < 0.65 on 32 test-split prompts ({list(zip(reads, [m['text'] for m in metas]))[:8]})"


def test_bundled_model_captions_test_split_renders():
    from xomni.data.presets import get_preset
    from xomni.data.render import render
    from xomni.data.scene import sample_scene
    from xomni.pipeline import Pipeline
    pipe = Pipeline.from_pretrained()
    metas = [sample_scene(get_preset("mini"), 0, "test", i) for i in range(32, 64)]
    caps = pipe.caption([render(m) for m in metas])
    acc = sum(c == m["caption"] for c, m in zip(caps, metas)) / len(metas)
    print(f"bundled model: caption exact match {acc:.3f} on 32 test-split renders")
    assert acc >= 0.7, f"bundled model: caption exact match {acc:.3f} < 0.7 ({list(zip(caps, metas))[:3]})"


def test_readme_python_example(tmp_path, monkeypatch):
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = re.search(r"## Python API\n\n```python\n(.*?)```", readme, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    ns: dict = {}
    exec(compile(block, "README.md", "exec"), ns)
    assert len(ns["images"]) == 4 and all(im.size == (128, 32) for im in ns["images"])
    assert (tmp_path / "my_model" / "model_index.json").is_file()
