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


def device_report(n: int = 1024) -> dict:
    """What this machine is, for reading speed figures: torch and Python versions, CPU cores and torch threads, the
    CPU's fp32 matmul rate, and each CUDA device (name, memory, compute capability, bf16 matmul rate) when any."""
    import os
    import platform
    out = {"torch": torch.__version__, "python": platform.python_version(), "platform": platform.platform(),
           "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
           "torch_interop_threads": torch.get_num_interop_threads(), "cpu_fp32_gflops": round(matmul_gflops(n), 1),
           "cuda": {"available": torch.cuda.is_available(), "version": torch.version.cuda, "devices": []}}
    for i in range(torch.cuda.device_count() if torch.cuda.is_available() else 0):
        p = torch.cuda.get_device_properties(i)
        out["cuda"]["devices"].append({
            "index": i, "name": p.name, "memory_gib": round(p.total_memory / 2 ** 30, 1),
            "capability": f"{p.major}.{p.minor}",
            "bf16_gflops": round(matmul_gflops(4096, dtype=torch.bfloat16, device=f"cuda:{i}"), 1)})
    return out
