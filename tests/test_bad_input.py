"""Bad-input corpus: every case must exit 2 with one `error:` line on stderr, no traceback, and (for cases that
point at existing data) leave the files on disk byte-identical. Runs the CLI in-process; bad input is detected
before any model is loaded wherever it can be, so the whole table stays fast.

Add a row for every bug found: (id, argv built from the fixture paths, a substring of the error line, the directory
that must not change or None).
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from conftest import run_inproc

from xomni.pipeline import BUNDLED

PROMPT = 'a white poster with the text "HELLO" in black bold sans-serif letters'


# ------------------------------------------------------------------------------------------------------- fixtures
def _tree_hash(root: Path) -> str:
    """Hash of every path, file mode and file content under root (symlinks by their target)."""
    h = hashlib.sha256()
    if not root.exists():
        return "absent"
    for p in sorted(root.rglob("*")) if root.is_dir() else [root]:
        h.update(str(p.relative_to(root) if root.is_dir() else p.name).encode())
        if p.is_symlink():
            h.update(os.readlink(p).encode())
        elif p.is_file():
            h.update(oct(p.stat().st_mode).encode() + p.read_bytes())
    return h.hexdigest()


def _bad_model(root: Path, name: str, index_patch=None, ar_patch=None) -> Path:
    """A copy of the bundled pipeline (weights linked) with model_index.json / ar config.json edited."""
    d = root / name
    (d / "ar").mkdir(parents=True)
    index = json.loads((BUNDLED / "model_index.json").read_text())
    for c in index["components"]:  # the tokenizers, the decoder and a shipped ar_adapter
        if c != "ar":
            (d / c).symlink_to(BUNDLED / c)
    (d / "ar" / "model.safetensors").symlink_to(BUNDLED / "ar" / "model.safetensors")
    ar = json.loads((BUNDLED / "ar" / "config.json").read_text())
    if index_patch:
        index = index_patch(index)
    if ar_patch:
        ar_patch(ar["ar"])
    (d / "model_index.json").write_text(json.dumps(index))
    (d / "ar" / "config.json").write_text(json.dumps(ar))
    return d


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    from PIL import Image

    from xomni.data.synth import synth
    t = tmp_path_factory.mktemp("bad")
    P = {"t": t}
    # a small mini dataset (imagefolder) and a tiny-preset-free copy for the mixed-preset case
    synth(t / "mini", 4, preset="mini", split="all", fmt="imagefolder", progress=False)
    P["mini"] = t / "mini"
    # an import source, a good import and an all-invalid captions file
    src = t / "src"
    src.mkdir()
    for i in range(2):
        Image.new("RGB", (32, 16), (i * 100, 0, 0)).save(src / f"im{i}.png")
    (t / "good.jsonl").write_text("".join(json.dumps({"file_name": f"im{i}.png", "caption": f"c{i}"}) + "\n"
                                          for i in range(2)))
    (t / "invalid.jsonl").write_text('{"file_name": "nope.png", "caption": "x"}\nnot json\n')
    from xomni.data.importer import import_folder
    import_folder(src, t / "good.jsonl", t / "imported")
    P.update(src=src, imported=t / "imported")
    # plain files and directories
    (t / "afile").write_text("x\n")
    (t / "adir").mkdir()
    (t / "adir.png").mkdir()
    (t / "full_dir").mkdir()
    (t / "full_dir" / "keep.txt").write_text("keep\n")
    P.update(adir=t / "adir", full_dir=t / "full_dir", preview_dir=t / "preview_dir")
    (t / "latin1.txt").write_bytes("caf\xe9\n".encode("latin-1"))
    (t / "nonutf8.txt").write_bytes(b"ok line\n\xff\xfe bad\n")
    (t / "empty.txt").write_text("\n\n")
    (t / "prompts.txt").write_text(PROMPT + "\n")
    (t / "prompts_bad3.txt").write_text(PROMPT + "\n" + PROMPT + "\n" + PROMPT.replace("HELLO", "H\u00e9LLO") + "\n")
    (t / "targets.txt").write_text("HELLO\n")
    (t / "bad.yaml").write_bytes(b"train:\n  lr: 0.1 # \xff\n")
    (t / "preview_dir").mkdir()
    (t / "preview_dir" / "captions.txt").write_text("my own notes\n")
    # a finished run (what check_run_dir looks for)
    run = t / "run_done"
    (run / "final").mkdir(parents=True)
    (run / "final" / "config.json").write_text("{}")
    (run / "log.jsonl").write_text('{"step": 10}\n')
    P["run_done"] = run
    # malformed pipelines
    P["m_hot"] = _bad_model(t, "m_hot", index_patch=lambda d: {**d, "sampling": {"temperature": "hot"}})
    P["m_inf"] = _bad_model(t, "m_inf", index_patch=lambda d: {**d, "sampling": {"temperature": float("inf")}})
    P["m_charset"] = _bad_model(t, "m_charset", index_patch=lambda d: {**d, "charset": 123})
    P["m_list"] = _bad_model(t, "m_list", index_patch=lambda d: [d])
    P["m_layers"] = _bad_model(t, "m_layers", ar_patch=lambda a: a.update(n_layers=-1))
    P["m_heads"] = _bad_model(t, "m_heads", ar_patch=lambda a: a.update(n_heads=3))
    # a 20000 x 20000 PNG (decompression bomb): a 1-bit image compresses to a few hundred kB
    Image.new("1", (20000, 20000)).save(t / "bomb.png", optimize=False)
    return P


def run_cli(argv, monkeypatch, capsys):
    r = run_inproc(argv, monkeypatch, capsys)
    return r.returncode, r.stdout, r.stderr


# ----------------------------------------------------------------------------------------------------------- table
# (id, argv(P) -> list, expected substring of the error line, P key of a directory that must not change / None)
G = ["generate", PROMPT]
TT = ["train", "tokenizer", "--data", "{mini}"]
TD = ["train", "decoder", "--data", "{mini}", "--tokenizer", "{adir}"]
TA = ["train", "ar", "--data", "{mini}", "--tokenizer", "{adir}"]
TJ = ["train", "judge", "--data", "{mini}"]
ET = ["eval", "text", "--images", "{mini}", "--split", "val"]
EL = ["eval", "longtext", "--bench", "{bench}"]
RC = ["reconstruct", "{mini}", "--split", "val", "-o", "{t}/rec", "--tokenizer", "{adir}", "--decoder", "{adir}"]

CASES = [
    # ---- generate: sampling ranges (wrong successes before: inf drew noise, -3 drew another word, 0 steps = 8)
    ("gen-temp-inf", G + ["--temperature", "inf"], "--temperature must be a finite number", None),
    ("gen-temp-nan", G + ["--temperature", "nan"], "--temperature must be a finite number", None),
    ("gen-temp-0", G + ["--temperature", "0"], "--temperature must be > 0", None),
    ("gen-temp-neg", G + ["--temperature=-1"], "--temperature must be > 0", None),
    ("gen-cfg-neg", G + ["--cfg=-3"], "--cfg must be >= 1", None),
    ("gen-cfg-inf", G + ["--cfg", "inf"], "--cfg must be a finite number", None),
    ("gen-top-p-0", G + ["--top-p", "0"], "--top-p must be > 0", None),
    ("gen-top-p-big", G + ["--top-p", "1.5"], "--top-p must be > 0 and <= 1", None),
    ("gen-min-p-1", G + ["--min-p", "1"], "--min-p must be >= 0 and < 1", None),
    ("gen-top-k-neg", G + ["--top-k=-1"], "--top-k must be >= 0", None),
    ("gen-steps-0", G + ["--steps", "0"], "--steps must be between 1 and 1000", None),
    ("gen-steps-neg", G + ["--steps=-5"], "--steps must be between 1 and 1000", None),
    ("gen-n-0", G + ["--n", "0"], "--n must be between 1 and 64", None),
    ("gen-n-neg", G + ["--n=-1"], "--n must be between 1 and 64", None),
    ("gen-n-big", G + ["--n", "65"], "--n must be between 1 and 64", None),
    ("gen-best-of-0", G + ["--best-of", "0"], "--best-of must be between 1", None),
    ("gen-batch-0", ["generate", "--prompts", "{t}/prompts.txt", "--batch", "0"], "--batch must be between", None),
    ("gen-seed-huge", G + ["--seed", "99999999999999999999"], "--seed must be between 0 and", None),
    ("gen-seed-neg", G + ["--seed=-1"], "--seed must be between 0 and", None),
    ("gen-size-bad", G + ["--size", "12"], "--size must look like", None),
    # ---- generate: prompts and paths
    ("gen-sjd-window-huge", ["generate", "x", "--sjd-window", "65"], "--sjd-window must be between", None),
    ("gen-nothing", ["generate"], "give a PROMPT or --prompts FILE", None),
    ("gen-blank", ["generate", "   "], "the prompt is empty", None),
    ("gen-both", G + ["--prompts", "{t}/prompts.txt"], "either a PROMPT or --prompts FILE, not both", None),
    ("gen-out-txt", G + ["-o", "{t}/x.txt"], "expected a file name ending in .png", None),
    ("gen-out-noext", G + ["-o", "{t}/noext"], "expected a file name ending in", None),
    ("gen-out-dir", G + ["-o", "{t}/adir.png"], "is a directory", "t"),
    ("gen-out-under-file", G + ["-o", "{t}/afile/x.png"], "is not a directory", "t"),
    ("gen-json-dir", G + ["--json", "{t}/adir"], "--json", "t"),
    ("gen-json-under-file", G + ["--json", "{t}/afile/r.json"], "is not a directory", "t"),
    ("gen-prompts-missing", ["generate", "--prompts", "{t}/nope.txt"], "not found", None),
    ("gen-prompts-dir", ["generate", "--prompts", "{t}/adir"], "is a directory; expected a file", None),
    ("gen-prompts-nonutf8", ["generate", "--prompts", "{t}/nonutf8.txt", "-o", "{t}/gout"],
     "line 2 is not valid UTF-8", None),
    ("gen-prompts-empty", ["generate", "--prompts", "{t}/empty.txt", "-o", "{t}/gout"], "is empty", None),
    ("gen-prompts-out-full", ["generate", "--prompts", "{t}/prompts.txt", "-o", "{t}/full_dir"],
     "pass --overwrite", "full_dir"),
    ("gen-prompts-out-file", ["generate", "--prompts", "{t}/prompts.txt", "-o", "{t}/afile"], "is a file", "t"),
    ("gen-prompts-line3", ["generate", "--prompts", "{t}/prompts_bad3.txt", "-o", "{t}/gout3"], "line 3", None),
    ("gen-model-missing", G + ["--model", "{t}/nope"], "not found", None),
    # ---- malformed model files
    ("model-temp-hot", G + ["--model", "{m_hot}", "-o", "{t}/m.png"], "temperature", "m_hot"),
    ("model-temp-inf", G + ["--model", "{m_inf}", "-o", "{t}/m.png"], "finite", "m_inf"),
    ("model-charset-int", G + ["--model", "{m_charset}", "-o", "{t}/m.png"], "'charset' must be a string", None),
    ("model-index-list", G + ["--model", "{m_list}", "-o", "{t}/m.png"], "must hold a JSON object", None),
    ("model-layers-neg", G + ["--model", "{m_layers}", "-o", "{t}/m.png"], "n_layers must be >= 1", None),
    ("model-heads-3", G + ["--model", "{m_heads}", "-o", "{t}/m.png"], "must divide n_heads=3", None),
    # ---- caption
    ("caption-missing", ["caption", "{t}/nope.png"], "not found", None),
    ("caption-dir", ["caption", "{t}/adir"], "is a directory; expected a file", None),
    ("caption-not-image", ["caption", "{t}/afile"], "cannot read image", None),
    ("caption-bomb", ["caption", "{t}/bomb.png"], "DecompressionBombError", None),
    ("caption-beams-0", ["caption", "{t}/afile", "--beams", "0"], "--beams must be between 1 and 64", None),
    # ---- data synth
    ("synth-n-0", ["data", "synth", "-o", "{t}/s", "--n", "0"], "--n must be >= 1", None),
    ("synth-n-neg", ["data", "synth", "-o", "{t}/s", "--n=-5"], "--n must be >= 1", None),
    ("synth-n-huge", ["data", "synth", "-o", "{t}/s", "--n", "1000000000000"], "GB free", None),
    ("synth-shard-0", ["data", "synth", "-o", "{t}/s", "--shard-size", "0"], "--shard-size must be >= 1", None),
    ("synth-workers-0", ["data", "synth", "-o", "{t}/s", "--workers", "0"], "--workers must be between 1", None),
    ("synth-workers-huge", ["data", "synth", "-o", "{t}/s", "--workers", "100000"], "--workers must be between",
     None),
    ("synth-split-dotdot", ["data", "synth", "-o", "{mini}", "--split", "weird/../x"], "--split must be a name",
     "mini"),
    ("synth-preset-unknown", ["data", "synth", "-o", "{t}/s", "--preset", "huge"], "unknown preset", None),
    ("synth-format-unknown", ["data", "synth", "-o", "{t}/s", "--format", "zip"], "unknown format", None),
    ("synth-seed-neg", ["data", "synth", "-o", "{t}/s", "--seed=-1"], "--seed must be between", None),
    ("synth-out-file", ["data", "synth", "-o", "{t}/afile"], "is a file", "t"),
    ("synth-other-preset", ["data", "synth", "--preset", "tiny", "-o", "{mini}", "--split", "val", "--n", "2",
                            "--format", "imagefolder"], "pass --overwrite", "mini"),
    ("synth-other-format", ["data", "synth", "--preset", "mini", "-o", "{mini}", "--split", "val", "--n", "2"],
     "format 'imagefolder'", "mini"),
    ("synth-into-import", ["data", "synth", "--preset", "mini", "-o", "{imported}", "--split", "val", "--n", "2",
                           "--format", "imagefolder"], "did not render", "imported"),
    ("synth-json-dir", ["data", "synth", "-o", "{t}/s", "--n", "2", "--json", "{t}/adir"], "is a directory", "t"),
    # ---- data import
    ("import-all-invalid", ["data", "import", "--images", "{src}", "--captions", "{t}/invalid.jsonl", "-o",
                            "{imported}", "--overwrite"], "no usable samples", "imported"),
    ("import-existing", ["data", "import", "--images", "{src}", "--captions", "{t}/good.jsonl", "-o",
                         "{imported}"], "pass --overwrite", "imported"),
    ("import-shard-0", ["data", "import", "--images", "{src}", "--captions", "{t}/good.jsonl", "-o", "{t}/i2",
                        "--shard-size", "0"], "--shard-size must be >= 1", None),
    ("import-split-dotdot", ["data", "import", "--images", "{src}", "--captions", "{t}/good.jsonl", "-o",
                             "{t}/i2", "--split", "a/../b"], "--split must be a name", None),
    ("import-captions-dir", ["data", "import", "--images", "{src}", "--captions", "{t}/adir", "-o", "{t}/i2"],
     "is a directory; expected a file", None),
    ("import-images-file", ["data", "import", "--images", "{t}/afile", "--captions", "{t}/good.jsonl", "-o",
                            "{t}/i2"], "is a file; expected a directory", None),
    ("import-captions-nonutf8", ["data", "import", "--images", "{src}", "--captions", "{t}/nonutf8.txt", "-o",
                                 "{t}/i3"], "no usable samples", None),
    ("import-format", ["data", "import", "--images", "{src}", "--captions", "{t}/good.jsonl", "-o", "{t}/i4",
                       "--format", "zip"], "unknown format", None),
    ("import-out-is-file", ["data", "import", "--images", "{src}", "--captions", "{t}/good.jsonl", "-o",
                            "{t}/afile"], "is a file", "t"),
    # ---- data preview / check
    ("preview-txt", ["data", "preview", "{mini}", "-o", "{t}/p.txt"], "ending in .png", None),
    ("preview-n-0", ["data", "preview", "{mini}", "-o", "{t}/p.png", "--n", "0"], "--n must be between", None),
    ("preview-out-dir", ["data", "preview", "{mini}", "-o", "{t}/adir.png"], "is a directory", "t"),
    ("preview-foreign-captions", ["data", "preview", "{mini}", "-o", "{t}/preview_dir/p.png"],
     "not written by a preview", "preview_dir"),
    ("preview-missing", ["data", "preview", "{t}/nope"], "not found", None),
    ("check-limit-0", ["data", "check", "{mini}", "--limit", "0"], "--limit must be >= 1", None),
    ("check-limit-neg", ["data", "check", "{mini}", "--limit=-3"], "--limit must be >= 1", None),
    ("check-workers-0", ["data", "check", "{mini}", "--workers", "0"], "--workers must be between", None),
    ("check-missing", ["data", "check", "{t}/nope"], "not found", None),
    ("check-split-dotdot", ["data", "check", "{mini}", "--split", "val,../x"], "--split must be a name", None),
    ("bench-data-n-0", ["bench", "data", "--n", "0"], "--n must be between", None),
    # ---- eval text / longtext / others
    ("text-both", ET + ["--model", "{t}/adir"], "exactly one of --images DIR or --model DIR", None),
    ("text-region-outside", ET + ["--region", "0,0,9999,9999"], "outside the 128x32 images", None),
    ("text-region-inverted", ET + ["--region", "10,10,5,5"], "--region expects", None),
    ("text-psm-99", ET + ["--psm", "99"], "--psm must be between 0 and 13", None),
    ("text-samples-huge", ["eval", "text", "--model", "{adir}", "--targets", "{t}/targets.txt", "--samples",
                           "1000000000"], "--samples must be between 1 and 64", None),
    ("text-samples-0", ["eval", "text", "--model", "{adir}", "--targets", "{t}/targets.txt", "--samples", "0"],
     "--samples must be between", None),
    ("text-limit-0", ET + ["--limit", "0"], "--limit must be >= 1", None),
    ("text-batch-0", ET + ["--batch", "0"], "--batch must be between", None),
    ("text-sjd-window-neg", ET + ["--sjd-window=-1"], "--sjd-window must be between", None),
    ("text-per-image-dir", ET + ["--per-image", "{t}/adir"], "--per-image", "t"),
    ("text-targets-nonutf8", ["eval", "text", "--images", "{mini}/val", "--targets", "{t}/latin1.txt"],
     "not UTF-8", None),
    ("text-model-no-targets", ["eval", "text", "--model", "{adir}"], "--model needs --targets", None),
    ("text-temp-inf", ["eval", "text", "--model", "{adir}", "--targets", "{t}/targets.txt", "--temperature", "inf"],
     "--temperature must be a finite number", None),
    ("text-seed-huge", ET + ["--seed", "99999999999999999999"], "--seed must be between", None),
    ("longtext-bench-dir", ["eval", "longtext", "--bench", "{t}/adir", "--images", "{mini}"],
     "is a directory; expected a file", None),
    ("longtext-bench-nonutf8", ["eval", "longtext", "--bench", "{t}/nonutf8.txt", "--images", "{mini}"],
     "not UTF-8", None),
    ("longtext-max-chars-0", ["eval", "longtext", "--bench", "{t}/afile", "--images", "{mini}", "--max-chars",
                              "0"], "--max-chars must be >= 1", None),
    ("longtext-samples-0", ["eval", "longtext", "--bench", "{t}/afile", "--model", "{adir}", "--samples", "0"],
     "--samples must be between", None),
    ("compliance-limit-0", ["eval", "compliance", "--images", "{mini}", "--judge", "{adir}", "--limit", "0"],
     "--limit must be >= 1", None),
    ("compliance-judge-missing", ["eval", "compliance", "--images", "{mini}", "--judge", "{t}/nope"], "not found",
     None),
    ("fid-n-0", ["eval", "fid", "--real", "{mini}", "--fake", "{mini}", "--n", "0"], "--n must be >= 2", None),
    ("fid-batch-0", ["eval", "fid", "--real", "{mini}", "--fake", "{mini}", "--batch-size", "0"],
     "--batch-size must be between", None),
    ("fid-sanity-blur", ["eval", "fid-sanity", "--data", "{mini}", "--blur", "-1"], "--blur expects", None),
    ("eval-caption-n-neg", ["eval", "caption", "--data", "{mini}", "--n=-1"], "--n must be >= 1 (or 0 = all)", None),
    ("eval-judge-n-0", ["eval", "judge", "--judge", "{adir}", "--data", "{mini}", "--n", "0"], "--n must be >= 1",
     None),
    ("eval-all-out-file", ["eval", "all", "--images", "{mini}", "-o", "{t}/afile"], "is a file", "t"),
    # ---- trainers: config ranges and shapes, one line before any work
    ("tok-batch-0", TT + ["--set", "train.batch_size=0"], "train.batch_size must be >= 1", None),
    ("tok-lr-nan", TT + ["--set", "train.lr=nan"], "train.lr must be finite", None),
    ("ar-init-except-image-alone", TA + ["--out", "{t}/ar_ie", "--init-except-image"],
     "--init-except-image needs --init", None),
    ("tok-lr-neg", TT + ["--set", "train.lr=-1"], "train.lr must be > 0", None),
    ("tok-threads-huge", TT + ["--set", "train.num_threads=100000"], "train.num_threads must be between 1 and", None),
    ("tok-threads-neg", TT + ["--set", "train.num_threads=-1"], "train.num_threads must be", None),
    ("tok-train-scalar", TT + ["--set", "train=5"], "'train' is a section", None),
    ("tok-train-scalar-out", TT + ["--set", "train=5", "--out", "{t}/tokrun"], "'train' is a section", None),
    ("tok-steps-0", TT + ["--set", "train.steps=0"], "train.steps must be >= 1", None),
    ("tok-seed-neg", TT + ["--set", "train.seed=-1"], "train.seed must be", None),
    ("tok-beta-1", TT + ["--set", "train.beta2=1"], "train.beta2 must be", None),
    ("tok-text-heads", TT + ["--set", "model.text_heads=5"], "text_heads=5 must divide", None),
    ("tok-width-0", TT + ["--set", "model.width=0"], "model.width must be >= 1", None),
    ("tok-config-nonutf8", TT + ["--config", "{t}/bad.yaml"], "line 2 is not valid UTF-8", None),
    ("tok-config-dir", TT + ["--config", "{t}/adir"], "is a directory; expected a file", None),
    ("tok-finished-run", TT + ["--out", "{run_done}"], "pass --resume auto", "run_done"),
    ("tok-resume-missing", TT + ["--resume", "{t}/nope"], "not found", None),
    ("tok-out-file", TT + ["--out", "{t}/afile"], "is a file", "t"),
    ("dec-unet-empty", TD + ["--set", "model.unet_channels=[]"], "unet_channels must be a non-empty list", None),
    ("dec-steps-0", TD + ["--set", "model.steps=0"], "model.steps must be >= 1", None),
    ("dec-strength-2", TD + ["--set", "model.strength=2"], "model.strength must be", None),
    ("dec-finished-run", TD + ["--out", "{run_done}"], "pass --resume auto", "run_done"),
    ("ar-heads-3", TA + ["--set", "model.n_heads=3"], "n_heads=3 must divide hidden_size", None),
    ("ar-kv-heads", TA + ["--set", "model.n_kv_heads=8"], "n_kv_heads=8 must divide n_heads", None),
    ("ar-layers-neg", TA + ["--set", "model.n_layers=-1"], "model.n_layers must be >= 1", None),
    ("ar-dropout-1", TA + ["--set", "model.dropout=1"], "model.dropout must be", None),
    ("ar-val-n-0", TA + ["--val-n", "0"], "--val-n must be >= 1", None),
    ("ar-finished-run", TA + ["--out", "{run_done}"], "pass --resume auto", "run_done"),
    ("judge-width-0", TJ + ["--set", "model.width=0"], "model.width must be >= 1", None),
    ("judge-seed-neg", TJ + ["--seed=-1"], "--seed must be between", None),
    ("judge-finished-run", TJ + ["--out", "{run_done}"], "pass --resume auto", "run_done"),
    ("pipeline-threads-0", ["pipeline", "--preset", "smoke", "-o", "{t}/pl", "--set", "threads=0"],
     "threads must be between 1 and", None),
    ("pipeline-threads-huge", ["pipeline", "--preset", "smoke", "-o", "{t}/pl", "--set", "threads=100000"],
     "threads must be between 1 and", None),
    ("pipeline-n-train-0", ["pipeline", "--preset", "smoke", "-o", "{t}/pl", "--set", "n_train=0"],
     "n_train must be >= 1", None),
    ("pipeline-section-scalar", ["pipeline", "--preset", "smoke", "-o", "{t}/pl", "--set", "ar=1"],
     "'ar' is a section", None),
    # ---- threads and bench counts (SIGSEGV in libgomp before)
    ("reconstruct-threads-huge", RC + ["--threads", "100000"], "--threads must be between 1 and", None),
    ("reconstruct-threads-neg", RC + ["--threads=-1"], "--threads must be between 1 and", None),
    ("reconstruct-n-neg", RC + ["--n=-1"], "--n must be >= 1 (or 0 = all)", None),
    ("reconstruct-batch-0", RC + ["--batch-size", "0"], "--batch-size must be between", None),
    ("reconstruct-strength-2", RC + ["--strength", "2"], "--strength must be > 0 and <= 1", None),
    ("reconstruct-out-full", ["reconstruct", "{mini}", "--split", "val", "-o", "{full_dir}", "--tokenizer",
                              "{adir}", "--decoder", "{adir}"], "pass --overwrite", "full_dir"),
    ("eval-tokenizer-threads", ["eval", "tokenizer", "--model", "{adir}", "--data", "{mini}", "--threads",
                                "100000"], "--threads must be between", None),
    ("bench-tokenizer-threads", ["bench", "tokenizer", "--threads", "100000"], "--threads must be between", None),
    ("bench-tokenizer-batch-0", ["bench", "tokenizer", "--batch-size", "0"], "--batch-size must be between", None),
    ("bench-decoder-batch-0", ["bench", "decoder", "--batch-size", "0"], "--batch-size must be between", None),
    ("bench-decoder-batches-0", ["bench", "decoder", "--batches", "0"], "--batches must be between", None),
    ("bench-matmul-n-0", ["bench", "matmul", "--n", "0"], "--n must be between 16 and 16384", None),
    ("bench-matmul-n-neg", ["bench", "matmul", "--n=-5"], "--n must be between", None),
    ("bench-matmul-n-huge", ["bench", "matmul", "--n", "10000000"], "--n must be between", None),
    ("bench-sample-repeats-0", ["bench", "sample", "--repeats", "0"], "--repeats must be between", None),
    ("bench-generate-runs-0", ["bench", "generate", "--runs", "0"], "--runs must be between", None),
    ("bench-generate-baseline-missing", ["bench", "generate", "--baseline", "{t}/nope"], "--baseline not found",
     None),
    ("bench-ocr-n-0", ["bench", "ocr", "--n", "0"], "--n must be between", None),
    ("compile-batch-sizes-text", ["compile", "--batch-sizes", "1,x"], "--batch-sizes must be comma-separated", None),
    ("compile-batch-sizes-0", ["compile", "--batch-sizes", "0,4"], "--batch-sizes must be integers in 1..256", None),
    ("compile-model-missing", ["compile", "--model", "{t}/nope"], "--model not found", "t"),
    ("demo-seed-neg", ["demo", "--seed=-1"], "--seed must be between", None),
    ("demo-out-file", ["demo", "-o", "{t}/afile"], "is a file", "t"),
]


def _fmt(argv, P):
    sub = {k: str(v) for k, v in P.items()}
    from tests.conftest import BENCH_EN
    sub["bench"] = BENCH_EN
    return [a.format(**sub) if "{" in a else a for a in argv]


def test_corpus_is_large_and_unique():
    ids = [c[0] for c in CASES]
    assert len(ids) >= 80 and len(set(ids)) == len(ids)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_exits_2_with_one_line(case, env, monkeypatch, capsys):
    cid, argv, needle, keep = case
    keep_dir = env[keep] if keep else None
    before = _tree_hash(keep_dir) if keep_dir else None
    code, out, err = run_cli(_fmt(argv, env), monkeypatch, capsys)
    lines = [x for x in err.strip().splitlines() if x.strip()]
    errors = [x for x in lines if x.startswith("error:")]
    assert "Traceback" not in err, err
    assert code == 2, (code, err[-2000:])
    assert len(errors) == 1 and lines[-1] == errors[0], err
    assert needle in errors[0], errors[0]
    assert not out.strip(), out  # no JSON result for a refused input
    if keep_dir:
        assert _tree_hash(keep_dir) == before, f"{keep_dir} changed"


# ------------------------------------------------------------------------------------- outputs and atomic writes
def test_json_to_a_device_is_written_in_place_never_replaced(monkeypatch, capsys):
    from xomni.utils import atomic_write_text
    atomic_write_text("/dev/null", "{}\n")
    assert Path("/dev/null").is_char_device()


def test_json_to_dev_full_is_one_line(tmp_path):
    from xomni.errors import XomniError
    from xomni.utils import atomic_write_text
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full")
    with pytest.raises(XomniError, match="cannot write /dev/full"):
        atomic_write_text("/dev/full", "{}\n")
    assert Path("/dev/full").is_char_device()


def test_json_through_a_symlink_replaces_the_target_and_keeps_the_link(tmp_path):
    from xomni.utils import atomic_write_text
    target = tmp_path / "real.json"
    target.write_text("old")
    link = tmp_path / "link.json"
    link.symlink_to(target)
    atomic_write_text(link, "new")
    assert link.is_symlink() and target.read_text() == "new"


def test_failed_import_leaves_the_previous_import_identical(env, monkeypatch, capsys):
    before = _tree_hash(env["imported"])
    code, _, err = run_cli(["data", "import", "--images", str(env["src"]), "--captions",
                            str(env["t"] / "invalid.jsonl"), "-o", str(env["imported"]), "--overwrite"],
                           monkeypatch, capsys)
    assert code == 2 and "unchanged" in err
    assert _tree_hash(env["imported"]) == before
    assert json.loads((env["imported"] / "dataset.json").read_text())["counts"] == {"train": 2}


def test_import_overwrite_replaces_the_whole_directory(tmp_path, env, monkeypatch, capsys):
    out = tmp_path / "imp"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    code, o, err = run_cli(["data", "import", "--images", str(env["src"]), "--captions", str(env["t"] / "good.jsonl"),
                            "-o", str(out), "--overwrite"], monkeypatch, capsys)
    assert code == 0, err
    assert not (out / "stale.txt").exists() and json.loads(o)["written"] == 2


def test_synth_overwrite_replaces_another_preset_as_a_whole(tmp_path, env, monkeypatch, capsys):
    import shutil
    d = tmp_path / "ds"
    shutil.copytree(env["mini"], d)
    code, _, err = run_cli(["data", "synth", "--preset", "tiny", "-o", str(d), "--split", "val", "--n", "2",
                            "--format", "imagefolder", "--overwrite"], monkeypatch, capsys)
    assert code == 0, err
    info = json.loads((d / "dataset.json").read_text())
    assert info["preset"] == "tiny" and info["counts"] == {"val": 2}
    assert not (d / "train").exists() and not (d / "test").exists()


def test_config_errors_name_the_field_before_any_work():
    from xomni.config import load_config
    from xomni.errors import XomniError
    from xomni.tokenizer.config import TokenizerTrainConfig
    for ov, needle in (("train.grad_accum=0", "train.grad_accum must be >= 1"),
                       ("train.min_lr_ratio=2", "train.min_lr_ratio must be"),
                       ("model.codebook_size=1", "codebook_size"),
                       ("n_val=-1", "n_val must be >= 0")):
        with pytest.raises(XomniError, match=needle):
            load_config(TokenizerTrainConfig, overrides=[ov])
