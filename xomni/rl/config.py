"""RL configuration: `RLConfig` (GRPO + rewards + sampling), its validation, and loading for best-of-N.

The reward part of the config (`rewards`, `ocr_confidence`, `reward_judge`, `preset`, `caption_model`) is read by
both `xomni train rl` and best-of-N, so both score images with exactly the same callables and weights.
"""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

from xomni.ar.sampler import SamplingConfig
from xomni.checkpoint import read_json
from xomni.config import field, load_config
from xomni.errors import XomniError
from xomni.rl.credit import check_layout_preset
from xomni.rl.rewards import validate_rewards
from xomni.train import TrainConfig

# The RL training-loop defaults (passed as `base` to load_config so that `--set train.x=...` keeps the rest).
TRAIN_DEFAULTS = dict(out_dir="runs/rl", steps=200, batch_size=4, lr=1e-6, min_lr_ratio=1.0, warmup_steps=0,
                      weight_decay=0.0, grad_clip=1.0, log_every=1, ckpt_every=50, eval_every=25)


def base_config() -> dict:
    return {"train": dict(TRAIN_DEFAULTS)}


@dataclasses.dataclass
class RLConfig:
    train: TrainConfig = field(default_factory=lambda: TrainConfig(**TRAIN_DEFAULTS),
                               help="Shared training loop. train.batch_size = prompts per step (global, split "
                                    "across ranks); each prompt gets group_size rollouts. RL defaults: " +
                                    ", ".join(f"{k}={v}" for k, v in TRAIN_DEFAULTS.items()) + ".")
    sampling: SamplingConfig = field(default_factory=SamplingConfig,
                                     help="Sampling distribution of the rollouts; the loss uses the same one. With "
                                          "sampling_from_model these fields start from the model's shipped ones.")
    sampling_from_model: bool = field(True, help="Start `sampling` from the pipeline's shipped settings "
                                                 "(model_index `sampling`), so RL improves the distribution users "
                                                 "run; fields set in the config or by --set still win.")
    algo: str = field("grpo", help="grpo: clipped policy gradient with group-normalised advantages. rest: the "
                                   "reward-filtered self-training control (ReST/RAFT): per group keep the rollout "
                                   "best-of-N would pick (same rewards) when its reward >= rest_min_reward, and "
                                   "fine-tune on it (mean token NLL under the raw model).")
    rest_min_reward: float = field(1.0, help="rest: a group's best rollout trains only when its combined reward is "
                                             "at least this (1.0 with OCR alone = read exactly right).")
    skip_flat: bool = field(True, help="Leave rollouts whose advantages are all 0 (groups that all read the same) "
                                       "out of the gradient-carrying pass: their policy-gradient term is exactly 0, "
                                       "so only their KL term (beta) is dropped, and the backward costs less.")
    prompt_pool: bool = field(True, help="Draw each step's prompts with weight p(1-p), p = the prompt's pass rate "
                                         "(OCR reward 1) estimated online from its own rollouts, shrunk to the "
                                         "running mean: words the policy gets partly right teach most (DAPO-style "
                                         "dynamic sampling). false: the shared loop's epoch order.")
    model: str = field("", help="Pipeline directory whose AR model is the initial policy (--model); its data "
                                "preset is the default `preset`.")
    prompts: str = field("", help="Prompt file, one prompt per line (--prompts); or use `data`.")
    data: str = field("", help="Dataset directory (--data): prompts are the captions of `data_split`, and the "
                               "fixed validation batch comes from `val_split` when present.")
    data_split: str = field("train", help="Split of `data` whose captions are the training prompts.")
    val_split: str = field("val", help="Split of `data` for the fixed validation batch ('' = first val_n prompts).")
    val_n: int = field(16, help="Fixed validation prompts for the periodic Tesseract text accuracy (0 = off).")
    group_size: int = field(16, help="G: rollouts per prompt; rewards are normalised within each group (>= 2).")
    beta: float = field(0.01, help="KL penalty coefficient (k3 estimator against the frozen reference).")
    clip_eps: float = field(0.2, help="PPO clip range of the token-level ratio: [1 - eps, 1 + eps].")
    inner_epochs: int = field(1, help="Optimizer steps per batch of rollouts (1 = purely on-policy; E > 1 reuses "
                                      "the rollouts of every E-th step for the next E-1 steps, whose prompts are "
                                      "skipped; --resume is exact when train.ckpt_every is a multiple of E).")
    adv_eps: float = field(1e-4, help="Epsilon added to the group reward std when normalising advantages.")
    scale_rewards: bool = field(True, help="Divide advantages by the group's reward std (GRPO); false: only centre "
                                           "them (Dr. GRPO), so groups whose rewards barely differ push little.")
    credit: str = field("auto", help="Where the advantage goes. auto: column where the preset's layout allows it "
                                     "(one font, one size: mini), else sequence. sequence: one advantage per rollout, on every "
                                         "token (GRPO). column: the OCR reward is credited per token column, to the "
                                         "columns that drew each character, by whether OCR read that character "
                                         "right (xomni.rl.credit); the other rewards stay per rollout. Column credit "
                                         "gives a cleaner gradient per rollout (measure it: xomni bench rl-snr).")
    reference: str = field("", help="AR weights of the frozen KL reference (an ar/ dir, a pipeline dir or a "
                                    ".safetensors); '' = the initial policy itself.")
    rewards: dict[str, float] = field(default_factory=lambda: {"ocr": 1.0},
                                      help="Reward name -> weight; combined reward = sum(w * r) / sum(w). Names: "
                                           "ocr, alignment, caption_similarity, aesthetic, or 'module:function'. "
                                           "Default OCR alone: the aesthetic term measured as noise in the gradient.")
    ocr_confidence: bool = field(False, help="Make the OCR reward strict where Tesseract (the evaluator) is: "
                                             "edit similarity x RapidOCR's mean character probability, and with "
                                             "column credit each character read right counts its probability, so "
                                             "legible glyphs beat ones RapidOCR merely forgives (docs/RL.md).")
    reward_judge: str = field("", help="Judge directory for the `alignment` reward: train it separately from the "
                                       "evaluation judge (`xomni train judge --set train.seed=1`).")
    preset: str = field("tiny", help="Dataset preset whose ocr_region the OCR reward and the val text accuracy "
                                     "read ('' = the whole image).")
    caption_model: str = field("", help="Pipeline whose frozen AR model captions images for caption_similarity "
                                        "('' = the `model` pipeline as loaded, i.e. the reference).")
    reward_workers: int = field(1, help="Reward processes per rank (spawned once; OCR runs there while the main "
                                        "process samples and decodes the next group). 0 = in-process.")
    rollout_batch: int = field(64, help="Most sequences per sampler / decoder call.")
    decode_steps: int = field(0, help="Decoder sampling steps for rollouts (0 = the decoder's default).")
    exact_entropy: bool = field(False, help="Log the exact entropy of the sampling distribution at the drawn "
                                           "positions (one extra no-grad forward); false: the Monte-Carlo estimate "
                                           "mean(-log p(drawn token)).")

    def check(self, where: str = "") -> "RLConfig":
        """Called by load_config for every RL config: the same checks as `validate`, one line before any work."""
        return validate(self)


def validate(cfg: RLConfig) -> RLConfig:
    """Config errors, raised before any model is loaded or any rollout is sampled."""
    if cfg.group_size < 2:
        raise XomniError(f"group_size must be >= 2 (advantages are normalised within a group), got {cfg.group_size}")
    if not (cfg.beta >= 0 and math.isfinite(cfg.beta)):
        raise XomniError(f"beta must be >= 0, got {cfg.beta}")
    if not 0 < cfg.clip_eps < 1:
        raise XomniError(f"clip_eps must be in (0, 1), got {cfg.clip_eps}")
    if cfg.inner_epochs < 1:
        raise XomniError(f"inner_epochs must be >= 1, got {cfg.inner_epochs}")
    if not cfg.adv_eps > 0:
        raise XomniError(f"adv_eps must be > 0, got {cfg.adv_eps}")
    if cfg.reward_workers < 0 or cfg.rollout_batch < 1 or cfg.decode_steps < 0 or cfg.val_n < 0:
        raise XomniError("reward_workers, decode_steps and val_n must be >= 0 and rollout_batch >= 1")
    if cfg.reward_workers > 64 or cfg.decode_steps > 1000:
        raise XomniError(f"reward_workers must be <= 64 and decode_steps <= 1000, got {cfg.reward_workers} and "
                         f"{cfg.decode_steps}")
    if cfg.algo not in ("grpo", "rest"):
        raise XomniError(f"algo must be 'grpo' or 'rest', got {cfg.algo!r}")
    if not math.isfinite(cfg.rest_min_reward):
        raise XomniError(f"rest_min_reward must be a finite number, got {cfg.rest_min_reward}")
    if cfg.algo == "rest" and cfg.ocr_confidence and cfg.rest_min_reward >= 1.0:
        raise XomniError(f"algo=rest with ocr_confidence: the OCR reward stays below 1 (it is scaled by RapidOCR's "
                         f"character probabilities), so rest_min_reward {cfg.rest_min_reward} keeps nothing; set "
                         f"it below 1, e.g. --set rest_min_reward=0.95")
    if cfg.credit not in ("auto", "sequence", "column"):
        raise XomniError(f"credit must be 'auto', 'sequence' or 'column', got {cfg.credit!r}")
    if cfg.credit == "column" and (float(cfg.rewards.get("ocr", 0.0)) == 0.0 or not cfg.preset):
        raise XomniError("credit=column credits the OCR reward per token column: it needs rewards.ocr > 0 and a "
                         "preset (whose renderer lays out the characters)")
    if cfg.credit == "column":
        check_layout_preset(cfg.preset)
    if cfg.train.batch_size < 1:
        raise XomniError(f"train.batch_size (prompts per step) must be >= 1, got {cfg.train.batch_size}")
    cfg.sampling.validate()
    validate_rewards(cfg)
    return cfg


def effective_credit(cfg: RLConfig) -> str:
    """'column' or 'sequence': `auto` is column when there is an OCR reward and the preset fixes the text layout."""
    if cfg.credit != "auto":
        return cfg.credit
    if float(cfg.rewards.get("ocr", 0.0)) == 0.0 or not cfg.preset:
        return "sequence"
    try:
        check_layout_preset(cfg.preset)
    except XomniError:
        return "sequence"
    return "column"


def model_defaults(index: dict, sampling: bool = True) -> dict:
    """The RL config fields a model brings: its data preset (whose OCR region the rewards read) and, with
    `sampling`, its shipped sampling settings (model_index `sampling`)."""
    out: dict = {}
    if index.get("data_preset"):
        out["preset"] = index["data_preset"]
    shipped = index.get("sampling") or {}
    if not isinstance(shipped, dict):
        raise XomniError(f"model_index.json: 'sampling' must be a mapping, got {shipped!r}")
    names = {f.name for f in dataclasses.fields(SamplingConfig)}
    if sampling and shipped:
        out["sampling"] = {k: v for k, v in shipped.items() if k in names}
    return out


def load_run_config(yaml_path=None, overrides: list[str] | None = None, base: dict | None = None) -> RLConfig:
    """The RLConfig of a run on `model`: defaults <- `base` <- the model's own defaults (`model_defaults`: its
    preset, and its shipped sampling when sampling_from_model) <- YAML <- --set, so explicitly set fields win."""
    base = json.loads(json.dumps(base or base_config()))
    cfg = load_config(RLConfig, yaml_path, overrides, base=base)
    idx = Path(cfg.model or "") / "model_index.json"
    if not cfg.model or not idx.is_file():
        return cfg
    try:
        own = model_defaults(read_json(idx), cfg.sampling_from_model)
    except XomniError as e:
        raise XomniError(f"{idx}: {e}") from None
    for k, v in own.items():
        base[k] = {**v, **base[k]} if isinstance(base.get(k), dict) else base.get(k, v)
    return load_config(RLConfig, yaml_path, overrides, base=base)


def load_rl_config(source: Any = None, overrides: list[str] | None = None) -> RLConfig:
    """An RLConfig from: an RLConfig, a dict, a YAML file, an RL run dir (OUT/final/config.json 'rl' section, or
    a pipeline's model_index.json 'rl' section written by `xomni train rl`), or None (defaults)."""
    if isinstance(source, RLConfig):
        cfg = source
        if overrides:
            cfg = load_config(RLConfig, None, overrides, base=dataclasses.asdict(source))
        return validate(cfg)
    if source is None or isinstance(source, dict):
        base = base_config()
        for k, v in json.loads(json.dumps(source or {})).items():  # a partial `train` keeps the RL defaults
            base[k] = {**base[k], **v} if k == "train" and isinstance(v, dict) else v
        return load_config(RLConfig, None, overrides, base=base)  # load_config runs check() = validate()
    p = Path(source)
    if p.is_dir():
        for cand, key in ((p / "final" / "config.json", "rl"), (p / "config.json", "rl"),
                          (p / "model_index.json", "rl")):
            if cand.is_file():
                d = json.loads(cand.read_text())
                if key in d:
                    return load_config(RLConfig, None, overrides, base=d[key])
        raise XomniError(f"{p} has no RL config (expected final/config.json or model_index.json with an 'rl' "
                         f"section written by `xomni train rl`)")
    if not p.is_file():
        raise XomniError(f"reward config not found: {p}")
    return load_config(RLConfig, p, overrides, base=base_config())
