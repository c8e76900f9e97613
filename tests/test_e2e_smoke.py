"""End-to-end smoke: the whole recipe (data -> tokenizer -> decoder -> AR -> pipeline -> eval) for a few steps,
then the user-facing commands on the result. CI runs it every time (`make test`)."""
import json
import subprocess
import sys

import pytest
from PIL import Image

pytestmark = [pytest.mark.slow, pytest.mark.smoke]


def xomni(*args, env=None):
    return subprocess.run([sys.executable, "-m", "xomni.cli", *args], capture_output=True, text=True, env=env,
                          timeout=900)


@pytest.fixture(scope="module")
def smoke_pipeline(tmp_path_factory):
    out = tmp_path_factory.mktemp("smoke")
    r = xomni("pipeline", "--preset", "smoke", "--out", str(out))
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(r.stdout)
    return out, res


def test_recipe_writes_a_loadable_pipeline_with_provenance(smoke_pipeline):
    out, res = smoke_pipeline
    index = json.loads((out / "pipeline" / "model_index.json").read_text())
    assert index["command"].startswith("xomni pipeline --preset smoke")
    assert index["data_seed"] == 0 and "charset" in index and "{text}" in index["prompt_template"]
    for c in ("text_tokenizer", "image_tokenizer", "ar", "decoder"):
        assert (out / "pipeline" / c).is_dir()
    ev = res["eval"]
    assert ev["n"] == 4 and 0.0 <= ev["exact_match"] <= 1.0 and "ci95" in ev
    # the default temperature is chosen on val strings and the test eval draws with it
    sel = res["sampling_selection"]
    assert [r["temperature"] for r in sel["rows"]] == [0.7, 1.0] and sel["split"] == "val"
    assert all(r["n_images"] == 2 for r in sel["rows"])
    best = max(sel["rows"], key=lambda r: (r["exact_match"], -r["cer"], -r["temperature"]))
    assert sel["chosen"] == best["temperature"] == index["sampling"]["temperature"]
    assert index["eval"]["sampling"]["temperature"] == sel["chosen"]
    val_words = set((out / "select" / "targets.txt").read_text().split())
    assert val_words and not val_words & set((out / "eval" / "targets.txt").read_text().split())
    # the model's own captions of test renders, and the HTML report
    cap = index["caption_eval"]
    assert cap["n"] == 8 and cap["split"] == "test" and 0 <= cap["caption_exact"] <= 1
    assert "Samples" in (out / "eval" / "report" / "index.html").read_text()
    assert index["report"] == index["eval"]["report"] == str(out / "eval" / "report" / "index.html")
    assert ev["report"] == str(out / "eval-rl" / "report" / "index.html")  # the RL pipeline's eval (stage 6)
    # a second run resumes: every stage is skipped, the pipeline is re-assembled, the seeded selection and the
    # test eval come out the same
    r = xomni("pipeline", "--preset", "smoke", "--out", str(out))
    assert r.returncode == 0, r.stderr[-2000:]
    assert "[recipe] 2/" not in r.stderr and "[recipe] 6/" not in r.stderr
    index2 = json.loads((out / "pipeline" / "model_index.json").read_text())
    assert index2["sampling_selection"]["rows"] == sel["rows"]
    assert index2["sampling"]["temperature"] == sel["chosen"]
    assert index2["eval"]["exact_match"] == index["eval"]["exact_match"]


def test_recipe_rl_stage_and_comparison_report(smoke_pipeline):
    """The smoke recipe has an RL stage: GRPO on the SFT pipeline, its own eval, and `xomni eval rl`'s table."""
    out, res = smoke_pipeline
    assert res["pipeline"] == str(out / "rl" / "pipeline") and res["sft_pipeline"] == str(out / "pipeline")
    index = json.loads((out / "rl" / "pipeline" / "model_index.json").read_text())
    assert index["rl"]["rewards"] == {"ocr": 1.0, "aesthetic": 0.25} and index["rl_steps"] == 2
    assert index["weights_dtype"] == json.loads((out / "pipeline" / "model_index.json").read_text())["weights_dtype"]
    assert index["eval"]["n"] == 4 and index["sft_eval"]["n"] == 4
    cmp = res["rl_compare"]
    assert set(cmp["conditions"]) == {"SFT, 1 sample", "SFT, best-of-2", "SFT+GRPO, 1 sample", "SFT+GRPO, best-of-2"}
    for r in cmp["conditions"].values():
        assert r["n"] == 4 and 0 <= r["exact_match"] <= 1 and r["fid"]["n_fake"] == 4 and "rapidocr_exact_match" in r
    assert all(0 <= r["reward_mean"] <= 1 for r in cmp["conditions"].values())
    assert cmp["reward_weights"] == {"ocr": 1.0, "aesthetic": 0.25} and cmp["rl_steps"] == 2
    page = (out / "eval" / "rl" / "index.html").read_text()
    assert "best-of-2" in page and (out / "eval" / "rl" / "img" / "reward_curve.png").is_file()


def test_generate_and_caption(smoke_pipeline, tmp_path):
    out, _ = smoke_pipeline
    model = str(out / "pipeline")
    png = tmp_path / "g.png"
    r = xomni("generate", 'a white poster with the text "HELLO" in black sans-serif letters', "--model", model,
              "--n", "2", "--seed", "3", "-o", str(png))
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout)["n_images"] == 2
    im = Image.open(png)
    assert im.size[1] == 64 and im.size[0] > 256  # a 1x2 grid of 64x256 images
    # same seed, same image
    png2 = tmp_path / "g2.png"
    xomni("generate", 'a white poster with the text "HELLO" in black sans-serif letters', "--model", model,
          "--n", "2", "--seed", "3", "-o", str(png2))
    assert png.read_bytes() == png2.read_bytes()
    r = xomni("caption", str(png), "--model", model)
    assert r.returncode == 0 and "caption" in json.loads(r.stdout)
    r = xomni("caption", str(png), "--model", model, "--beams", "3")
    assert r.returncode == 0 and isinstance(json.loads(r.stdout)["caption"], str)
    r = xomni("caption", str(png), "--model", model, "--beams", "0")
    assert r.returncode == 2 and "--beams must be between 1 and 64" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("args,msg", [
    (["generate", ""], "the prompt is empty"),
    (["generate", 'a poster with the text "\u00dc"'], "cannot draw"),
    (["generate", "a" * 400], "prompt tokens"),
    (["generate", "hello", "--n", "0"], "--n must be between"),
    (["generate", "hello", "--size", "32x32"], "not supported by this model"),
])
def test_generate_bad_input(smoke_pipeline, args, msg):
    out, _ = smoke_pipeline
    r = xomni(*args, "--model", str(out / "pipeline"))
    assert r.returncode == 2 and msg in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_broken_pipeline_dirs(smoke_pipeline, tmp_path):
    import shutil
    out, _ = smoke_pipeline
    bad = tmp_path / "bad"
    shutil.copytree(out / "pipeline", bad)
    shutil.rmtree(bad / "decoder")
    r = xomni("generate", "hello", "--model", str(bad))
    assert r.returncode == 2 and "missing component folder(s): decoder" in r.stderr
    shutil.copytree(out / "pipeline" / "decoder", bad / "decoder")
    f = bad / "ar" / "model.safetensors"
    f.write_bytes(f.read_bytes()[:1000])
    r = xomni("generate", "hello", "--model", str(bad))
    assert r.returncode == 2 and "corrupt or truncated" in r.stderr


def test_demo_with_a_model(smoke_pipeline, tmp_path):
    out, _ = smoke_pipeline
    r = xomni("demo", "--model", str(out / "pipeline"), "-o", str(tmp_path / "demo"))
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(r.stdout)
    assert Image.open(res["generated"]).size[1] >= 64
    assert len(res["ocr"]) == 8 and (tmp_path / "demo" / "prompts.txt").is_file()


def test_model_sampling_defaults_come_from_model_index(smoke_pipeline, tmp_path):
    """model_index.json "sampling" sets the defaults of generate/eval; explicit arguments override them."""
    import shutil

    import torch

    from xomni.pipeline import Pipeline
    out, _ = smoke_pipeline
    d = tmp_path / "greedy"
    shutil.copytree(out / "pipeline", d)
    index = json.loads((d / "model_index.json").read_text())
    index["sampling"] = {"top_k": 1, "unknown_setting": 3}
    (d / "model_index.json").write_text(json.dumps(index))
    pipe = Pipeline.from_pretrained(d)
    assert pipe.sampling_config().top_k == 1 and pipe.sampling_config(top_k=0).top_k == 0
    prompt = ['a white poster with the text "HELLO" in black sans-serif letters']
    greedy = [pipe.generate_codes(prompt * 2, seed=s).codes_BHW for s in (0, 1)]
    assert torch.equal(greedy[0][0], greedy[0][1]) and torch.equal(greedy[0], greedy[1])  # greedy: seed-free
    sampled = [pipe.generate_codes(prompt, seed=s, sampling=pipe.sampling_config(top_k=0, temperature=5.0)).codes_BHW
               for s in (0, 1)]
    assert not torch.equal(sampled[0], sampled[1])
    r = xomni("eval", "text", "--model", str(d), "--targets", str(_targets(tmp_path)), "--samples", "1",
              "--temperature", "0.5")
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout)["sampling"] == {"temperature": 0.5, "top_k": 1, "top_p": 1.0, "min_p": 0.03,
                                                "cfg_scale": 1.0}


def test_generate_prompts_file_writes_an_imagefolder_eval_text_reads(smoke_pipeline, tmp_path):
    out, _ = smoke_pipeline
    pf = tmp_path / "prompts.txt"
    pf.write_text('a white poster with the text "HELLO" in black sans-serif letters\na white poster\n')
    r = xomni("generate", "--prompts", str(pf), "--n", "2", "--model", str(out / "pipeline"), "-o",
              str(tmp_path / "gen"))
    assert r.returncode == 0, r.stderr[-2000:]
    rows = [json.loads(x) for x in (tmp_path / "gen" / "metadata.jsonl").read_text().splitlines()]
    assert [r["key"] for r in rows] == ["p0000-s0", "p0000-s1", "p0001-s0", "p0001-s1"]
    assert [r.get("text") for r in rows] == ["HELLO", "HELLO", None, None]
    assert all((tmp_path / "gen" / r["file_name"]).is_file() for r in rows)


def test_eval_caption_on_ground_truth_renders(smoke_pipeline, tmp_path):
    out, _ = smoke_pipeline
    r = xomni("eval", "caption", "--model", str(out / "pipeline"), "--data", str(out / "data"), "--split", "test",
              "--n", "4", "--per-image", str(tmp_path / "rows.jsonl"))
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(r.stdout)
    assert res["n"] == 4 and 0 <= res["caption_exact"] <= 1 and set(res["per_attribute"]) >= {"text", "background"}
    rows = [json.loads(x) for x in (tmp_path / "rows.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and all(r["exact"] == (r["predicted"].strip() == r["caption"].strip()) for r in rows)


def _targets(tmp_path):
    p = tmp_path / "targets.txt"
    p.write_text("HELLO\nHOLE\n")
    return p


def test_bench_generate_reports_the_split(smoke_pipeline):
    out, _ = smoke_pipeline
    r = xomni("bench", "generate", "--model", str(out / "pipeline"), "--n", "2", "--runs", "2", "--steps", "1",
              "--baseline", "bundled")
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(r.stdout)
    lat = res["paths"]["default"]["latency_s"]
    assert res["n_images"] == 2 and len(lat) == 2 and res["decoder_steps"] == 1
    assert abs(res["latency_p50_s"] - sorted(lat)[0] / 2 - sorted(lat)[1] / 2) < 1e-9
    assert 0 < res["ar_fraction"] < 1 and res["images_per_s"] > 0
    # --baseline: the bundled model timed in the same run, each path's latency as a ratio to it
    base = res["baseline"]
    from xomni.pipeline import Pipeline
    assert base["grid"] == list(Pipeline.from_pretrained().grid) and set(base["paths"]) == set(res["paths"])
    for k, v in res["paths"].items():
        assert res["latency_ratio_vs_baseline"][k] == v["latency_p50_s"] / base["paths"][k]["latency_p50_s"]
    r = xomni("bench", "generate", "--model", str(out / "pipeline"), "--n", "0")
    assert r.returncode == 2 and "--n must be between 1 and 64" in r.stderr
