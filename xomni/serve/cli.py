"""`xomni serve` (the HTTP API and web page) and `xomni bench serve` (a load test against it)."""
from __future__ import annotations

from typing import Optional

import typer

from xomni.errors import XomniError
from xomni.lora.adapter import resolve_adapter_dir, split_adapters
from xomni.utils import emit_json, log


def serve(model: Optional[str] = typer.Option(None, "--model", help="Pipeline directory (default: the bundled "
                                                                    "model)."),
          lora: Optional[str] = typer.Option(None, "--lora", help="LoRA adapter directory (A,B: an AR and a decoder "
                                             "adapter), added without merging."),
          host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
          port: int = typer.Option(8000, "--port", help="TCP port."),
          max_batch: int = typer.Option(32, "--max-batch", help="Most images sampled together in one merged "
                                                                "batch (requests of many clients)."),
          max_queue: int = typer.Option(128, "--max-queue", help="Most requests waiting; beyond it: 429 with "
                                                                 "Retry-After."),
          timeout: float = typer.Option(60.0, "--timeout", help="Seconds a request may wait in the queue before "
                                                                "it is answered 504 instead of run."),
          max_prompt_chars: int = typer.Option(1000, "--max-prompt-chars", help="Longest prompt accepted."),
          max_body_kb: int = typer.Option(4096, "--max-body-kb", help="Largest request body (KiB)."),
          compile: Optional[bool] = typer.Option(None, "--compile/--no-compile", help="Compiled AR sampler: "
                                                 "batches are padded to --max-batch and the graph is compiled at "
                                                 "start (tens of seconds). Default: compiled when `xomni compile` "
                                                 "built the --max-batch graph on this machine."),
          threads: int = typer.Option(1, "--threads", help="torch CPU threads (1 leaves a core for the HTTP "
                                                           "side and anything else running)."),
          device: str = typer.Option("cpu", "--device", help="cpu, cuda, cuda:N or auto."),
          log_level: str = typer.Option("info", "--log-level", help="uvicorn log level.")):
    """Serve the model: OpenAI-style images API, captions, SSE previews and a web page (API docs at /docs)."""
    import torch
    import uvicorn

    if not 1 <= max_batch <= 256:
        raise XomniError(f"--max-batch must be between 1 and 256, got {max_batch}")
    if max_queue < 1:
        raise XomniError(f"--max-queue must be >= 1, got {max_queue}")
    if not timeout > 0:
        raise XomniError(f"--timeout must be > 0, got {timeout}")
    if threads < 1:
        raise XomniError(f"--threads must be >= 1, got {threads}")
    if not 0 < port < 65536:
        raise XomniError(f"--port must be in 1..65535, got {port}")
    if lora is not None:
        for part in split_adapters(lora):
            resolve_adapter_dir(part)
    _check_port_free(host, port)   # before the model loads, not after
    torch.set_num_threads(threads)
    from xomni.serve.app import Settings, create_app  # here, not at the top: the other commands need no fastapi
    from xomni.serve.engine import load_engine
    engine = load_engine(model, compile="auto" if compile is None else compile, max_batch=max_batch, device=device,
                         lora=lora)
    log(f"xomni serve: warming up {engine.name}" + (" (compiled sampler)" if engine.compile else ""))
    engine.warm()
    app = create_app(engine, Settings(max_batch=max_batch, max_queue=max_queue, timeout=timeout,
                                      max_prompt_chars=max_prompt_chars, max_body_bytes=max_body_kb * 1024))
    log(f"xomni serve: {engine.name} ({engine.size}) on http://{host}:{port}/  API docs: /docs")
    # on SIGTERM/SIGINT uvicorn stops accepting and waits for in-flight requests (up to the queue deadline plus a
    # batch), then the app's shutdown drains the queue
    uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=int(timeout) + 30)


def _check_port_free(host: str, port: int) -> None:
    import socket
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise XomniError(f"--host {host!r} cannot be resolved: {e}") from None
    family, _, _, _, addr = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(addr)
        except OSError as e:
            raise XomniError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None


def bench_serve(url: Optional[str] = typer.Option(None, "--url", help="A running server; default: start one "
                                                                      "(bundled model) in a child process."),
                clients: int = typer.Option(32, "--clients", help="Concurrent clients."),
                requests: int = typer.Option(4, "--requests", help="Requests per client."),
                max_batch: int = typer.Option(32, "--max-batch", help="Server --max-batch (own server only)."),
                overflow_queue: int = typer.Option(4, "--overflow-queue", help="--max-queue of the second, "
                                                   "overflow run (own server only; 0 skips it)."),
                threads: int = typer.Option(1, "--threads", help="Server torch threads (own server only)."),
                time_limit: float = typer.Option(600.0, "--time-limit", help="Stop sending after this many "
                                                                             "seconds."),
                json_path: Optional[str] = typer.Option(None, "--json", help="Also save the JSON here.")):
    """Load test: C clients x R requests at once vs the same requests one at a time (JSON on stdout)."""
    if clients < 1 or requests < 1:
        raise XomniError("--clients and --requests must be >= 1")
    from xomni.serve.bench import run_bench
    emit_json(run_bench(url, clients, requests, max_batch=max_batch, overflow_queue=overflow_queue,
                        threads=threads, time_limit=time_limit), json_path)


def register(apps: dict) -> None:
    apps["root"].command("serve")(serve)
    apps["bench"].command("serve")(bench_serve)
