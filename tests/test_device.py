"""Device and precision support: resolve_device, run_training's bf16 autocast, Pipeline.to, `--device` on the CLI,
and matmul_gflops on an explicit device. Fast, CPU only; the CUDA-absent checks skip on a machine with a GPU."""
import json
import math
import subprocess
import sys

import pytest
import torch
from conftest import run_inproc

from xomni.errors import XomniError
from xomni.utils import resolve_device

NO_CUDA = not torch.cuda.is_available()
needs_no_cuda = pytest.mark.skipif(not NO_CUDA, reason="checks the error for a machine without CUDA")
PROMPT = 'a white poster with the text "HELLO" in black bold sans-serif letters'


# ---------------------------------------------------------------------------------------------- resolve_device
def test_resolve_device_cpu_and_auto():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(" CPU ") == torch.device("cpu")
    assert isinstance(resolve_device("cpu"), torch.device)
    auto = resolve_device("auto")
    assert auto.type == ("cuda" if torch.cuda.is_available() else "cpu")
    if NO_CUDA:
        assert auto == torch.device("cpu")
        assert resolve_device() == torch.device("cpu")  # the default is auto


@pytest.mark.parametrize("spec", ["tpu", "xla", "meta", "cuda:x"])
def test_resolve_device_unknown_raises_naming_it(spec):
    with pytest.raises(XomniError) as ei:
        resolve_device(spec)
    msg = str(ei.value)
    assert repr(spec) in msg and "cpu" in msg and "cuda" in msg, msg


@needs_no_cuda
@pytest.mark.parametrize("spec", ["cuda", "cuda:0", "CUDA:1"])
def test_resolve_device_cuda_without_gpu_raises(spec):
    with pytest.raises(XomniError) as ei:
        resolve_device(spec)
    msg = str(ei.value)
    assert repr(spec.lower()) in msg and "CUDA" in msg, msg


# ---------------------------------------------------------------------------------------------- run_training
class _Data:
    def __init__(self, n=16, d=8):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, d, generator=g)
        self.y = torch.randn(n, 1, generator=g)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"x": self.x[i], "y": self.y[i]}


def _train(tmp_path, precision, steps=3):
    from xomni.train import TrainConfig, run_training
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    seen = []

    def loss_fn(m, batch, gen):
        h = m[0](batch["x"])  # the Linear's output: bf16 under CPU bf16 autocast
        pred = m[2](m[1](h))
        seen.append({"autocast": torch.is_autocast_enabled("cpu"),
                     "dtype": torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None,
                     "linear_out": h.dtype})
        return torch.nn.functional.mse_loss(pred.float(), batch["y"]), {}

    cfg = TrainConfig(out_dir=str(tmp_path / precision), steps=steps, batch_size=4, lr=1e-2, warmup_steps=1,
                      log_every=1, ckpt_every=0, progress=False, device="cpu", precision=precision)
    res = run_training(cfg, model, _Data(), loss_fn)
    return model, seen, res


def test_run_training_bf16_runs_the_loss_under_autocast(tmp_path):
    before = torch.is_autocast_enabled("cpu")
    model, seen, _ = _train(tmp_path, "bf16")
    assert len(seen) == 3
    assert all(s["autocast"] and s["dtype"] == torch.bfloat16 and s["linear_out"] == torch.bfloat16 for s in seen), seen
    assert torch.is_autocast_enabled("cpu") == before  # autocast does not leak out of the loop
    # parameters (and so their gradients and the optimizer state) stay fp32, on the resolved device
    assert all(p.dtype == torch.float32 and p.device.type == "cpu" for p in model.parameters())
    losses = [json.loads(ln)["loss"] for ln in (tmp_path / "bf16" / "log.jsonl").read_text().splitlines()]
    assert len(losses) == 3 and all(math.isfinite(x) for x in losses)


def test_run_training_fp32_has_no_autocast(tmp_path):
    model, seen, _ = _train(tmp_path, "fp32")
    assert len(seen) == 3
    assert all(not s["autocast"] and s["linear_out"] == torch.float32 for s in seen), seen
    assert all(p.dtype == torch.float32 for p in model.parameters())


@pytest.mark.parametrize("precision", ["fp16", "BF16", ""])
def test_run_training_bad_precision_raises_before_training(tmp_path, precision):
    from xomni.train import TrainConfig, run_training
    called = []

    def loss_fn(m, batch, gen):
        called.append(1)
        return m(batch["x"]).mean(), {}

    cfg = TrainConfig(out_dir=str(tmp_path / "run"), steps=2, batch_size=4, progress=False, device="cpu",
                      precision=precision)
    with pytest.raises(XomniError, match="precision") as ei:
        run_training(cfg, torch.nn.Linear(8, 1), _Data(), loss_fn)
    assert repr(precision) in str(ei.value)
    assert not called and not (tmp_path / "run").exists()


def test_run_training_unknown_device_raises(tmp_path):
    from xomni.train import TrainConfig, run_training
    cfg = TrainConfig(out_dir=str(tmp_path / "run"), steps=2, batch_size=4, progress=False, device="tpu")
    with pytest.raises(XomniError, match="tpu"):
        run_training(cfg, torch.nn.Linear(8, 1), _Data(), lambda m, b, g: (m(b["x"]).mean(), {}))


# ---------------------------------------------------------------------------------------------- Pipeline.to
@pytest.fixture(scope="module")
def pipe():
    from xomni.pipeline import Pipeline
    return Pipeline.from_pretrained()


def test_pipeline_to_bf16_casts_only_the_ar_and_still_generates(pipe):
    p = pipe.to("cpu", torch.bfloat16)
    try:
        assert p is pipe
        assert pipe.device == torch.device("cpu")
        assert {t.dtype for t in pipe.ar.parameters()} == {torch.bfloat16}
        assert {t.dtype for t in pipe.decoder.parameters()} == {torch.float32}
        assert {t.dtype for t in pipe.image_tokenizer.parameters()} == {torch.float32}
        images = pipe(PROMPT, num_images=1, seed=0)
        h, w = pipe.image_tokenizer.config.image_size
        assert len(images) == 1 and images[0].size == (w, h) and images[0].mode == "RGB"
        again = pipe(PROMPT, num_images=1, seed=0)  # same seed, same device -> same image
        assert again[0].tobytes() == images[0].tobytes()
    finally:
        assert pipe.to(torch.device("cpu"), torch.float32) is pipe
    assert {t.dtype for t in pipe.ar.parameters()} == {torch.float32}


def test_pipeline_to_auto_and_bad_device(pipe):
    assert pipe.to("auto") is pipe
    assert pipe.device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    pipe.to("cpu")
    with pytest.raises(XomniError, match="tpu"):
        pipe.to("tpu")
    assert pipe.device == torch.device("cpu")


# ---------------------------------------------------------------------------------------------- CLI
def _assert_one_line_error(r, *needles):
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert "Traceback" not in r.stderr
    for n in needles:
        assert n in lines[0], lines[0]
    assert r.stdout == ""


def test_generate_bad_device_subprocess(tmp_path, cli_env):
    out = tmp_path / "X.png"
    r = subprocess.run([sys.executable, "-m", "xomni.cli", "generate", PROMPT, "--device", "tpu", "-o", str(out)],
                       capture_output=True, text=True, env=cli_env, timeout=120)
    _assert_one_line_error(r, "tpu")
    assert not out.exists()


def test_bad_device_in_process(tmp_path, monkeypatch, capsys):
    from PIL import Image
    img = tmp_path / "a.png"
    Image.new("RGB", (128, 32), "white").save(img)
    out = tmp_path / "X.png"
    cases = [(["generate", PROMPT, "--device", "tpu", "-o", str(out)], ["tpu"]),
             (["caption", str(img), "--device", "tpu"], ["tpu"])]
    if NO_CUDA:
        cases += [(["generate", PROMPT, "--device", "cuda", "-o", str(out)], ["cuda"]),
                  (["generate", PROMPT, "--device", "cuda:0", "-o", str(out)], ["cuda:0"]),
                  (["caption", str(img), "--device", "cuda"], ["cuda"])]
    for args, needles in cases:
        _assert_one_line_error(run_inproc(args, monkeypatch, capsys), *needles)
    assert not out.exists()


def test_generate_cpu_reports_device(tmp_path, monkeypatch, capsys):
    out = tmp_path / "X.png"
    r = run_inproc(["generate", PROMPT, "--device", "cpu", "--n", "1", "-o", str(out),
                    "--json", str(tmp_path / "r.json")], monkeypatch, capsys)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["device"] == "cpu" and res["n_images"] == 1 and out.is_file()
    assert json.loads((tmp_path / "r.json").read_text())["device"] == "cpu"


# ---------------------------------------------------------------------------------------------- hwbench
def test_matmul_gflops_on_cpu():
    from xomni.hwbench import matmul_gflops
    for kw in ({"device": "cpu"}, {"device": torch.device("cpu"), "dtype": torch.bfloat16}):
        g = matmul_gflops(128, repeats=2, **kw)
        assert isinstance(g, float) and math.isfinite(g) and g > 0, (kw, g)


def test_time_steps_times_the_loop_on_a_copy(tmp_path):
    """time_steps runs the real loop (its loss function is called, under the configured precision) on a copy:
    the model's weights and the configured out_dir are untouched."""
    import time

    from xomni.train import TrainConfig, time_steps
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    before = [p.detach().clone() for p in model.parameters()]
    calls = []

    def loss_fn(m, batch, gen):
        calls.append(torch.is_autocast_enabled("cpu"))
        time.sleep(0.02)  # each step takes at least this long
        return torch.nn.functional.mse_loss(m(batch["x"]).float(), batch["y"]), {}

    cfg = TrainConfig(out_dir=str(tmp_path / "never"), steps=1000, batch_size=4, lr=1.0, warmup_steps=0,
                      progress=False, device="cpu", precision="bf16")
    s = time_steps(cfg, model, _Data(), loss_fn, steps=4, warmup=2)
    assert len(calls) == 6 and all(calls)  # warm-up + timed steps, not cfg.steps; bf16 autocast on
    assert 0.02 <= s < 5.0
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))  # lr 1.0 would have moved them
    assert not (tmp_path / "never").exists()
