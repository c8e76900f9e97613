"""Shared argument types for every `xomni` command: output and input paths, number ranges, text files.

Each check raises XomniError with one line that names the option, so bad input costs exit 2 and never a traceback.
The `*Opt` helpers are typer options whose callback runs the check while the command line is parsed, i.e. before
any model is loaded or any file is written.
"""
from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Iterator, Optional

import typer

from xomni.errors import XomniError

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
MAX_IMAGES = 64  # images per prompt in one generation call (the Pipeline's limit)
SEED_MAX = 2 ** 63 - 1
_SPLIT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


# ---------------------------------------------------------------------------------------------------------- numbers
def max_threads() -> int:
    """Cores this process may run on: the upper bound of every thread-count option."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def check_int(value: Optional[int], name: str, lo: Optional[int] = None, hi: Optional[int] = None,
              zero: str = "") -> Optional[int]:
    """`value` within [lo, hi] (None passes: the option's default applies). `zero` documents a special meaning of 0
    (e.g. "all"), which is then allowed even when lo is 1."""
    if value is None or (zero and value == 0):
        return value
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        if hi is None:
            rule = f">= {lo}"
        elif lo is None:
            rule = f"<= {hi}"
        else:
            rule = f"between {lo} and {hi}"
        extra = f" (or 0 = {zero})" if zero else ""
        raise XomniError(f"{name} must be {rule}{extra}, got {value}")
    return value


def check_float(value: Optional[float], name: str, lo: Optional[float] = None, hi: Optional[float] = None, *,
                lo_open: bool = False, hi_open: bool = False) -> Optional[float]:
    """A finite number within the bounds (open or closed); None passes."""
    if value is None:
        return None
    if not math.isfinite(value):
        raise XomniError(f"{name} must be a finite number, got {value}")
    bad_lo = lo is not None and (value <= lo if lo_open else value < lo)
    bad_hi = hi is not None and (value >= hi if hi_open else value > hi)
    if bad_lo or bad_hi:
        parts = []
        if lo is not None:
            parts.append(f"{'>' if lo_open else '>='} {lo:g}")
        if hi is not None:
            parts.append(f"{'<' if hi_open else '<='} {hi:g}")
        raise XomniError(f"{name} must be {' and '.join(parts)}, got {value:g}")
    return value


def check_threads(value: Optional[int], name: str = "--threads", zero: str = "torch's default") -> Optional[int]:
    """A thread count within this machine's cores (more crashes libgomp or only adds contention)."""
    return check_int(value, name, 1, max_threads(), zero=zero)


def check_seed(value: Optional[int], name: str = "--seed") -> Optional[int]:
    return check_int(value, name, 0, SEED_MAX)


def check_split(value: Optional[str], name: str = "--split") -> Optional[str]:
    """A split name is one path component of letters, digits, '_' and '-' (it becomes a directory name)."""
    if value is not None and not _SPLIT_RE.match(value):
        raise XomniError(f"{name} must be a name of letters, digits, '_' or '-' (e.g. train, val, test), "
                         f"got {value!r}")
    return value


# ------------------------------------------------------------------------------------------------------------ paths
def _nearest_existing(p: Path) -> Path:
    cur = p
    while not os.path.lexists(cur):
        if cur.parent == cur:
            break
        cur = cur.parent
    return cur


def _check_parent(p: Path, name: str) -> None:
    """The nearest existing ancestor of `p` must be a writable directory (missing folders are created later)."""
    anc = _nearest_existing(p.parent if str(p.parent) else Path("."))
    if not anc.is_dir():
        raise XomniError(f"{name} {p} is not writable: {anc} is not a directory")
    if not os.access(anc, os.W_OK | os.X_OK):
        raise XomniError(f"{name} {p} is not writable: no write permission in {anc}")


def check_out_file(path: Optional[str], name: str, exts: tuple[str, ...] = ()) -> Optional[str]:
    """An output file: a known extension (when `exts`), not an existing directory, in a writable directory; an
    existing file must be writable. Special files (/dev/null, FIFOs) are allowed: they are written in place."""
    if path is None:
        return None
    if not str(path).strip():
        raise XomniError(f"{name} is empty")
    p = Path(path)
    if exts and p.suffix.lower() not in exts:
        raise XomniError(f"{name} {p}: expected a file name ending in {', '.join(exts)}")
    target = Path(os.path.realpath(p))
    if target.is_dir():
        raise XomniError(f"{name} {p} is a directory; give a file name")
    if target.exists():
        if not os.access(target, os.W_OK):
            raise XomniError(f"{name} {p} is not writable")
        return path
    _check_parent(target, name)
    return path


def check_out_dir(path: Optional[str], name: str) -> Optional[str]:
    """An output directory: not an existing file, inside a writable directory."""
    if path is None:
        return None
    if not str(path).strip():
        raise XomniError(f"{name} is empty")
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise XomniError(f"{name} {p} is a file; give a directory")
    if p.is_dir():
        if not os.access(p, os.W_OK | os.X_OK):
            raise XomniError(f"{name} {p} is not writable")
        return path
    _check_parent(p, name)
    return path


def dir_has_content(p: Path) -> bool:
    return p.is_dir() and any(p.iterdir())


def refuse_existing(p: Path, name: str, what: str, overwrite: bool) -> None:
    """An output directory that already holds something is only replaced with --overwrite."""
    if not overwrite and dir_has_content(p):
        raise XomniError(f"{name} {p} already holds {what}; pass --overwrite to replace it "
                         f"(the new output is written aside and swapped in only when complete)")


def _check_in(path: Optional[str], name: str, want_dir: bool) -> Optional[str]:
    """An existing input of the wanted kind, named as such when it is the other kind."""
    if path is None:
        return None
    p = Path(path)
    if not p.exists():
        raise XomniError(f"{name} not found: {p}")
    if p.is_dir() != want_dir:
        raise XomniError(f"{name} {p} is a {'file' if want_dir else 'directory'}; expected a "
                         f"{'directory' if want_dir else 'file'}")
    if not os.access(p, os.R_OK):
        raise XomniError(f"{name} {p} is not readable")
    return path


def check_in_file(path: Optional[str], name: str) -> Optional[str]:
    return _check_in(path, name, want_dir=False)


def check_in_dir(path: Optional[str], name: str) -> Optional[str]:
    return _check_in(path, name, want_dir=True)


def check_in_path(path: Optional[str], name: str) -> Optional[str]:
    """An input that may be a file or a directory (a dataset root, a .tar shard, an image)."""
    if path is not None and not Path(path).exists():
        raise XomniError(f"{name} not found: {path}")
    return path


def open_image(path: str | Path, max_pixels: int = 64_000_000):
    """An image file as RGB; unreadable, truncated or oversized images (decompression bombs) are one line."""
    from PIL import Image
    p = Path(path)
    check_in_file(str(p), "image")
    try:
        with Image.open(p) as im:
            if im.width * im.height > max_pixels:
                raise XomniError(f"image {p} is {im.width}x{im.height}: larger than the {max_pixels:,} pixels "
                                 f"accepted")
            return im.convert("RGB")
    except XomniError:
        raise
    except Exception as e:  # PIL raises many types (UnidentifiedImageError, DecompressionBombError, OSError, ...)
        raise XomniError(f"cannot read image {p}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                         ) from None


# ------------------------------------------------------------------------------------------------------- text files
def read_text(path: str | Path, what: str) -> str:
    """A UTF-8 text file; a decoding error names the file and the line."""
    p = Path(path)
    check_in_file(str(p), what)
    data = p.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise XomniError(f"{what} {p} line {line} is not valid UTF-8 text") from None


def iter_lines(path: str | Path, what: str) -> Iterator[tuple[int, str]]:
    """(line number, stripped line) of the non-empty lines of a UTF-8 text file, read as a stream."""
    p = Path(path)
    check_in_file(str(p), what)
    with open(p, "rb") as f:
        for n, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8").strip()
            except UnicodeDecodeError:
                raise XomniError(f"{what} {p} line {n} is not valid UTF-8 text") from None
            if line:
                yield n, line


# ------------------------------------------------------------------------------------------------- typer options
def _cb(fn, *args, **kw):
    """A typer callback that runs `fn(value, *args, **kw)` while the command line is parsed."""
    def callback(value):
        return fn(value, *args, **kw)
    return callback


JsonOpt = typer.Option(None, "--json", help="Also save the JSON result here.", callback=_cb(check_out_file, "--json"))
ThreadsOpt = typer.Option(0, "--threads", help="torch threads, 1..cores (0 = torch's default).",
                          callback=_cb(check_threads))
PerImageOpt = typer.Option(None, "--per-image", help="Write per-image results (JSONL).",
                           callback=_cb(check_out_file, "--per-image"))


def SeedOpt(default: int = 0, help: str = "Random seed."):
    return typer.Option(default, "--seed", help=f"{help} 0..2^63-1.", callback=_cb(check_seed))


def SjdWindowOpt(prefix: str = ""):
    return typer.Option(0, "--sjd-window", help=f"{prefix}Speculative Jacobi decoding with this many drafts per "
                        "forward pass, 1..64: the same distribution in fewer passes (other tokens than plain "
                        "sampling for the same seed; faster at small batches on a CPU, see docs/SAMPLING.md). 0 = off.",
                        callback=IntRange("--sjd-window", 1, 64, zero="off"))


def BatchSizeOpt(what: str, default: int = 16):
    return typer.Option(default, "--batch-size", help=f"{what}, 1..1024.", callback=IntRange("--batch-size", 1, 1024))


def BatchesOpt(default: int):
    return typer.Option(default, "--batches", help="Timed batches, 1..1000.", callback=IntRange("--batches", 1, 1000))


def OverwriteOpt(what: str = "the output"):
    return typer.Option(False, "--overwrite", help=f"Replace {what} when it already holds something (the new "
                                                   "output is written aside and swapped in only when complete).")


def IntRange(name: str, lo: Optional[int] = None, hi: Optional[int] = None, zero: str = ""):
    """Callback: an int option within [lo, hi] (0 allowed with its documented meaning `zero`)."""
    return _cb(check_int, name, lo, hi, zero=zero)


def FloatRange(name: str, lo: Optional[float] = None, hi: Optional[float] = None, *, lo_open: bool = False,
               hi_open: bool = False):
    return _cb(check_float, name, lo, hi, lo_open=lo_open, hi_open=hi_open)

