"""Machine baselines that speed figures are judged against: fp32 matmul rate and memory read bandwidth."""
from __future__ import annotations

import time

import torch


def matmul_gflops(n: int = 1024, repeats: int = 10, dtype: torch.dtype = torch.float32, device="cpu") -> float:
    """Median GEMM rate (GFLOP/s) for n x n @ n x n: fp32 on the CPU at the current thread count by default; on a
    CUDA device (timed with synchronisation) the rate of that GPU in `dtype`."""
    dev = torch.device(device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    a = torch.randn(n, n, dtype=dtype, device=dev)
    b = torch.randn(n, n, dtype=dtype, device=dev)
    for _ in range(2):
        a @ b
    sync()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        sync()
        times.append(time.perf_counter() - t)
    times.sort()
    return 2 * n ** 3 / times[len(times) // 2] / 1e9


def read_bandwidth_gbs(mib: int = 32, repeats: int = 20) -> float:
    """Median read bandwidth (GB/s): sum over a float32 buffer of `mib` MiB (a reduction reads every byte once)."""
    x = torch.ones(mib * 1024 * 1024 // 4, dtype=torch.float32)
    for _ in range(3):
        x.sum()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        x.sum()
        times.append(time.perf_counter() - t)
    times.sort()
    return x.numel() * 4 / times[len(times) // 2] / 1e9
