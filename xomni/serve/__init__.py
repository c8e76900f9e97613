"""`xomni serve`: an OpenAI-style images API, captions, SSE previews and a web page over one Pipeline, with
requests of many clients merged into one sampler batch.

    engine = load_engine(None)                 # the bundled model
    app = create_app(engine, Settings(max_batch=32, max_queue=128))
    uvicorn.run(app, host="127.0.0.1", port=8000)

Modules: engine (model side; per-request random streams in a merged batch), batcher (queue + worker
thread), app (routes and errors), limits (body size / read deadline), schemas (request and response bodies),
page (the web page), bench (load test), cli (`xomni serve`, `xomni bench serve`).
"""
__all__ = ["Engine", "Settings", "create_app", "load_engine"]


def __getattr__(name: str):  # lazy, so that `xomni.serve.cli` (on every command's path) does not import fastapi
    if name in ("Settings", "create_app"):
        from xomni.serve import app
        return getattr(app, name)
    if name in ("Engine", "load_engine"):
        from xomni.serve import engine
        return getattr(engine, name)
    raise AttributeError(f"module 'xomni.serve' has no attribute {name!r}")
