"""`xomni bench serve`: a load test of `xomni serve` from a second process on 127.0.0.1 (bounded count and time).

1. The same C x R requests (distinct words, fixed seeds, n=1) one at a time, then from C concurrent clients
   (R each, back to back): lost, 5xx, p50/p95 latency, throughput, and the batching gain (concurrent over
   one-at-a-time throughput, from this one run). It also compares each image across the two phases: the
   server's batching must not change what a seed draws (same tokens; the batched decoder may round a pixel by 1).
2. Overflow: the same concurrent load against a server with a tiny queue (--max-queue): some 429s with
   Retry-After, still 0 lost and 0 5xx.
Clients use only the standard library (http.client), one thread each.
"""
from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse

WORDS = ["OPEN", "CLOSED", "EXIT", "SALE", "HELLO", "PARK", "STOP", "CAFE", "HOTEL", "BANK", "TAXI", "BUS",
         "books", "bread", "fresh", "music", "north", "south", "water", "lemon", "Metro", "Pizza", "Rooms", "Tea",
         "24", "1999", "50%", "$5", "BIG-1", "Gate 7", "Zone A", "Dock 3"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """`xomni serve` in a child process on a free port of 127.0.0.1."""

    def __init__(self, *args: str, threads: int = 1, ready_timeout: float = 180.0):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1"}
        self.proc = subprocess.Popen([sys.executable, "-m", "xomni.cli", "serve", "--port", str(self.port),
                                      "--threads", str(threads), "--log-level", "warning", *args],
                                     env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        t0 = time.monotonic()
        while time.monotonic() - t0 < ready_timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"xomni serve exited with {self.proc.returncode}: {self.proc.stderr.read()}")
            try:
                if request(self.url, "GET", "/healthz", timeout=2)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"xomni serve did not answer /healthz within {ready_timeout} s")

    def stop(self, timeout: float = 60.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def request(url: str, method: str, path: str, body: dict | None = None, timeout: float = 300.0):
    """(status, headers, parsed JSON or None): one request on a fresh connection."""
    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
    try:
        data = json.dumps(body).encode() if body is not None else None
        conn.request(method, path, body=data, headers={"Content-Type": "application/json"} if data else {})
        r = conn.getresponse()
        raw = r.read()
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = None
        return r.status, dict(r.getheaders()), parsed
    finally:
        conn.close()


def plan(clients: int, per_client: int, template: str) -> list[list[dict]]:
    """Per client, its request bodies: distinct words and seeds."""
    out = []
    for c in range(clients):
        out.append([{"prompt": template.format(text=WORDS[(c * per_client + r) % len(WORDS)]), "n": 1,
                     "seed": c * per_client + r} for r in range(per_client)])
    return out


def run_phase(url: str, bodies: list[list[dict]], concurrent: bool, deadline: float) -> dict:
    """Send every body (clients in parallel when `concurrent`, else all one at a time); per request: status,
    latency, image."""
    results: list[list[dict]] = [[] for _ in bodies]

    def client(c: int) -> None:
        for b in bodies[c]:
            if time.monotonic() > deadline:
                results[c].append({"status": None, "skipped": True})
                continue
            t0 = time.monotonic()
            try:
                status, headers, js = request(url, "POST", "/v1/images/generations", b)
            except OSError as e:   # no answer at all: a lost request
                results[c].append({"status": None, "error": repr(e), "latency": time.monotonic() - t0})
                continue
            results[c].append({"status": status, "latency": time.monotonic() - t0,
                               "retry_after": headers.get("retry-after") or headers.get("Retry-After"),
                               "image": js["data"][0]["b64_json"] if status == 200 else None,
                               "batch_rows": js["timings"]["batch_rows"] if status == 200 else None})

    t0 = time.monotonic()
    if concurrent:
        threads = [threading.Thread(target=client, args=(c,)) for c in range(len(bodies))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    else:
        for c in range(len(bodies)):
            client(c)
    wall = time.monotonic() - t0
    flat = [r for rs in results for r in rs]
    ok = [r for r in flat if r["status"] == 200]
    lat = sorted(r["latency"] for r in ok)
    statuses: dict[str, int] = {}
    for r in flat:
        statuses[str(r["status"])] = statuses.get(str(r["status"]), 0) + 1
    return {
        "requests": len(flat), "ok": len(ok), "statuses": statuses,
        "lost": sum(1 for r in flat if r["status"] is None and not r.get("skipped")),
        "skipped_time_limit": sum(1 for r in flat if r.get("skipped")),
        "5xx": sum(1 for r in flat if r["status"] is not None and r["status"] >= 500),
        "429": sum(1 for r in flat if r["status"] == 429),
        "429_with_retry_after": sum(1 for r in flat if r["status"] == 429 and r.get("retry_after")),
        "wall_s": round(wall, 3), "throughput_rps": round(len(ok) / wall, 3) if wall else None,
        "latency_p50_s": round(percentile(lat, 50), 3) if lat else None,
        "latency_p95_s": round(percentile(lat, 95), 3) if lat else None,
        "mean_batch_rows": round(sum(r["batch_rows"] for r in ok) / len(ok), 2) if ok else None,
        "_images": [[r.get("image") for r in rs] for rs in results],
    }


def max_pixel_diff(a_b64: str, b_b64: str) -> int:
    import base64
    import io

    import numpy as np
    from PIL import Image
    a, b = (np.asarray(Image.open(io.BytesIO(base64.b64decode(x))).convert("RGB"), dtype=np.int16)
            for x in (a_b64, b_b64))
    return int(np.abs(a - b).max()) if a.shape == b.shape else 255


def percentile(sorted_vals: list[float], q: float) -> float:
    """Linear-interpolated percentile of an already sorted list."""
    if len(sorted_vals) == 1:
        return sorted_vals[0]
    k = (len(sorted_vals) - 1) * q / 100
    lo = int(k)
    hi = min(lo + 1, len(sorted_vals) - 1)
    return sorted_vals[lo] + (sorted_vals[hi] - sorted_vals[lo]) * (k - lo)


def run_bench(url: str | None, clients: int = 32, per_client: int = 4, max_batch: int = 32,
              overflow_queue: int = 4, threads: int = 1, time_limit: float = 600.0) -> dict:
    deadline = time.monotonic() + time_limit
    own = url is None
    server = ServerProcess("--max-batch", str(max_batch), "--max-queue", str(max(128, 2 * clients)),
                           threads=threads) if own else None
    try:
        url = url or server.url
        card = request(url, "GET", "/v1/models")[2]["data"][0]
        bodies = plan(clients, per_client, card["prompt_template"])
        request(url, "POST", "/v1/images/generations", {"prompt": bodies[0][0]["prompt"], "n": 1})  # warm-up
        seq = run_phase(url, bodies, concurrent=False, deadline=deadline)
        conc = run_phase(url, bodies, concurrent=True, deadline=deadline)
        health = request(url, "GET", "/healthz")[2]
    finally:
        if server:
            server.stop()
    pairs = [(a, b) for a, b in zip(sum(seq.pop("_images"), []), sum(conc.pop("_images"), []))
             if a is not None and b is not None]
    identical = sum(1 for a, b in pairs if a == b)
    close = sum(1 for a, b in pairs if max_pixel_diff(a, b) <= 1)
    out = {
        "model": card["id"], "url": url if not own else "own server (127.0.0.1, child process)",
        "clients": clients, "requests_per_client": per_client, "max_batch": max_batch, "server_threads": threads,
        "one_at_a_time": seq, "concurrent": conc,
        "batching_gain": round(conc["throughput_rps"] / seq["throughput_rps"], 2)
        if conc["throughput_rps"] and seq["throughput_rps"] else None,
        # batching must not change what a seed draws: same tokens; the batched decoder may round a pixel by 1/255
        "same_image_both_phases": {"byte_identical": identical, "within_1_of_255": close, "compared": len(pairs)},
        "server": {k: health["batcher"][k] for k in ("batches", "rows", "requests", "max_batch_rows")},
        "rss_mb_after": health.get("rss_mb"),
    }
    if own and overflow_queue > 0:
        with ServerProcess("--max-batch", str(max_batch), "--max-queue", str(overflow_queue),
                           threads=threads) as small:
            over = run_phase(small.url, bodies, concurrent=True, deadline=max(deadline, time.monotonic() + 120))
            over.pop("_images")
            over["max_queue"] = overflow_queue
            out["overflow"] = over
    return out
