"""Small shared helpers: atomic writes, JSON output, logging to stderr, thread settings."""
from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from xomni.cliargs import check_threads
from xomni.errors import XomniError


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` via a temp file + rename. A symlink is followed (its target is replaced, the link
    stays); a device, FIFO or socket (/dev/null, /dev/stdout) is written in place, never replaced by a file.
    OS errors become one-line XomniErrors."""
    path = Path(os.path.realpath(path))
    try:
        if path.is_dir():
            raise XomniError(f"cannot write {path}: it is a directory")
        if _is_special(path):
            with open(path, "wb") as f:
                f.write(data)
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        mode = path.stat().st_mode & 0o7777 if path.exists() else None
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise XomniError(f"cannot write {path}: {e.strerror or e}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode if mode is not None else 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, OSError):
            raise XomniError(f"cannot write {path}: {e.strerror or e}") from None
        raise


def _is_special(p: Path) -> bool:
    """A device, FIFO or socket."""
    import stat
    try:
        mode = os.stat(p).st_mode
    except OSError:
        return False
    return not stat.S_ISREG(mode) and not stat.S_ISDIR(mode)


def _umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def log(msg: str) -> None:
    """Progress and logs go to stderr; stdout is reserved for JSON results."""
    print(msg, file=sys.stderr, flush=True)


def emit_json(obj: Any, json_path: str | Path | None = None) -> None:
    """Print a JSON result on stdout, and save it to `json_path` when given."""
    text = json.dumps(obj, indent=2, sort_keys=False, default=_jsonable)
    print(text, flush=True)
    if json_path:
        atomic_write_text(json_path, text + "\n")


def _jsonable(o: Any) -> Any:
    try:
        import numpy as np
        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:
        pass
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o)}")


def image_grid(images: list, cols: int, gap: int = 4):
    """PIL images of one size pasted into rows of `cols` on white, `gap` pixels apart."""
    from PIL import Image
    w, h = images[0].size
    rows = (len(images) + cols - 1) // cols
    grid = Image.new("RGB", (cols * w + (cols - 1) * gap, rows * h + (rows - 1) * gap), (255, 255, 255))
    for i, im in enumerate(images):
        grid.paste(im, ((i % cols) * (w + gap), (i // cols) * (h + gap)))
    return grid


def set_threads(n: int | None) -> None:
    """torch intra-op threads: n in 1..cores (checked), 0/None leaves torch's default."""
    import torch
    if n:
        torch.set_num_threads(check_threads(n))


def resolve_device(spec: str = "auto"):
    """'auto' (CUDA when available, else CPU; under torchrun cuda:LOCAL_RANK), 'cpu', 'cuda' or 'cuda:N' ->
    torch.device, with one clear error for a device this machine does not have."""
    import torch

    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    if spec == "cuda" and "LOCAL_RANK" in os.environ:
        spec = f"cuda:{int(os.environ['LOCAL_RANK'])}"
    try:
        dev = torch.device(spec)
    except RuntimeError:
        raise XomniError(f"unknown device {spec!r}: use auto, cpu, cuda or cuda:N") from None
    if dev.type not in ("cpu", "cuda"):
        raise XomniError(f"unsupported device {spec!r}: use auto, cpu, cuda or cuda:N")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise XomniError(f"device {spec!r} asked for, but this machine has no usable CUDA GPU "
                             f"(torch {torch.__version__}); use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise XomniError(f"device {spec!r} asked for, but this machine has {torch.cuda.device_count()} GPU(s)")
    return dev
