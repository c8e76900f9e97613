"""scripts/device_check.py (its --device cpu --dry run of the CUDA code paths) and scripts/timed_finetune.py (a
budgeted AR fine-tune + float16 export). Fast, CPU only: one tiny token cache (40 mini grids) built once for the
module, each script run as a subprocess from the repo root."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from xomni.train import PROBE

REPO = Path(__file__).resolve().parents[1]
PRETRAINED = REPO / "xomni" / "pretrained" / "mini"
PARTS = ("ar_step", "sampler", "sampler_compiled", "decoder", "pipeline")
WORDS = ["HELLO", "river", "Quartz"]
SAMPLES = 1


def _env():
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = "2"
    env["HF_HUB_OFFLINE"] = "1"
    return env


def _run(script, *args, timeout=300):  # a hang guard, not a speed bar
    return subprocess.run([sys.executable, str(REPO / "scripts" / script), *map(str, args)], cwd=REPO, env=_env(),
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def token_cache(tmp_path_factory):
    """A token cache (codes.safetensors + meta.jsonl + info.json) of 40 synthetic mini train samples."""
    from xomni.ar.data import encode_to_cache
    from xomni.data.synth import synth
    from xomni.tokenizer import ImageTokenizer
    root = tmp_path_factory.mktemp("tokens")
    synth(root / "data", 40, seed=0, preset="mini", split="train", progress=False)
    tok = ImageTokenizer.from_pretrained(str(PRETRAINED / "image_tokenizer"))
    out = encode_to_cache(tok, str(root / "data"), "train", root / "cache")
    assert (out / "codes.safetensors").is_file() and (out / "meta.jsonl").is_file()
    return out


# ---------------------------------------------------------------------------------------------- device_check.py
def test_device_check_dry_cpu_runs_every_part(token_cache, tmp_path):
    targets = tmp_path / "words.txt"
    targets.write_text("\n".join(WORDS) + "\n\n")  # a blank line is skipped
    images, out_json = tmp_path / "images", tmp_path / "check.json"
    r = _run("device_check.py", "--device", "cpu", "--dry", "--tokens", token_cache, "--targets", targets,
             "--samples", SAMPLES, "--images-out", images, "--json", out_json)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(out_json.read_text())
    assert json.loads(r.stdout) == res  # the same JSON on stdout
    assert res["device"] == "cpu" and res["gpu"] is None
    for part in PARTS:
        assert part in res, part
        assert "error" not in res[part], (part, res[part].get("error"), res[part].get("traceback"))

    ar = res["ar_step"]
    assert ar["cuda_matches_cpu"] is True
    assert ar["loss_cpu_fp32"] == ar["loss_cuda_fp32"]  # the "cuda" side is the cpu: the same loss
    assert math.isfinite(ar["loss_cuda_bf16"])
    assert set(k for k in ar if k.startswith("train_b")) == {"train_b2_fp32", "train_b2_bf16"}  # --dry sizes
    assert all(ar[k]["s_per_step"] > 0 for k in ("train_b2_fp32", "train_b2_bf16"))

    s = res["sampler"]
    assert s["logprob_bar_fp32_1e-4"] is True
    assert s["logprob_max_abs_diff_fp32"] <= 1e-4
    assert math.isfinite(s["logprob_max_abs_diff_bf16"]) and s["min_p_flips_fp32"] == 0
    tokens = 4 * math.prod(json.loads((PRETRAINED / "ar" / "config.json").read_text())["grid"])  # 4 prompts drawn
    assert s["min_p_flips_bf16"] <= 0.01 * tokens  # bf16 moves a few tokens across min-p's threshold, not more
    assert "sample_b4_fp32" in s and "sample_b4_bf16" in s

    c = res["sampler_compiled"]
    assert c["fell_back_to_eager"] is False and c["logprob_bar_fp32_1e-4"] is True
    assert c["sample_b4"]["compiled_tokens_per_s"] > 0 and c["sample_b4"]["eager_tokens_per_s"] > 0

    assert "decode_b4" in res["decoder"] and res["decoder"]["steps"] > 0

    n = len(WORDS) * SAMPLES
    assert res["pipeline"]["n_images"] == n
    rows = [json.loads(line) for line in (images / "metadata.jsonl").read_text().splitlines() if line.strip()]
    assert len(rows) == n
    assert [row["text"] for row in rows] == [w for w in WORDS for _ in range(SAMPLES)]
    pngs = sorted(images.glob("*.png"))
    assert len(pngs) == n
    assert sorted(row["file_name"] for row in rows) == [p.name for p in pngs]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_device_check_default_cuda_without_gpu_fails_naming_cuda(token_cache):
    r = _run("device_check.py", "--tokens", token_cache)
    assert r.returncode != 0
    assert "CUDA" in r.stderr, r.stderr[-2000:]
    assert r.stdout.strip() == ""  # no JSON result


# ---------------------------------------------------------------------------------------------- timed_finetune.py
def _finetune_args(cache, run, export, *extra, budget=8):
    ar = json.loads((PRETRAINED / "ar" / "config.json").read_text())["ar"]  # the bundled AR's context and levels
    shape = [x for k in ("max_seq_len", "levels", "read_levels") for x in ("--set", f"model.{k}={ar[k]}")]
    return ["--budget-s", budget, "--config", REPO / "configs" / "ar_mini.yaml", "--data", cache,
            "--tokenizer", PRETRAINED / "image_tokenizer", "--init", PRETRAINED / "ar", "--out", run, "--val", cache,
            "--export", export, "--set", "train.device=cpu", "--set", "train.batch_size=4",
            "--set", "train.progress=false", "--set", "train.warmup_steps=2", *shape, *extra]


def _check_export(export: Path):
    from safetensors import safe_open
    assert (export / "config.json").is_file()
    cfg = json.loads((export / "config.json").read_text())
    bundled = json.loads((PRETRAINED / "ar" / "config.json").read_text())
    assert "ar" in cfg and cfg["grid"] == bundled["grid"]
    with safe_open(str(export / "model.safetensors"), "pt") as f:
        keys = list(f.keys())
        assert keys
        dtypes = {f.get_tensor(k).dtype for k in keys}
    assert dtypes == {torch.float16}, dtypes


def _check_val(res):
    for k in ("val_loss_image", "val_loss_text"):
        assert math.isfinite(res["val"][k]), res["val"]


def test_timed_finetune_trains_exports_and_export_only(token_cache, tmp_path):
    run, export, export2 = tmp_path / "run", tmp_path / "export", tmp_path / "export2"
    r = _run("timed_finetune.py", *_finetune_args(token_cache, run, export))
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(r.stdout)
    # the loop's budget (train.budget_s) stopped the run, far below the config's 8500 steps
    assert PROBE[1] <= res["train"]["steps"] < 8500
    assert "budget 8 s" in r.stderr
    assert math.isfinite(res["train"]["train"]["loss"])
    _check_val(res)
    assert (run / "final" / "model.safetensors").is_file()
    assert Path(res["exported_from"]) == run / "final"
    _check_export(export)

    # --export-only: no training, the same final model exported again (same val losses)
    r2 = _run("timed_finetune.py", *_finetune_args(token_cache, run, export2, "--export-only"))
    assert r2.returncode == 0, r2.stderr[-3000:]
    res2 = json.loads(r2.stdout)
    assert "train" not in res2
    assert Path(res2["exported_from"]) == run / "final"
    _check_val(res2)
    assert res2["val"] == pytest.approx(res["val"], abs=1e-6)
    _check_export(export2)


def test_timed_finetune_refuses_a_budget_of_zero(token_cache, tmp_path):
    r = _run("timed_finetune.py", *_finetune_args(token_cache, tmp_path / "run", tmp_path / "ex", budget=0))
    assert r.returncode == 2 and r.stderr.strip() == "error: --budget-s must be > 0 seconds for a training run, got 0"
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------------------------------------- profile_step.py
@pytest.mark.slow
def test_profile_step_accounts_for_the_step(tmp_path):
    """The kernel profile of a packaged step (batch 2) names where the time goes, and its groups add up to roughly
    the timed step (the profiler sees every kernel of the package)."""
    out = tmp_path / "prof.json"
    r = _run("profile_step.py", "--batch", 2, "--steps", 30, "--json", out, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(out.read_text())
    assert json.loads(r.stdout) == res
    groups = res["profiled_ms_per_step"]
    assert groups["gemm_templates"] > 0 and groups["attention"] > 0 and groups["sampling"] > 0
    assert 0.3 * res["step_ms"] <= sum(groups.values()) <= 1.5 * res["step_ms"]
    assert res["batch"] == 2 and res["cache_length"] % 64 == 0 and res["kv_cache_mb_read_per_step"] > 0
