"""`xomni serve`: API shape, seeds under batching, SSE previews, captions, a bad-input corpus, queue overflow,
deadlines, slow and vanishing clients, SIGTERM drain, and the web page in a real browser (Debian chromium).

One in-process server (uvicorn in a thread, bundled model) serves most tests; SIGTERM needs a child process."""
from __future__ import annotations

import base64
import concurrent.futures as cf
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")

from PIL import Image  # noqa: E402

from xomni.serve.app import Settings, create_app  # noqa: E402
from xomni.serve.bench import free_port  # noqa: E402
from xomni.serve.engine import load_engine  # noqa: E402

G = "/v1/images/generations"
C = "/v1/captions"
CHROMIUM = "/usr/bin/chromium"


class LiveServer:
    """uvicorn serving `app` in a thread on a free port of 127.0.0.1."""

    def __init__(self, app):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        t0 = time.monotonic()
        while not self.server.started:
            assert time.monotonic() - t0 < 30, "server did not start"
            time.sleep(0.02)

    def stop(self):
        self.server.should_exit = True
        self.thread.join(30)


@pytest.fixture(scope="module")
def child():
    """`xomni serve` in a child process (for the SIGTERM test), started first so that it loads while this
    process loads its own engine."""
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "xomni.cli", "serve", "--port", str(port), "--max-batch", "2",
                             "--log-level", "warning"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    proc.url = f"http://127.0.0.1:{port}"
    yield proc
    if proc.poll() is None:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def engine(child):
    return load_engine(None, max_batch=8)


@pytest.fixture(scope="module")
def srv(engine):
    st = Settings(max_batch=8, max_queue=32, timeout=30, max_prompt_chars=300, max_body_bytes=256 * 1024,
                  body_timeout=1.0)
    s = LiveServer(create_app(engine, st))
    s.client = httpx.Client(base_url=s.url, timeout=60)
    yield s
    s.client.close()
    s.stop()


def prompt(engine, word="OPEN"):
    return engine.pipe.caption_for_text(word)


def pixels(b64: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB"), dtype=np.int16)


def png_b64(img) -> str:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


# ---------------------------------------------------------------------- API shape, seeds, batching
def test_health_models_and_docs(srv, engine):
    h = srv.client.get("/healthz").json()
    assert h["status"] == "ok" and h["model"] == "xomni-mini" and h["rss_mb"] > 0
    m = srv.client.get("/v1/models").json()
    assert m["object"] == "list" and len(m["data"]) == 1
    card = m["data"][0]
    assert card["id"] == "xomni-mini" and card["image_size"] == "128x32" and card["token_grid"] == list(engine.pipe.grid)
    assert card["charset"] == engine.pipe.charset and "OPEN" in card["example_prompt"]
    assert card["accuracy"]["text_exact_match"] == engine.pipe.index["eval"]["exact_match"]
    assert card["caption_accuracy"]["caption_exact"] > 0.5
    assert srv.client.get("/v1/models/xomni-mini").json()["id"] == "xomni-mini"
    assert srv.client.get("/docs").status_code == 200
    paths = srv.client.get("/openapi.json").json()["paths"]
    assert {G, C, "/v1/models", "/healthz"} <= set(paths)
    page = srv.client.get("/")
    assert page.status_code == 200 and 'id="generate"' in page.text


def test_generation_shape_and_same_seed_same_image(srv, engine):
    body = {"prompt": prompt(engine), "n": 2, "size": "128x32", "response_format": "b64_json", "seed": 3}
    r = srv.client.post(G, json=body)
    assert r.status_code == 200, r.text
    d = r.json()
    assert isinstance(d["created"], int) and d["seed"] == 3 and d["model"] == "xomni-mini"
    assert [x["index"] for x in d["data"]] == [0, 1]
    for x in d["data"]:
        im = Image.open(io.BytesIO(base64.b64decode(x["b64_json"])))
        assert im.format == "PNG" and im.size == (128, 32)
        assert x["logprob"] < 0 and "rewards" not in x
    again = srv.client.post(G, json=body).json()
    assert [x["b64_json"] for x in again["data"]] == [x["b64_json"] for x in d["data"]]
    other = srv.client.post(G, json={**body, "seed": 4}).json()
    assert other["data"][0]["b64_json"] != d["data"][0]["b64_json"]
    # the server draws what the Pipeline draws with the same seed
    ref = engine.pipe(prompt(engine), num_images=2, seed=3)
    for x, im in zip(d["data"], ref):
        assert np.abs(pixels(x["b64_json"]) - np.asarray(im, dtype=np.int16)).max() <= 1


def test_sampling_options_reach_the_sampler(srv, engine):
    base = {"prompt": prompt(engine, "SALE"), "n": 1, "seed": 11}
    a = srv.client.post(G, json=base).json()["data"][0]
    greedy = srv.client.post(G, json={**base, "top_k": 1}).json()["data"][0]
    assert abs(greedy["logprob"]) < 1e-4 < abs(a["logprob"])     # top-k 1: every drawn token has probability 1
    ref = engine.pipe(prompt(engine, "SALE"), num_images=1, seed=11, temperature=1.3, top_p=0.9, min_p=0.05,
                      cfg_scale=2.0)[0]
    r = srv.client.post(G, json={**base, "temperature": 1.3, "top_p": 0.9, "min_p": 0.05, "cfg": 2.0})
    assert r.status_code == 200, r.text
    assert np.abs(pixels(r.json()["data"][0]["b64_json"]) - np.asarray(ref, dtype=np.int16)).max() <= 1


def test_concurrent_requests_share_a_batch_and_keep_their_images(srv, engine):
    words = ["OPEN", "EXIT", "SALE", "PARK"]
    bodies = [{"prompt": prompt(engine, w), "n": 1, "seed": 10 + i} for i, w in enumerate(words)]
    with cf.ThreadPoolExecutor(len(bodies)) as ex:
        outs = list(ex.map(lambda b: httpx.post(srv.url + G, json=b, timeout=60).json(), bodies))
    assert max(o["timings"]["batch_rows"] for o in outs) >= 2   # merged across clients
    for b, o in zip(bodies, outs):
        alone = srv.client.post(G, json=b).json()
        assert alone["timings"]["batch_rows"] == 1
        # same tokens; the batched decoder may round a pixel differently by 1/255
        assert np.abs(pixels(o["data"][0]["b64_json"]) - pixels(alone["data"][0]["b64_json"])).max() <= 1


def test_sse_stream_previews_then_final(srv, engine):
    body = {"prompt": prompt(engine), "n": 2, "seed": 5, "stream": True}
    events = []
    with srv.client.stream("POST", G, json=body) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        name = None
        for line in r.iter_lines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                events.append((name, json.loads(line[6:])))
    names = [n for n, _ in events]
    first_final = names.index("image_generation.completed")
    partial = [d for n, d in events[:first_final] if n == "image_generation.partial_image"]
    assert len(partial) >= 2                     # >= 1 preview per image before any final image
    toks = [d["tokens"] for d in partial if d["image_index"] == 0]
    assert toks == sorted(toks) and toks[-1] == partial[0]["total_tokens"] == engine.pipe.grid[0] * engine.pipe.grid[1]
    assert Image.open(io.BytesIO(base64.b64decode(partial[0]["b64_json"]))).size == (128, 32)
    assert names[-1] == "done" and names.count("image_generation.completed") == 2
    done = events[-1][1]
    finals = [d for n, d in events if n == "image_generation.completed"]
    assert [f["b64_json"] for f in finals] == [x["b64_json"] for x in done["data"]]
    # streaming does not change the images
    plain = srv.client.post(G, json={**body, "stream": False}).json()
    assert [x["b64_json"] for x in plain["data"]] == [x["b64_json"] for x in done["data"]]


def test_best_of_returns_rewards(srv, engine):
    r = srv.client.post(G, json={"prompt": prompt(engine, "EXIT"), "n": 1, "best_of": 3, "seed": 0})
    assert r.status_code == 200, r.text
    rw = r.json()["data"][0]["rewards"]
    assert len(rw["candidates"]) == 3 and rw["total"] == max(rw["candidates"])
    assert rw["candidates"][rw["chosen"]] == rw["total"] and "ocr" in rw


def test_caption_round_trip(srv, engine):
    gen = srv.client.post(G, json={"prompt": prompt(engine, "OPEN"), "n": 1, "seed": 0}).json()
    b64 = gen["data"][0]["b64_json"]
    r = srv.client.post(C, json={"image": b64})
    assert r.status_code == 200, r.text
    text = r.json()["text"]
    assert text == prompt(engine, "OPEN")          # the model reads back what it drew
    img = Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB")
    assert text == engine.pipe.caption([img])[0]
    jpeg = io.BytesIO()
    img.resize((256, 64)).save(jpeg, format="JPEG", quality=95)   # other formats and sizes are resized
    d = srv.client.post(C, json={"image": "data:image/jpeg;base64," + base64.b64encode(jpeg.getvalue()).decode(),
                                 "num_beams": 1}).json()
    assert '"' in d["text"] and d["model"] == "xomni-mini"


def test_docs_client_example_runs(srv, tmp_path, monkeypatch):
    """The Python client of docs/SERVING.md (the README's snippet), run as written against this server."""
    import contextlib
    doc = (Path(__file__).resolve().parents[1] / "docs" / "SERVING.md").read_text()
    code = doc.split("<!-- client-example -->", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    assert "http://127.0.0.1:8000" in code and len(code.strip().splitlines()) <= 15
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert code.strip() in readme  # the README shows this same client
    monkeypatch.chdir(tmp_path)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code.replace("http://127.0.0.1:8000", srv.url), "SERVING.md", "exec"), {})
    assert Image.open(tmp_path / "open_0.png").size == (128, 32) and (tmp_path / "open_1.png").is_file()
    assert '"OPEN"' in out.getvalue()


# ---------------------------------------------------------------------- bad input
def _png_bytes(size=(8, 8), mode="RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size).save(buf, format="PNG")
    return buf.getvalue()


def bad_corpus(p: str) -> list[tuple]:
    """(label, path, json body or raw bytes, content type, expected status, text the message must contain)."""
    J = "application/json"
    big_png = base64.b64encode(_png_bytes((5000, 4000), "1")).decode()   # 20 Mpx: over the pixel limit
    png = _png_bytes()
    return [
        ("malformed JSON", G, b'{"prompt": ', J, 400, "not valid JSON"),
        ("trailing comma", G, b'{"prompt": "x",}', J, 400, "not valid JSON"),
        ("empty body", G, b"", J, 400, "body"),
        ("JSON array", G, b"[1, 2]", J, 400, "valid dictionary"),
        ("JSON string", G, b'"draw a cat"', J, 400, "valid dictionary"),
        ("JSON null", G, b"null", J, 400, "body"),
        ("invalid UTF-8", G, b'{"prompt": "\xff\xfe"}', J, 400, "JSON"),
        ("NaN temperature", G, b'{"prompt": "a", "temperature": NaN}', J, 400, "temperature"),
        ("form encoded", G, b"prompt=hello", "application/x-www-form-urlencoded", 415, "application/json"),
        ("no prompt", G, {}, J, 400, "prompt: required"),
        ("prompt int", G, {"prompt": 5}, J, 400, "prompt: Input should be a valid string"),
        ("prompt list", G, {"prompt": ["a"]}, J, 400, "prompt"),
        ("prompt null", G, {"prompt": None}, J, 400, "prompt"),
        ("n string", G, {"prompt": p, "n": "2"}, J, 400, "n: "),
        ("n float", G, {"prompt": p, "n": 1.5}, J, 400, "n: "),
        ("n bool", G, {"prompt": p, "n": True}, J, 400, "n: "),
        ("n zero", G, {"prompt": p, "n": 0}, J, 400, "n: Input should be greater than or equal to 1"),
        ("n negative", G, {"prompt": p, "n": -1}, J, 400, "n: "),
        ("n huge", G, {"prompt": p, "n": 1000}, J, 400, "n: Input should be less than or equal to 10"),
        ("n astronomical", G, {"prompt": p, "n": 10**30}, J, 400, "n: "),
        ("n x best_of over batch", G, {"prompt": p, "n": 5, "best_of": 2}, J, 400, "n x best_of"),
        ("size too big", G, {"prompt": p, "size": "1024x1024"}, J, 400, "this model draws 128x32"),
        ("size swapped", G, {"prompt": p, "size": "32x128"}, J, 400, "size"),
        ("size nonsense", G, {"prompt": p, "size": "banana"}, J, 400, "size"),
        ("size int", G, {"prompt": p, "size": 128}, J, 400, "size"),
        ("response_format url", G, {"prompt": p, "response_format": "url"}, J, 400, "response_format"),
        ("temperature zero", G, {"prompt": p, "temperature": 0}, J, 400, "temperature"),
        ("temperature string", G, {"prompt": p, "temperature": "hot"}, J, 400, "temperature"),
        ("top_p above 1", G, {"prompt": p, "top_p": 1.5}, J, 400, "top_p"),
        ("top_p zero", G, {"prompt": p, "top_p": 0}, J, 400, "top_p"),
        ("min_p one", G, {"prompt": p, "min_p": 1}, J, 400, "min_p"),
        ("top_k negative", G, {"prompt": p, "top_k": -3}, J, 400, "top_k"),
        ("cfg below 1", G, {"prompt": p, "cfg": 0.5}, J, 400, "cfg"),
        ("seed negative", G, {"prompt": p, "seed": -1}, J, 400, "seed"),
        ("seed 2**64", G, {"prompt": p, "seed": 2**64}, J, 400, "seed"),
        ("seed string", G, {"prompt": p, "seed": "abc"}, J, 400, "seed"),
        ("best_of zero", G, {"prompt": p, "best_of": 0}, J, 400, "best_of"),
        ("best_of huge", G, {"prompt": p, "best_of": 100}, J, 400, "best_of"),
        ("steps zero", G, {"prompt": p, "steps": 0}, J, 400, "steps"),
        ("steps huge", G, {"prompt": p, "steps": 10**6}, J, 400, "steps"),
        ("timeout negative", G, {"prompt": p, "timeout": -5}, J, 400, "timeout"),
        ("stream string", G, {"prompt": p, "stream": "yes"}, J, 400, "stream"),
        ("misspelt field", G, {"prompt": p, "temprature": 0.5}, J, 400, "temprature: unknown field"),
        ("other model", G, {"prompt": p, "model": "dall-e-3"}, J, 404, "not served"),
        ("empty prompt", G, {"prompt": ""}, J, 422, "the prompt is empty"),
        ("blank prompt", G, {"prompt": "   \n "}, J, 422, "the prompt is empty"),
        ("accents and CJK", G, {"prompt": 'a sign with the text "héllo 你好"'}, J, 422, "cannot draw"),
        ("binary prompt", G, {"prompt": "\x00\x01\x02\x7f"}, J, 422, "cannot draw"),
        ("emoji", G, {"prompt": 'a sign with the text "HI 👋"'}, J, 422, "cannot draw"),
        ("too many tokens", G, {"prompt": "a " * 140}, J, 422, "prompt tokens"),
        ("overlong prompt", G, {"prompt": "a" * 301}, J, 400, "at most 300"),
        ("huge body", G, {"prompt": "a" * 300_000}, J, 413, "at most 262144"),
        ("caption: no image", C, {}, J, 400, "image: required"),
        ("caption: image int", C, {"image": 7}, J, 400, "image"),
        ("caption: empty image", C, {"image": ""}, J, 400, "image: empty"),
        ("caption: bad base64", C, {"image": "!!!not base64!!!"}, J, 400, "not valid base64"),
        ("caption: base64 text", C, {"image": base64.b64encode(b"hello world").decode()}, J, 400,
         "not an image"),
        ("caption: truncated PNG", C, {"image": base64.b64encode(png[:40]).decode()}, J, 400, "not an image"),
        ("caption: data URL not base64", C, {"image": "data:image/png,abc"}, J, 400, "must be base64"),
        ("caption: too many pixels", C, {"image": big_png}, J, 400, "larger than this server takes"),
        ("caption: beams zero", C, {"image": base64.b64encode(png).decode(), "num_beams": 0}, J, 400,
         "num_beams"),
        ("caption: beams huge", C, {"image": base64.b64encode(png).decode(), "num_beams": 99}, J, 400,
         "num_beams"),
        ("wrong method", G, None, None, 405, "Method Not Allowed"),
        ("unknown path", "/v1/images/edits", {"prompt": p}, J, 404, "Not Found"),
    ]


def send_bad(client, case):
    label, path, body, ctype, _, _ = case
    if body is None:
        return client.get(path)
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return client.post(path, content=raw, headers={"Content-Type": ctype})


def test_bad_input_corpus_answers_4xx_and_server_stays_healthy(srv, engine):
    corpus = bad_corpus(prompt(engine))
    assert len(corpus) >= 40
    rss = []
    for _ in range(3):
        for case in corpus:
            r = send_bad(srv.client, case)
            label, want_status, want_text = case[0], case[4], case[5]
            assert r.status_code == want_status, (label, r.status_code, r.text[:300])
            err = r.json()["error"]
            assert want_text in err["message"], (label, err["message"])
            assert len(err["message"]) < 400 and err["type"]
        rss.append(srv.client.get("/healthz").json()["rss_mb"])
    assert rss[2] - rss[1] < 25, f"memory grew over the bad-input corpus: {rss} MB"
    r = srv.client.post(G, json={"prompt": prompt(engine), "seed": 1})
    assert r.status_code == 200 and srv.client.get("/healthz").json()["batcher"]["errors"] == 0


def test_slow_client_gets_408(srv, engine):
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
        s.sendall(b"POST " + G.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 100\r\n\r\n{\"prompt\": ")
        t0 = time.monotonic()
        reply = b""
        while chunk := s.recv(4096):   # the server closes the connection after its answer
            reply += chunk
        reply = reply.decode()
    assert reply.startswith("HTTP/1.1 408") and "did not arrive within 1 s" in reply
    assert time.monotonic() - t0 < 5
    assert srv.client.get("/healthz").status_code == 200


def test_client_disconnecting_mid_stream(srv, engine):
    body = {"prompt": prompt(engine), "n": 4, "seed": 2, "stream": True}
    with httpx.Client(base_url=srv.url, timeout=30) as c, c.stream("POST", G, json=body) as r:
        for line in r.iter_lines():
            if line.startswith("event: image_generation.partial_image"):
                break                                 # leave after the first preview
    r = srv.client.post(G, json={"prompt": prompt(engine), "seed": 2})
    assert r.status_code == 200 and len(r.json()["data"]) == 1


def test_queue_overflow_429_and_deadline_504(engine, srv):
    # a second app on the same engine (the first server is idle meanwhile): batch 1, room for 2 in the queue
    small = LiveServer(create_app(engine, Settings(max_batch=1, max_queue=2, timeout=30)))
    try:
        body = {"prompt": prompt(engine), "n": 1, "seed": 0}
        with cf.ThreadPoolExecutor(10) as ex:
            rs = list(ex.map(lambda i: httpx.post(small.url + G, json={**body, "seed": i}, timeout=60), range(10)))
        codes = [r.status_code for r in rs]
        assert set(codes) <= {200, 429} and codes.count(429) >= 1 and codes.count(200) >= 3, codes
        for r in rs:
            if r.status_code == 429:
                assert int(r.headers["Retry-After"]) >= 1 and "queue is full" in r.json()["error"]["message"]
        # a request whose deadline passes while it waits is answered 504, not run
        with cf.ThreadPoolExecutor(2) as ex:
            busy = ex.submit(httpx.post, small.url + G, json={**body, "n": 1}, timeout=60)
            time.sleep(0.05)
            late = httpx.post(small.url + G, json={**body, "timeout": 0.01}, timeout=60)
            assert busy.result().status_code == 200
        assert late.status_code == 504 and "past its deadline" in late.json()["error"]["message"]
    finally:
        small.stop()


# ---------------------------------------------------------------------- SIGTERM drain (child process)
def test_sigterm_drains_in_flight_requests(child, engine):
    url = child.url
    t0 = time.monotonic()
    while True:
        assert child.poll() is None, child.stderr.read()
        assert time.monotonic() - t0 < 60, "server did not start"
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.2)
    body = {"prompt": prompt(engine), "n": 2}
    with cf.ThreadPoolExecutor(4) as ex:   # 4 requests x 2 images at batch 2: four batches in a row
        futs = [ex.submit(httpx.post, url + G, json={**body, "seed": i}, timeout=60) for i in range(4)]
        while httpx.get(url + "/healthz", timeout=5).json()["batcher"]["queued"] < 2:
            time.sleep(0.02)
        child.send_signal(signal.SIGTERM)
        rs = [f.result() for f in futs]
    assert [r.status_code for r in rs] == [200] * 4       # queued when SIGTERM came, answered all the same
    assert all(len(r.json()["data"]) == 2 for r in rs)
    # uvicorn ends by re-raising the signal once drained: the exit is SIGTERM's (or 0)
    assert child.wait(30) in (0, -signal.SIGTERM)
    with pytest.raises(httpx.TransportError):             # and it no longer listens
        httpx.get(url + "/healthz", timeout=2)


# ---------------------------------------------------------------------- the web page in a real browser
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def test_web_page_in_chromium(srv, engine, tmp_path):
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is absent (Debian packages: chromium); the page is not tested in a browser")
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright python package is not installed")
    with sync_api.sync_playwright() as pw:
        ctx = pw.chromium.launch_persistent_context(str(tmp_path / "profile"), executable_path=CHROMIUM,
                                                    headless=True, args=CHROMIUM_ARGS)
        try:
            page = ctx.new_page()
            page.goto(srv.url + "/")
            page.wait_for_function("document.getElementById('card-table').rows.length > 0")
            page.fill("#prompt", prompt(engine, "EXIT"))
            page.fill("#seed", "7")
            page.fill("#n", "2")
            page.click("#generate")
            page.wait_for_selector("#gallery img.final", timeout=30_000)
            page.wait_for_function("document.querySelectorAll('#gallery img.final').length == 2")
            frames = page.evaluate("window.xomniFrames")
            assert "image_generation.partial_image" in frames
            assert frames.index("image_generation.partial_image") < frames.index("image_generation.completed")
            assert frames[-1] == "done"
            assert page.evaluate("document.querySelector('#gallery img.final').naturalWidth") == 128
            assert int(page.get_attribute("#pv0", "data-frames")) >= 1   # the preview was shown and updated
            assert page.get_attribute("#gallery .card a", "download").endswith(".png")
            assert "done in" in page.inner_text("#status")
            shot = tmp_path / "serve_page.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 5000
            # caption tab: upload the first generated image, read its text back
            src = page.get_attribute("#gallery img.final", "src")
            img_file = tmp_path / "generated.png"
            img_file.write_bytes(base64.b64decode(src.split(",", 1)[1]))
            page.click("nav button[data-tab=cap]")
            page.set_input_files("#cap-file", str(img_file))
            page.click("#cap-go")
            page.wait_for_function("document.getElementById('cap-text').textContent.length > 0", timeout=30_000)
            assert "poster" in page.inner_text("#cap-text")
            page.click("nav button[data-tab=card]")
            assert "exact text match" in page.inner_text("#card-table")
            page.screenshot(path=str(tmp_path / "serve_page_card.png"))
        finally:
            ctx.close()


def test_the_cli_imports_the_web_stack_only_for_serving():
    """Every command goes through xomni.cli, which registers `xomni serve`: fastapi and uvicorn load only when a
    server starts, so training and evaluation run where they are not installed (a GPU image, a lean container)."""
    code = ("import sys, xomni.cli, xomni.serve; assert not {'fastapi', 'uvicorn'} & set(sys.modules), "
            "sorted({'fastapi', 'uvicorn'} & set(sys.modules)); from xomni.serve import create_app; "
            "assert 'fastapi' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
