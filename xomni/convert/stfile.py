"""safetensors files read and written by their headers: tensors are renamed by copying their raw bytes.

A checkpoint converter only renames tensors, so it never needs to decode them: reading the header gives every
tensor's dtype, shape and byte range, and writing copies those byte ranges into a new file with new names. The
values are bit-exact by construction, any dtype works (bf16, fp8, ...), and memory stays at one copy buffer even
for a 24 GB file. Format: 8-byte little-endian header length N, N bytes of JSON header
({name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {str: str}}), then the data buffer.
"""
from __future__ import annotations

import dataclasses
import json
import os
import struct
from pathlib import Path

from xomni.errors import XomniError

_CHUNK = 64 << 20
_MAX_HEADER = 100 << 20
DTYPE_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
               "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}


@dataclasses.dataclass(frozen=True)
class Entry:
    """One tensor of a safetensors file: where its bytes are (absolute offsets in `path`)."""
    path: Path
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.begin


@dataclasses.dataclass
class Header:
    path: Path
    entries: dict[str, Entry]         # in data order
    metadata: dict[str, str] | None


def read_header(path: str | Path, what: str | None = None) -> Header:
    """The tensors of a safetensors file; a file that is not one (or is truncated) is one XomniError line."""
    p = Path(path)
    name = what or str(p)
    if not p.is_file():
        raise XomniError(f"{name} not found")
    size = p.stat().st_size
    try:
        with open(p, "rb") as f:
            raw = f.read(8)
            if len(raw) < 8:
                raise ValueError("shorter than a header")
            (n,) = struct.unpack("<Q", raw)
            if n > min(_MAX_HEADER, size - 8):
                raise ValueError(f"header length {n} does not fit the file")
            head = json.loads(f.read(n).decode("utf-8"))
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise XomniError(f"{name} is not a readable safetensors file ({e})") from None
    if not isinstance(head, dict):
        raise XomniError(f"{name} is not a safetensors file (its header is not a JSON object)")
    meta = head.pop("__metadata__", None)
    start = 8 + n
    entries = []
    for key, info in head.items():
        try:
            dt, shape, (b, e) = info["dtype"], tuple(int(s) for s in info["shape"]), info["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise XomniError(f"{name}: tensor {key} has a malformed header entry") from None
        numel = 1
        for s in shape:
            numel *= s
        if dt not in DTYPE_BYTES or e - b != numel * DTYPE_BYTES[dt] or start + e > size or b < 0:
            raise XomniError(f"{name}: tensor {key} ({dt} {list(shape)}) has inconsistent byte offsets "
                             f"(truncated or corrupt file)")
        entries.append((b, key, Entry(p, dt, shape, start + b, start + e)))
    entries.sort(key=lambda t: (t[0], t[1]))
    return Header(p, {k: en for _, k, en in entries}, meta)


def write_file(dst: str | Path, tensors: list[tuple[str, Entry]], metadata: dict[str, str] | None = None) -> None:
    """Write `tensors` (new name, source entry), in this order, to a new safetensors file at `dst`."""
    head: dict = {}
    if metadata:
        head["__metadata__"] = dict(metadata)
    off = 0
    for name, en in tensors:
        if name in head:
            raise XomniError(f"internal error: tensor {name} written twice to {dst}")
        head[name] = {"dtype": en.dtype, "shape": list(en.shape), "data_offsets": [off, off + en.nbytes]}
        off += en.nbytes
    blob = json.dumps(head, separators=(",", ":")).encode("utf-8")
    blob += b" " * (-len(blob) % 8)  # the reference writer pads the header to 8 bytes with spaces
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    handles: dict[Path, object] = {}
    try:
        with open(dst, "wb") as out:
            out.write(struct.pack("<Q", len(blob)))
            out.write(blob)
            for _, en in tensors:
                src = handles.get(en.path)
                if src is None:
                    src = handles[en.path] = open(en.path, "rb")
                src.seek(en.begin)
                left = en.nbytes
                while left:
                    buf = src.read(min(_CHUNK, left))
                    if not buf:
                        raise XomniError(f"{en.path} ended early while copying a tensor (truncated file)")
                    out.write(buf)
                    left -= len(buf)
            out.flush()
            os.fsync(out.fileno())
    finally:
        for h in handles.values():
            h.close()


def tensor_entries(tensors: dict, tmp_path: str | Path) -> dict[str, Entry]:
    """In-memory torch tensors as Entries (written once to `tmp_path` with safetensors' own writer), so that files
    mixing copied and freshly made tensors go through the same `write_file`."""
    from safetensors.torch import save_file
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp_path))
    return read_header(tmp_path).entries
