"""The FastAPI app: OpenAI-style images API, captions, SSE previews, model card, health, and the web page.

    app = create_app(engine, Settings(max_batch=32))     # engine: xomni.serve.engine.Engine
    uvicorn.run(app)

Every error answers {"error": {"message", "type", "param", "code"}}: 400 malformed or invalid request, 404 unknown
model, 408 body too slow, 413 body too large, 422 a prompt or image the model cannot take, 429 queue full
(Retry-After), 503 shutting down, 504 deadline passed in the queue.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import dataclasses
import io
import json
import secrets
import time

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from xomni.errors import XomniError
from xomni.serve.batcher import Batcher, DeadlineExceeded, Job, QueueFull, ShuttingDown
from xomni.serve.engine import CaptionWork, Engine, GenWork, png_b64
from xomni.serve.limits import BodyGuard, error_body
from xomni.serve.page import PAGE
from xomni.serve.schemas import CaptionRequest, CaptionResponse, ErrorResponse, GenerationRequest, ImagesResponse


@dataclasses.dataclass
class Settings:
    max_batch: int = 32               # sampler rows per merged batch
    max_queue: int = 128              # requests waiting; beyond: 429
    timeout: float = 60.0             # seconds a request may wait in the queue
    max_prompt_chars: int = 1000
    max_body_bytes: int = 4 << 20
    body_timeout: float = 10.0        # seconds for a request body to arrive
    max_image_pixels: int = 4096 * 4096


class ApiError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 type_: str = "invalid_request_error", headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.type, self.headers = \
            status, message, param, code, type_, headers


def _err(e: ApiError) -> JSONResponse:
    return JSONResponse(error_body(e.message, e.type, e.param, e.code), status_code=e.status, headers=e.headers)


def _validation_message(errors: list) -> tuple[str, str | None]:
    """pydantic/FastAPI errors -> one readable line naming each bad field, and the first field's name."""
    parts, first = [], None
    for e in errors[:5]:
        loc = ".".join(str(x) for x in e.get("loc", ()) if x != "body")
        first = first or loc or None
        typ = e.get("type", "")
        if typ == "json_invalid":
            ctx = (e.get("ctx") or {}).get("error", "")
            parts.append(f"the body is not valid JSON ({ctx})" if ctx else "the body is not valid JSON")
            continue
        if typ == "extra_forbidden":
            parts.append(f"{loc}: unknown field")
            continue
        if typ == "missing":
            parts.append(f"{loc or 'body'}: required field missing" if loc else "the request body is missing")
            continue
        got = repr(e.get("input"))
        got = got if len(got) <= 60 else got[:57] + "..."
        parts.append(f"{loc or 'body'}: {e.get('msg', 'invalid')} (got {got})")
    if len(errors) > 5:
        parts.append(f"and {len(errors) - 5} more")
    return "; ".join(parts), first


def create_app(engine: Engine, settings: Settings | None = None) -> FastAPI:
    st = settings or Settings()
    batcher = Batcher({"generate": engine.run_generation, "caption": engine.run_captions},
                      max_batch=st.max_batch, max_queue=st.max_queue)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        batcher.start()
        yield
        # uvicorn has stopped accepting and waited for in-flight requests; finish anything still queued
        await asyncio.get_running_loop().run_in_executor(None, batcher.close, st.timeout)

    app = FastAPI(title="xomni", version="1", lifespan=lifespan,
                  description="Text-to-image (OpenAI images API shape) and image-to-text with one discrete-token "
                              "AR model. Concurrent requests are merged into one sampler batch.",
                  responses={400: {"model": ErrorResponse}})
    app.state.batcher, app.state.engine, app.state.settings = batcher, engine, st

    # ------------------------------------------------------------------ errors
    @app.exception_handler(ApiError)
    async def _api_error(request, e: ApiError):
        return _err(e)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request, e: StarletteHTTPException):   # 404 unknown path, 405 wrong method, ...
        msg = f"{request.method} {request.url.path}: {e.detail}"
        if e.status_code == 400 and "parsing the body" in str(e.detail):   # FastAPI could not decode the body
            msg = "the body could not be parsed: send UTF-8 JSON"
        return JSONResponse(error_body(msg, code=str(e.status_code)), status_code=e.status_code,
                            headers=getattr(e, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, e: RequestValidationError):
        errs = e.errors()
        if errs and tuple(errs[0].get("loc", ())) == ("body",) and isinstance(errs[0].get("input"), bytes):
            # FastAPI parses JSON only when the client says so; anything else arrives as raw bytes
            ctype = request.headers.get("content-type", "")
            if "json" not in ctype:
                return JSONResponse(error_body(f"send the body as JSON with Content-Type: application/json "
                                               f"(got {ctype or 'no Content-Type'})", code="unsupported_media_type"),
                                    status_code=415)
        msg, param = _validation_message(errs)
        return JSONResponse(error_body(msg, param=param, code="invalid_value"), status_code=400)

    # ------------------------------------------------------------------ helpers
    def check_model(model: str | None) -> None:
        if model is not None and model != engine.name:
            raise ApiError(404, f"model {model!r} is not served here; this server serves {engine.name!r}",
                           param="model", code="model_not_found")

    def deadline(timeout: float | None) -> float:
        return time.monotonic() + min(timeout or st.timeout, st.timeout)

    def submit(job: Job) -> Job:
        job.loop = asyncio.get_running_loop()
        job.future = job.loop.create_future()
        try:
            return batcher.submit(job)
        except QueueFull as e:
            raise ApiError(429, str(e), code="queue_full", type_="rate_limit_error",
                           headers={"Retry-After": str(e.retry_after)}) from None
        except ShuttingDown as e:
            raise ApiError(503, str(e), code="shutting_down", type_="server_error",
                           headers={"Retry-After": "5"}) from None

    async def wait(job: Job, request: Request):
        """The job's result; drop the job if the client goes away while it is queued."""
        while True:
            done, _ = await asyncio.wait({job.future}, timeout=0.5)
            if done:
                break
            if await request.is_disconnected():
                batcher.cancel(job)
                raise ApiError(499, "client disconnected", code="client_closed")
        try:
            return job.future.result()
        except DeadlineExceeded as e:
            raise ApiError(504, str(e), code="deadline_exceeded", type_="server_error") from None
        except XomniError as e:
            raise ApiError(422, str(e), code="unprocessable") from None

    def timings(job: Job) -> dict:
        end = time.monotonic()
        started = job.started or end
        return {"queue_s": round(started - job.enqueued, 4), "run_s": round(end - started, 4),
                "batch_rows": job.batch_rows}

    def gen_work(req: GenerationRequest) -> GenWork:
        check_model(req.model)
        if len(req.prompt) > st.max_prompt_chars:
            raise ApiError(400, f"prompt: {len(req.prompt)} characters; this server takes at most "
                                f"{st.max_prompt_chars}", param="prompt", code="prompt_too_long")
        if req.size not in (None, "auto", engine.size):
            raise ApiError(400, f"size: {req.size!r} is not supported; this model draws {engine.size} "
                                f"(width x height)", param="size", code="unsupported_size")
        if req.n * req.best_of > st.max_batch:
            raise ApiError(400, f"n x best_of = {req.n} x {req.best_of} = {req.n * req.best_of} images, more than "
                                f"this server's batch of {st.max_batch}", param="n", code="too_many_images")
        try:
            engine.pipe.check_prompt(req.prompt)
        except XomniError as e:
            raise ApiError(422, f"prompt: {e}", param="prompt", code="prompt_not_drawable") from None
        try:
            s = engine.pipe.sampling_config(temperature=req.temperature, top_k=req.top_k, top_p=req.top_p,
                                            min_p=req.min_p, cfg_scale=req.cfg)
        except XomniError as e:
            raise ApiError(400, str(e), code="invalid_sampling") from None
        seed = req.seed if req.seed is not None else secrets.randbelow(2**31)
        return GenWork(req.prompt, req.n, seed, s, best_of=req.best_of, steps=req.steps, stream=req.stream)

    def image_items(result: dict) -> list[dict]:
        out = []
        for i, it in enumerate(result["images"]):
            d = {"b64_json": png_b64(it["image"]), "index": i, "logprob": it["logprob"]}
            if "rewards" in it:
                d["rewards"] = it["rewards"]
            out.append(d)
        return out

    # ------------------------------------------------------------------ routes
    @app.post("/v1/images/generations", response_model=ImagesResponse, response_model_exclude_none=True,
              responses={400: {"model": ErrorResponse}, 422: {"model": ErrorResponse},
                         429: {"model": ErrorResponse}, 504: {"model": ErrorResponse}})
    async def generations(req: GenerationRequest, request: Request):
        """Text -> images. With "stream": true the answer is text/event-stream: `image_generation.partial_image`
        events (PNG previews of the partial token grid) while sampling, one `image_generation.completed` per
        image, then `done` carrying the same body as the non-streaming answer."""
        work = gen_work(req)
        job = Job("generate", key=dataclasses.astuple(work.sampling), rows=work.rows, work=work,
                  deadline=deadline(req.timeout))
        if not req.stream:
            submit(job)
            result = await wait(job, request)
            return {"created": int(time.time()), "data": image_items(result), "model": engine.name,
                    "seed": work.seed, "timings": timings(job)}
        events: asyncio.Queue = asyncio.Queue()
        loop = asyncio.get_running_loop()
        work.emit = lambda ev: loop.call_soon_threadsafe(events.put_nowait, ev)
        submit(job)   # a full queue answers 429 here, before any event is sent
        job.future.add_done_callback(lambda f: events.put_nowait(None))   # after every preview already queued
        return StreamingResponse(sse_events(job, work, events), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    async def sse_events(job: Job, work: GenWork, events: asyncio.Queue):
        def frame(name: str, data: dict) -> str:
            return f"event: {name}\ndata: {json.dumps(data)}\n\n"
        try:
            while (ev := await events.get()) is not None:
                yield frame(ev["type"], ev)
            try:
                result = job.future.result()
            except DeadlineExceeded as e:
                yield frame("error", error_body(str(e), "server_error", code="deadline_exceeded"))
                return
            except Exception as e:  # reported in-band: the 200 and its headers are already sent
                yield frame("error", error_body(str(e), "server_error"))
                return
            items = image_items(result)
            for it in items:
                yield frame("image_generation.completed", {"type": "image_generation.completed",
                                                           "image_index": it["index"], **it})
            yield frame("done", {"created": int(time.time()), "data": items, "model": engine.name,
                                 "seed": work.seed, "timings": timings(job)})
        finally:
            if not job.future.done():   # the client went away mid-stream
                batcher.cancel(job)

    @app.post("/v1/captions", response_model=CaptionResponse,
              responses={400: {"model": ErrorResponse}, 422: {"model": ErrorResponse},
                         429: {"model": ErrorResponse}})
    async def captions(req: CaptionRequest, request: Request):
        """Image -> text, read by the same AR weights that draw."""
        check_model(req.model)
        img = await run_in_threadpool(decode_image, req.image, st.max_image_pixels)   # off the event loop
        try:
            engine.pipe.check_num_beams(req.num_beams)
        except XomniError as e:
            raise ApiError(400, str(e), param="num_beams") from None
        job = submit(Job("caption", key=req.num_beams, rows=1, work=CaptionWork([img], req.num_beams),
                         deadline=deadline(req.timeout)))
        result = await wait(job, request)
        return {"created": int(time.time()), "model": engine.name, "text": result["texts"][0],
                "timings": timings(job)}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [engine.card()]}

    @app.get("/v1/models/{model_id}")
    async def model(model_id: str):
        check_model(model_id)
        return engine.card()

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok", "model": engine.name, "batcher": batcher.status(), "rss_mb": rss_mb()}

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page():
        return PAGE

    # outermost: body size and read deadline are checked before routing
    app.add_middleware(BodyGuard, max_bytes=st.max_body_bytes, read_timeout=st.body_timeout)
    return app


def decode_image(data: str, max_pixels: int):
    """A base64 (or data: URL) image -> RGB PIL image, with 400s that say what is wrong with it."""
    from PIL import Image, UnidentifiedImageError
    s = data.strip()
    if s.startswith("data:"):
        head, sep, s = s.partition(",")
        if not sep or ";base64" not in head:
            raise ApiError(400, "image: a data: URL must be base64 ('data:image/png;base64,...')", param="image",
                           code="invalid_image")
    if not s:
        raise ApiError(400, "image: empty", param="image", code="invalid_image")
    try:
        raw = base64.b64decode(s, validate=True)
    except (binascii.Error, ValueError) as e:
        raise ApiError(400, f"image: not valid base64 ({e})", param="image", code="invalid_base64") from None
    try:
        im = Image.open(io.BytesIO(raw))
        w, h = im.size
        if w * h > max_pixels:
            raise ApiError(400, f"image: {w}x{h} pixels is larger than this server takes ({max_pixels} pixels)",
                           param="image", code="image_too_large")
        return im.convert("RGB")
    except ApiError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as e:
        raise ApiError(400, f"image: not an image this server can read ({type(e).__name__}: {e})"[:300],
                       param="image", code="invalid_image") from None


def rss_mb() -> float:
    """Resident memory of this process (Linux), for the health check and the leak test."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return -1.0
