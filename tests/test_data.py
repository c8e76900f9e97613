"""Dataset stage: determinism, word splits, caption grammar, storage formats, import, CLI errors."""
from __future__ import annotations

import io
import json
import random
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from conftest import run_inproc
from PIL import Image

from xomni.data import words as W
from xomni.data.caption import make_caption, parse_caption
from xomni.data.io import ShardWriter, open_dataset, write_imagefolder
from xomni.data.palette import contrast_ratio
from xomni.data.presets import TINY
from xomni.data.render import render
from xomni.data.scene import sample_scene
from xomni.data.synth import synth
from xomni.errors import XomniError
from xomni.metrics.longtext import BENCH_DIR

REPO = Path(__file__).resolve().parents[1]


def _files(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()
            and p.name != "dataset.json"}


def _words_of(text: str) -> list[str]:
    return re.findall(r"[a-z]+", text.lower())


# ------------------------------------------------------------------------------------------------- determinism
def test_same_seed_gives_identical_bytes(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    synth(a, 20, seed=3, split="train", shard_size=8, progress=False)
    synth(b, 20, seed=3, split="train", shard_size=8, progress=False, workers=2)  # workers do not matter
    synth(c, 20, seed=4, split="train", shard_size=8, progress=False)
    fa, fb = _files(a), _files(b)
    assert sorted(fa) == ["train/shard-00000.tar", "train/shard-00001.tar", "train/shard-00002.tar"]
    assert fa == fb
    assert fa != _files(c)
    # imagefolder PNGs too, and sample i does not depend on N
    synth(tmp_path / "d", 5, seed=3, split="train", fmt="imagefolder", progress=False)
    ds = open_dataset(a, "train")
    png3 = (tmp_path / "d" / "train" / "train-000003.png").read_bytes()
    pi, key, members = ds._index[3]
    assert key == "train-000003" and ds._read(pi, *members["png"]) == png3
    # the per-sample RNG: same (seed, split, index) -> same scene
    assert sample_scene(TINY, 3, "val", 7) == sample_scene(TINY, 3, "val", 7)
    assert sample_scene(TINY, 3, "val", 7) != sample_scene(TINY, 3, "test", 7)


def test_dataset_json_and_split_counts(tmp_path):
    info = synth(tmp_path, 20, seed=0, progress=False, command="xomni data synth test")
    assert info["counts"] == {"train": 20, "val": 16, "test": 16}   # val/test = max(16, N // 10)
    meta = json.loads((tmp_path / "dataset.json").read_text())
    assert meta["preset"] == "tiny" and meta["seed"] == 0 and meta["command"] == "xomni data synth test"
    assert meta["image_size"] == {"width": 256, "height": 64} and len(meta["fonts"]) >= 4
    assert len(open_dataset(tmp_path, "test")) == 16
    from xomni.data.synth import split_counts
    assert split_counts(1000, "all") == {"train": 1000, "val": 100, "test": 100}


def test_splits_rendered_separately_keep_their_own_seed(tmp_path):
    # a larger train split with a fresh seed next to the val/test splits of an earlier dataset
    synth(tmp_path, 16, seed=0, split="val", progress=False, command="c-val")
    synth(tmp_path, 24, seed=1, split="train", progress=False, command="c-train")
    meta = json.loads((tmp_path / "dataset.json").read_text())
    assert meta["counts"] == {"val": 16, "train": 24}
    assert meta["split_seeds"] == {"val": 0, "train": 1}
    assert meta["split_commands"] == {"val": "c-val", "train": "c-train"}
    with pytest.raises(XomniError, match="pass --overwrite"):  # another format is never mixed in
        synth(tmp_path, 16, seed=0, split="test", fmt="imagefolder", progress=False)
    synth(tmp_path, 16, seed=0, split="test", fmt="imagefolder", progress=False, overwrite=True)  # starts afresh
    assert json.loads((tmp_path / "dataset.json").read_text())["counts"] == {"test": 16}
    assert not (tmp_path / "val").exists() and not (tmp_path / "train").exists()


# ------------------------------------------------------------------------------------------------------- words
def test_split_word_sets_are_disjoint_and_used():
    sets = {s: set(W.split_words(s)) for s in W.SPLITS}
    assert not (sets["train"] & sets["val"]) and not (sets["train"] & sets["test"]) and not (sets["val"] & sets["test"])
    total = len(W.all_words())
    assert 0.85 * total < len(sets["train"]) < 0.92 * total and len(sets["val"]) > 0.04 * total
    assert all(re.fullmatch(r"[a-z]{2,8}", w) for w in list(sets["val"])[:2000])
    for split in ("val", "test"):
        for i in range(60):
            for w in _words_of(sample_scene(TINY, 0, split, i)["text"]):
                assert w in sets[split], (split, w)


def test_longtext_bench_words_never_in_train():
    excluded = W.longtext_excluded_words()
    assert len(excluded) > 1000
    assert W.benchmark_words(str(BENCH_DIR)) <= excluded  # the frozen list covers the shipped benchmark's strings
    train = set(W.split_words("train"))
    assert not (train & excluded)
    for i in range(300):
        for w in _words_of(sample_scene(TINY, 0, "train", i)["text"]):
            assert w not in excluded


# ------------------------------------------------------------------------------------------------ scene + caption
def test_caption_grammar_round_trip():
    for i in range(300):
        m = sample_scene(TINY, 1, "train", i)
        p = parse_caption(m["caption"])
        assert p["grammar"] is True
        for k in ("text", "noun", "background", "text_color", "font_family", "font_style"):
            assert p[k] == m[k], (k, m["caption"])
        assert p["shapes"] == [{k: s[k] for k in ("kind", "color", "position")} for s in m["shapes"]]
        assert make_caption(m) == m["caption"]
    ex = 'a yellow poster with the text "OPEN 24 HOURS" in black bold serif letters, a red circle at the top left'
    p = parse_caption(ex)
    assert p == {"grammar": True, "text": "OPEN 24 HOURS", "noun": "poster", "background": "yellow",
                 "text_color": "black", "font_family": "serif", "font_style": "bold",
                 "shapes": [{"kind": "circle", "color": "red", "position": "top left"}]}
    tricky = 'an orange sign with the text "A, B & C in red" in white sans-serif letters'
    assert parse_caption(tricky)["text"] == "A, B & C in red"
    free = parse_caption('a photo of a shop with "SALE!" in serif, a blue star at the top right')
    assert free["grammar"] is False and free["text"] == "SALE!" and free["shapes"][0]["kind"] == "star"


def test_scene_constraints():
    p, cases, lengths, fonts = TINY, set(), [], set()
    x0, y0, x1, y1 = p.ocr_region
    for i in range(400):
        m = sample_scene(p, 2, "train", i)
        lengths.append(len(m["text"]))
        cases.add(m["case"])
        fonts.add(m["font"])
        assert contrast_ratio(m["text_color_rgb"], m["background_rgb"]) >= 4.5
        tb = m["text_box"]
        assert p.text_box[0] <= tb[0] and p.text_box[1] <= tb[1] and tb[2] <= p.text_box[2] and tb[3] <= p.text_box[3]
        assert p.min_font_size <= m["font_size"] <= p.font_size[1]
        assert len(m["shapes"]) <= 2 and len({s["position"] for s in m["shapes"]}) == len(m["shapes"])
        for s in m["shapes"]:  # shapes sit outside the text band that OCR reads
            b = s["box"]
            assert b[3] <= y0 or b[1] >= y1, (s, p.ocr_region)
            assert 12 <= b[2] - b[0] <= 14 and s["color"] != m["background"]
    assert max(lengths) <= 16 and sum(n >= 12 for n in lengths) > 40
    assert cases == {"upper", "title", "lower"} and len(fonts) >= 4
    with_shapes = sum(bool(sample_scene(p, 2, "train", i)["shapes"]) for i in range(400))
    assert 140 < with_shapes < 260


def test_mini_preset_scenes_and_tesseract_reads_them():
    """The bundled model's domain: one word or number (<= 10 characters) in one bold sans font, no shapes, inside
    the text box; Tesseract reads its ground-truth renders (the evaluator must not be the bottleneck)."""
    from xomni.data.presets import MINI
    from xomni.data.render import render
    from xomni.metrics.ocr import exact_match, tesseract_batch
    metas = [sample_scene(MINI, 0, "val", i) for i in range(48)]
    for m in metas:
        assert len(m["text"]) <= 10 and " " not in m["text"] and not m["shapes"]
        assert (m["width"], m["height"]) == (128, 32) and m["font"] == "dejavu-sans-bold"
        tb = m["text_box"]
        assert MINI.text_box[0] <= tb[0] and MINI.text_box[1] <= tb[1] and tb[2] <= MINI.text_box[2] \
            and tb[3] <= MINI.text_box[3]
    reads = tesseract_batch([render(m) for m in metas], region=MINI.ocr_region)
    assert sum(exact_match(r, m["text"]) for r, m in zip(reads, metas)) >= 46


def test_nouns_have_distinct_frames():
    base = sample_scene(TINY, 0, "val", 0)
    base = {**base, "shapes": []}
    arrs = {n: np.asarray(render({**base, "noun": n})) for n in TINY.nouns}
    names = list(arrs)
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            assert (arrs[names[i]] != arrs[names[j]]).any(), (names[i], names[j])


# ------------------------------------------------------------------------------------------------------ storage
def test_imagefolder_and_shards_read_back_equal(tmp_path):
    synth(tmp_path / "s", 12, seed=5, split="val", fmt="shards", shard_size=5, progress=False)
    synth(tmp_path / "f", 12, seed=5, split="val", fmt="imagefolder", progress=False)
    a, b = open_dataset(tmp_path / "s", "val"), open_dataset(tmp_path / "f")   # root with one split: no split needed
    assert len(a) == len(b) == 12
    for i in range(12):
        sa, sb = a[i], b[i]
        assert sa.error is None and sb.error is None and sa.key == sb.key == f"val-{i:06d}"
        assert sa.meta == {k: v for k, v in sb.meta.items() if k != "file_name"}
        assert np.array_equal(np.asarray(sa.image), np.asarray(sb.image))
        assert np.array_equal(np.asarray(sa.image), np.asarray(render(sa.meta)))
    rows = [json.loads(x) for x in (tmp_path / "f" / "val" / "metadata.jsonl").read_text().splitlines()]
    assert {"file_name", "text", "caption", "font", "shapes"} <= set(rows[0])
    # write_imagefolder from (image, meta) pairs
    n = write_imagefolder(tmp_path / "w", [(a[i].image, a[i].meta) for i in range(3)])
    assert n == 3 and open_dataset(tmp_path / "w")[2].meta["text"] == a[2].meta["text"]


def test_tar_random_access_and_open_variants(tmp_path):
    synth(tmp_path, 30, seed=6, split="all", shard_size=7, progress=False)
    ds = open_dataset(tmp_path, "train")
    assert len(ds) == 30 and len(ds.paths) == 5
    seq = [ds[i] for i in range(30)]
    order = list(range(30))
    random.Random(0).shuffle(order)
    for i in order:
        s = ds[i]
        assert s.key == seq[i].key and s.meta == seq[i].meta
        assert np.array_equal(np.asarray(s.image), np.asarray(seq[i].image))
    assert ds[-1].key == "train-000029"
    one = open_dataset(tmp_path / "train" / "shard-00002.tar")
    assert [one[i].key for i in range(len(one))] == [f"train-{i:06d}" for i in range(14, 21)]
    assert len(open_dataset(tmp_path / "val")) == 16
    with pytest.raises(XomniError, match="choose one"):
        open_dataset(tmp_path)
    with pytest.raises(XomniError, match="nosuch"):
        open_dataset(tmp_path / "val", "nosuch")
    with pytest.raises(XomniError, match="not found"):
        open_dataset(tmp_path / "missing")


def test_corrupt_image_in_shard_gives_error_sample(tmp_path):
    good = io.BytesIO()
    Image.new("RGB", (8, 8), (1, 2, 3)).save(good, format="PNG")
    with ShardWriter(tmp_path, 10) as w:
        w.write("a", good.getvalue(), {"key": "a", "caption": "x"})
        w.write("b", b"\x89PNG\r\n\x1a\nnot really", {"key": "b", "caption": "y"})
    ds = open_dataset(tmp_path / "shard-00000.tar")
    assert ds[0].image is not None and ds[0].error is None
    assert ds[1].image is None and "unreadable" in ds[1].error and ds[1].meta["caption"] == "y"
    with tarfile.open(tmp_path / "shard-00000.tar") as tf:  # deterministic headers
        assert all(m.mtime == 0 and m.uid == 0 and m.uname == "" for m in tf.getmembers())


# ------------------------------------------------------------------------------------------------------- import
def _make_user_folder(root: Path) -> tuple[Path, Path]:
    img = root / "imgs"
    (img / "sub").mkdir(parents=True)
    Image.new("RGB", (40, 20), (200, 10, 10)).save(img / "one.png")
    Image.new("RGBA", (30, 30), (0, 0, 200, 128)).save(img / "sub" / "two.png")
    Image.new("L", (16, 16), 90).save(img / "three.jpg")
    (img / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\ngarbage")
    Image.new("RGB", (10, 10)).save(img / "nocap.png")
    lines = [
        {"file_name": "one.png", "caption": "a red thing", "text": "ONE"},
        {"file_name": "sub/two.png", "caption": "a blue thing"},
        {"file_name": "three.jpg", "caption": "grey"},
        {"file_name": "one.png", "caption": "again"},              # duplicate id
        {"file_name": "broken.png", "caption": "corrupt"},         # unreadable image
        {"file_name": "gone.png", "caption": "no file"},           # missing image
    ]
    cap = root / "captions.jsonl"
    cap.write_text("\n".join(json.dumps(x) for x in lines) + "\n{not json\n" + json.dumps({"file_name": "x.png"}) +
                   "\n")
    return img, cap


@pytest.mark.parametrize("fmt", ["imagefolder", "shards"])
def test_import_reports_problems_and_keeps_going(tmp_path, fmt):
    from xomni.data.importer import import_folder
    img, cap = _make_user_folder(tmp_path)
    rep = import_folder(img, cap, tmp_path / "out", fmt=fmt)
    assert rep["written"] == 3
    assert rep["skipped"] == {"bad_line": 1, "missing_caption": 2, "missing_image": 1, "unreadable_image": 1,
                              "duplicate_id": 1}
    ds = open_dataset(tmp_path / "out")
    assert sorted(ds[i].key for i in range(len(ds))) == ["one", "sub_two", "three"]
    s = next(ds[i] for i in range(len(ds)) if ds[i].key == "one")
    assert s.meta["text"] == "ONE" and s.meta["caption"] == "a red thing" and s.image.mode == "RGB"


# ---------------------------------------------------------------------------------------------------------- CLI
def _assert_one_line_error(code, stderr, *needles):
    assert code == 2, (code, stderr)
    lines = [x for x in stderr.strip().splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert "Traceback" not in stderr
    for n in needles:
        assert n in lines[0], lines[0]


def _main(argv, capsys, monkeypatch, env=None):
    """xomni.cli.main() in-process (a subprocess costs seconds of imports per call on 2 cores)."""
    for k, v in (env or {}).items():
        monkeypatch.setenv(k, v)
    r = run_inproc(argv, monkeypatch, capsys)
    return r.returncode, r.stdout, r.stderr


def test_cli_bad_input_subprocess_exits_2_with_one_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "xomni.cli", "data", "synth", "-o", str(tmp_path / "x"), "--n", "4",
                        "--preset", "huge"], capture_output=True, text=True, timeout=300)
    _assert_one_line_error(r.returncode, r.stderr, "unknown preset 'huge'")


def test_cli_bad_inputs_in_process(tmp_path, capsys, monkeypatch):
    def err(argv, *needles, env=None):
        code, _, e = _main(argv, capsys, monkeypatch, env)
        _assert_one_line_error(code, e, *needles)

    err(["data", "synth", "-o", str(tmp_path / "x"), "--n", "0"], "--n must be >= 1")
    blocker = tmp_path / "file"
    blocker.write_text("")
    err(["data", "synth", "-o", str(blocker / "sub"), "--n", "4"], "not writable")
    err(["data", "synth", "-o", str(tmp_path / "y"), "--n", "4", "--split", "dev"], "unknown split")
    err(["data", "synth", "-o", str(tmp_path / "y"), "--n", "4"], "fonts-dejavu-core",
        env={"XOMNI_FONT_DIRS": str(tmp_path / "nofonts")})
    monkeypatch.delenv("XOMNI_FONT_DIRS")
    err(["data", "check", str(tmp_path / "missing")], "dataset not found")
    err(["data", "preview", str(blocker), "-o", str(tmp_path / "g.png")], "not a dataset")
    img = tmp_path / "imgs"
    img.mkdir()
    (img / "bad.png").write_bytes(b"not an image")
    (tmp_path / "c.jsonl").write_text(json.dumps({"file_name": "bad.png", "caption": "c"}) + "\n")
    code, out, e = _main(["data", "import", "--images", str(img), "--captions", str(tmp_path / "c.jsonl"), "-o",
                          str(tmp_path / "o")], capsys, monkeypatch)
    assert code == 2 and not out.strip() and not (tmp_path / "o").exists()  # nothing written, no result
    last = e.strip().splitlines()[-1]
    assert last.startswith("error: no usable samples") and "unreadable_image 1" in last and "Traceback" not in e
    err(["data", "import", "--images", str(img), "--captions", str(tmp_path / "none.jsonl"), "-o",
         str(tmp_path / "o")], "captions file not found")


def test_cli_synth_check_preview_and_demo(tmp_path, capsys, monkeypatch):
    code, out, _ = _main(["data", "synth", "-o", str(tmp_path / "d"), "--n", "6", "--split", "val", "--seed", "2"],
                         capsys, monkeypatch)
    assert code == 0 and json.loads(out)["counts"] == {"val": 6}
    assert json.loads((tmp_path / "d" / "dataset.json").read_text())["command"].startswith("xomni data synth")
    code, out, _ = _main(["data", "check", str(tmp_path / "d"), "--engines", "tesseract", "--json",
                          str(tmp_path / "c.json")], capsys, monkeypatch)
    res = json.loads(out)
    assert code == 0 and res["n"] == 6 and {"by_font", "by_text_colour", "by_background", "by_colour"} <= set(
        res["tesseract"]) and json.loads((tmp_path / "c.json").read_text()) == res
    code, out, _ = _main(["data", "preview", str(tmp_path / "d"), "-o", str(tmp_path / "p" / "grid.png"), "--n",
                          "4"], capsys, monkeypatch)
    assert code == 0 and Image.open(json.loads(out)["grid"]).size[0] > 256
    assert len((tmp_path / "p" / "captions.txt").read_text().splitlines()) == 4
    # a build without a bundled model: `xomni demo` previews the dataset instead (the model path: test_bundled.py)
    import xomni.pipeline
    monkeypatch.setattr(xomni.pipeline, "BUNDLED", tmp_path / "no-model")
    code, out, _ = _main(["demo", "-o", str(tmp_path / "demo")], capsys, monkeypatch)
    res = json.loads(out)
    assert code == 0 and Path(res["preview"]).is_file() and len(Path(res["captions"]).read_text().splitlines()) == 16


def test_bench_data_small():
    from xomni.data.bench import bench_data
    r = bench_data(10)
    assert r["renders_per_s"] > 0 and r["shards"]["read_samples_per_s"] > 0 and r["shards"]["read_mb_per_s"] > 0


# ----------------------------------------------------------------------------------------------- text tokenizer
def test_byte_tokenizer_round_trip_and_save(tmp_path):
    from xomni.data.text_tokenizer import ByteTokenizer, load_text_tokenizer
    tok = load_text_tokenizer("byte")
    ids = tok.encode('a red sign with the text "Café 24!"')
    assert ids[0] == tok.bos_id and ids[-1] == tok.eos_id and max(ids) < tok.vocab_size == 259
    assert tok.decode(ids) == 'a red sign with the text "Café 24!"'
    tok.save_pretrained(tmp_path)
    assert isinstance(load_text_tokenizer(tmp_path), ByteTokenizer)
    batch, mask = tok.pad_batch([tok.encode("ab"), tok.encode("abcd")])
    assert batch[0][-1] == tok.pad_id and mask[0] == [1, 1, 1, 1, 0, 0] and len(batch[1]) == 6
    with pytest.raises(XomniError, match="expected 'byte' or a local tokenizer directory"):
        load_text_tokenizer(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(XomniError, match="cannot load a Hugging Face tokenizer"):
        load_text_tokenizer(tmp_path / "empty")


def test_hf_tokenizer_from_local_dir(tmp_path):
    pytest.importorskip("tokenizers")
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from xomni.data.text_tokenizer import HFTokenizer, load_text_tokenizer
    t = Tokenizer(models.BPE(unk_token="<unk>"))
    t.pre_tokenizer = pre_tokenizers.Whitespace()
    t.train_from_iterator(["a red sign with the text open", "a blue poster"] * 20,
                          trainers.BpeTrainer(vocab_size=60, special_tokens=["<pad>", "<s>", "</s>", "<unk>"]))
    PreTrainedTokenizerFast(tokenizer_object=t, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                            unk_token="<unk>").save_pretrained(tmp_path)
    tok = load_text_tokenizer(tmp_path)
    assert isinstance(tok, HFTokenizer)
    ids = tok.encode("a red sign")
    assert ids[0] == tok.bos_id and ids[-1] == tok.eos_id and tok.decode(ids).replace(" ", "") == "aredsign"


def test_demo_prompts_follow_each_presets_caption_grammar():
    """`xomni demo` draws these with a model of that preset: each one must be a caption the preset could make."""
    from xomni.data.caption import parse_caption
    from xomni.data.fonts import font_spec
    from xomni.data.presets import get_preset
    from xomni.demo import DEMO_PROMPTS
    for name, prompts in DEMO_PROMPTS.items():
        p = get_preset(name)
        families = {font_spec(f).family for f in p.fonts}
        for cap in prompts:
            a = parse_caption(cap)
            assert a["grammar"] and a["noun"] in p.nouns and a["background"] in p.colors, (name, cap)
            assert a["font_family"] in families and len(a["text"]) <= p.max_chars, (name, cap)
