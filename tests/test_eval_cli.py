"""`xomni eval ...` through the real CLI: bad input -> one line on stderr and exit 2; small happy paths."""
import json
import subprocess
import sys

import pytest
from conftest import BENCH_EN, run_inproc


def run(args, env):
    return subprocess.run([sys.executable, "-m", "xomni.cli", *args], capture_output=True, text=True, env=env)


def assert_one_line_error(r, *needles):
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    for n in needles:
        assert n in lines[0], lines[0]
    assert r.stdout == ""


def test_bad_inputs_exit_2_subprocess(tmp_path, cli_env):
    bench = tmp_path / "bench.jsonl"
    bench.write_text(json.dumps({"prompt_id": 0, "text": ["A"]}) + "\n")
    assert_one_line_error(run(["eval", "longtext", "--bench", str(bench), "--images", str(tmp_path)], cli_env),
                          "missing field", "prompt")
    assert_one_line_error(run(["eval", "text", "--images", str(tmp_path / "nope")], cli_env), "not found")


def test_bad_inputs_exit_2(tmp_path, monkeypatch, capsys):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    bench = tmp_path / "bench.jsonl"
    bench.write_text(json.dumps({"prompt_id": 0, "text": ["A"]}) + "\n")
    notjson = tmp_path / "nj.jsonl"
    notjson.write_text("{oops\n")
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    from PIL import Image
    Image.new("RGB", (64, 32), "white").save(imgs / "a.png")
    cases = [
        (["eval", "text", "--images", str(tmp_path / "nope")], ["not found"]),
        (["eval", "text", "--images", str(imgs), "--targets", str(empty)], ["empty"]),
        (["eval", "text", "--images", str(imgs)], ["--targets"]),
        (["eval", "text", "--model", str(tmp_path), "--targets", str(empty)], []),
        (["eval", "longtext", "--bench", str(bench), "--images", str(imgs)], ["missing field", "prompt"]),
        (["eval", "longtext", "--bench", str(notjson), "--images", str(imgs)], ["not JSON"]),
        (["eval", "compliance", "--images", str(imgs), "--judge", str(tmp_path / "nojudge")], ["judge"]),
        (["eval", "fid", "--real", str(imgs), "--fake", str(tmp_path / "nope")], ["not found"]),
        (["eval", "judge", "--judge", str(imgs), "--data", str(imgs)], ["not a judge"]),
        (["eval", "fid-sanity", "--data", str(imgs)], []),
        (["eval", "all", "--images", str(imgs), "-o", str(tmp_path / "rep")], ["--targets"]),
        (["eval", "longtext", "--bench", str(bench), "--images", str(imgs), "--model", str(imgs)], []),
    ]
    for args, needles in cases:
        assert_one_line_error(run_inproc(args, monkeypatch, capsys), *needles)


def test_text_and_longtext_happy_paths(tmp_path, cli_env):
    from PIL import Image, ImageDraw, ImageFont

    from xomni.data.fonts import font_path
    from xomni.metrics.longtext import load_bench, select_units
    units = select_units(load_bench(BENCH_EN), max_chars=6)
    d = tmp_path / "lt"
    d.mkdir()
    font = ImageFont.truetype(font_path("dejavu-sans"), 24)
    for i, u in enumerate(units):
        im = Image.new("RGB", (256, 64), "white")
        ImageDraw.Draw(im).text((10, 18), u["targets"][0], font=font, fill="black")
        im.save(d / f"{i:04d}.png")
    r = run(["eval", "longtext", "--bench", BENCH_EN,
             "--images", str(d), "--max-chars", "6", "--region", "none", "--json", str(tmp_path / "lt.json")], cli_env)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["subset"] == "max_chars=6" and res["official"] is False
    assert res["n_kept"] == len(units) and res["n_total"] == 740 and res["score"] >= 0.9
    assert json.loads((tmp_path / "lt.json").read_text())["score"] == res["score"]
    # eval text on the same images with a targets file, per-image output
    (tmp_path / "t.txt").write_text("\n".join(u["targets"][0] for u in units) + "\n")
    r = run(["eval", "text", "--images", str(d), "--targets", str(tmp_path / "t.txt"), "--region", "none",
             "--per-image", str(tmp_path / "per.jsonl")], cli_env)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    for k in ("n", "n_skipped", "exact_match", "word_recall", "cer", "ci95"):
        assert k in res
    assert set(res["ci95"]) == {"exact_match", "word_recall", "cer"}
    assert res["n"] == len(units) and res["exact_match"] >= 0.8
    assert len((tmp_path / "per.jsonl").read_text().splitlines()) == len(units)


def test_generated_prompts_carry_the_preset_so_eval_text_reads_its_region(tmp_path, monkeypatch, capsys):
    """`generate --prompts` on the bundled model writes the model's data preset into metadata.jsonl, so that
    `eval text --images G` reads the sign's OCR region (the whole image would include the frame)."""
    from xomni.pipeline import BUNDLED
    (tmp_path / "p.txt").write_text('a white poster with the text "OPEN" in black bold sans-serif letters\n')
    r = run_inproc(["generate", "--prompts", str(tmp_path / "p.txt"), "--n", "1", "--steps", "2",
                    "-o", str(tmp_path / "G")], monkeypatch, capsys)
    assert r.returncode == 0, r.stderr
    meta = json.loads((tmp_path / "G" / "metadata.jsonl").read_text().splitlines()[0])
    preset = json.loads((BUNDLED / "model_index.json").read_text())["data_preset"]
    assert meta["preset"] == preset and meta["text"] == "OPEN"
