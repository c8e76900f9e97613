"""`xomni train rl`: load the pipeline, check everything, then GRPO on the shared training loop.

Order: config checks (reward names, weights, G, prompts source) -> pipeline -> prompts (each checked by the
pipeline) -> reference (must match the policy) -> reward workers -> run_training -> OUT/pipeline.

Outputs: OUT/log.jsonl (per step: reward and reward_<name> mean/max, kl, clip_frac, entropy, ratio deviations,
time shares of sampling / decoding / waiting for rewards / update; every train.eval_every steps a Tesseract text
accuracy on the fixed val batch), OUT/checkpoints/, OUT/final/ (the tuned AR: model.safetensors + config.json with
the 'ar' and 'rl' sections; a drop-in ar/ folder) and OUT/pipeline/ (the whole pipeline with the tuned AR, for
`xomni generate --model OUT/pipeline`). Under torchrun each rank samples and scores its own prompts.
"""
from __future__ import annotations

import copy
import json
import time
from pathlib import Path

import torch

from xomni.ar.sampler import sample_images
from xomni.checkpoint import find_latest_checkpoint, load_model_weights
from xomni.config import to_dict
from xomni.data.io import open_dataset
from xomni.errors import XomniError
from xomni.lora.adapter import is_keep_reader, train_adapter_only, train_draw_rows
from xomni.metrics.ocr import exact_match, tesseract_batch, tesseract_cmd
from xomni.pipeline import Pipeline
from xomni.rl.config import RLConfig, effective_credit, validate
from xomni.rl.grpo import GRPOLoss, PolicyLogprobs
from xomni.rl.pool import PromptPool
from xomni.rl.rewards import (RewardPool, at_size, preset_region, reward_spec, target_texts, text_similarity,
                              warn_if_eval_judge)
from xomni.train import dist_info, run_training, seed_everything
from xomni.utils import log, resolve_device

ARCH_KEYS = ("hidden_size", "n_layers", "n_heads", "n_kv_heads", "intermediate_size", "n_text", "bos_id", "eos_id",
             "pad_id", "image_vocab", "max_grid", "tie_image_head", "rope_theta")


# ------------------------------------------------------------------ prompts
def read_prompt_file(path: str) -> list[dict]:
    p = Path(path)
    if not p.is_file():
        raise XomniError(f"prompts file not found: {p}")
    rows = [{"prompt": line.strip(), "text": None} for line in p.read_text(encoding="utf-8").splitlines()
            if line.strip()]
    if not rows:
        raise XomniError(f"prompts file {p} is empty")
    return rows


def read_dataset_prompts(data: str, split: str, limit: int | None = None) -> list[dict]:
    ds = open_dataset(data, split=split or None)
    rows = []
    for i in range(len(ds) if limit is None else min(limit, len(ds))):
        m = ds.meta(i)
        if m.get("caption"):
            rows.append({"prompt": m["caption"], "text": m.get("text")})
    if not rows:
        raise XomniError(f"no captions in {data} (split {split!r}): RL prompts come from the metadata `caption`")
    return rows


def load_prompts(cfg: RLConfig) -> tuple[list[dict], list[dict]]:
    """(training prompts, fixed validation prompts)."""
    if bool(cfg.prompts) == bool(cfg.data):
        raise XomniError("give exactly one prompt source: --prompts FILE or --data DIR")
    if cfg.prompts:
        train = read_prompt_file(cfg.prompts)
        return train, train[:cfg.val_n]
    train = read_dataset_prompts(cfg.data, cfg.data_split)
    val = train[:cfg.val_n]
    if cfg.val_split and cfg.val_n:
        try:
            val = read_dataset_prompts(cfg.data, cfg.val_split, limit=cfg.val_n)
        except XomniError:
            log(f"[rl] no '{cfg.val_split}' split in {cfg.data}: the val batch is the first {cfg.val_n} prompts")
    return train, val


# ------------------------------------------------------------------ reference
def load_reference(path: str, policy) -> torch.nn.Module:
    """A frozen copy of the policy with the weights at `path`; XomniError when it is another architecture."""
    p = Path(path)
    if not p.exists():
        raise XomniError(f"reference not found: {p}")
    wdir = p / "ar" if (p / "model_index.json").is_file() else p
    for c in (wdir / "config.json", wdir / "final" / "config.json"):
        if wdir.is_dir() and c.is_file():
            ar = json.loads(c.read_text()).get("ar")
            if isinstance(ar, dict):
                pol = to_dict(policy.cfg)
                diff = [k for k in ARCH_KEYS if k in ar and ar[k] != pol[k]]
                if diff:
                    raise XomniError(f"reference {p} does not match the policy: " + ", ".join(
                        f"{k}={ar[k]} vs {pol[k]}" for k in diff))
            break
    ref = copy.deepcopy(policy)
    try:
        load_model_weights(ref, wdir)
    except XomniError as e:
        raise XomniError(f"reference {p} does not match the policy: {e}") from None
    return freeze(ref)


def keep_the_reader(ar: torch.nn.Module, cfg: RLConfig, where: Path) -> None:
    """A pipeline that draws with a keep-reader adapter (its ar_adapter/) learns like `train lora --set
    keep_reader=true`: the adapter, image_head and the unread levels' embedding rows; what captioning reads stays."""
    if cfg.train.weight_decay:
        raise XomniError(f"{where} draws with a keep-reader adapter: RL needs train.weight_decay 0 (decay would "
                         f"move the embedding rows its captions read)")
    train_draw_rows(train_adapter_only(ar))
    log("[rl] the policy is a keep-reader adapter: it trains with image_head and the unread rows; captions stay")


def freeze(m: torch.nn.Module) -> torch.nn.Module:
    m.eval()
    for q in m.parameters():
        q.requires_grad_(False)
    return m


# ------------------------------------------------------------------ decoding and validation
def make_decode_fn(pipe, steps: int = 0):
    def decode(codes, seed: int):
        return pipe.decode(codes, steps=steps or None, seed=seed)
    return decode


@torch.no_grad()
def val_text_accuracy(ar, decode_fn, val: list[dict], grid, sampling, preset: str, seed: int = 0,
                      batch: int = 64) -> dict:
    """One sample per val prompt (fixed seed), decoded, read by Tesseract on the preset's OCR region: exact-match
    accuracy and mean 1 - normalised edit distance."""
    if not val:
        return {}
    g = torch.Generator().manual_seed(seed)
    images = []
    for s in range(0, len(val), batch):
        out = sample_images(ar, [v["ids"] for v in val[s:s + batch]], tuple(grid), sampling, generator=g)
        images.extend(decode_fn(out.codes_BHW, seed + s))
    box, size = preset_region(preset)
    preds = tesseract_batch(at_size(images, size), psm=7, region=box)
    targets = target_texts([v["prompt"] for v in val], [v.get("text") for v in val])
    return {"text_acc": sum(exact_match(p, t) for p, t in zip(preds, targets)) / len(val),
            "text_sim": sum(text_similarity(p, t) for p, t in zip(preds, targets)) / len(val), "n": len(val)}


# ------------------------------------------------------------------ main
def train_rl(cfg: RLConfig, resume: str | None = None) -> dict:
    t0 = time.time()
    validate(cfg)
    if not cfg.model:
        raise XomniError("train rl needs --model PIPELINE_DIR (the SFT pipeline whose AR model is tuned)")
    if not (Path(cfg.model) / "model_index.json").is_file():
        raise XomniError(f"--model {cfg.model} is not a pipeline directory (no model_index.json)")
    if cfg.reference and not Path(cfg.reference).exists():
        raise XomniError(f"reference not found: {cfg.reference}")
    train_rows, val_rows = load_prompts(cfg)
    if cfg.val_n and cfg.train.eval_every:
        tesseract_cmd()
    rank, world = dist_info()
    if cfg.train.batch_size % world:
        raise XomniError(f"train.batch_size {cfg.train.batch_size} (prompts per step) is not divisible by the "
                         f"world size {world}")
    if cfg.train.num_threads > 0:
        torch.set_num_threads(cfg.train.num_threads)
    pool = RewardPool(reward_spec(cfg, cfg.model), workers=cfg.reward_workers)
    pool.warmup()  # the workers start while the pipeline loads
    try:
        return _train(cfg, resume, train_rows, val_rows, rank, world, pool, t0)
    finally:
        pool.close()


def _train(cfg: RLConfig, resume, train_rows, val_rows, rank, world, pool, t0) -> dict:
    pipe = Pipeline.from_pretrained(cfg.model)
    for r in train_rows + val_rows:
        r["ids"] = pipe.check_prompt(r["prompt"])
    policy_ar = pipe.ar
    ref = load_reference(cfg.reference, policy_ar) if cfg.reference else freeze(copy.deepcopy(policy_ar))
    if is_keep_reader(policy_ar):
        keep_the_reader(policy_ar, cfg, pipe.path)
    dev = resolve_device(cfg.train.device)  # the device run_training moves the policy to
    policy_ar.to(dev), ref.to(dev), pipe.decoder.to(dev)
    warn_if_eval_judge(cfg.reward_judge) if rank == 0 else None
    seed_everything(cfg.train.seed)
    policy = PolicyLogprobs(policy_ar)
    decode_fn = make_decode_fn(pipe, cfg.decode_steps)
    loss_fn = GRPOLoss(cfg, ref, decode_fn, pool, pipe.grid, world=world, levels=pipe.image_tokenizer.levels)
    prompt_pool = None
    if cfg.prompt_pool:
        for i, r in enumerate(train_rows):
            r["idx"] = i
        prompt_pool = loss_fn.prompt_pool = PromptPool(len(train_rows))
        loss_fn.rows = train_rows
    eval_fn = None
    if cfg.val_n and cfg.train.eval_every:
        def eval_fn(model, step):
            return val_text_accuracy(policy_ar, decode_fn, val_rows, pipe.grid, cfg.sampling, cfg.preset)
    config_dict = {"ar": to_dict(policy_ar.cfg), "grid": list(pipe.grid), "rl": to_dict(cfg)}
    result: dict = {"out_dir": cfg.train.out_dir, "n_prompts": len(train_rows), "world_size": world, "rank": rank}
    fresh = not resume or (resume == "auto" and find_latest_checkpoint(Path(cfg.train.out_dir) / "checkpoints") is None)
    if eval_fn is not None and rank == 0 and fresh:  # the baseline, once per run (--resume auto from nothing too)
        result["val_before"] = eval_fn(policy, 0)
        log(f"[rl] val before: {result['val_before']}")
    if rank == 0:
        log(f"[rl] {len(train_rows)} prompts, G={cfg.group_size}, {cfg.train.batch_size} prompts/step over "
            f"{world} rank(s), rewards {cfg.rewards}, {cfg.reward_workers} reward worker(s) per rank, {cfg.algo}, "
            f"credit {effective_credit(cfg) if cfg.algo == 'grpo' else '-'}, sampling {to_dict(cfg.sampling)}")
    res = run_training(cfg.train, policy, train_rows, loss_fn, collate=list, config_dict=config_dict,
                       resume=resume, eval_fn=eval_fn, extra_state=prompt_pool,
                       unshard_for_loss=True)  # FSDP: rollouts sample through the modules' weights
    if rank == 0:
        out = Path(cfg.train.out_dir)
        policy_ar.cpu()
        pipe.decoder.cpu()
        # same weight precision as the SFT pipeline; its eval figures are the SFT model's, kept as sft_eval
        upd = {"rl": to_dict(cfg), "rl_init": str(cfg.model), "rl_steps": res.step,
               "eval": None, "sft_eval": pipe.index.get("eval")}
        pipe.save_pretrained(out / "pipeline", index_update=upd, dtype=pipe.index.get("weights_dtype"))
        if eval_fn is not None:
            result["val_after"] = eval_fn(policy, res.step)
        result["pipeline"] = str(out / "pipeline")
    result.update({"steps": res.step, "bad_steps": res.bad_steps, "train": res.last_metrics,
                   "wall_s": round(time.time() - t0, 1)})
    return result
