"""`xomni data ...` and `xomni bench data` commands. Heavy imports stay inside the command bodies."""
from __future__ import annotations

import shlex
import sys
from typing import Optional

import typer

from xomni.utils import emit_json


def _command_line() -> str:
    return shlex.join(["xomni"] + sys.argv[1:])


def register(apps: dict) -> None:
    data, bench = apps["data"], apps["bench"]

    @data.command("synth")
    def synth_cmd(
        out: str = typer.Option(..., "--out", "-o", help="Output dataset directory."),
        n: int = typer.Option(1000, "--n", help="Samples (train count when --split all; val/test get max(16, N//10))."),
        seed: int = typer.Option(0, "--seed", help="Seed; sample i of a split depends only on (seed, split, i)."),
        preset: str = typer.Option("tiny", "--preset", help="Dataset preset."),
        split: str = typer.Option("all", "--split", help="all | train | val | test."),
        fmt: str = typer.Option("shards", "--format", help="shards (webdataset .tar) | imagefolder."),
        shard_size: int = typer.Option(1000, "--shard-size", help="Samples per .tar shard."),
        workers: int = typer.Option(1, "--workers", help="Render processes (output is identical for any value)."),
        json_path: Optional[str] = typer.Option(None, "--json", help="Also save the JSON result here."),
    ):
        """Render a synthetic text-in-image dataset (PNG + exact metadata + caption)."""
        from xomni.data.synth import synth
        emit_json(synth(out, n, seed=seed, preset=preset, split=split, fmt=fmt, shard_size=shard_size,
                        workers=workers, command=_command_line()), json_path)

    @data.command("check")
    def check_cmd(
        path: str = typer.Argument(..., help="Dataset (root, split dir, .tar or imagefolder)."),
        split: Optional[str] = typer.Option(None, "--split", help="Split(s), comma-separated, e.g. val,test "
                                            "(default: val for a dataset root)."),
        limit: Optional[int] = typer.Option(None, "--limit", help="At most this many samples per split."),
        engines: str = typer.Option("tesseract,rapidocr", "--engines", help="Comma-separated OCR engines."),
        workers: Optional[int] = typer.Option(None, "--workers", help="Tesseract processes (default: CPU count)."),
        json_path: Optional[str] = typer.Option(None, "--json", help="Also save the JSON result here."),
    ):
        """OCR the renders and report exact match overall, by font and by colour."""
        from xomni.data.check import check_dataset
        splits = [s.strip() for s in split.split(",") if s.strip()] if split else None
        emit_json(check_dataset(path, splits, limit, [e.strip() for e in engines.split(",") if e.strip()],
                                workers), json_path)

    @data.command("import")
    def import_cmd(
        images: str = typer.Option(..., "--images", help="Folder with the images."),
        captions: str = typer.Option(..., "--captions", help='captions.jsonl: {"file_name", "caption", "text"?}.'),
        out: str = typer.Option(..., "--out", "-o", help="Output dataset directory."),
        fmt: str = typer.Option("imagefolder", "--format", help="imagefolder | shards."),
        shard_size: int = typer.Option(1000, "--shard-size", help="Samples per .tar shard."),
        split: str = typer.Option("train", "--split", help="Split name recorded in the metadata."),
        json_path: Optional[str] = typer.Option(None, "--json", help="Also save the JSON report here."),
    ):
        """Convert a user's image folder + captions into the xomni dataset format (problems skipped, counted)."""
        from xomni.data.importer import import_folder
        from xomni.errors import XomniError
        report = import_folder(images, captions, out, fmt=fmt, shard_size=shard_size, split=split)
        emit_json(report, json_path)
        if report["written"] == 0:
            raise XomniError(f"no usable samples imported ({report['skipped_total']} skipped: "
                             + ", ".join(f"{k} {v}" for k, v in report["skipped"].items() if v) + ")")

    @data.command("preview")
    def preview_cmd(
        path: str = typer.Argument(..., help="Dataset (root, split dir, .tar or imagefolder)."),
        out: str = typer.Option("preview.png", "--out", "-o", help="Grid PNG; captions.txt is written next to it."),
        n: int = typer.Option(16, "--n", help="Number of samples."),
        split: Optional[str] = typer.Option(None, "--split", help="Split of a dataset root (default train)."),
        json_path: Optional[str] = typer.Option(None, "--json", help="Also save the JSON result here."),
    ):
        """Write a grid PNG of the first N samples and their captions."""
        from xomni.data.preview import preview
        emit_json(preview(path, out, n, split), json_path)

    @bench.command("data")
    def bench_data_cmd(
        n: int = typer.Option(200, "--n", help="Samples to render and read back."),
        preset: str = typer.Option("tiny", "--preset", help="Dataset preset."),
        json_path: Optional[str] = typer.Option(None, "--json", help="Also save the JSON result here."),
    ):
        """Renders/s (single process) and shard read throughput."""
        from xomni.data.bench import bench_data
        emit_json(bench_data(n, preset), json_path)
