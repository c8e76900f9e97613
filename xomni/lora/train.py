"""`xomni train lora`: LoRA fine-tuning of a pipeline's AR model on the shared training loop.

The pipeline's own frozen image tokenizer encodes the dataset once (a token cache under OUT/), the AR model gets a
fresh adapter (xomni.lora.adapter: base weights frozen, A/B trainable), and the SFT loss of `xomni train ar` (text ->
image and image -> text sequences) trains it. Checkpoints, --resume and --config/--set are the shared loop's; the
run's final/ is the adapter directory (safetensors + JSON), which `--lora OUT` on generate, caption, eval text and
serve loads without merging.
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import torch

from xomni.ar.train import build_loss_fn
from xomni.ar.trainer import token_cache, val_loss
from xomni.ar.vocab import training_length
from xomni.config import field, in_range, to_dict
from xomni.decoder.trainer import CodedImages, cached_codes, decoder_loss
from xomni.errors import XomniError
from xomni.lora.adapter import (LoRAConfig, adapter_component, add_lora, base_info, draw_rows, is_keep_reader,
                                is_lora, lora_config_of, merge_lora, n_adapter_params, save_adapter,
                                train_adapter_only, train_draw_rows)
from xomni.pipeline import AR_ADAPTER, Pipeline
from xomni.tokenizer.images import load_split
from xomni.train import TrainConfig, run_training, seed_everything
from xomni.utils import log, resolve_device


@dataclasses.dataclass
class LoRATrainConfig:
    train: TrainConfig = field(default_factory=lambda: TrainConfig(out_dir="runs/lora", steps=300, batch_size=32,
                                                                   lr=2e-3, warmup_steps=20, weight_decay=0.0,
                                                                   min_lr_ratio=0.1, ckpt_every=100, log_every=10),
                               help="Shared training-loop settings.")
    lora: LoRAConfig = field(default_factory=LoRAConfig, help="Adapter shape: rank, alpha, dropout, target modules.")
    component: str = field("ar", help="ar (the AR model, on the SFT loss of xomni train ar) or decoder (the "
                                      "diffusion decoder, on its own denoising loss: teaches it to draw what the "
                                      "frozen tokenizer's codes of the new data mean).")
    t2i_ratio: float = field(0.9, help="Fraction of sequences that are text->image; the rest are image->text "
                                       "(captions of the new data, so captioning learns it too).")
    uncond_prob: float = field(0.1, help="Probability of dropping the prompt of a text->image sequence (keeps the "
                                         "unconditional model of classifier-free guidance in step).")
    caption_loss_weight: float = field(1.0, help="Weight of caption tokens against image tokens in the loss (as in "
                                                 "xomni train ar).")
    val_n: int = field(64, help="Validation grids for the periodic val loss (0 = none; needs a val split).")
    keep_reader: bool | None = field(None, help="AR only: learn the drawing and keep the captions exactly the base "
                                                "model's. Every sequence is text->image (t2i_ratio unused), image_head "
                                                "and the embedding rows of the levels captioning does not read (model."
                                                "read_levels) train in full beside the adapter, and the adapter is "
                                                "switched off whenever the model captions. Needs train.weight_decay 0. "
                                                "Unset: true when the AR already draws through a keep-reader adapter "
                                                "(the pipeline's ar_adapter/, as the bundled model's, or init), else "
                                                "false.")
    init: str = field("", help="Adapter directory to start from instead of a fresh adapter (its shape replaces "
                               "lora.*; a keep-reader adapter's rows come with it): continues an adapter on a new "
                               "schedule or new data. It must be of this component and, for the AR, match "
                               "keep_reader. A pipeline that ships an ar_adapter/ continues that one unless init "
                               "(keep-reader) replaces it.")

    def check(self, where: str = "") -> "LoRATrainConfig":
        in_range(self, "config", "t2i_ratio", 0, 1)
        in_range(self, "config", "uncond_prob", 0, 1, hi_open=True)
        in_range(self, "config", "caption_loss_weight", 0, lo_open=True)
        in_range(self, "config", "val_n", 0)
        if self.component not in ("ar", "decoder"):
            raise XomniError(f"config component must be ar or decoder, got {self.component!r}")
        if self.keep_reader and self.component != "ar":
            raise XomniError("config keep_reader applies to the AR model (component ar), not the decoder")
        if self.keep_reader and self.train.weight_decay:
            raise XomniError("config keep_reader needs train.weight_decay 0: decay would move the rows the "
                             "captions read")
        self.lora.check()
        return self


def same_kind(model: torch.nn.Module, cfg: LoRATrainConfig, source: str) -> None:
    """An AR adapter continues as the kind it is (keep-reader or plain): a contradicting keep_reader is one line."""
    if cfg.keep_reader is not None and is_keep_reader(model) != cfg.keep_reader:
        raise XomniError(f"{source} is {'a' if is_keep_reader(model) else 'not a'} keep-reader adapter; set "
                         f"keep_reader={str(is_keep_reader(model)).lower()} (or leave it unset) to train it further")


def start_adapter(model: torch.nn.Module, cfg: LoRATrainConfig, source: str = "") -> LoRATrainConfig:
    """Give `model` the adapter it trains. A model that already has one (`source`: the pipeline's ar_adapter/, or
    cfg.init, loaded by Pipeline.from_pretrained) continues it in its own shape, which the config returned carries;
    otherwise a fresh adapter of shape cfg.lora. Only the adapter's tensors train afterwards."""
    if not is_lora(model):
        add_lora(model, cfg.lora)
        return cfg
    shape = lora_config_of(model)

    def key(c: LoRAConfig) -> tuple:  # peft does not keep the order of the targets
        c = c.resolved(cfg.component)
        return c.rank, float(c.alpha), float(c.dropout), sorted(c.targets)
    if cfg.lora != LoRAConfig() and key(cfg.lora) != key(shape):
        raise XomniError(f"{source} has rank {shape.rank}, alpha {shape.alpha:g}, dropout {shape.dropout:g} on "
                         f"{','.join(shape.targets)}; leave lora.* unset or set them so")
    if cfg.component == "ar":
        same_kind(model, cfg, source)
    train_adapter_only(model)
    log(f"[lora] continuing the adapter in {source}")
    return dataclasses.replace(cfg, lora=shape)


def train_lora_main(cfg: LoRATrainConfig, model_dir: str | None, data: str, resume: str | None = None) -> dict:
    t0 = time.time()
    cfg.check()
    if cfg.train.num_threads:
        torch.set_num_threads(cfg.train.num_threads)
    if cfg.init and adapter_component(cfg.init) != cfg.component:
        raise XomniError(f"config init: {cfg.init} is an adapter of the {adapter_component(cfg.init)}; this run "
                         f"trains the {cfg.component}")
    pipe = Pipeline.from_pretrained(model_dir, lora=cfg.init or None)  # --init: loaded as --lora would be
    source = f"config init {cfg.init}" if cfg.init else str(pipe.path / AR_ADAPTER)  # whose adapter continues
    if cfg.keep_reader is None:  # a model that draws through a keep-reader adapter goes on drawing through it
        cfg = dataclasses.replace(cfg, keep_reader=cfg.component == "ar" and is_keep_reader(pipe.ar)).check()
    if cfg.component == "ar" and is_lora(pipe.ar):
        same_kind(pipe.ar, cfg, source)  # before the data is encoded
    out = Path(cfg.train.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.component == "decoder":
        return _train_decoder_lora(cfg, pipe, data, resume, t0, source)
    pipe.image_tokenizer.to(resolve_device(cfg.train.device))  # a cache is encoded where the model trains
    train = token_cache(data, "train", pipe.image_tokenizer, out)
    val = None
    if cfg.val_n and not (Path(data) / "codes.safetensors").is_file():
        try:
            val = token_cache(data, "val", pipe.image_tokenizer, out, limit=cfg.val_n)
        except XomniError as e:
            log(f"[lora] no validation split ({e}); val loss disabled")
    model = pipe.ar
    h, w = pipe.grid
    longest = max(len(pipe.text_tokenizer.encode(train[i]["caption"], add_special_tokens=False))
                  for i in range(min(len(train), 2000)))
    if training_length(longest, h, w) > model.cfg.max_seq_len:
        raise XomniError(f"captions of {data} need {training_length(longest, h, w)} tokens; the model's context is "
                         f"{model.cfg.max_seq_len}")
    seed_everything(cfg.train.seed)
    cfg = start_adapter(model, cfg, source)
    n_rows = 0
    if cfg.keep_reader:
        kept = train_draw_rows(model)
        n_rows = sum(v.numel() for v in draw_rows(model).values())
        cfg = dataclasses.replace(cfg, t2i_ratio=1.0)
        log(f"[lora] keep_reader: text->image sequences only; image_head and the embedding rows past the {kept} "
            f"that captioning reads train in full ({n_rows:,} parameters); the adapter is off when the model "
            f"captions")
    model.train()
    n_lora = n_adapter_params(model)
    info = base_info(model, pipe.path, "ar")
    info["data"] = str(data)
    log(f"[lora] rank {cfg.lora.rank} on {', '.join(cfg.lora.resolved('ar').targets)}: {n_lora:,} trainable parameters "
        f"({n_lora / max(1, sum(p.numel() for p in model.parameters())):.2%} of the AR model), {len(train)} "
        f"training grids of {h}x{w}")
    parts = ("image",) if cfg.keep_reader else ("image", "text")  # a keep-reader adapter never captions
    eval_fn = ((lambda m, step: val_loss(model, pipe.text_tokenizer, cfg, val, cfg.val_n, parts=parts))
               if val is not None else None)

    def save_final(path: Path, m: torch.nn.Module) -> None:
        save_adapter(m, path, cfg.lora, dict(info, train=to_dict(cfg), wall_s=round(time.time() - t0, 1)))

    res = run_training(cfg.train, model, train, build_loss_fn(model, pipe.text_tokenizer, cfg), collate=list,
                       config_dict={"kind": "lora", "lora": to_dict(cfg.lora), **info}, resume=resume,
                       eval_fn=eval_fn, move_batch=False, save_final=save_final)
    result = {"out_dir": str(out), "adapter": str(out / "final"), "steps": res.step, "bad_steps": res.bad_steps,
              "train": res.last_metrics, "adapter_params": n_lora,
              "row_params": n_rows,
              "adapter_bytes": (out / "final" / "adapter_model.safetensors").stat().st_size
              if (out / "final" / "adapter_model.safetensors").is_file() else None,
              "wall_s": round(time.time() - t0, 1)}
    if val is not None:
        result["val"] = val_loss(model, pipe.text_tokenizer, cfg, val, cfg.val_n, parts=parts)
    return result


def _train_decoder_lora(cfg: LoRATrainConfig, pipe, data: str, resume: str | None, t0: float,
                        source: str) -> dict:
    """A decoder adapter: the pipeline's tokenizer encodes the images once (codes cached under OUT/), the decoder
    learns to denoise them from their codes (xomni.decoder.trainer's loss)."""
    out = Path(cfg.train.out_dir)
    dec = pipe.decoder
    images = load_split(data, "train", tuple(dec.config.image_size), 0, desc="load train")
    codes = cached_codes(pipe.image_tokenizer, Path(pipe.path) / "image_tokenizer", images,
                         out / "codes-train.safetensors")
    seed_everything(cfg.train.seed)
    cfg = start_adapter(dec, cfg, source)
    dec.train()
    n_lora = n_adapter_params(dec)
    info = dict(base_info(dec, pipe.path, "decoder"), data=str(data))
    log(f"[lora] decoder adapter, rank {cfg.lora.rank} on {', '.join(cfg.lora.resolved('decoder').targets)}: "
        f"{n_lora:,} trainable parameters, {len(images)} training images")

    def save_final(path: Path, m: torch.nn.Module) -> None:
        save_adapter(m, path, cfg.lora, dict(info, train=to_dict(cfg), wall_s=round(time.time() - t0, 1)))

    res = run_training(cfg.train, dec, CodedImages(images, codes), decoder_loss,
                       config_dict={"kind": "lora", "lora": to_dict(cfg.lora), **info}, resume=resume,
                       save_final=save_final)
    f = out / "final" / "adapter_model.safetensors"
    return {"out_dir": str(out), "adapter": str(out / "final"), "component": "decoder", "steps": res.step,
            "bad_steps": res.bad_steps, "train": res.last_metrics, "adapter_params": n_lora,
            "adapter_bytes": f.stat().st_size if f.is_file() else None, "wall_s": round(time.time() - t0, 1)}


def merge_main(model_dir: str | None, lora: str, out: str, dtype: str = "float32") -> dict:
    """Load `model_dir` + adapter, bake the adapter in, save a full pipeline directory. A keep-reader AR adapter is
    not merged (merged, it would change the captions): the pipeline keeps it as its ar_adapter component."""
    pipe = Pipeline.from_pretrained(model_dir, lora=lora)
    src = pipe.index.get("lora") or {}
    kept = {"ar": src["ar"]} if "ar" in src and is_keep_reader(pipe.ar) else {}
    for comp in src:
        if comp in kept:
            log(f"[lora] {src[comp]} is a keep-reader adapter: saved as the pipeline's ar_adapter/, not merged")
            continue
        module = pipe.ar if comp == "ar" else pipe.decoder
        merge_lora(module)
        module.eval()
    pipe.index = {k: v for k, v in pipe.index.items() if k != "lora"}
    merged = {c: p for c, p in src.items() if c not in kept}
    pipe.save_pretrained(out, index_update={"lora_merged": merged, "base_model": str(pipe.path),
                                            **({"ar_adapter_from": kept["ar"]} if kept else {})}, dtype=dtype)
    return {"out": str(out), "lora": src, "kept_as_component": kept, "base_model": str(model_dir or "bundled"),
            "weights_dtype": dtype}
