"""`xomni data synth`: render a synthetic dataset into DIR/{train,val,test} (shards or imagefolder) + dataset.json.

Sample i of split s depends only on (seed, s, i): the same seed gives byte-identical PNGs, JSON and tar shards,
whatever the number of workers. With split "all", N is the train count and val/test get max(16, N // 10) each.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

from xomni.data.fonts import FONTS, check_fonts
from xomni.data.io import ShardWriter, encode_png, write_imagefolder
from xomni.data.presets import Preset, get_preset
from xomni.data.render import render
from xomni.data.scene import sample_scene
from xomni.data.words import SPLITS, all_words, split_words, wordlist_path, wordlist_sha256
from xomni.errors import XomniError
from xomni.utils import atomic_write_text, log

FORMATS = ("shards", "imagefolder")


def split_counts(n: int, split: str) -> dict[str, int]:
    """N is the train count for split 'all'; val and test get max(16, N // 10) each."""
    if n <= 0:
        raise XomniError(f"--n must be positive, got {n}")
    if split == "all":
        k = max(16, n // 10)
        return {"train": n, "val": k, "test": k}
    if split not in SPLITS:
        raise XomniError(f"unknown split {split!r}; expected all, train, val or test")
    return {split: n}


def make_sample(args: tuple) -> tuple[bytes, dict]:
    """(preset name, seed, split, index) -> (PNG bytes, metadata). Top-level so that a process pool can run it."""
    name, seed, split, index = args
    meta = sample_scene(get_preset(name), seed, split, index)
    return encode_png(render(meta)), meta


def _check_writable(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise XomniError(f"output directory {out} is not writable: {e.strerror or e}") from None


def _replaceable(d: Path) -> bool:
    """A split dir we may replace: it only holds files we write."""
    return all(f.name.startswith(".") or f.name == "metadata.jsonl" or f.suffix in (".tar", ".png")
               for f in d.iterdir() if f.is_file()) and not any(f.is_dir() for f in d.iterdir())


def _iter_samples(preset: Preset, seed: int, split: str, count: int, workers: int):
    jobs = ((preset.name, seed, split, i) for i in range(count))
    if workers <= 1:
        yield from map(make_sample, jobs)
        return
    import multiprocessing as mp
    ctx = mp.get_context("fork") if sys.platform.startswith("linux") else mp.get_context()
    with ctx.Pool(workers) as pool:
        yield from pool.imap(make_sample, jobs, chunksize=32)


def write_split(out: Path, preset: Preset, seed: int, split: str, count: int, fmt: str, shard_size: int,
                workers: int, progress: bool = True) -> dict:
    """Render one split into a temp dir, then swap it in as out/split."""
    from tqdm import tqdm
    final = out / split
    if final.exists() and not (final.is_dir() and _replaceable(final)):
        raise XomniError(f"{final} exists and holds files that synth did not write: refusing to overwrite it")
    tmp = out / f".{split}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    it = tqdm(_iter_samples(preset, seed, split, count, workers), total=count, desc=f"synth {split}",
              file=sys.stderr, disable=not progress, leave=False)
    try:
        if fmt == "shards":
            with ShardWriter(tmp, shard_size) as w:
                for png, meta in it:
                    w.write(meta["key"], png, meta)
            nbytes, files = w.bytes, len(w.paths)
        else:
            write_imagefolder(tmp, ((png, meta) for png, meta in it))
            nbytes, files = sum(f.stat().st_size for f in tmp.iterdir()), count
        if final.exists():
            old = out / f".{split}.old-{os.getpid()}"
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {"count": count, "bytes": nbytes, "files": files}


def _existing_dataset(out: Path, preset: str, fmt: str, overwrite: bool) -> dict:
    """dataset.json of what `out` already holds when it is the same preset and format ({} when empty); another
    preset, format or an imported dataset is only replaced with --overwrite (never mixed in)."""
    path = out / "dataset.json"
    if not path.exists():
        return {}
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        old = {}
    if not isinstance(old, dict):
        old = {}
    if old.get("preset") == preset and old.get("format") == fmt:
        return old
    if not overwrite:
        what = (f"preset {old.get('preset')!r}, format {old.get('format')!r}" if old.get("preset")
                else f"a dataset that synth did not render ({old.get('source', 'unknown source')})")
        raise XomniError(f"--out {out} holds {what}; this run renders preset {preset!r}, format {fmt!r}; pass "
                         f"--overwrite to replace that dataset (all its splits and dataset.json), or choose "
                         f"another --out")
    return {"replace": True}


def _check_disk(out: Path, preset: Preset, seed: int, counts: dict[str, int]) -> None:
    """Refuse a run that cannot fit on the disk (the size of one rendered sample x the count, with 20 % margin)."""
    png, meta = make_sample((preset.name, seed, next(iter(counts)), 0))
    need = int(1.2 * (len(png) + len(json.dumps(meta)) + 1024) * sum(counts.values()))
    anc = out
    while not anc.exists():
        anc = anc.parent
    free = shutil.disk_usage(anc).free
    if need > free:
        raise XomniError(f"{sum(counts.values()):,} samples need about {need / 1e9:,.1f} GB; {anc} has "
                         f"{free / 1e9:,.1f} GB free")


def synth(out: str | Path, n: int, seed: int = 0, preset: str = "tiny", split: str = "all",
          fmt: str = "shards", shard_size: int = 1000, workers: int = 1, command: str | None = None,
          progress: bool = True, overwrite: bool = False) -> dict:
    """Render the dataset; returns the dataset.json dict (also written to out/dataset.json). An `out` holding a
    dataset of another preset or format is refused unless `overwrite` (then it is replaced as a whole)."""
    p = get_preset(preset)
    counts = split_counts(n, split)
    if fmt not in FORMATS:
        raise XomniError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    if shard_size <= 0:
        raise XomniError(f"--shard-size must be positive, got {shard_size}")
    if not 0 <= seed <= 2 ** 63 - 1:
        raise XomniError(f"--seed must be between 0 and 2^63-1, got {seed}")
    fonts = check_fonts(p.fonts)
    wordlist_path()
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise XomniError(f"--out {out} is a file; give a directory")
    old = _existing_dataset(out, p.name, fmt, overwrite)
    _check_disk(out, p, seed, counts)
    _check_writable(out)
    stats = {}
    for s, c in counts.items():
        log(f"synth: {c} {s} samples -> {out / s}")
        stats[s] = write_split(out, p, seed, s, c, fmt, shard_size, max(1, workers), progress)
    info = {
        "preset": p.name, "seed": seed, "format": fmt, "shard_size": shard_size if fmt == "shards" else None,
        "counts": {s: v["count"] for s, v in stats.items()},
        "split_seeds": {s: seed for s in stats},
        "split_commands": {s: command for s in stats},
        "image_size": {"width": p.width, "height": p.height},
        "fonts": {f: {"name": FONTS[f].name, "family": FONTS[f].family, "style": FONTS[f].style,
                      "package": FONTS[f].package, "path": fonts[f]} for f in p.fonts},
        "colors": list(p.colors), "nouns": list(p.nouns), "shape_kinds": list(p.shape_kinds),
        "ocr_region": list(p.ocr_region) if p.ocr_region else None,
        "words": {"source": wordlist_path(), "sha256": wordlist_sha256(), "total": len(all_words()),
                  "per_split": {s: len(split_words(s)) for s in SPLITS},
                  "rule": "sha256('xomni-split:'+word) % 100: <90 train, <95 val, else test; "
                          "LongText-Bench words never in train"},
        **({"text_mix": dict(p.text_mix), "confusable_boost": p.confusable_boost,
            "text_rule": "xomni.data.signtext: a string of split S has word_split(lower(string)) == S, its dictionary "
                         "words are words of S; train holds no LongText-Bench target or letter-digit token"}
           if p.text_mix else {}),
        "split_rule": "with --split all, N is the train count and val/test get max(16, N//10) each",
        "command": command,
    }
    path = out / "dataset.json"
    if old.get("replace"):  # --overwrite of another dataset: its other splits go too (never a mix)
        for s in SPLITS:
            if s not in counts and (out / s).is_dir() and _replaceable(out / s):
                shutil.rmtree(out / s)
    elif split != "all" and old:  # keep the other splits rendered earlier with the same preset and format
        done = old.get("counts", {})
        prev = {"counts": done,  # files written before split_seeds existed: one seed for all splits
                "split_seeds": old.get("split_seeds") or {s: old.get("seed") for s in done},
                "split_commands": old.get("split_commands") or {s: old.get("command") for s in done}}
        for key, value in prev.items():
            info[key] = {**value, **info[key]}
    atomic_write_text(path, json.dumps(info, indent=2) + "\n")
    info["out"] = str(out)
    info["bytes"] = {s: v["bytes"] for s, v in stats.items()}
    return info
