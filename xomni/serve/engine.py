"""The model side of the server: one `Engine` owns a `Pipeline` and runs merged batches for the batcher's worker.

A merged batch is one sampler call and one decoder call (per decoder step count) for all its requests; each request
keeps its own random streams (`Pipeline.generate_codes` / `decode` with `seeds`), so it gets the images `Pipeline(prompt, num_images=n,
seed=seed)` gives, whoever shares its batch.
"""
from __future__ import annotations

import base64
import dataclasses
import io
import math
from pathlib import Path
from typing import Any, Callable

import torch

from xomni.ar import compiled
from xomni.ar.vocab import generation_length
from xomni.errors import XomniError
from xomni.pipeline import Pipeline, default_model_dir
from xomni.rl.bestofn import pick_best
from xomni.rl.config import load_rl_config
from xomni.rl.rewards import build_reward_set
from xomni.tokenizer.images import tensor_to_pil
from xomni.utils import resolve_device


@dataclasses.dataclass
class GenWork:
    """One generation request as the engine sees it (already validated)."""
    prompt: str
    n: int
    seed: int
    sampling: Any                  # xomni.ar.sampler.SamplingConfig
    best_of: int = 1
    steps: int | None = None       # decoder steps (None: the decoder's default)
    stream: bool = False           # send partial previews through `emit`
    emit: Callable[[dict], None] | None = None

    @property
    def rows(self) -> int:
        return self.n * self.best_of


@dataclasses.dataclass
class CaptionWork:
    images: list                   # PIL images
    num_beams: int | None = None


def png_b64(img) -> str:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def model_name(path: Path | None) -> str:
    if path is None or Path(path).resolve() == default_model_dir().resolve():
        return "xomni-mini"
    return Path(path).resolve().name


class Engine:
    """Runs merged generation / caption batches; only the batcher's single worker thread calls `run_*`."""

    def __init__(self, pipe, compile: bool | str = False, max_batch: int = 16):
        self.pipe = pipe
        self.max_batch = max_batch
        pipe.compile_sampler = compile
        if compile == "auto":  # batches are padded to max_batch when `xomni compile` built that step's package
            rows = max_batch * (2 if pipe.sampling_config().cfg_on else 1)
            need = generation_length(len(pipe.check_prompt(pipe.caption_for_text("OPEN"))), *pipe.grid)
            compile = compiled.has_package(pipe.drawing_model(), pipe.sampling_config(), rows,
                                           compiled.cache_length(need, pipe.ar.cfg.max_seq_len))
        self.compile = bool(compile)
        self.name = model_name(pipe.path)
        self.grid = tuple(pipe.grid)
        self.image_hw = tuple(pipe.image_tokenizer.config.image_size)   # (height, width)
        self.tokens = self.grid[0] * self.grid[1]
        self.stream_every = self.grid[1]        # one preview per row of tokens
        self._rewards = None

    # ------------------------------------------------------------------ description
    @property
    def size(self) -> str:
        """OpenAI's size string: width x height."""
        return f"{self.image_hw[1]}x{self.image_hw[0]}"

    def max_prompt_tokens(self) -> int:
        return self.pipe.ar.cfg.max_seq_len - generation_length(0, *self.grid)

    def card(self) -> dict:
        """The model card of GET /v1/models: what it draws and how well it was measured to draw and read."""
        idx = self.pipe.index
        ev = idx.get("eval") or {}
        cap = idx.get("caption_eval_beams4") or idx.get("caption_eval") or {}
        s = dataclasses.asdict(self.pipe.sampling_config())
        return {
            "id": self.name, "object": "model", "owned_by": "xomni",
            "created": _created(idx.get("created")),
            "image_size": self.size, "token_grid": list(self.grid),
            "charset": self.pipe.charset, "max_prompt_tokens": self.max_prompt_tokens(),
            "prompt_template": self.pipe.prompt_template,
            "example_prompt": self.pipe.caption_for_text("OPEN"),
            "sampling_defaults": s,
            "accuracy": {
                "text_exact_match": ev.get("exact_match"), "cer": ev.get("cer"), "n": ev.get("n"),
                "ci95_exact_match": (ev.get("ci95") or {}).get("exact_match"),
                "measured_by": (idx.get("eval_sampling") or {}).get("command"),
            } if ev else None,
            "caption_accuracy": {"caption_exact": cap.get("caption_exact"), "n": cap.get("n"),
                                 "ci95": cap.get("ci95"), "num_beams": cap.get("num_beams")} if cap else None,
            "compiled_sampler": self.compile,
        }

    # ------------------------------------------------------------------ start-up
    def warm(self) -> None:
        """One small generation (and, with --compile, one at the padded batch size, which compiles the sampler)."""
        prompt = self.pipe.caption_for_text("OPEN")
        s = self.pipe.sampling_config()
        self.run_generation([GenWork(prompt, 1, 0, s)])

    # ------------------------------------------------------------------ generation
    def run_generation(self, works: list[GenWork]) -> list[dict | Exception]:
        """Sample all requests' rows in one sampler call (they share one SamplingConfig), decode them in one
        decoder call, then score best-of candidates per request. Returns one result (or exception) per work."""
        pipe, s = self.pipe, works[0].sampling
        prompts, seeds, spans = [], [], []
        for w in works:
            spans.append((len(prompts), len(prompts) + w.rows))
            prompts += [w.prompt] * w.rows
            seeds.append((w.seed, w.rows))
        real = len(prompts)
        if self.compile and real < self.max_batch:   # one compiled graph per batch size: pad to max_batch
            pad = self.max_batch - real
            prompts += [prompts[0]] * pad
            seeds.append((0, pad))
        streaming = [(w, a) for w, (a, _) in zip(works, spans) if w.stream and w.emit is not None]
        sent = {id(w): 0 for w, _ in streaming}

        def on_tokens(t: int, codes_BT: torch.Tensor) -> None:
            for w, a in streaming:
                # previews of the first candidate of each image (best-of scores the rest only at the end)
                rows = codes_BT[a:a + w.rows:w.best_of]
                for i, img in enumerate(self.preview_images(rows, t)):
                    w.emit({"type": "image_generation.partial_image", "image_index": i,
                            "partial_image_index": sent[id(w)], "tokens": t, "total_tokens": self.tokens,
                            "b64_json": png_b64(img)})
                sent[id(w)] += 1

        out = pipe.generate_codes(prompts, sampling=s, callback=on_tokens if streaming else None,
                                  stream_every=self.stream_every if streaming else 0, seeds=seeds)
        codes, logps = out.codes_BHW[:real], out.logprobs_BN[:real].float().cpu()
        images: list = [None] * real
        for steps in {w.steps for w in works}:   # one decoder call per step count (usually one)
            idx = [i for i, w in enumerate(works) if w.steps == steps]
            rows = torch.cat([torch.arange(*spans[i]) for i in idx])
            decoded = pipe.decode(codes[rows.to(codes.device)], steps=steps,
                                  seeds=[(works[i].seed, works[i].rows) for i in idx])
            for r, im in zip(rows.tolist(), decoded):
                images[r] = im
        results: list[dict | Exception] = []
        for w, (a, b) in zip(works, spans):
            try:
                results.append(self._finish(w, images[a:b], logps[a:b]))
            except Exception as e:  # one request's failure (e.g. a reward) must not fail its batch mates
                results.append(e)
        return results

    def _finish(self, w: GenWork, images: list, logps: torch.Tensor) -> dict:
        lp = logps.sum(-1).tolist()
        items = [{"image": im, "logprob": lp[i]} for i, im in enumerate(images)]
        if w.best_of > 1:
            total, comps = self.rewards().scores(images, [w.prompt] * len(images))
            kept = []
            for i in range(w.n):
                cand = list(range(i * w.best_of, (i + 1) * w.best_of))
                best = cand[pick_best(torch.tensor([[total[j] for j in cand]]))[0]]  # best-of-N's own rule
                kept.append({**items[best], "rewards": {
                    "total": total[best], **{k: v[best] for k, v in comps.items()},
                    "candidates": [total[j] for j in cand], "chosen": best - i * w.best_of}})
            items = kept
        return {"images": items}

    def rewards(self):
        """The RL reward set best-of-N ranks with (xomni.rl): the model's own RL config when it has one, else the
        RL defaults with the model's data preset (so OCR reads the region where this model writes)."""
        if self._rewards is None:
            idx = self.pipe.index
            src = str(self.pipe.path) if "rl" in idx and self.pipe.path else \
                {"preset": idx.get("data_preset") or "tiny"}
            self._rewards = build_reward_set(load_rl_config(src), pipe=self.pipe)
        return self._rewards

    def preview_images(self, codes_BT: torch.Tensor, t: int) -> list:
        """A partial token sequence -> small preview images: the tokenizer's reconstruction head on the grid filled
        with the last drawn row repeated, the rows not drawn yet faded to grey (the preview sharpens row by row).
        With residual levels the sequence is coarse to fine: fine levels not drawn yet are left out (their
        smallest code stands in for "no correction")."""
        h, w = self.grid
        tok = self.pipe.image_tokenizer
        L = tok.levels
        pw = w // L  # patches per row
        B = codes_BT.shape[0]
        full = torch.zeros(B, h * w, dtype=torch.long, device=codes_BT.device)
        full[:, :t] = codes_BT[:, :t]
        if L > 1:
            table = tok.code_table()
            K = tok.config.codebook_size
            for level in range(1, L):
                lo = max(t, level * h * pw)
                if lo < (level + 1) * h * pw:
                    full[:, lo:(level + 1) * h * pw] = level * K + int(table[level * K:(level + 1) * K]
                                                                        .norm(dim=-1).argmin())
        done_rows = min(t, h * pw) // pw
        level0 = full[:, :h * pw].view(B, h, pw)
        if 0 < done_rows < h:
            level0[:, done_rows:] = level0[:, done_rows - 1:done_rows]
        grid = self.pipe.ar.layout.image_grid(full, h, w)
        x = tok.reconstruct(grid.to(next(tok.parameters()).device)).float().cpu()
        if done_rows < h:
            H = x.shape[-2]
            y0 = math.floor(H * done_rows / h)
            x[..., y0:, :] = 0.3 * x[..., y0:, :]   # towards mid-grey ([-1, 1] scale)
        return tensor_to_pil(x)

    # ------------------------------------------------------------------ captions
    def run_captions(self, works: list[CaptionWork]) -> list[dict | Exception]:
        images = [im for w in works for im in w.images]
        texts = self.pipe.caption(images, num_beams=works[0].num_beams)
        out, i = [], 0
        for w in works:
            out.append({"texts": texts[i:i + len(w.images)]})
            i += len(w.images)
        return out


def _created(stamp: Any) -> int:
    import datetime
    try:
        return int(datetime.datetime.fromisoformat(str(stamp).replace("Z", "+00:00")).timestamp())
    except (TypeError, ValueError):
        return 0


def load_engine(model: str | None, compile: bool | str = False, max_batch: int = 16, device: str = "cpu",
                lora: str | None = None) -> Engine:
    pipe = Pipeline.from_pretrained(model, lora=lora).to(resolve_device(device))
    if pipe.image_tokenizer.recon is None:
        raise XomniError(f"{pipe.path}: the image tokenizer has no reconstruction head, needed for previews")
    return Engine(pipe, compile=compile, max_batch=max_batch)
