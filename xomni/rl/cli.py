"""CLI of the RL stage: `xomni train rl` (GRPO), `xomni eval rewards` (score images with an RL reward config) and
`xomni eval rl` (the SFT / SFT+GRPO x 1 sample / best-of-N reproduction table)."""
from __future__ import annotations

from typing import List, Optional

import typer

from xomni.cliargs import SeedOpt, ThreadsOpt, check_in_dir, check_int
from xomni.errors import XomniError
from xomni.metrics.images import ImageSource
from xomni.pipeline import default_model_dir
from xomni.rl.bench import bench_rl as run_bench_rl
from xomni.rl.compare import compare
from xomni.rl.config import RLConfig, base_config, load_rl_config, load_run_config
from xomni.rl.rewards import build_reward_set
from xomni.rl.snr import measure
from xomni.rl.trainer import train_rl as run_rl
from xomni.train_cli import (ConfigOpt, HelpConfigOpt, JsonOpt, OutOpt, ResumeOpt, SetOpt, check_before_training)
from xomni.utils import emit_json


def train_rl(model: Optional[str] = typer.Option(None, "--model", help="SFT pipeline directory: its AR model is "
                                                                       "the initial policy (and the reference)."),
             prompts: Optional[str] = typer.Option(None, "--prompts", help="Prompt file, one prompt per line."),
             data: Optional[str] = typer.Option(None, "--data", help="Dataset directory: prompts are its captions."),
             config: Optional[str] = ConfigOpt, set_: Optional[List[str]] = SetOpt, out: Optional[str] = OutOpt,
             resume: Optional[str] = ResumeOpt, help_config: bool = HelpConfigOpt(RLConfig),
             json_path: Optional[str] = JsonOpt):
    """GRPO on the AR policy with OCR / alignment / aesthetic rewards (X-Omni's RL stage)."""
    sets = list(set_ or [])
    for key, val in (("model", model), ("prompts", prompts), ("data", data)):
        if val:
            sets.append(f"{key}={val}")
    cfg = load_run_config(config, sets + ([f"train.out_dir={out}"] if out else []), base_config())
    check_before_training(cfg, resume)
    res = run_rl(cfg, resume=resume)
    if res.pop("rank", 0) == 0:  # under torchrun, one JSON result (rank 0's)
        emit_json(res, json_path)


def eval_rewards(images: str = typer.Option(..., "--images", help="Images with metadata (caption or prompt)."),
                 config: Optional[str] = typer.Option(None, "--config", help="RL config (YAML, RL run dir or tuned "
                                                                             "pipeline) whose rewards to use."),
                 set_: Optional[List[str]] = SetOpt,
                 split: Optional[str] = typer.Option(None, "--split", help="Split of a dataset root."),
                 limit: Optional[int] = typer.Option(None, "--limit", help="Score only the first N images."),
                 json_path: Optional[str] = JsonOpt):
    """Score images with exactly the rewards (callables and weights) that RL and best-of-N use."""
    cfg = load_rl_config(config, overrides=list(set_ or []))
    rewards = build_reward_set(cfg, model_dir=cfg.model or None)
    src = ImageSource(images, split=split)
    items = [src[i] for i in range(min(limit or len(src), len(src)))]
    items = [it for it in items if it.image is not None and (it.meta.get("caption") or it.meta.get("prompt"))]
    if not items:
        raise XomniError(f"no readable image with a caption/prompt in {images}")
    prompts = [it.meta.get("caption") or it.meta.get("prompt") for it in items]
    total, comps = rewards.scores([it.image for it in items], prompts, text=[it.meta.get("text") for it in items])
    emit_json({"n": len(items), "weights": cfg.rewards, "reward": sum(total) / len(total),
               "components": {k: sum(v) / len(v) for k, v in comps.items()}}, json_path)


def eval_rl(sft: str = typer.Option(..., "--sft", help="SFT pipeline directory (the RL run's starting model)."),
            rl: str = typer.Option(..., "--rl", help="RL run directory (pipeline/ + log.jsonl) or RL-tuned pipeline."),
            targets: str = typer.Option(..., "--targets", help="Text file, one target string per line (the models' "
                                                                "prompt templates make the prompts)."),
            out: str = typer.Option(..., "-o", "--out", help="Report directory (index.html, compare.json, img/)."),
            best_of: int = typer.Option(8, "--best-of", help="N of best-of-N."),
            reward_config: Optional[str] = typer.Option(None, "--reward-config", help="RL config whose rewards pick "
                                                        "the best of N (default: the RL run's own)."),
            seed: int = typer.Option(0, "--seed", help="Base seed of every condition."),
            reference: Optional[str] = typer.Option(None, "--reference", help="Dataset of ground-truth renders for "
                                                    "FID (e.g. the data the targets come from)."),
            split: str = typer.Option("test", "--split", help="Split of --reference."),
            n_ref: int = typer.Option(512, "--n-ref", help="Reference images for FID."),
            judge: Optional[str] = typer.Option(None, "--judge", help="Evaluation judge for compliance (optional)."),
            rest: Optional[str] = typer.Option(None, "--rest", help="ReST run directory (xomni train rl --set "
                                               "algo=rest) or pipeline: adds its one-sample row (the control)."),
            reuse_sft: Optional[str] = typer.Option(None, "--reuse-sft", help="compare.json of an earlier run of "
                                                    "this command from the same start: its SFT rows are reused "
                                                    "(targets, seed, N, rewards and sampling are checked)."),
            json_path: Optional[str] = JsonOpt):
    """RL reproduction table: SFT and SFT+GRPO, 1 sample and best-of-N (Tesseract, RapidOCR, reward, FID), HTML."""
    emit_json(compare(sft, rl, targets, out, best_of=best_of, reward_config=reward_config, seed=seed,
                      reference=reference, split=split, n_ref=n_ref, judge=judge, rest=rest,
                      reuse_sft=reuse_sft), json_path)


def bench_rl(model: str = typer.Option("xomni/pretrained/mini", "--model", help="Pipeline directory (the policy)."),
             data: str = typer.Option(..., "--data", help="Dataset whose train-split captions are the prompts."),
             config: Optional[str] = typer.Option(None, "--config", help="RL config (e.g. configs/rl_mini.yaml)."),
             set_: Optional[List[str]] = SetOpt,
             prompts: int = typer.Option(16, "--prompts", help="Prompts (groups) per step, >= 1."),
             steps: int = typer.Option(2, "--steps", help="Steps to time (the first is a warm-up when > 1)."),
             seed: int = SeedOpt(0, "Sampling seed."), threads: int = ThreadsOpt,
             json_path: Optional[str] = JsonOpt):
    """Rollout engine speed: rollouts/s and the split of a GRPO step (sample / decode / reward wait / update)."""
    check_in_dir(data, "--data")
    check_int(prompts, "--prompts", 1, 4096)
    check_int(steps, "--steps", 1, 1000)
    emit_json(run_bench_rl(_bundled(model), data, config, list(set_ or []), prompts, steps, seed, threads), json_path)


def bench_rl_snr(model: str = typer.Option("xomni/pretrained/mini", "--model", help="Pipeline directory (the SFT "
                                                                                  "policy)."),
                 data: str = typer.Option(..., "--data", help="Dataset whose train-split captions are the prompts."),
                 config: Optional[str] = typer.Option(None, "--config", help="RL config (rewards, G, credit)."),
                 set_: Optional[List[str]] = SetOpt,
                 groups: int = typer.Option(64, "--groups", help="Prompts (groups) to draw, >= 4."),
                 repeats: int = typer.Option(1, "--repeats", help="Groups per prompt: 1, or 2 to compare two groups "
                                                                  "of the same prompt."),
                 seed: int = SeedOpt(0, "Seed of the prompt choice and the sampler."), threads: int = ThreadsOpt,
                 json_path: Optional[str] = JsonOpt):
    """Gradient signal/noise at the start of RL; prints the rollouts one step needs for half of it to be signal."""
    check_in_dir(data, "--data")
    check_int(groups, "--groups", 4, 4096)
    emit_json(measure(_bundled(model), data, config, list(set_ or []), groups, repeats, seed, threads), json_path)


def _bundled(model: str) -> str:
    """The default --model names the bundled pipeline inside the installed package."""
    from pathlib import Path

    if model == "xomni/pretrained/mini" and not Path(model).is_dir():
        return str(default_model_dir())
    return model


def register(apps: dict) -> None:
    apps["bench"].command("rl")(bench_rl)
    apps["bench"].command("rl-snr")(bench_rl_snr)
    apps["train"].command("rl")(train_rl)
    apps["eval"].command("rewards")(eval_rewards)
    apps["eval"].command("rl")(eval_rl)
