"""Dataset storage: webdataset-style .tar shards and Hugging Face imagefolder, behind one map-style reader.

Shards: `shard-00000.tar` with `KEY.png` + `KEY.json` per sample, written deterministically (fixed tar headers,
sorted JSON keys), each shard to a temp name and renamed. Random access reads a member-offset index built from the
tar headers when the dataset is opened (nothing is cached on disk).
Imagefolder: `*.png` + `metadata.jsonl` (`file_name`, `text`, `caption`, and the other metadata keys).

`open_dataset(path, split=None)` accepts a shard dir, a single .tar, an imagefolder, or a dataset root with
train/val/test subdirs. `ds[i]` -> `Sample(key, image, meta, error)`; an unreadable image gives `image=None` and
`error` set (callers skip and count).
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from xomni.errors import XomniError
from xomni.utils import atomic_write_text

IMAGE_EXTS = ("png", "jpg", "jpeg", "webp", "bmp", "gif", "tif", "tiff")
SPLIT_NAMES = ("train", "val", "test")


@dataclass
class Sample:
    key: str
    image: Any            # PIL.Image.Image (RGB) or None when unreadable
    meta: dict = field(default_factory=dict)
    error: str | None = None


def decode_image(data: bytes):
    """PNG/JPEG bytes -> RGB PIL image (fully loaded). Raises on corrupt data."""
    from PIL import Image
    img = Image.open(io.BytesIO(data))
    img.load()
    return img.convert("RGB") if img.mode != "RGB" else img


def encode_png(img) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def meta_bytes(meta: dict) -> bytes:
    return json.dumps(meta, sort_keys=True, ensure_ascii=False).encode("utf-8")


# ----------------------------------------------------------------------------------------------------------- shards
class ShardWriter:
    """Write samples into `out_dir/shard-00000.tar`, ... with at most `shard_size` samples each."""

    def __init__(self, out_dir: str | Path, shard_size: int = 1000, prefix: str = "shard"):
        self.out_dir, self.shard_size, self.prefix = Path(out_dir), int(shard_size), prefix
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.n_shard, self.n_in_shard, self.count, self.bytes = 0, 0, 0, 0
        self._tar = self._tmp = None
        self.paths: list[str] = []

    def _open(self):
        final = self.out_dir / f"{self.prefix}-{self.n_shard:05d}.tar"
        self._final = final
        self._tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
        self._tar = tarfile.open(self._tmp, "w", format=tarfile.GNU_FORMAT)

    def _add(self, name: str, data: bytes):
        ti = tarfile.TarInfo(name)
        ti.size, ti.mtime, ti.mode, ti.uid, ti.gid, ti.uname, ti.gname = len(data), 0, 0o644, 0, 0, "", ""
        self._tar.addfile(ti, io.BytesIO(data))
        self.bytes += len(data)

    def write(self, key: str, png: bytes, meta: dict):
        if "." in key or "/" in key:
            raise XomniError(f"sample key {key!r} must not contain '.' or '/'")
        if self._tar is None:
            self._open()
        self._add(f"{key}.png", png)
        self._add(f"{key}.json", meta_bytes(meta))
        self.count += 1
        self.n_in_shard += 1
        if self.n_in_shard >= self.shard_size:
            self._close_shard()

    def _close_shard(self):
        if self._tar is not None:
            self._tar.close()
            os.replace(self._tmp, self._final)
            self.paths.append(str(self._final))
            self._tar, self.n_in_shard = None, 0
            self.n_shard += 1

    def close(self):
        self._close_shard()

    def abort(self):
        if self._tar is not None:
            self._tar.close()
            os.unlink(self._tmp)
            self._tar = None

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *a):
        self.abort() if exc_type else self.close()


def tar_index(path: str) -> list[tuple[str, dict[str, tuple[int, int]]]]:
    """[(key, {ext: (data offset, size)})] in file order, read from the tar headers only."""
    entries: dict[str, dict[str, tuple[int, int]]] = {}
    try:
        with tarfile.open(path, "r:") as tf:
            for m in tf:
                if not m.isfile():
                    continue
                d, base = os.path.split(m.name)
                if "." not in base:
                    continue
                stem, ext = base.split(".", 1)
                entries.setdefault(os.path.join(d, stem), {})[ext.lower()] = (m.offset_data, m.size)
    except (tarfile.TarError, OSError) as e:
        raise XomniError(f"cannot read tar shard {path}: {e}") from None
    return list(entries.items())


class TarDataset:
    """Map-style dataset over one or more tar shards (random access by member offsets)."""

    def __init__(self, paths: list[str]):
        self.paths = [str(p) for p in paths]
        self._index: list[tuple[int, str, dict]] = []
        for pi, p in enumerate(self.paths):
            self._index.extend((pi, key, members) for key, members in tar_index(p))
        self._fh: dict[int, Any] = {}
        self._pid = os.getpid()

    def __len__(self):
        return len(self._index)

    def _read(self, pi: int, off: int, size: int) -> bytes:
        if self._pid != os.getpid():  # forked worker: do not share file offsets with the parent
            self._fh, self._pid = {}, os.getpid()
        f = self._fh.get(pi)
        if f is None:
            f = self._fh[pi] = open(self.paths[pi], "rb")
        f.seek(off)
        return f.read(size)

    def meta(self, i: int) -> dict:
        pi, key, members = self._index[i]
        meta = {}
        if "json" in members:
            try:
                meta = json.loads(self._read(pi, *members["json"]))
            except ValueError:
                meta = {}
        meta.setdefault("key", os.path.basename(key))
        return meta

    def __getitem__(self, i: int) -> Sample:
        if i < 0:
            i += len(self)
        pi, key, members = self._index[i]
        meta = self.meta(i)
        ext = next((e for e in IMAGE_EXTS if e in members), None)
        if ext is None:
            return Sample(meta["key"], None, meta, f"no image for key {key} in {self.paths[pi]}")
        try:
            return Sample(meta["key"], decode_image(self._read(pi, *members[ext])), meta, None)
        except Exception as e:  # corrupt image: report, never crash the caller
            return Sample(meta["key"], None, meta, f"unreadable image {key}.{ext} in {self.paths[pi]}: {e}")

    def close(self):
        for f in self._fh.values():
            f.close()
        self._fh = {}

    def __getstate__(self):
        st = dict(self.__dict__)
        st["_fh"] = {}
        return st


# ------------------------------------------------------------------------------------------------------ imagefolder
class ImageFolderDataset:
    """Hugging Face imagefolder: `metadata.jsonl` rows with `file_name` relative to the folder."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.rows: list[dict] = []
        path = self.root / "metadata.jsonl"
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except ValueError:
                    raise XomniError(f"{path}:{n}: not valid JSON") from None
                if not isinstance(row, dict) or "file_name" not in row:
                    raise XomniError(f"{path}:{n}: a row needs a file_name")
                self.rows.append(row)

    def __len__(self):
        return len(self.rows)

    def meta(self, i: int) -> dict:
        meta = dict(self.rows[i])
        meta.setdefault("key", Path(meta["file_name"]).stem)
        return meta

    def __getitem__(self, i: int) -> Sample:
        meta = self.meta(i)
        path = self.root / meta["file_name"]
        try:
            with open(path, "rb") as f:
                return Sample(meta["key"], decode_image(f.read()), meta, None)
        except Exception as e:
            return Sample(meta["key"], None, meta, f"unreadable image {path}: {e}")


def write_imagefolder(out_dir: str | Path, items: Iterable[tuple[Any, dict]]) -> int:
    """Write (PIL image or PNG bytes, meta) pairs as `KEY.png` + `metadata.jsonl`; returns the count."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    lines, seen = [], set()
    for img, meta in items:
        key = meta["key"]
        if key in seen:
            raise XomniError(f"duplicate sample key {key!r}")
        seen.add(key)
        name = f"{key}.png"
        data = img if isinstance(img, (bytes, bytearray)) else encode_png(img)
        tmp = out / f".{name}.tmp-{os.getpid()}"
        tmp.write_bytes(data)
        os.replace(tmp, out / name)
        lines.append(json.dumps({"file_name": name, **{k: v for k, v in meta.items() if k != "file_name"}},
                                sort_keys=False, ensure_ascii=False))
    atomic_write_text(out / "metadata.jsonl", "".join(x + "\n" for x in lines))
    return len(lines)


@contextlib.contextmanager
def staged_dir(final: str | Path):
    """Build a directory aside and swap it in only when complete: yields a temp dir next to `final`; on success it
    replaces `final` (whatever was there), on any error it is removed and `final` is left byte-identical."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if final.exists():
        old = final.parent / f".{final.name}.old-{os.getpid()}"
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)


def write_imagefolder_swap(out_dir: str | Path, items: Iterable[tuple[Any, dict]]) -> int:
    """write_imagefolder into a staged directory that replaces `out_dir` only when every item is written."""
    with staged_dir(out_dir) as tmp:
        return write_imagefolder(tmp, items)


# ----------------------------------------------------------------------------------------------------------- open
def _split_dirs(root: Path) -> list[str]:
    return [s for s in SPLIT_NAMES if (root / s).is_dir()]


def open_dataset(path: str | Path, split: str | None = None):
    """Map-style dataset (len, [i] -> Sample) over a shard dir, a .tar, an imagefolder or a dataset root."""
    p = Path(path)
    if not p.exists():
        raise XomniError(f"dataset not found: {p}")
    if p.is_file():
        if p.suffix == ".tar":
            return TarDataset([str(p)])
        if p.name == "metadata.jsonl":
            return ImageFolderDataset(p.parent)
        raise XomniError(f"{p} is not a dataset (expected a directory, a .tar shard or metadata.jsonl)")
    splits = _split_dirs(p)
    if split is not None:
        if (p / split).is_dir():
            return open_dataset(p / split)
        if not splits and ((p / "metadata.jsonl").is_file() or any(p.glob("*.tar"))):
            return _filter_split(open_dataset(p), split, p)
        raise XomniError(f"no split {split!r} in {p} (found: {', '.join(splits) or 'none'})")
    if (p / "metadata.jsonl").is_file():
        return ImageFolderDataset(p)
    tars = sorted(p.glob("*.tar"))
    if tars:
        return TarDataset([str(t) for t in tars])
    if len(splits) == 1:
        return open_dataset(p / splits[0])
    if splits:
        raise XomniError(f"{p} has splits {', '.join(splits)}: choose one (--split)")
    raise XomniError(f"{p} is not a dataset: no metadata.jsonl, no .tar shards, no train/val/test subdirs")


class _Subset:
    def __init__(self, base, indices):
        self.base, self.indices = base, indices

    def __len__(self):
        return len(self.indices)

    def meta(self, i):
        return self.base.meta(self.indices[i])

    def __getitem__(self, i):
        return self.base[self.indices[i]]


def _filter_split(ds, split: str, where: Path):
    """A flat dataset whose rows carry a `split` field: keep those of `split`."""
    idx = [i for i in range(len(ds)) if ds.meta(i).get("split") == split]
    if not idx:
        raise XomniError(f"no samples of split {split!r} in {where}")
    return _Subset(ds, idx)
