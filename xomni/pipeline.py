"""`Pipeline`: prompt -> text tokens -> AR sampler -> image token grid -> diffusion decoder -> PIL images.

    pipe = Pipeline.from_pretrained()            # the bundled mini model, or a directory
    images = pipe('a yellow poster with the text "OPEN" in blue bold sans-serif letters', num_images=4, seed=0)
    pipe.caption(images)                         # image -> text with the same AR weights
    pipe.save_pretrained("my_model")

A pipeline directory holds `model_index.json` (components, versions, the command/commit/data seed that made it,
its eval figures) and one subfolder per component: text_tokenizer/, image_tokenizer/, ar/, decoder/, and optionally
ar_adapter/: a keep-reader LoRA adapter the AR draws with and switches off when it captions (docs/LORA.md).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Callable

import torch

import xomni
from xomni.ar import caption as ar_caption
from xomni.ar.model import UnifiedAR
from xomni.ar.sampler import SamplingConfig, sample_images
from xomni.ar.vocab import generation_length
from xomni.checkpoint import read_json
from xomni.cliargs import MAX_IMAGES
from xomni.config import config_from_dict
from xomni.data.presets import get_preset
from xomni.data.text_tokenizer import load_text_tokenizer
from xomni.decoder.model import Decoder
from xomni.errors import XomniError
from xomni.lora.adapter import (adapter_component, adapter_keeps_reader, base_model_of, is_keep_reader, load_adapter,
                                load_into_pipeline, lora_config_of, merged_for_drawing, reading, save_adapter,
                                split_adapters)
from xomni.tokenizer import ImageTokenizer
from xomni.tokenizer.images import images_to_tensor
from xomni.utils import atomic_write_text, resolve_device

BUNDLED = Path(__file__).resolve().parent / "pretrained" / "mini"   # trained by the mini recipe
COMPONENTS = ("text_tokenizer", "image_tokenizer", "ar", "decoder")
AR_ADAPTER = "ar_adapter"  # optional component: a keep-reader LoRA adapter the AR draws with (xomni.lora.adapter)


def default_model_dir() -> Path:
    return BUNDLED


def check_sampling(s) -> None:
    """SamplingConfig.validate plus finite numbers and CFG >= 1 (1 = off; below 1 it pushes towards other
    prompts, negative values draw something else entirely)."""
    import math
    for name in ("temperature", "top_p", "min_p", "cfg_scale"):
        v = getattr(s, name)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise XomniError(f"sampling {name} must be a finite number, got {v!r}")
    if isinstance(s.top_k, bool) or not isinstance(s.top_k, int):
        raise XomniError(f"sampling top_k must be an integer, got {s.top_k!r}")
    s.validate()
    if s.cfg_scale < 1:
        raise XomniError(f"sampling cfg_scale must be >= 1 (1 = off), got {s.cfg_scale}")


def _check_index(index, path: Path) -> None:
    """The fields of model_index.json the pipeline reads have the right types (one line naming the file)."""
    if not isinstance(index, dict):
        raise XomniError(f"{path} must hold a JSON object")
    want = {"charset": str, "prompt_template": str, "data_preset": str, "sampling": dict}
    for key, tp in want.items():
        v = index.get(key)
        if v is not None and not isinstance(v, tp):
            raise XomniError(f"{path}: '{key}' must be a {'mapping' if tp is dict else 'string'}, got {v!r}")
    tmpl = index.get("prompt_template")
    if tmpl is not None and "{text}" not in tmpl:
        raise XomniError(f"{path}: 'prompt_template' must contain {{text}}, got {tmpl!r}")


DECODE_SEED_OFFSET = 1_000_003  # the decoder's noise is seeded apart from the sampler's uniforms


def _generators(seed: int, seeds: list[tuple[int, int]] | None, offset: int = 0):
    """One generator for the batch, or per-request streams [(generator, rows), ...] (xomni.ar.sampler.uniforms)."""
    if seeds is None:
        return torch.Generator().manual_seed(seed + offset)
    return [(torch.Generator().manual_seed(s + offset), k) for s, k in seeds]


class Pipeline:
    def __init__(self, text_tokenizer, image_tokenizer, ar, decoder, index: dict | None = None,
                 path: str | Path | None = None):
        self.text_tokenizer, self.image_tokenizer, self.ar, self.decoder = text_tokenizer, image_tokenizer, ar, decoder
        self.index = dict(index or {})
        self.path = Path(path) if path else None
        # True: the AR sampler runs each token step as one compiled graph (xomni.ar.compiled): faster per image once
        # compiled, but the first call per batch size compiles (tens of seconds). "auto": only graphs this machine
        # compiled before (`xomni compile`); False: never
        self.compile_sampler: bool | str = "auto"
        # > 0: speculative Jacobi decoding with this many drafts per pass (xomni.ar.sjd): the same distribution in
        # fewer forward passes, other tokens than the plain sampler for the same seed
        self.sjd_window = 0
        if ar.cfg.levels not in (1, image_tokenizer.levels):
            raise XomniError(f"pipeline components do not match: the AR model writes {ar.cfg.levels} codes per patch "
                             f"coarse to fine, the image tokenizer has {image_tokenizer.levels} levels")
        if tuple(decoder.grid) != tuple(image_tokenizer.grid) or decoder.vocab_size != ar.cfg.image_vocab:
            raise XomniError(f"pipeline components do not match: tokenizer grid {image_tokenizer.grid}, decoder grid "
                             f"{decoder.grid}, decoder codes {decoder.vocab_size}, AR codes {ar.cfg.image_vocab}")

    # ------------------------------------------------------------------ persistence
    @classmethod
    def from_pretrained(cls, path: str | Path | None = None, lora: str | Path | None = None) -> "Pipeline":
        """Load a pipeline directory (default: the bundled model); `lora`: a LoRA adapter directory ("A,B": an AR
        and a decoder adapter) added without merging (xomni.lora.adapter)."""
        p = Path(path) if path else BUNDLED
        if not p.is_dir():
            raise XomniError(f"model directory not found: {p}" + (
                " (the bundled model is missing from this install)" if path is None else ""))
        if not (p / "model_index.json").is_file():
            raise XomniError(f"{p} is not a pipeline directory: model_index.json is missing")
        index = read_json(p / "model_index.json")
        _check_index(index, p / "model_index.json")
        missing = [c for c in COMPONENTS if not (p / c).is_dir()]
        if missing:
            raise XomniError(f"pipeline {p} is missing component folder(s): {', '.join(missing)}")
        text_tok = load_text_tokenizer(p / "text_tokenizer")
        image_tok = ImageTokenizer.from_pretrained(p / "image_tokenizer").eval()
        decoder = Decoder.from_pretrained(p / "decoder").eval()
        ar = UnifiedAR.from_pretrained(p / "ar")
        if ar.cfg.n_text != text_tok.vocab_size:
            raise XomniError(f"pipeline {p}: the AR model expects a text vocabulary of {ar.cfg.n_text}, the text "
                             f"tokenizer has {text_tok.vocab_size}")
        if AR_ADAPTER in (index.get("components") or {}):
            if not (p / AR_ADAPTER).is_dir():
                raise XomniError(f"pipeline {p} is missing component folder(s): {AR_ADAPTER}")
            if lora is None or not any(adapter_component(a) == "ar" and adapter_keeps_reader(a)
                                       for a in split_adapters(lora)):  # a keep-reader --lora replaces it
                load_adapter(ar, p / AR_ADAPTER)
                if not is_keep_reader(ar):
                    raise XomniError(f"{p / AR_ADAPTER} is not a keep-reader adapter; a pipeline ships other "
                                     f"adapters merged (xomni lora merge)")
        pipe = cls(text_tok, image_tok, ar.eval(), decoder, index=index, path=p)
        if lora is not None:
            load_into_pipeline(pipe, lora)
        return pipe

    def save_pretrained(self, out: str | Path, index_update: dict | None = None, dtype: str | None = None) -> Path:
        """Write the pipeline directory; `dtype` "float16" halves the weight files (loading casts them back to
        float32; evaluate the saved pipeline, not the one in memory)."""
        dt = {None: None, "float32": None, "float16": torch.float16, "bfloat16": torch.bfloat16}
        if dtype not in dt:
            raise XomniError(f"save dtype must be float32, float16 or bfloat16, got {dtype!r}")
        keep = is_keep_reader(self.ar)  # saved as its own component: merged, it would change the captions
        if any(".lora_" in k for m in ((self.decoder,) if keep else (self.ar, self.decoder)) for k in m.state_dict()):
            raise XomniError("this pipeline has a LoRA adapter loaded without merging; bake it in with "
                             "`xomni lora merge` (or xomni.lora.adapter.merge_lora) before saving")
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        self.text_tokenizer.save_pretrained(out / "text_tokenizer")
        self.image_tokenizer.save_pretrained(out / "image_tokenizer", dtype=dt[dtype])
        self.decoder.save_pretrained(out / "decoder", dtype=dt[dtype])
        ar = base_model_of(self.ar) if keep else self.ar
        ar.save_pretrained(out / "ar", dtype=dt[dtype], grid=list(self.grid))
        if keep:
            save_adapter(self.ar, out / AR_ADAPTER, lora_config_of(self.ar), {"component": "ar"}, dtype=dt[dtype],
                         rows=False)  # ar/ holds the trained image rows
        elif (out / AR_ADAPTER).is_dir():
            shutil.rmtree(out / AR_ADAPTER)  # an earlier save's adapter, no longer part of this pipeline
        index = dict(self.index)
        index.update(index_update or {})
        index.setdefault("_class_name", "xomni.Pipeline")
        index["weights_dtype"] = dtype or "float32"
        index["xomni_version"] = xomni.__version__
        index["torch_version"] = torch.__version__
        index["components"] = {c: c + "/" for c in COMPONENTS + ((AR_ADAPTER,) if keep else ())}
        if keep and "ar" in (index.get("lora") or {}):  # loaded with --lora: now a component, the source recorded
            index["ar_adapter_from"] = index.pop("lora")["ar"]
        atomic_write_text(out / "model_index.json", json.dumps(index, indent=2, sort_keys=True))
        self.index, self.path = index, out
        return out

    def to(self, device="cpu", dtype: torch.dtype | None = None) -> "Pipeline":
        """Move the image tokenizer, AR model and decoder to `device` ("auto", "cpu", "cuda", "cuda:N" or a
        torch.device), optionally casting the AR model (the token sampler, most of the time) to `dtype`, e.g.
        torch.bfloat16 on a GPU; logits and sampling log-probabilities stay float32, the decoder stays float32.
        Returns self, as in diffusers."""
        dev = device if isinstance(device, torch.device) else resolve_device(str(device))
        self.image_tokenizer.to(dev)
        self.ar.to(device=dev, dtype=dtype)
        self.decoder.to(dev)
        return self

    @property
    def device(self) -> torch.device:
        return next(self.ar.parameters()).device

    # ------------------------------------------------------------------ properties
    @property
    def grid(self) -> tuple[int, int]:
        return tuple(self.image_tokenizer.grid)

    @property
    def charset(self) -> str | None:
        return self.index.get("charset")

    @property
    def prompt_template(self) -> str:
        """model_index.json "prompt_template", else the template of the model's data preset (tiny's if none)."""
        return self.index.get("prompt_template") or get_preset(self.index.get("data_preset") or "tiny").prompt_template

    def sampling_config(self, **overrides):
        """The model's default sampling settings (`model_index.json` "sampling", chosen by its eval), with any
        non-None keyword overriding them; unknown names in the index are ignored."""
        import dataclasses

        names = {f.name for f in dataclasses.fields(SamplingConfig)}
        kw = {k: v for k, v in (self.index.get("sampling") or {}).items() if k in names}
        base = config_from_dict(SamplingConfig, kw, source="model_index.json sampling")
        s = dataclasses.replace(base, **{k: v for k, v in overrides.items() if v is not None})
        check_sampling(s)
        return s

    def caption_for_text(self, text: str) -> str:
        """The model's own prompt template for a target string (used by `xomni eval text --model`)."""
        return self.prompt_template.format(text=text)

    # ------------------------------------------------------------------ input checks
    def check_prompt(self, prompt: str) -> list[int]:
        if not isinstance(prompt, str) or not prompt.strip():
            raise XomniError("the prompt is empty")
        cs = self.charset
        if cs is not None:
            bad = sorted({c for c in prompt if c not in cs})
            if bad:
                raise XomniError(f"the prompt contains characters this model cannot draw or read: "
                                 f"{' '.join(repr(c) for c in bad)}")
        ids = self.text_tokenizer.encode(prompt, add_special_tokens=False)
        h, w = self.grid
        limit = self.ar.cfg.max_seq_len - generation_length(0, h, w)
        if len(ids) > limit:
            raise XomniError(f"the prompt is {len(ids)} tokens long; this model takes at most {limit} prompt tokens "
                             f"(context {self.ar.cfg.max_seq_len} = prompt + {generation_length(0, h, w)} image "
                             f"tokens)")
        return ids

    # ------------------------------------------------------------------ generation
    def drawing_model(self) -> torch.nn.Module:
        """The AR model the sampler runs: `self.ar`, or, for an AR that draws through a keep-reader adapter, a copy
        with the adapter merged in (xomni.lora.adapter.merged_for_drawing; one more AR's weights in memory)."""
        return merged_for_drawing(self.ar) if is_keep_reader(self.ar) else self.ar

    @torch.no_grad()
    def generate_codes(self, prompts: list[str], seed: int = 0, sampling=None,
                       callback: Callable[[int, torch.Tensor], None] | None = None, stream_every: int = 0,
                       seeds: list[tuple[int, int]] | None = None):
        """Token grids for `prompts`. `seeds`: per-request (seed, rows) in row order instead of one `seed`, so each
        request of a merged batch gets the tokens it would get alone."""
        sampling = sampling or self.sampling_config()
        ids = [self.check_prompt(p) for p in prompts]
        return sample_images(self.drawing_model(), ids, self.grid, sampling, generator=_generators(seed, seeds),
                             callback=callback, stream_every=stream_every, compile=self.compile_sampler,
                             sjd_window=self.sjd_window)

    @torch.no_grad()
    def decode(self, codes_BHW: torch.Tensor, steps: int | None = None, seed: int = 0,
               seeds: list[tuple[int, int]] | None = None) -> list:
        """Images of token grids; `seeds` as in generate_codes."""
        return self.decoder.decode_pil(codes_BHW, steps=steps,
                                       generator=_generators(seed, seeds, DECODE_SEED_OFFSET))

    def __call__(self, prompt: str | list[str], num_images: int = 1, seed: int = 0, temperature: float | None = None,
                 top_k: int | None = None, top_p: float | None = None, min_p: float | None = None,
                 cfg_scale: float | None = None, steps: int | None = None, callback=None, stream_every: int = 0) -> list:
        """Generate `num_images` images per prompt; returns PIL images (prompt-major order). Sampling settings left
        at None take the model's defaults (`model_index.json` "sampling", else SamplingConfig's)."""
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        if not prompts:
            raise XomniError("no prompts given")
        if not 1 <= num_images <= MAX_IMAGES:
            raise XomniError(f"num_images must be between 1 and {MAX_IMAGES}, got {num_images}")
        rows = [p for p in prompts for _ in range(num_images)]
        s = self.sampling_config(temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p, cfg_scale=cfg_scale)
        out = self.generate_codes(rows, seed=seed, sampling=s, callback=callback, stream_every=stream_every)
        return self.decode(out.codes_BHW, steps=steps, seed=seed)

    @torch.no_grad()
    def check_num_beams(self, num_beams=None) -> int:
        """The beam width to caption with: `num_beams`, else model_index.json "caption" {"num_beams": N}, else 1."""
        import operator
        where = "num_beams"
        if num_beams is None:
            cap = self.index.get("caption") or {}
            num_beams = cap.get("num_beams", 1) if isinstance(cap, dict) else cap
            where = "model_index.json caption.num_beams"
        try:
            n = operator.index(num_beams)
        except TypeError:
            n = None
        if n is None or isinstance(num_beams, bool) or not 1 <= n <= 64:
            raise XomniError(f"{where} must be an integer from 1 to 64, got {num_beams!r}")
        return n

    def caption(self, images: list, num_beams: int | None = None) -> list[str]:
        """Image -> caption with the same AR weights (images of any size are resized to the tokenizer's).
        `num_beams` 1 is greedy; default: model_index.json "caption" {"num_beams": N}, else 1."""
        num_beams = self.check_num_beams(num_beams)
        x = images_to_tensor(images, tuple(self.image_tokenizer.config.image_size))
        codes = self.image_tokenizer.encode(x.to(next(self.image_tokenizer.parameters()).device))
        with reading(self.ar):  # a keep-reader LoRA adapter draws only: off while the model reads
            ids = ar_caption.caption_codes(self.ar, codes, num_beams=num_beams)
        return [self.text_tokenizer.decode(one) for one in ids]
