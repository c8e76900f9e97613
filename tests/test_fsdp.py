"""FSDP in the shared loop: FSDP = DDP = one process on 2 CPU processes (gloo), kill + resume exact under FSDP,
sharded checkpoints consolidate to the final weights, activation checkpointing and bf16 mixed precision."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from xomni.errors import XomniError

ROOT = Path(__file__).resolve().parents[1]
TOY = str(ROOT / "tests" / "toy_fsdp_train.py")
TORCHRUN = str(Path(sys.executable).parent / "torchrun")


def _env(**extra):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT), OMP_WAIT_POLICY="PASSIVE")
    env.update(extra)
    return env


def _one(out, *args):
    r = subprocess.run([sys.executable, TOY, str(out), *args], env=_env(), capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]


def _two(out, *args, env=None):
    r = subprocess.run([TORCHRUN, "--standalone", "--nproc_per_node=2", TOY, str(out), *args], env=env or _env(),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def _final(out):
    return load_file(str(Path(out) / "final" / "model.safetensors"))


def _maxdiff(a, b):
    assert a.keys() == b.keys()
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("fsdp")
    _one(root / "one")
    _two(root / "ddp", "--set", "parallel=ddp")
    _two(root / "fsdp", "--set", "parallel=fsdp")
    return root


def test_fsdp_ddp_and_one_process_reach_the_same_weights(runs):
    one, ddp, fsdp = _final(runs / "one"), _final(runs / "ddp"), _final(runs / "fsdp")
    assert _maxdiff(one, ddp) <= 1e-5
    assert _maxdiff(one, fsdp) <= 1e-5
    assert _maxdiff(ddp, fsdp) <= 1e-5
    # the sharded checkpoint: one file set per rank, uneven shards, and consolidation gives the final weights
    ck = runs / "fsdp" / "checkpoints" / "step-0000012"
    names = sorted(p.name for p in ck.iterdir())
    assert "model-rank00000.safetensors" in names and "model-rank00001.safetensors" in names
    assert not any(n.endswith((".bin", ".pt", ".pth")) for n in names)
    r0 = load_file(str(ck / "model-rank00000.safetensors"))
    r1 = load_file(str(ck / "model-rank00001.safetensors"))
    assert r0["inp.weight"].shape[0] == 13 and r1["inp.weight"].shape[0] == 12  # 25 rows over 2 ranks
    from xomni.fsdp import consolidate
    full = consolidate(ck)
    assert all(torch.equal(full[k], fsdp[k]) for k in fsdp)


def test_fsdp_kill_then_resume_is_bitwise_identical(tmp_path, runs):
    out = tmp_path / "run"
    proc = subprocess.Popen([TORCHRUN, "--standalone", "--nproc_per_node=2", TOY, str(out), "--set", "parallel=fsdp"],
                            env=_env(XOMNI_TEST_CKPT_DELAY="0.5"), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    ck = out / "checkpoints"
    t0 = time.time()
    while not (ck.is_dir() and (ck / "step-0000006").is_dir()):
        assert proc.poll() is None, "training finished before it could be killed"
        assert time.time() - t0 < 240, "timed out waiting for a checkpoint"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # torchrun and both ranks, as a crash would
    proc.wait()
    assert not (out / "final").exists()
    r = _two(out, "--set", "parallel=fsdp", "--resume", "auto")
    assert "resumed from" in r.stderr
    ref, got = _final(runs / "fsdp"), _final(out)
    assert all(torch.equal(ref[k], got[k]) for k in ref)


@pytest.mark.slow
def test_activation_checkpointing_and_bf16_fsdp(tmp_path, runs):
    _one(tmp_path / "ac", "--set", "activation_checkpointing=true")
    assert _maxdiff(_final(runs / "one"), _final(tmp_path / "ac")) <= 1e-6
    _two(tmp_path / "bf16", "--set", "parallel=fsdp", "--set", "fsdp_mixed_precision=bf16",
         "--set", "activation_checkpointing=true")
    got = _final(tmp_path / "bf16")
    assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in got.values())  # fp32 master weights
    assert 0 < _maxdiff(_final(runs / "one"), got) < 0.05  # bf16 compute: close, not equal


def test_sharded_checkpoint_errors(tmp_path, runs, monkeypatch, capsys):
    """Resuming a sharded checkpoint in one process, consolidating a whole one: one clear line each."""
    from conftest import run_inproc
    sys.path.insert(0, str(ROOT / "tests"))
    from toy_fsdp_train import Blocks, ToyData

    from xomni.config import load_config
    from xomni.train import TrainConfig, run_training
    ck = runs / "fsdp" / "checkpoints" / "step-0000006"
    cfg = load_config(TrainConfig, overrides=[f"out_dir={tmp_path / 'r'}", "steps=12", "batch_size=8",
                                              "progress=false", "device=cpu"])
    with pytest.raises(XomniError, match="sharded .FSDP. checkpoint"):
        run_training(cfg, Blocks(), ToyData(), lambda m, b, g: (m(b["x"]).pow(2).mean(), {}), resume=str(ck))
    r = run_inproc(["train", "consolidate", str(runs / "one" / "checkpoints" / "step-0000006"), "--out",
                    str(tmp_path / "c")], monkeypatch, capsys)
    assert r.returncode == 2 and "already whole" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = run_inproc(["train", "consolidate", str(ck), "--out", str(tmp_path / "c")], monkeypatch, capsys)
    assert r.returncode == 0, r.stderr
    got = load_file(str(tmp_path / "c" / "model.safetensors"))
    assert set(got) == set(_final(runs / "fsdp"))


@pytest.mark.slow
@pytest.mark.smoke  # four 2-process GRPO runs of the tiny pipeline (~2 min on 2 cores)
def test_grpo_under_fsdp_equals_ddp_and_resumes_exactly(tmp_path):
    """`xomni train rl` on 2 processes: FSDP and DDP reach the same policy within float tolerance, and an FSDP run
    stopped after step 1 and resumed (`--resume auto`: sharded checkpoint, prompt pool) ends bitwise where the
    uninterrupted one does. Rollouts sample through the unsharded modules (unshard_for_loss)."""
    from test_rl import PROMPTS, tiny_pipeline
    tiny_pipeline().save_pretrained(tmp_path / "pipe")
    (tmp_path / "p.txt").write_text("\n".join(PROMPTS * 4) + "\n")

    def grpo(out, parallel, steps, *extra):
        r = subprocess.run([TORCHRUN, "--standalone", "--nproc_per_node=2", "-m", "xomni.cli", "train", "rl",
                            "--model", str(tmp_path / "pipe"), "--prompts", str(tmp_path / "p.txt"),
                            "--out", str(tmp_path / out), "--set", "rewards={aesthetic: 1.0}", "--set",
                            "group_size=2", "--set", "train.batch_size=4", "--set", "train.grad_accum=2",
                            "--set", "train.lr=1e-3", "--set", "val_n=0", "--set", "reward_workers=0",
                            "--set", f"train.parallel={parallel}", "--set", "train.num_threads=1", "--set",
                            "train.progress=false", "--set", "decode_steps=1", "--set", f"train.steps={steps}",
                            *extra], env=_env(), capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr[-3000:]
        return load_file(tmp_path / out / "final" / "model.safetensors")

    ddp, fsdp = grpo("ddp", "ddp", 2), grpo("fsdp", "fsdp", 2)
    grpo("resumed", "fsdp", 1)
    resumed = grpo("resumed", "fsdp", 2, "--resume", "auto")
    base = load_file(tmp_path / "pipe" / "ar" / "model.safetensors")
    assert max((ddp[k] - base[k].float()).abs().max().item() for k in base) > 1e-4  # the policy moved
    assert max((ddp[k] - fsdp[k]).abs().max().item() for k in ddp) <= 1e-5
    assert all(torch.equal(fsdp[k], resumed[k]) for k in fsdp)
