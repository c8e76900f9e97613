"""Reading images for evaluation: a dataset (shards / imagefolder with metadata.jsonl, via xomni.data.io) or a
plain directory of image files (sorted by file name, no metadata).

Every image is converted to RGB (alpha composited on white). An unreadable image becomes an item with
`image=None` and `error` set: callers skip it and count it in `n_skipped`; nothing is dropped silently.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

from PIL import Image

from xomni.data.io import open_dataset
from xomni.errors import XomniError

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")


@dataclass
class Item:
    key: str
    image: Image.Image | None
    meta: dict = field(default_factory=dict)
    error: str | None = None


def to_rgb(im: Image.Image) -> Image.Image:
    if im.mode == "RGB":
        return im
    if im.mode in ("RGBA", "LA") or (im.mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA")
        bg = Image.new("RGB", im.size, (255, 255, 255))
        bg.paste(im, mask=im.getchannel("A"))
        return bg
    return im.convert("RGB")


def _is_dataset(p: Path) -> bool:
    if p.is_file():
        return p.suffix == ".tar"
    if (p / "metadata.jsonl").is_file() or (p / "dataset.json").is_file():
        return True
    if any(p.glob("*.tar")):
        return True
    return any((p / s).is_dir() and (any((p / s).glob("*.tar")) or (p / s / "metadata.jsonl").is_file())
               for s in ("train", "val", "test"))


def _image_files(p: Path) -> list[Path]:
    return sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_EXTS)


class ImageSource(Sequence):
    """Map-style view over the images of a path; `items[i]` -> Item (RGB image or error)."""

    def __init__(self, path: str | Path, split: str | None = None):
        p = Path(path)
        if not p.exists():
            raise XomniError(f"image path not found: {p}")
        self.path = p
        self.has_meta = _is_dataset(p)
        self._ds = None
        self._files: list[Path] = []
        if self.has_meta:
            self._ds = open_dataset(str(p), split=split)
            if len(self._ds) == 0:
                raise XomniError(f"no images in {p}")
            # order by file name (imagefolder) or key, so that `--targets` lines map deterministically
            self._order = sorted(range(len(self._ds)), key=lambda i: self._sort_key(i))
        else:
            if not p.is_dir():
                raise XomniError(f"not an image directory or dataset: {p}")
            if split is not None:
                raise XomniError(f"{p} is a plain image directory, not a dataset with a {split!r} split")
            self._files = _image_files(p)
            if not self._files:
                raise XomniError(f"no images ({', '.join(IMAGE_EXTS)}) in {p}")

    def _sort_key(self, i: int) -> str:
        ds = self._ds
        m = ds.meta(i) if hasattr(ds, "meta") else ds[i].meta
        return str(m.get("file_name") or m.get("key") or i)

    def meta(self, i: int) -> dict:
        """Metadata of item i without decoding its image."""
        if self._ds is not None and hasattr(self._ds, "meta"):
            m = dict(self._ds.meta(self._order[i]))
            return m
        return self[i].meta

    def __len__(self) -> int:
        return len(self._ds) if self._ds is not None else len(self._files)

    def __getitem__(self, i: int) -> Item:  # type: ignore[override]
        if i < 0:
            i += len(self)
        if self._ds is not None:
            s = self._ds[self._order[i]]
            img = s.image
            err = s.error
            if img is not None:
                try:
                    img = to_rgb(img)
                except Exception as e:  # noqa: BLE001 - a broken image is a skip, not a crash
                    img, err = None, f"{type(e).__name__}: {e}"
            meta = dict(s.meta or {})
            meta.setdefault("key", s.key)
            return Item(s.key, img, meta, err if img is None else None)
        f = self._files[i]
        try:
            with Image.open(f) as im:
                im.load()
                img = to_rgb(im)
            return Item(f.stem, img, {"key": f.stem, "file_name": f.name})
        except Exception as e:  # noqa: BLE001
            return Item(f.stem, None, {"key": f.stem, "file_name": f.name}, f"{type(e).__name__}: {e}")

    def __iter__(self) -> Iterator[Item]:
        for i in range(len(self)):
            yield self[i]


def read_targets(path: str | Path) -> list[str]:
    """One target string per line; blank lines are errors (they would misalign images and targets)."""
    p = Path(path)
    if not p.is_file():
        raise XomniError(f"targets file not found: {p}")
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise XomniError(f"targets file {p} is not UTF-8 text") from None
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise XomniError(f"targets file {p} is empty")
    for i, s in enumerate(lines, 1):
        if not s.strip():
            raise XomniError(f"targets file {p} line {i} is blank (one target string per line)")
    return lines
