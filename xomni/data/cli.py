"""`xomni data ...` and `xomni bench data` commands."""
from __future__ import annotations

import shlex
import sys
from typing import Optional

import typer

from xomni.cliargs import (IntRange, JsonOpt, OverwriteOpt, SeedOpt, _cb, check_in_dir, check_in_file, check_in_path,
                           check_out_dir, check_out_file, check_split, max_threads)
from xomni.data.bench import bench_data
from xomni.data.check import check_dataset
from xomni.data.fontvariant import variant_name
from xomni.data.importer import import_folder
from xomni.data.preview import preview
from xomni.data.synth import synth
from xomni.data.targets import make_targets
from xomni.utils import emit_json

OutDirOpt = typer.Option(..., "--out", "-o", help="Output dataset directory.", callback=_cb(check_out_dir, "--out"))
DatasetArg = typer.Argument(..., help="Dataset (root, split dir, .tar or imagefolder).",
                            callback=_cb(check_in_path, "dataset"))


def _command_line() -> str:
    return shlex.join(["xomni"] + sys.argv[1:])


def register(apps: dict) -> None:
    data, bench = apps["data"], apps["bench"]

    @data.command("synth")
    def synth_cmd(
        out: str = OutDirOpt,
        n: int = typer.Option(1000, "--n", help="Samples (train count when --split all; val/test get max(16, N//10)).",
                              callback=IntRange("--n", 1)),
        seed: int = SeedOpt(0, "Seed; sample i of a split depends only on (seed, split, i)."),
        preset: str = typer.Option("tiny", "--preset", help="Dataset preset."),
        font: Optional[str] = typer.Option(None, "--font", help="Draw the preset in these fonts instead of its own "
                                           "(comma-separated font ids, e.g. dejavu-serif-bold): the preset variant "
                                           "PRESET:FONT of a LoRA font pack (docs/LORA.md)."),
        split: str = typer.Option("all", "--split", help="all | train | val | test.", callback=_cb(check_split)),
        fmt: str = typer.Option("shards", "--format", help="shards (webdataset .tar) | imagefolder."),
        shard_size: int = typer.Option(1000, "--shard-size", help="Samples per .tar shard (>= 1).",
                                       callback=IntRange("--shard-size", 1)),
        workers: int = typer.Option(1, "--workers", help="Render processes, 1..cores (output is identical for any "
                                                         "value).", callback=IntRange("--workers", 1, max_threads())),
        overwrite: bool = OverwriteOpt("a dataset of another preset or format in --out"),
        json_path: Optional[str] = JsonOpt,
    ):
        """Render a synthetic text-in-image dataset (PNG + exact metadata + caption)."""
        if font is not None:
            preset = variant_name(preset, font)
        emit_json(synth(out, n, seed=seed, preset=preset, split=split, fmt=fmt, shard_size=shard_size,
                        workers=workers, command=_command_line(), overwrite=overwrite), json_path)

    @data.command("check")
    def check_cmd(
        path: str = DatasetArg,
        split: Optional[str] = typer.Option(None, "--split", help="Split(s), comma-separated, e.g. val,test "
                                            "(default: val for a dataset root)."),
        limit: Optional[int] = typer.Option(None, "--limit", help="At most this many samples per split (>= 1).",
                                            callback=IntRange("--limit", 1)),
        engines: str = typer.Option("tesseract,rapidocr", "--engines", help="Comma-separated OCR engines."),
        workers: Optional[int] = typer.Option(None, "--workers", help="Tesseract processes, 1..cores (default: "
                                              "CPU count).", callback=IntRange("--workers", 1, max_threads())),
        json_path: Optional[str] = JsonOpt,
    ):
        """OCR the renders and report exact match overall, by font and by colour."""
        splits = [check_split(s.strip()) for s in split.split(",") if s.strip()] if split else None
        emit_json(check_dataset(path, splits, limit, [e.strip() for e in engines.split(",") if e.strip()],
                                workers), json_path)

    @data.command("import")
    def import_cmd(
        images: str = typer.Option(..., "--images", help="Folder with the images.",
                                   callback=_cb(check_in_dir, "image folder")),
        captions: str = typer.Option(..., "--captions", help='captions.jsonl: {"file_name", "caption", "text"?}.',
                                     callback=_cb(check_in_file, "captions file")),
        out: str = OutDirOpt,
        fmt: str = typer.Option("imagefolder", "--format", help="imagefolder | shards."),
        shard_size: int = typer.Option(1000, "--shard-size", help="Samples per .tar shard (>= 1).",
                                       callback=IntRange("--shard-size", 1)),
        split: str = typer.Option("train", "--split", help="Split name recorded in the metadata.",
                                  callback=_cb(check_split)),
        overwrite: bool = OverwriteOpt("a non-empty --out"),
        json_path: Optional[str] = JsonOpt,
    ):
        """Convert a user's image folder + captions into the xomni dataset format (problems skipped, counted)."""
        emit_json(import_folder(images, captions, out, fmt=fmt, shard_size=shard_size, split=split,
                                overwrite=overwrite), json_path)

    @data.command("preview")
    def preview_cmd(
        path: str = DatasetArg,
        out: str = typer.Option("preview.png", "--out", "-o", help="Grid PNG; captions.txt is written next to it.",
                                callback=_cb(check_out_file, "-o", (".png",))),
        n: int = typer.Option(16, "--n", help="Number of samples, 1..1024.", callback=IntRange("--n", 1, 1024)),
        split: Optional[str] = typer.Option(None, "--split", help="Split of a dataset root (default train).",
                                            callback=_cb(check_split)),
        overwrite: bool = OverwriteOpt("a captions.txt next to the PNG that another preview did not write"),
        json_path: Optional[str] = JsonOpt,
    ):
        """Write a grid PNG of the first N samples and their captions."""
        emit_json(preview(path, out, n, split, overwrite=overwrite), json_path)

    @data.command("targets")
    def targets_cmd(
        kind: str = typer.Option(..., "--kind", help="upper (random upper-case strings of 4-7 letters) | a preset "
                                 "name (the first N distinct texts of its --split, e.g. sign)."),
        out: str = typer.Option(..., "--out", "-o", help="Text file, one target string per line (for xomni eval "
                                "text --targets).", callback=_cb(check_out_file, "-o")),
        n: int = typer.Option(500, "--n", help="Distinct strings, 1..100000.", callback=IntRange("--n", 1, 100_000)),
        seed: int = SeedOpt(0, "Seed (a preset: the synth seed)."),
        split: str = typer.Option("test", "--split", help="train | val | test: the strings belong to this split.",
                                  callback=_cb(check_split)),
        json_path: Optional[str] = JsonOpt,
    ):
        """Write a reproducible list of evaluation target strings (seeded; clean of the train split)."""
        emit_json(make_targets(kind, n, seed=seed, split=split, out=out), json_path)

    @bench.command("data")
    def bench_data_cmd(
        n: int = typer.Option(200, "--n", help="Samples to render and read back, 1..100000.",
                              callback=IntRange("--n", 1, 100_000)),
        preset: str = typer.Option("tiny", "--preset", help="Dataset preset."),
        json_path: Optional[str] = JsonOpt,
    ):
        """Renders/s (single process) and shard read throughput."""
        emit_json(bench_data(n, preset), json_path)
