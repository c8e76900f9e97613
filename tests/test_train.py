"""The shared training loop: exact resume after SIGKILL, torchrun equivalence, checkpoint errors, config, NaN guard."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from xomni.checkpoint import load_model_weights, read_safetensors
from xomni.config import help_rows, load_config
from xomni.errors import XomniError
from xomni.train import TrainConfig, global_batch_indices, rank_slice, run_training

ROOT = Path(__file__).resolve().parents[1]
TOY = str(ROOT / "tests" / "toy_train.py")


def _env(**extra):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    env.update(extra)
    return env


def _run(out, *args, env=None, check=True):
    return subprocess.run([sys.executable, TOY, str(out), *args], env=env or _env(), check=check,
                          capture_output=True, text=True, timeout=300)


def _params(out):
    return load_file(str(Path(out) / "final" / "model.safetensors"))


def _assert_bitwise_equal(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"tensor {k} differs"


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref")
    _run(out)
    return _params(out)


def _start(out, env):
    return subprocess.Popen([sys.executable, TOY, str(out)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def _wait_for(pred, proc, timeout=120):
    t0 = time.time()
    while not pred():
        if proc.poll() is not None:
            raise AssertionError("training finished before it could be killed")
        if time.time() - t0 > timeout:
            proc.kill()
            raise AssertionError("timed out waiting")
        time.sleep(0.02)


def test_sigkill_then_resume_is_bitwise_identical(tmp_path, reference_run):
    out = tmp_path / "run"
    # slow each step down a little via a checkpoint delay so that the kill lands mid-run
    proc = _start(out, _env(XOMNI_TEST_CKPT_DELAY="0.3"))
    ck = out / "checkpoints"
    _wait_for(lambda: ck.is_dir() and any(p.name == "step-0000015" for p in ck.iterdir()), proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "final").exists()
    _run(out, "--resume", "auto")
    _assert_bitwise_equal(reference_run, _params(out))


def test_sigterm_saves_a_checkpoint_then_resume_is_bitwise_identical(tmp_path, reference_run):
    """SIGTERM (or Ctrl-C) finishes the current step, checkpoints it even between ckpt_every steps, exits 143."""
    out = tmp_path / "run"
    proc = _start(out, _env(XOMNI_TEST_CKPT_DELAY="0.3"))
    log_path = out / "log.jsonl"
    _wait_for(lambda: log_path.is_file() and len(log_path.read_text().splitlines()) >= 12, proc)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 128 + signal.SIGTERM
    assert not (out / "final").exists()
    steps = sorted(int(p.name.split("-")[1]) for p in (out / "checkpoints").iterdir() if p.name.startswith("step-"))
    last_logged = json.loads(log_path.read_text().splitlines()[-1])["step"]
    assert steps[-1] == last_logged and 12 <= steps[-1] < 40  # the step it stopped at, not only multiples of 5
    _run(out, "--resume", "auto")
    _assert_bitwise_equal(reference_run, _params(out))


def test_sigkill_while_writing_checkpoint_then_resume(tmp_path, reference_run):
    out = tmp_path / "run"
    proc = _start(out, _env(XOMNI_TEST_CKPT_DELAY="3"))
    ck = out / "checkpoints"
    # wait until the second checkpoint (step 10) is being written: its temp dir exists
    _wait_for(lambda: ck.is_dir() and any(p.name.startswith(".tmp-step-0000010") for p in ck.iterdir()), proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    names = sorted(p.name for p in ck.iterdir())
    assert any(n.startswith(".tmp-") for n in names), names  # the half-written checkpoint is there...
    assert "step-0000010" not in names and "step-0000005" in names
    _run(out, "--resume", "auto")  # ...and is ignored: we resume from step 5
    assert not any(p.name.startswith(".tmp-") for p in ck.iterdir())
    _assert_bitwise_equal(reference_run, _params(out))


def test_resume_without_checkpoint_starts_fresh(tmp_path, reference_run):
    out = tmp_path / "run"
    _run(out, "--resume", "auto")
    _assert_bitwise_equal(reference_run, _params(out))


def test_torchrun_two_processes_match_one(tmp_path):
    env = _env(TOY_NO_RANDOM="1", OMP_WAIT_POLICY="PASSIVE")
    one = tmp_path / "one"
    _run(one, "--set", "steps=12", env=env)
    two = tmp_path / "two"
    torchrun = str(Path(sys.executable).parent / "torchrun")
    r = subprocess.run([torchrun, "--standalone", "--nproc_per_node=2", TOY, str(two), "--set", "steps=12"],
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    a, b = _params(one), _params(two)
    diff = max((a[k] - b[k]).abs().max().item() for k in a)
    assert diff <= 1e-5, diff
    # the ranks read different samples, and together exactly the global batches
    r0 = [int(x) for x in (two / "reads-rank0.txt").read_text().split()]
    r1 = [int(x) for x in (two / "reads-rank1.txt").read_text().split()]
    single = [int(x) for x in (one / "reads-rank0.txt").read_text().split()]
    assert len(r0) == len(r1) == 12 * 4
    for s in range(12):
        g = single[s * 8:(s + 1) * 8]
        assert r0[s * 4:(s + 1) * 4] == g[:4] and r1[s * 4:(s + 1) * 4] == g[4:]
        assert not set(r0[s * 4:(s + 1) * 4]) & set(r1[s * 4:(s + 1) * 4])


def test_batch_order_is_a_function_of_seed_and_step():
    a = global_batch_indices(10, 4, 7, seed=3)
    assert a == global_batch_indices(10, 4, 7, seed=3)
    assert a != global_batch_indices(10, 4, 7, seed=4)
    epoch = sum((global_batch_indices(10, 5, s, seed=1) for s in range(2)), [])
    assert sorted(epoch) == list(range(10))  # one epoch sees every sample once
    assert rank_slice(list(range(8)), 1, 2) == [4, 5, 6, 7]


def _tiny_model():
    torch.manual_seed(0)
    return torch.nn.Linear(4, 2)


def test_corrupt_truncated_and_mismatched_checkpoints(tmp_path, reference_run):
    out = tmp_path / "run"
    _run(out, "--set", "steps=5")
    f = out / "final" / "model.safetensors"
    model = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.Tanh(), torch.nn.Dropout(0.1), torch.nn.Linear(32, 1))
    load_model_weights(model, out / "final")  # the good one loads
    # mismatched: another architecture
    with pytest.raises(XomniError, match=r"does not match the model.*shape"):
        m2 = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Dropout(0.1), torch.nn.Linear(16, 1))
        load_model_weights(m2, out / "final")
    with pytest.raises(XomniError, match="unexpected tensor"):
        load_model_weights(torch.nn.Sequential(torch.nn.Linear(8, 32)), f)
    # truncated
    data = f.read_bytes()
    bad = tmp_path / "trunc.safetensors"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(XomniError, match=r"trunc\.safetensors is corrupt or truncated"):
        read_safetensors(bad)
    # corrupt header
    bad2 = tmp_path / "corrupt.safetensors"
    bad2.write_bytes(b"\xff" * 64 + data[64:])
    with pytest.raises(XomniError, match=r"corrupt\.safetensors is corrupt"):
        read_safetensors(bad2)
    # a resume from a checkpoint whose optimizer file is truncated names that file
    ck = out / "checkpoints" / "step-0000005"
    opt = ck / "optimizer.safetensors"
    opt.write_bytes(opt.read_bytes()[:100])
    r = _run(out, "--resume", str(ck), check=False)
    assert r.returncode != 0 and "optimizer.safetensors is corrupt or truncated" in r.stderr


def test_config_yaml_and_overrides(tmp_path):
    y = tmp_path / "c.yaml"
    y.write_text("lr: 0.5\nsteps: 7\n")
    cfg = load_config(TrainConfig, y, ["steps=9", "deterministic=true"])
    assert (cfg.lr, cfg.steps, cfg.deterministic) == (0.5, 9, True)
    with pytest.raises(XomniError, match="unknown key 'nope'"):
        load_config(TrainConfig, overrides=["nope=1"])
    with pytest.raises(XomniError, match="expected an integer"):
        load_config(TrainConfig, overrides=["steps=abc"])
    for name, _, help_text in help_rows(TrainConfig):
        assert len(help_text) > 10, f"field {name} has no help text"


def test_help_config_shows_each_trainers_own_defaults():
    from xomni.decoder.config import DecoderTrainConfig
    from xomni.tokenizer.config import TokenizerTrainConfig
    dec = {n: d for n, d, _ in help_rows(DecoderTrainConfig)}
    tok = {n: d for n, d, _ in help_rows(TokenizerTrainConfig)}
    assert dec["train.steps"] == "3000" and dec["train.batch_size"] == "16"
    assert tok["train.steps"] == "400" and tok["train.batch_size"] == "32"
    assert {n: d for n, d, _ in help_rows(TrainConfig)}["steps"] == repr(TrainConfig().steps)


def test_nan_steps_are_skipped_counted_and_abort(tmp_path):
    data = [{"x": torch.randn(4), "y": torch.randn(2)} for _ in range(16)]
    calls = {"n": 0}

    def loss_fn(m, batch, gen):
        calls["n"] += 1
        loss = torch.nn.functional.mse_loss(m(batch["x"]), batch["y"])
        return (loss * float("nan") if calls["n"] in (3, 4) else loss), {}

    model = _tiny_model()
    cfg = load_config(TrainConfig, overrides=[f"out_dir={tmp_path/'a'}", "steps=10", "batch_size=4",
                                              "progress=false", "max_bad_steps=5", "ckpt_every=0"])
    res = run_training(cfg, model, data, loss_fn)
    assert res.bad_steps == 2 and all(torch.isfinite(p).all() for p in model.parameters())

    def always_nan(m, batch, gen):
        return m(batch["x"]).sum() * float("inf"), {}

    cfg2 = load_config(TrainConfig, overrides=[f"out_dir={tmp_path/'b'}", "steps=10", "batch_size=4",
                                               "progress=false", "max_bad_steps=3"])
    with pytest.raises(XomniError, match="3 steps had a NaN/inf"):
        run_training(cfg2, _tiny_model(), data, always_nan)


def test_budget_sets_the_steps_so_that_the_schedule_ends_on_time(tmp_path):
    data = [{"x": torch.randn(4), "y": torch.randn(2)} for _ in range(16)]

    def slow_loss(m, batch, gen):  # >= 10 ms a step: a 1 s budget holds at most ~115 steps
        time.sleep(0.01)
        return torch.nn.functional.mse_loss(m(batch["x"]), batch["y"]), {}

    cfg = load_config(TrainConfig, overrides=[f"out_dir={tmp_path}", "steps=2000", "batch_size=4", "budget_s=1",
                                              "warmup_steps=5", "lr=0.01", "progress=false", "log_every=1",
                                              "ckpt_every=0"])
    res = run_training(cfg, _tiny_model(), data, slow_loss)
    assert 25 < res.step < 200
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert log[-1]["step"] == res.step and log[-1]["lr"] < 0.01 * (cfg.min_lr_ratio + 0.01)  # the cosine ended
    ck = sorted((tmp_path / "checkpoints").iterdir())[-1]
    assert json.loads((ck / "state.json").read_text())["train"]["steps"] == res.step


def test_partial_nested_section_keeps_the_field_defaults():
    from xomni.ar.train import ARTrainConfig
    cfg = load_config(ARTrainConfig, overrides=["train.lr=0.5"])
    default = ARTrainConfig()
    assert cfg.train.lr == 0.5
    assert cfg.train.steps == default.train.steps != TrainConfig().steps  # not reset to TrainConfig's default


def test_run_dir_check_is_rank_zeros_alone(tmp_path, monkeypatch):
    """Under torchrun a rank that starts after rank 0 began writing the log must not refuse the run: rank 0
    decides (and its exit 2 stops the others)."""
    from xomni.train import check_run_dir
    (tmp_path / "log.jsonl").write_text("{}\n")
    monkeypatch.setenv("RANK", "1")
    check_run_dir(tmp_path, None)
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(XomniError, match="already holds a run"):
        check_run_dir(tmp_path, None)


@pytest.mark.parametrize("stage,field", [("tokenizer", "train.steps"), ("decoder", "train.steps"), ("ar", "t2i_ratio"),
                                         ("judge", "data"), ("lora", "lora.rank"), ("rl", "group_size")])
def test_help_config_lists_the_fields_and_exits_before_other_checks(stage, field, tmp_path, monkeypatch, capsys):
    """`xomni train STAGE --help-config` is eager: it prints that trainer's fields and exits 0 even next to an
    option that would fail (a --config that does not exist), and runs nothing."""
    from conftest import run_inproc
    r = run_inproc(["train", stage, "--config", str(tmp_path / "nope.yaml"), "--help-config"], monkeypatch, capsys)
    assert r.returncode == 0, r.stderr
    assert any(line.split()[0] == field for line in r.stdout.splitlines() if line.strip())
    assert not list(tmp_path.iterdir())
