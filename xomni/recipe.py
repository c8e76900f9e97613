"""`xomni pipeline --preset tiny --out DIR`: the whole recipe from scratch, one stage after the other.

data -> image tokenizer -> diffusion decoder -> unified AR (SFT) -> assembled Pipeline -> the default sampling
temperature chosen on val-split strings -> evaluation on the test split (text read by Tesseract, the model's own
captions of test renders, an HTML report in OUT/eval/report/index.html), then, when
rl.train.steps > 0, GRPO on the SFT pipeline (OUT/rl) -> its evaluation and the SFT / SFT+GRPO x 1 sample /
best-of-N comparison (OUT/eval/rl, `xomni eval rl`); the RL-tuned pipeline is then the recipe's result.
Every stage writes into OUT/<stage>/ and is skipped when its result exists, and each trainer resumes from its last
checkpoint, so a killed recipe continues where it stopped when started again with the same command.
"""
from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import time
from pathlib import Path

from xomni.ar.data import TokenDataset
from xomni.ar.model import UnifiedAR
from xomni.ar.train import ARTrainConfig
from xomni.ar.trainer import train_ar_main
from xomni.ar.vocab import training_length
from xomni.checkpoint import read_json
from xomni.cliargs import max_threads
from xomni.config import field, in_range, load_config, to_dict
from xomni.data.io import open_dataset
from xomni.data.presets import get_preset
from xomni.data.synth import synth
from xomni.data.text_tokenizer import load_text_tokenizer
from xomni.decoder.config import DecoderTrainConfig
from xomni.decoder.model import Decoder
from xomni.decoder.trainer import train_decoder
from xomni.errors import XomniError
from xomni.eval.captioning import evaluate_captions
from xomni.eval.report import build_report
from xomni.eval.text import items_from_model
from xomni.metrics.ocr import resolve_region
from xomni.metrics.text import score_items
from xomni.pipeline import Pipeline
from xomni.rl.compare import compare
from xomni.rl.config import RLConfig
from xomni.rl.config import base_config as rl_base_config
from xomni.rl.trainer import train_rl
from xomni.tokenizer import ImageTokenizer
from xomni.tokenizer.config import TokenizerTrainConfig
from xomni.tokenizer.trainer import train_tokenizer
from xomni.utils import atomic_write_text, log

PRESET_DIR = Path(__file__).resolve().parent / "configs"


@dataclasses.dataclass
class RecipeConfig:
    data_preset: str = field("tiny", help="Dataset preset rendered by `xomni data synth`.")
    data_seed: int = field(0, help="Seed of the rendered dataset.")
    n_train: int = field(20000, help="Training images (val/test get max(16, n/10) each).")
    eval_n: int = field(64, help="Test-split strings generated and read by Tesseract at the end.")
    threads: int = field(2, help="torch threads for every stage.")
    save_dtype: str = field("float32", help="Precision of the assembled pipeline's weight files: float32 | float16 "
                                            "(half the size; the evaluation runs on the saved pipeline).")
    tokenizer: TokenizerTrainConfig = field(default_factory=TokenizerTrainConfig, help="Image tokenizer stage.")
    decoder: DecoderTrainConfig = field(default_factory=DecoderTrainConfig, help="Diffusion decoder stage.")
    ar: ARTrainConfig = field(default_factory=ARTrainConfig, help="Unified AR (SFT) stage.")
    rl: RLConfig = field(default_factory=RLConfig, help="GRPO stage on the SFT pipeline (rl.train.steps 0 = no RL "
                                                        "stage); model, data, preset and out_dir are set by the recipe.")
    best_of: int = field(8, help="N of the best-of-N baseline in the RL comparison (SFT and SFT+GRPO).")
    select_temperatures: list[float] = field(default_factory=list, help="Sampling temperatures tried on val-split "
                                             "strings after SFT (select_n strings x select_samples, seed 0); the "
                                             "highest exact match (ties: lower CER, then lower T) becomes the "
                                             "pipeline's default ('sampling' in model_index.json). Empty: keep the "
                                             "sampler's default, 1.0.")
    select_n: int = field(64, help="Val-split strings of the temperature selection.")
    select_samples: int = field(4, help="Samples per string in the temperature selection.")
    caption_n: int = field(200, help="Test-split renders captioned by the pipeline at the end (caption exact match "
                                     "of its own captions, as `xomni eval caption`); 0 = skip.")

    def check(self, where: str = "") -> "RecipeConfig":
        in_range(self, where, "threads", 1, max_threads())
        for name in ("n_train", "eval_n", "best_of"):
            in_range(self, where, name, 1)
        for name in ("select_n", "select_samples", "caption_n"):
            in_range(self, where, name, 0)
        in_range(self, where, "data_seed", 0, 2 ** 32 - 1)
        if self.save_dtype not in ("float32", "float16"):
            raise XomniError(f"config save_dtype must be float32 or float16, got {self.save_dtype!r}")
        return self


def load_recipe(preset: str, config: str | None, sets: list[str] | None) -> RecipeConfig:
    import yaml
    path = PRESET_DIR / f"recipe_{preset}.yaml"
    if not path.is_file():
        names = sorted(p.stem[len("recipe_"):] for p in PRESET_DIR.glob("recipe_*.yaml"))
        raise XomniError(f"unknown recipe preset {preset!r}; available: {', '.join(names)}")
    base = yaml.safe_load(path.read_text()) or {}
    rl = base.setdefault("rl", {})  # RL training-loop defaults (not the SFT ones); no RL stage unless steps are set
    rl["train"] = {**rl_base_config()["train"], "steps": 0, **(rl.get("train") or {})}
    return validate_recipe(load_config(RecipeConfig, config, sets, base=base))


def validate_recipe(cfg: RecipeConfig) -> RecipeConfig:
    """Settings that would otherwise fail only after hours of training are refused before the first stage."""
    cfg.ar.validate()
    tcfg = cfg.tokenizer.model.validate()
    h, w = tcfg.token_grid
    need = training_length(1, h, w)  # with a one-token caption; the AR trainer checks the longest one
    if cfg.ar.model.max_seq_len < need:
        raise XomniError(f"ar.model.max_seq_len={cfg.ar.model.max_seq_len} cannot hold the tokenizer's {h}x{w} token "
                         f"grid (levels={tcfg.levels}) and a caption: set ar.model.max_seq_len to at least "
                         f"{need - 1} plus the longest caption's tokens")
    if any(not t > 0 for t in cfg.select_temperatures):
        raise XomniError(f"select_temperatures must all be > 0, got {cfg.select_temperatures}")
    if cfg.select_temperatures and (cfg.select_n < 1 or cfg.select_samples < 1):
        raise XomniError(f"select_n and select_samples must be >= 1, got {cfg.select_n} and {cfg.select_samples}")
    if cfg.eval_n < 1:
        raise XomniError(f"eval_n must be >= 1, got {cfg.eval_n}")
    return cfg


def _git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                              cwd=Path(__file__).resolve().parent).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def charset_of(captions: list[str]) -> str:
    return "".join(sorted(set("".join(captions))))


def train_wall_s(run_dir: Path, max_gap_s: float = 600.0) -> float | None:
    """Training time of a stage from its log.jsonl time stamps (gaps over `max_gap_s`, i.e. a stopped run that was
    resumed later, are not counted), or None without a log: how long a stage took even when it ran outside this
    recipe (for example side by side with another stage)."""
    log_path = Path(run_dir) / "log.jsonl"
    if not log_path.is_file():
        return None
    ts = []
    for line in log_path.read_text().splitlines():
        try:
            t = json.loads(line).get("time")
        except json.JSONDecodeError:
            continue
        if isinstance(t, (int, float)):
            ts.append(float(t))
    return round(sum(b - a for a, b in zip(ts, ts[1:]) if 0 <= b - a <= max_gap_s), 1) if len(ts) > 1 else None


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def check_same_recipe(cfg: RecipeConfig, out: Path) -> None:
    """A rerun continues OUT only with the config that started it: stages whose results exist are skipped, so a
    changed config would be recorded for models it did not make. The first run writes OUT/recipe_config.json."""
    rec = out / "recipe_config.json"
    now = json.loads(json.dumps(to_dict(cfg)))
    if not rec.is_file():
        atomic_write_text(rec, json.dumps(now, indent=2, sort_keys=True))
        return
    old, new = _flat(read_json(rec)), _flat(now)
    diff = sorted(k for k in set(old) | set(new) if k != "threads" and old.get(k) != new.get(k))
    if diff:
        raise XomniError(f"{out} holds a recipe run with another config (differs in {', '.join(diff[:4])}"
                         f"{', ...' if len(diff) > 4 else ''}); rerun with the same command to continue it, or "
                         f"choose a new --out")


def run_recipe(cfg: RecipeConfig, out: str | Path, command: str) -> dict:
    import torch

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    check_same_recipe(cfg, out)
    torch.set_num_threads(cfg.threads)
    t_all = time.time()
    times: dict[str, float] = {}
    results: dict[str, dict] = {}
    n_st = 6 if cfg.rl.train.steps > 0 else 5

    def stage(key: str, i: int, what: str, done: Path, train) -> None:
        """One stage, skipped when its result exists (a rerun continues where it stopped; skipped stages get no
        time here, see train_wall_s for their training time)."""
        if done.is_file():
            return
        log(f"[recipe] {i}/{n_st} {what}")
        t = time.time()
        res = train()
        if res is not None:
            results[key] = res
        times[f"{key}_s"] = time.time() - t

    def render() -> None:  # the dataset is on disk; its dataset.json is not a result
        synth(str(data), cfg.n_train, seed=cfg.data_seed, preset=cfg.data_preset, split="all", command=command)

    data, tok, dec, ar = out / "data", out / "tokenizer", out / "decoder", out / "ar"
    stage("data", 1, f"data: rendering {cfg.n_train} training images (+ val/test) -> {data}", data / "dataset.json",
          render)
    stage("tokenizer", 2, "image tokenizer", tok / "final" / "model.safetensors",
          lambda: train_tokenizer(dataclasses.replace(
              cfg.tokenizer, data=str(data), train=dataclasses.replace(cfg.tokenizer.train, out_dir=str(tok))),
              resume="auto"))
    stage("decoder", 3, "diffusion decoder", dec / "final" / "model.safetensors",
          lambda: train_decoder(dataclasses.replace(
              cfg.decoder, data=str(data), tokenizer=str(tok / "final"),
              train=dataclasses.replace(cfg.decoder.train, out_dir=str(dec))), resume="auto"))
    stage("ar", 4, "unified AR model (SFT)", ar / "final" / "model.safetensors",
          lambda: train_ar_main(dataclasses.replace(cfg.ar, train=dataclasses.replace(cfg.ar.train, out_dir=str(ar))),
                                str(data), str(tok / "final"), resume="auto"))

    # 5. assemble, choose the default temperature on val, evaluate on test
    log(f"[recipe] 5/{n_st} assemble the pipeline, choose its temperature on val and evaluate on test")
    pipe_dir = assemble(out, cfg, command, times)
    t = time.time()
    selection = select_temperature(pipe_dir, data, out / "select", cfg)
    times["select_s"] = time.time() - t
    t = time.time()
    ev = evaluate_pipeline(pipe_dir, data, out / "eval", cfg.eval_n)
    cap = evaluate_caption_stage(pipe_dir, data, out / "eval", cfg.caption_n)
    times["eval_s"] = time.time() - t
    times["total_s"] = time.time() - t_all
    index = json.loads((pipe_dir / "model_index.json").read_text())
    index.update({"eval": ev, "report": ev["report"]})
    if selection:
        index["sampling_selection"] = selection
    if cap:
        index["caption_eval"] = cap
    index["durations_s"] = {k: round(v, 1) for k, v in times.items()}
    index["train_wall_s"] = {st: train_wall_s(out / st) for st in ("tokenizer", "decoder", "ar")}
    atomic_write_text(pipe_dir / "model_index.json", json.dumps(index, indent=2, sort_keys=True))
    res = {"pipeline": str(pipe_dir), "eval": ev, "caption_eval": cap, "sampling_selection": selection,
           "report": ev["report"], "durations_s": index["durations_s"], "stages": results}
    if cfg.rl.train.steps > 0:
        res.update(rl_stage(cfg, out, pipe_dir, data, times, n_st))
    return res


def rl_stage(cfg: RecipeConfig, out: Path, sft_dir: Path, data: Path, times: dict, n_st: int) -> dict:
    """6. GRPO on the SFT pipeline, then the RL pipeline's own evaluation (same targets and seeds as the SFT's) and
    the comparison table (`xomni eval rl`). Returns the recipe result's RL part; the RL pipeline is the result."""
    rl = out / "rl"
    t = time.time()
    rc = dataclasses.replace(cfg.rl, model=str(sft_dir), data=str(data), preset=cfg.data_preset,
                             train=dataclasses.replace(cfg.rl.train, out_dir=str(rl)))
    stage = {}
    if not (rl / "final" / "model.safetensors").is_file():
        log(f"[recipe] 6/{n_st} GRPO on the SFT pipeline ({rc.train.steps} steps, rewards {rc.rewards})")
        stage = train_rl(rc, resume="auto")
        times["rl_s"] = time.time() - t
    rl_pipe = rl / "pipeline"
    t = time.time()
    ev = evaluate_pipeline(rl_pipe, data, out / "eval-rl", cfg.eval_n)
    cmp = compare(str(sft_dir), str(rl), str(out / "eval" / "targets.txt"), str(out / "eval" / "rl"),
                  best_of=cfg.best_of, reference=str(data), split="test")
    times["rl_eval_s"] = time.time() - t
    index = json.loads((rl_pipe / "model_index.json").read_text())
    index.update({"eval": ev, "rl_compare": {k: cmp[k] for k in ("conditions", "bars", "reward_weights", "best_of")},
                  "durations_s": {k: round(v, 1) for k, v in times.items()}})
    index["train_wall_s"] = {st: train_wall_s(out / st) for st in ("tokenizer", "decoder", "ar", "rl")}
    atomic_write_text(rl_pipe / "model_index.json", json.dumps(index, indent=2, sort_keys=True))
    return {"pipeline": str(rl_pipe), "sft_pipeline": str(sft_dir), "eval": ev, "rl_compare": cmp,
            "durations_s": index["durations_s"], "rl_stage": stage}


def assemble(out: Path, cfg: RecipeConfig, command: str, times: dict) -> Path:
    ar = UnifiedAR.from_pretrained(out / "ar")
    captions = [m["caption"] for m in TokenDataset(out / "ar" / "tokens-train").meta]
    pipe = Pipeline(load_text_tokenizer(cfg.ar.text_tokenizer), ImageTokenizer.from_pretrained(out / "tokenizer"),
                    ar.eval(), Decoder.from_pretrained(out / "decoder"))
    index = {"command": command, "commit": _git_commit(), "data_seed": cfg.data_seed, "data_preset": cfg.data_preset,
             "n_train": cfg.n_train, "recipe": to_dict(cfg), "charset": charset_of(captions),
             "prompt_template": get_preset(cfg.data_preset).prompt_template,
             "durations_s": {k: round(v, 1) for k, v in times.items()},
             "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    return pipe.save_pretrained(out / "pipeline", index_update=index, dtype=cfg.save_dtype)


def split_targets(data: Path, split: str, n: int, path: Path) -> Path:
    """The first `n` distinct strings of `split`, one per line, written to `path`."""
    ds = open_dataset(data, split=split)
    texts: list[str] = []
    for i in range(len(ds)):
        t = ds[i].meta.get("text")
        if t and t not in texts:
            texts.append(t)
        if len(texts) >= n:
            break
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, "".join(t + "\n" for t in texts))
    return path


def read_strings(pipe_dir: Path, targets: Path, samples: int, sampling: dict | None = None) -> dict:
    """Draw `samples` images per line of `targets` (seed 0) and score them with Tesseract."""
    items, tg = items_from_model(str(pipe_dir), str(targets), samples=samples, seed=0, sampling=sampling)
    res, _ = score_items(items, tg, region=resolve_region([it.meta for it in items]))
    return res


def select_temperature(pipe_dir: Path, data: Path, out: Path, cfg: RecipeConfig) -> dict | None:
    """Try cfg.select_temperatures on val-split strings; write the winner into the pipeline's default sampling
    (OUT/select/selection.json keeps the table). Seeded, so a rerun of the recipe chooses the same again."""
    if not cfg.select_temperatures:
        return None
    targets = split_targets(data, "val", cfg.select_n, out / "targets.txt")
    rows = []
    for temp in cfg.select_temperatures:
        log(f"[recipe] temperature {temp}: {cfg.select_n} val strings x {cfg.select_samples}")
        r = read_strings(pipe_dir, targets, cfg.select_samples, sampling={"temperature": temp})
        rows.append({"temperature": temp, "exact_match": r["exact_match"], "cer": r["cer"],
                     "ci95_exact_match": r["ci95"]["exact_match"], "n_images": r["n"]})
    best = max(rows, key=lambda r: (r["exact_match"], -r["cer"], -r["temperature"]))
    sel = {"split": "val", "targets": str(targets), "samples_per_string": cfg.select_samples, "seed": 0,
           "rows": rows, "chosen": best["temperature"],
           "rule": "highest exact match; ties: lower CER, then lower temperature"}
    atomic_write_text(out / "selection.json", json.dumps(sel, indent=2))
    index = json.loads((pipe_dir / "model_index.json").read_text())
    index["sampling"] = {**(index.get("sampling") or {}), "temperature": sel["chosen"]}
    atomic_write_text(pipe_dir / "model_index.json", json.dumps(index, indent=2, sort_keys=True))
    log(f"[recipe] default temperature {sel['chosen']} (val exact by T: "
        + ", ".join(f"{r['temperature']}: {r['exact_match']:.3f}" for r in rows) + ")")
    return sel


def evaluate_pipeline(pipe_dir: Path, data: Path, out: Path, n: int) -> dict:
    """Text accuracy (Tesseract) on `n` unseen test-split strings, one sample each at the model's default settings,
    and the HTML report OUT/report/index.html, both from one OCR pass (the report's)."""
    targets = split_targets(data, "test", n, out / "targets.txt")
    items, _ = items_from_model(str(pipe_dir), str(targets), samples=1, seed=0, save_dir=str(out / "images"))
    rep = build_report(str(out / "images"), str(out / "report"), fid=False)
    res = json.loads(Path(rep["metrics"]).read_text())["text"]
    res.update({"targets": str(targets), "samples_per_string": 1, "seed": 0, "sampling": items[0].meta["sampling"],
                "report": rep["report"]})
    atomic_write_text(out / "text.json", json.dumps(res, indent=2))
    return res


def evaluate_caption_stage(pipe_dir: Path, data: Path, out: Path, n: int) -> dict | None:
    """The pipeline's own captions of the first `n` test-split renders (as `xomni eval caption`)."""
    if n <= 0:
        return None
    res, rows = evaluate_captions(str(pipe_dir), str(data), "test", n)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "caption.json", json.dumps({**res, "rows": rows}, indent=2))
    return res


def main_cli(preset: str, out: str, config: str | None, sets: list[str] | None) -> dict:
    cfg = load_recipe(preset, config, sets)
    command = " ".join(["xomni"] + sys.argv[1:])
    return run_recipe(cfg, out, command)
