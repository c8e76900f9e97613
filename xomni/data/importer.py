"""`xomni data import`: a user's image folder + captions.jsonl -> our dataset format (imagefolder or shards).

captions.jsonl lines: {"file_name": "a/b.jpg", "caption": "...", "text": "..." (optional), other keys kept}.
Problems never abort the import and are never silent: each is logged on stderr, counted in the report, and the
sample is skipped: bad_line (not JSON / no file_name), missing_caption (an image without a caption, or an empty
caption), missing_image (a caption whose file is absent), unreadable_image, duplicate_id (a key seen before).
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from xomni.cliargs import check_split, refuse_existing
from xomni.data.io import IMAGE_EXTS, ShardWriter, decode_image, encode_png, staged_dir, write_imagefolder
from xomni.errors import XomniError
from xomni.utils import atomic_write_text, log

PROBLEMS = ("bad_line", "missing_caption", "missing_image", "unreadable_image", "duplicate_id")
MAX_LISTED = 20


def sample_key(file_name: str) -> str:
    """Key from a relative file name: extension dropped, other characters outside [A-Za-z0-9_-] become '_'."""
    stem = str(Path(file_name).with_suffix(""))
    return re.sub(r"[^A-Za-z0-9_-]+", "_", stem).strip("_") or "_"


class _Report:
    def __init__(self):
        self.counts = {k: 0 for k in PROBLEMS}
        self.listed: list[str] = []

    def add(self, kind: str, msg: str):
        self.counts[kind] += 1
        if self.counts[kind] <= 5:
            log(f"import: skip ({kind}) {msg}")
        if len(self.listed) < MAX_LISTED:
            self.listed.append(f"{kind}: {msg}")


def _read_captions(path: Path, rep: _Report) -> list[dict]:
    rows = []
    with open(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                rep.add("bad_line", f"{path.name}:{n}: not valid UTF-8")
                continue
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError:
                rep.add("bad_line", f"{path.name}:{n}: not valid JSON")
                continue
            if not isinstance(row, dict) or not isinstance(row.get("file_name"), str) or not row["file_name"]:
                rep.add("bad_line", f"{path.name}:{n}: no file_name")
                continue
            cap = row.get("caption")
            if not isinstance(cap, str) or not cap.strip():
                rep.add("missing_caption", f"{path.name}:{n}: {row['file_name']} has no caption")
                continue
            rows.append(row)
    return rows


def import_folder(images: str | Path, captions: str | Path, out: str | Path, fmt: str = "imagefolder",
                  shard_size: int = 1000, split: str = "train", overwrite: bool = False) -> dict:
    """Import into `out`, written aside and swapped in only when at least one sample was imported: a failed import
    leaves `out` byte-identical; a non-empty `out` is replaced only with `overwrite`."""
    images, captions, out = Path(images), Path(captions), Path(out)
    if shard_size < 1:
        raise XomniError(f"--shard-size must be >= 1, got {shard_size}")
    check_split(split)
    if out.exists() and not out.is_dir():
        raise XomniError(f"--out {out} is a file; give a directory")
    refuse_existing(out, "--out", "files", overwrite)
    if not images.is_dir():
        raise XomniError(f"image folder not found: {images}")
    if not captions.is_file():
        raise XomniError(f"captions file not found: {captions}")
    if fmt not in ("imagefolder", "shards"):
        raise XomniError(f"unknown format {fmt!r}; expected imagefolder or shards")
    if out.resolve() == images.resolve():
        raise XomniError("--out must differ from --images")
    rep = _Report()
    rows = _read_captions(captions, rep)
    captioned = {r["file_name"] for r in rows}
    on_disk = sorted(str(p.relative_to(images)) for p in images.rglob("*")
                     if p.is_file() and p.suffix.lower().lstrip(".") in IMAGE_EXTS)
    for f in on_disk:
        if f not in captioned:
            rep.add("missing_caption", f"{f} has no line in {captions.name}")

    def items():
        seen: set[str] = set()
        for row in rows:
            fn = row["file_name"]
            key = sample_key(fn)
            if key in seen:
                rep.add("duplicate_id", f"{fn} (key {key}) appears more than once")
                continue
            path = images / fn
            if not path.is_file():
                rep.add("missing_image", f"{fn} not found in {images}")
                continue
            try:
                img = decode_image(path.read_bytes())
            except Exception as e:
                rep.add("unreadable_image", f"{fn}: {type(e).__name__}: {e}")
                continue
            seen.add(key)
            meta = {k: v for k, v in row.items() if k != "file_name"}
            meta.update(key=key, split=split, source_file=fn, width=img.width, height=img.height)
            meta["caption"] = meta["caption"].strip()
            yield img, meta

    with staged_dir(out) as tmp:
        if fmt == "imagefolder":
            written = write_imagefolder(tmp, items())
        else:
            with ShardWriter(tmp, shard_size) as w:
                for img, meta in items():
                    w.write(meta["key"], encode_png(img), meta)
            written = w.count
        if written == 0:
            raise XomniError(f"no usable samples imported ({sum(rep.counts.values())} skipped: "
                             + ", ".join(f"{k} {v}" for k, v in rep.counts.items() if v) + f"); {out} is unchanged")
        atomic_write_text(tmp / "dataset.json", json.dumps(
            {"source": "import", "images": str(images), "captions": str(captions), "format": fmt,
             "counts": {split: written}, "skipped": rep.counts}, indent=2) + "\n")
    return {"out": str(out), "format": fmt, "written": written, "skipped": dict(rep.counts),
            "skipped_total": sum(rep.counts.values()), "problems": rep.listed}
