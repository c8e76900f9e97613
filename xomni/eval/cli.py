"""`xomni eval ...`, `xomni train judge`, `xomni bench ocr`: argument checks, then the harness (xomni.eval) or the
metrics (xomni.metrics)."""
from __future__ import annotations

from typing import List, Optional

import typer

from xomni.cliargs import (MAX_IMAGES, BatchSizeOpt, FloatRange, IntRange, PerImageOpt, SeedOpt, SjdWindowOpt, _cb,
                           check_in_file, check_in_path, check_out_dir, check_split, max_threads)
from xomni.errors import XomniError
from xomni.eval.captioning import evaluate_captions
from xomni.eval.longtext import run_longtext
from xomni.eval.report import build_report
from xomni.eval.text import items_from_model
from xomni.lora.cli import LoraOpt
from xomni.metrics.compliance import evaluate_images, evaluate_judge
from xomni.metrics.fid import fid_dirs, fid_sanity, format_table
from xomni.metrics.images import ImageSource
from xomni.metrics.judge import Judge
from xomni.metrics.judge_train import JudgeConfig, base_config, train_judge
from xomni.metrics.ocr import check_region_fits, resolve_region
from xomni.metrics.ocrbench import bench_ocr
from xomni.metrics.text import pairs_from_images, score_items, write_per_image
from xomni.pipeline import default_model_dir
from xomni.train_cli import HelpConfigOpt, JsonOpt, check_before_training, trainer_config
from xomni.utils import emit_json, log

SplitOpt = typer.Option(None, "--split", help="Split of a dataset root.", callback=_cb(check_split))
LimitOpt = typer.Option(None, "--limit", help="Score only the first N images (>= 1).", callback=IntRange("--limit", 1))
PsmHelp = "Tesseract page segmentation mode, 0..13"


def _emit(res: dict, rows: list[dict], per_image: str | None, json_path: str | None) -> None:
    """The result on stdout (and in --json), the per-image rows in --per-image when asked."""
    if per_image:
        write_per_image(rows, per_image)
    emit_json(res, json_path)


def register(apps: dict) -> None:
    ev, train, bench = apps["eval"], apps["train"], apps["bench"]

    @ev.command("text")
    def text_cmd(
        images: Optional[str] = typer.Option(None, "--images", help="Image dir, imagefolder or dataset (split dir).",
                                             callback=_cb(check_in_path, "--images")),
        model: Optional[str] = typer.Option(None, "--model", help="Model dir (model_index.json): generate, then "
                                            "score (default without --images: the bundled model).",
                                            callback=_cb(check_in_path, "--model")),
        lora: Optional[str] = LoraOpt,
        targets: Optional[str] = typer.Option(None, "--targets", help="Text file, one target string per line. With "
                                              "--images: images sorted by file name map to the lines in order.",
                                              callback=_cb(check_in_file, "--targets")),
        split: Optional[str] = SplitOpt,
        samples: int = typer.Option(4, "--samples", help=f"--model: images per target string, 1..{MAX_IMAGES}.",
                                    callback=IntRange("--samples", 1, MAX_IMAGES)),
        seed: int = SeedOpt(0, "--model: base seed (chunk c of --batch strings: seed + c)."),
        batch: int = typer.Option(8, "--batch", help="--model: target strings per generation call (x samples).",
                                  callback=IntRange("--batch", 1, 256)),
        ocr: str = typer.Option("tesseract", "--ocr", help="OCR engine: tesseract (the evaluator) | rapidocr."),
        psm: int = typer.Option(7, "--psm", help=f"{PsmHelp} (7 = one text line).", callback=IntRange("--psm", 0, 13)),
        preset: Optional[str] = typer.Option(None, "--preset", help="Read the preset's OCR region (default: the "
                                             "preset named in the metadata)."),
        region: Optional[str] = typer.Option(None, "--region", help="OCR crop x0,y0,x1,y1, or 'none' for the "
                                             "whole image."),
        limit: Optional[int] = LimitOpt,
        per_image: Optional[str] = PerImageOpt,
        save_images: Optional[str] = typer.Option(None, "--save-images", help="--model: save the samples here "
                                                  "(imagefolder).", callback=_cb(check_out_dir, "--save-images")),
        temperature: Optional[float] = typer.Option(None, "--temperature", help="--model: sampling temperature "
                                                    "> 0 (default: the model's).",
                                                    callback=FloatRange("--temperature", 0, lo_open=True)),
        top_k: Optional[int] = typer.Option(None, "--top-k", help="--model: top-k (1 = greedy; default: the model's).",
                                            callback=IntRange("--top-k", 0)),
        min_p: Optional[float] = typer.Option(None, "--min-p", help="--model: min-p in [0, 1) (default: the "
                                              "model's).", callback=FloatRange("--min-p", 0, 1, hi_open=True)),
        cfg: Optional[float] = typer.Option(None, "--cfg", help="--model: CFG scale >= 1 (default: the model's).",
                                            callback=FloatRange("--cfg", 1)),
        sjd_window: int = SjdWindowOpt("--model: "),
        unsupported: str = typer.Option("error", "--unsupported", help="--model: a target string with characters "
                                        "outside the model's charset: error (stop) | zero (no image; scores as a "
                                        "failure, so that models of different charsets compare on one list)."),
        json_path: Optional[str] = JsonOpt,
    ):
        """Text accuracy by OCR: exact match, word recall, CER with 95 % bootstrap intervals."""
        if images is not None and model is not None:
            raise XomniError("pass exactly one of --images DIR or --model DIR")
        if lora is not None and images is not None:
            raise XomniError("--lora applies to a model's samples, not to --images")
        if sjd_window and images is not None:
            raise XomniError("--sjd-window applies to a model's samples, not to --images")
        if images is None:  # a model's samples: --model, else the bundled model
            if targets is None:
                raise XomniError("pass --images DIR, or --targets FILE for a model's samples (--model DIR, "
                                 "default: the bundled model)" if model is None else "--model needs --targets FILE")
            model = model or str(default_model_dir())
            sampling = {"temperature": temperature, "top_k": top_k, "min_p": min_p, "cfg_scale": cfg}
            items, tg = items_from_model(model, targets, samples, seed, save_images, batch, sampling, lora=lora,
                                         sjd_window=sjd_window, unsupported=unsupported)
        else:
            items, tg = pairs_from_images(images, targets, split)
        if limit is not None:
            items, tg = items[:limit], tg[:limit]
        reg = resolve_region([it.meta for it in items], preset, region)
        check_region_fits(reg, items)
        res, rows = score_items(items, tg, engine=ocr, psm=psm, region=reg)
        res["source"] = images or model
        if model is not None and items:
            res["sampling"], res["sjd_window"] = items[0].meta["sampling"], items[0].meta["sjd_window"]
        _emit(res, rows, per_image, json_path)

    @ev.command("longtext")
    def longtext_cmd(
        bench_file: Optional[str] = typer.Option(None, "--bench", help="LongText-Bench jsonl (prompt_id, prompt, "
                                                 "text, ...); default: the prompts shipped with xomni (--lang).",
                                       callback=_cb(check_in_file, "--bench")),
        images: Optional[str] = typer.Option(None, "--images", help="Images: mapped by prompt_id (+ text_index with "
                                             "--max-chars) in metadata.jsonl, else by sorted file name.",
                                             callback=_cb(check_in_path, "--images")),
        model: Optional[str] = typer.Option(None, "--model", help="Model dir: generate one image per unit.",
                                            callback=_cb(check_in_path, "--model")),
        lang: str = typer.Option("auto", "--lang", help="en | zh | auto (zh when the targets contain CJK)."),
        max_chars: Optional[int] = typer.Option(None, "--max-chars", help="Keep target strings of <= N characters, "
                                                "one prompt each (labelled as a subset, never official).",
                                                callback=IntRange("--max-chars", 1)),
        ocr: Optional[str] = typer.Option(None, "--ocr", help="tesseract (default for en) | rapidocr (zh)."),
        psm: Optional[int] = typer.Option(None, "--psm", help=f"{PsmHelp} (default 11 full bench, 7 subset).",
                                          callback=IntRange("--psm", 0, 13)),
        samples: int = typer.Option(1, "--samples", help=f"--model: images per unit, 1..{MAX_IMAGES}.",
                                    callback=IntRange("--samples", 1, MAX_IMAGES)),
        seed: int = SeedOpt(0, "--model: base seed (chunk c of --batch units: seed + c)."),
        batch: int = typer.Option(8, "--batch", help="--model: units per generation call (x samples).",
                                  callback=IntRange("--batch", 1, 256)),
        keyword: Optional[List[str]] = typer.Option(None, "--strip-keyword", help="Remove every occurrence of this "
                                                    "OCR hallucination keyword (repeatable)."),
        preset: Optional[str] = typer.Option(None, "--preset", help="OCR region of this preset (subset runs)."),
        region: Optional[str] = typer.Option(None, "--region", help="OCR crop x0,y0,x1,y1 or none."),
        per_image: Optional[str] = PerImageOpt,
        json_path: Optional[str] = JsonOpt,
    ):
        """LongText-Bench score: pooled recall of normalised target words (en) or characters (zh)."""
        res, rows = run_longtext(bench_file, images=images, model=model, lang=lang, max_chars=max_chars,
                                 engine=ocr, psm=psm, samples=samples, seed=seed, keywords=keyword or (),
                                 preset=preset, region=region, batch=batch)
        _emit(res, rows, per_image, json_path)

    @ev.command("compliance")
    def compliance_cmd(
        images: str = typer.Option(..., "--images", help="Images with metadata (caption or attributes).",
                                   callback=_cb(check_in_path, "--images")),
        judge: str = typer.Option(..., "--judge", help="Judge dir (run dir or its final/).",
                                  callback=_cb(check_in_path, "--judge")),
        split: Optional[str] = SplitOpt,
        limit: Optional[int] = LimitOpt,
        per_image: Optional[str] = PerImageOpt,
        json_path: Optional[str] = JsonOpt,
    ):
        """GenEval-style compliance: per-attribute accuracy and fraction of prompts fully satisfied."""
        j = Judge.load(judge)
        src = ImageSource(images, split=split)
        items = [src[i] for i in range(min(limit or len(src), len(src)))]
        res, per = evaluate_images(items, j.predict, schema=j.schema)
        res["judge"] = judge
        _emit(res, per, per_image, json_path)

    @ev.command("judge")
    def judge_cmd(
        judge: str = typer.Option(..., "--judge", help="Judge dir.", callback=_cb(check_in_path, "--judge")),
        data: str = typer.Option(..., "--data", help="Dataset with held-out ground-truth renders.",
                                 callback=_cb(check_in_path, "--data")),
        split: str = typer.Option("val", "--split", help="Held-out split.", callback=_cb(check_split)),
        n: int = typer.Option(1000, "--n", help="Held-out samples (>= 1).", callback=IntRange("--n", 1)),
        seed: int = SeedOpt(0, "Seed for choosing the swaps."),
        json_path: Optional[str] = JsonOpt,
    ):
        """The judge's own accuracy per attribute on ground truth, and its rejection rate on swapped renders."""
        j = Judge.load(judge)
        src = ImageSource(data, split=split)
        items = [src[i] for i in range(min(n, len(src)))]
        res = evaluate_judge(j.predict, items, seed=seed)
        res.update({"judge": judge, "data": data, "split": split})
        emit_json(res, json_path)

    @ev.command("fid")
    def fid_cmd(
        real: str = typer.Option(..., "--real", help="Reference images (dir or dataset).",
                                 callback=_cb(check_in_path, "--real")),
        fake: str = typer.Option(..., "--fake", help="Generated images (dir or dataset).",
                                 callback=_cb(check_in_path, "--fake")),
        split_real: Optional[str] = typer.Option(None, "--split-real", help="Split of a dataset root (real).",
                                                 callback=_cb(check_split, "--split-real")),
        split_fake: Optional[str] = typer.Option(None, "--split-fake", help="Split of a dataset root (fake).",
                                                 callback=_cb(check_split, "--split-fake")),
        n: Optional[int] = typer.Option(None, "--n", help="Use at most N images per set (>= 2).",
                                        callback=IntRange("--n", 2)),
        inception_weights: Optional[str] = typer.Option(None, "--inception-weights", help="Local InceptionV3 "
                                                        "weights (torchvision-style state dict or TorchScript)."),
        batch_size: int = BatchSizeOpt("Feature batch size"),
        n_boot: int = typer.Option(0, "--n-boot", help="Add a 95 % interval from this many bootstrap resamples of "
                                   "the generated set, 0..10000 (each an n_fake x n_fake eigenproblem; 0 = off).",
                                   callback=IntRange("--n-boot", 0, 10000)),
        json_path: Optional[str] = JsonOpt,
    ):
        """Fréchet distance between feature sets (EfficientNet-Lite0 features by default)."""
        emit_json(fid_dirs(real, fake, inception_weights, n, split_real, split_fake, batch_size, n_boot), json_path)

    @ev.command("fid-sanity")
    def fid_sanity_cmd(
        data: str = typer.Option(..., "--data", help="Dataset root with val and test splits.",
                                 callback=_cb(check_in_path, "--data")),
        n: int = typer.Option(2000, "--n", help="Images per set, >= 2 (FID is biased at small n).",
                              callback=IntRange("--n", 2)),
        blur: str = typer.Option("1,3", "--blur", help="Gaussian blur radii (px) for the blurred-test rows."),
        inception_weights: Optional[str] = typer.Option(None, "--inception-weights", help="Local InceptionV3 weights."),
        batch_size: int = BatchSizeOpt("Feature batch size"),
        check_torchmetrics: bool = typer.Option(False, "--check-torchmetrics", help="Also compute FID(val, test) "
                                                "with torchmetrics on the same features (dev dependency)."),
        json_path: Optional[str] = JsonOpt,
    ):
        """Sanity table: FID(val, test) < FID(val, blurred test) < FID(val, noise). Table on stderr."""
        try:
            radii = tuple(float(r) for r in blur.split(",") if r.strip())
        except ValueError:
            raise XomniError(f"--blur expects comma-separated radii, got {blur!r}") from None
        if not radii or not all(0 < r <= 100 for r in radii):
            raise XomniError(f"--blur expects radii in (0, 100] px, got {blur!r}")
        res = fid_sanity(data, n=n, inception_weights=inception_weights, blur_radii=radii, batch_size=batch_size,
                         check_torchmetrics=check_torchmetrics)
        log(format_table(res))
        emit_json(res, json_path)

    @ev.command("caption")
    def caption_cmd(
        data: str = typer.Option(..., "--data", help="Dataset with ground-truth captions (e.g. a synth output).",
                                 callback=_cb(check_in_path, "--data")),
        model: Optional[str] = typer.Option(None, "--model", help="Pipeline dir (default: the bundled model).",
                                            callback=_cb(check_in_path, "--model")),
        split: str = typer.Option("test", "--split", help="Split (test = words never trained on).",
                                  callback=_cb(check_split)),
        n: int = typer.Option(200, "--n", help="First N images (0 = all).", callback=IntRange("--n", 1, zero="all")),
        per_image: Optional[str] = PerImageOpt,
        beams: Optional[int] = typer.Option(None, "--beams", help="Beam search width, 1..64 (1 = greedy; default: "
                                                                  "the model's own setting, else 1).",
                                            callback=IntRange("--beams", 1, 64)),
        lora: Optional[str] = LoraOpt,
        json_path: Optional[str] = JsonOpt,
    ):
        """Image understanding: the model's own captions of ground-truth renders vs. the true captions."""
        res, rows = evaluate_captions(model, data, split, n, num_beams=beams, lora=lora)
        _emit(res, rows, per_image, json_path)

    @ev.command("all")
    def all_cmd(
        images: str = typer.Option(..., "--images", help="Generated images with metadata (text, caption).",
                                   callback=_cb(check_in_path, "--images")),
        out: str = typer.Option(..., "--out", "-o", help="Report directory (index.html, metrics.json, images).",
                                callback=_cb(check_out_dir, "--out")),
        reference: Optional[str] = typer.Option(None, "--reference", help="Ground-truth images (same keys or "
                                                "order) shown next to the generated ones; enables FID."),
        judge: Optional[str] = typer.Option(None, "--judge", help="Judge dir: adds the compliance section."),
        targets: Optional[str] = typer.Option(None, "--targets", help="Targets file when the images lack metadata.",
                                              callback=_cb(check_in_file, "--targets")),
        split: Optional[str] = typer.Option(None, "--split", help="Split of a dataset root (images and reference).",
                                            callback=_cb(check_split)),
        limit: Optional[int] = typer.Option(None, "--limit", help="Use only the first N images (>= 1).",
                                            callback=IntRange("--limit", 1)),
        fid: bool = typer.Option(True, "--fid/--no-fid", help="FID against --reference."),
        json_path: Optional[str] = JsonOpt,
    ):
        """One self-contained HTML report: grids, metric tables, plots by length and font, failures."""
        emit_json(build_report(images, out, reference=reference, judge=judge, targets=targets, split=split,
                               limit=limit, fid=fid), json_path)

    @train.command("judge")
    def train_judge_cmd(
        data: Optional[str] = typer.Option(None, "--data", help="Dataset root with a train split (sets data)."),
        config: Optional[str] = typer.Option(None, "--config", help="YAML config file (keys as in --help-config)."),
        sets: Optional[List[str]] = typer.Option(None, "--set", help="Override a config field: key.sub=value."),
        out: Optional[str] = typer.Option(None, "--out", "-o", help="Output directory (sets train.out_dir)."),
        resume: Optional[str] = typer.Option(None, "--resume", help="'auto' or a checkpoint dir."),
        init: Optional[str] = typer.Option(None, "--init", help="Start from the weights of a judge dir."),
        seed: Optional[int] = typer.Option(None, "--seed", help="Sets train.seed (init + data order): a different "
                                           "seed gives an independent judge, e.g. one for RL rewards.",
                                           callback=IntRange("--seed", 0, 2 ** 32 - 1)),
        help_config: bool = HelpConfigOpt(JudgeConfig),
        json_path: Optional[str] = JsonOpt,
    ):
        """Train the compliance judge on ground-truth renders (use --set train.seed=N for an independent one)."""
        extra = ([f"data={data}"] if data else []) + ([f"train.seed={seed}"] if seed is not None else [])
        cfg = trainer_config(JudgeConfig, config, (sets or []) + extra, out, base=base_config())
        check_before_training(cfg, resume)
        emit_json(train_judge(cfg, resume=resume, init=init), json_path)

    @bench.command("ocr")
    def bench_ocr_cmd(
        n: int = typer.Option(200, "--n", help="Images (ground-truth renders), 1..100000.",
                              callback=IntRange("--n", 1, 100_000)),
        data: Optional[str] = typer.Option(None, "--data", help="Dataset to read images from (default: render "
                                           "N tiny-preset val samples).", callback=_cb(check_in_path, "--data")),
        workers: Optional[int] = typer.Option(None, "--workers", help="Tesseract processes, 1..cores (default: CPU "
                                              "count).", callback=IntRange("--workers", 1, max_threads())),
        json_path: Optional[str] = JsonOpt,
    ):
        """Images/s for batched Tesseract and RapidOCR on this machine, with exact match on the renders."""
        emit_json(bench_ocr(n, data, workers), json_path)
