import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
torch.set_num_threads(1)


def pytest_configure(config):
    config.addinivalue_line("markers", "smoke: the end-to-end smoke tests CI runs every time (with slow)")


@pytest.fixture
def cli_env():
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = "1"
    env["HF_HUB_OFFLINE"] = "1"
    return env
