import json
import os
import shutil

import pytest
import torch

from xomni.metrics.longtext import BENCH_EN as LONGTEXT_BENCH_EN

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("XOMNI_AUTO_COMPILE", "0")  # no test takes the compiled path unless it asks
torch.set_num_threads(1)


def pytest_configure(config):
    config.addinivalue_line("markers", "smoke: the end-to-end smoke tests CI runs every time (with slow)")


@pytest.fixture
def cli_env():
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = "1"
    env["HF_HUB_OFFLINE"] = "1"
    return env


# LongText-Bench prompts as shipped inside the package (xomni/data/longtext)
BENCH_EN = str(LONGTEXT_BENCH_EN)


def run_inproc(args, monkeypatch, capsys):
    """The CLI's own main() in this process (fast): a CompletedProcess with the exit code, stdout and stderr."""
    import subprocess
    import sys

    import xomni.cli
    monkeypatch.setattr(sys, "argv", ["xomni", *args])
    capsys.readouterr()
    code = 0
    try:
        xomni.cli.main()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, out, err)



@pytest.fixture(scope="session")
def base_pipeline(tmp_path_factory):
    """The bundled pipeline without its drawing adapter (ar_adapter/): a plain AR model that draws and reads with the
    same weights, for tests of plain LoRA adapters (the bundled model accepts keep-reader ones only)."""
    from xomni.pipeline import AR_ADAPTER, default_model_dir
    out = tmp_path_factory.mktemp("base") / "pipeline"
    shutil.copytree(default_model_dir(), out, ignore=shutil.ignore_patterns(AR_ADAPTER))
    index = json.loads((out / "model_index.json").read_text())
    index["components"].pop(AR_ADAPTER, None)
    (out / "model_index.json").write_text(json.dumps(index, indent=2))
    return out
