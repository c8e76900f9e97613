"""`xomni serve`: an OpenAI-style images API, captions, SSE previews and a web page over one Pipeline, with
requests of many clients merged into one sampler batch.

    engine = load_engine(None)                 # the bundled model
    app = create_app(engine, Settings(max_batch=32, max_queue=128))
    uvicorn.run(app, host="127.0.0.1", port=8000)

Modules: engine (model side; per-request random streams in a merged batch), batcher (queue + worker
thread), app (routes and errors), limits (body size / read deadline), schemas (request and response bodies),
page (the web page), bench (load test), cli (`xomni serve`, `xomni bench serve`).
"""
from xomni.serve.app import Settings, create_app
from xomni.serve.engine import Engine, load_engine

__all__ = ["Engine", "Settings", "create_app", "load_engine"]
