"""`xomni data preview`: a grid PNG of the first N readable samples, with their captions in captions.txt."""
from __future__ import annotations

import math
import re
from pathlib import Path

from xomni.data.io import SPLIT_NAMES, open_dataset
from xomni.errors import XomniError
from xomni.utils import atomic_write_bytes, atomic_write_text

PAD = 4
MAX_CELL = 512


def make_grid(images: list, pad: int = PAD, bg=(255, 255, 255)):
    """Images (thumbnailed to at most 512 px) in a row-major grid of about 4:3; returns (grid, columns)."""
    from PIL import Image
    thumbs = []
    for im in images:
        im = im.copy()
        im.thumbnail((MAX_CELL, MAX_CELL))
        thumbs.append(im)
    cw, ch = max(t.width for t in thumbs), max(t.height for t in thumbs)
    n = len(thumbs)

    def score(c: int) -> float:  # aspect near 4:3, few empty cells
        r = -(-n // c)
        return abs(math.log((c * (cw + pad)) / (r * (ch + pad)) / (4 / 3))) + 0.5 * (c * r - n) / n
    cols = min(range(1, n + 1), key=score)
    rows = -(-n // cols)
    grid = Image.new("RGB", (cols * (cw + pad) + pad, rows * (ch + pad) + pad), bg)
    for i, t in enumerate(thumbs):
        r, c = divmod(i, cols)
        grid.paste(t, (pad + c * (cw + pad), pad + r * (ch + pad)))
    return grid, cols


def _ours(captions: Path) -> bool:
    """A captions.txt that a preview wrote (every line: index TAB key TAB caption)."""
    try:
        lines = captions.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return False
    return all(re.match(r"^\d+\t[^\t]*\t", line) for line in lines)


def preview(path: str | Path, out_png: str | Path, n: int = 16, split: str | None = None,
            overwrite: bool = False) -> dict:
    if n <= 0:
        raise XomniError(f"--n must be positive, got {n}")
    cap_path = Path(out_png).parent / "captions.txt"
    if cap_path.exists() and not overwrite and (not cap_path.is_file() or not _ours(cap_path)):
        raise XomniError(f"{cap_path} exists and was not written by a preview; pass --overwrite to replace it, or "
                         f"write the preview into another directory")
    root = Path(path)
    if split is None and root.is_dir() and sum((root / s).is_dir() for s in SPLIT_NAMES) > 1:
        split = next(s for s in SPLIT_NAMES if (root / s).is_dir())   # train, else val, else test
    ds = open_dataset(root, split)
    images, lines, skipped = [], [], 0
    for i in range(len(ds)):
        if len(images) >= n:
            break
        s = ds[i]
        if s.image is None:
            skipped += 1
            continue
        lines.append(f"{len(images)}\t{s.key}\t{s.meta.get('caption', '')}")
        images.append(s.image)
    if not images:
        raise XomniError(f"no readable images in {root}")
    grid, cols = make_grid(images)
    import io
    out_png = Path(out_png)
    buf = io.BytesIO()
    grid.save(buf, format="PNG")
    atomic_write_bytes(out_png, buf.getvalue())
    atomic_write_text(cap_path, "".join(x + "\n" for x in lines))
    return {"grid": str(out_png), "captions": str(cap_path), "n": len(images), "columns": cols,
            "skipped_unreadable": skipped, "order": "row-major; captions.txt lines: index, key, caption"}
