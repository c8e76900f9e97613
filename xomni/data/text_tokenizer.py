"""Text tokenizers for prompts: a byte-level default that needs no download, and a local Hugging Face tokenizer.

Both expose: vocab_size, pad_id, bos_id, eos_id, encode(text, add_special_tokens=True) -> list[int],
decode(ids, skip_special_tokens=True) -> str, pad_batch(list of id lists, max_length) -> (ids, mask),
save_pretrained(dir), and are loaded by `load_text_tokenizer("byte" | path)`.
"""
from __future__ import annotations

import json
from pathlib import Path

from xomni.errors import XomniError
from xomni.utils import atomic_write_text

CONFIG_NAME = "xomni_text_tokenizer.json"


class _Base:
    pad_id: int
    bos_id: int
    eos_id: int
    vocab_size: int

    def pad_batch(self, seqs: list[list[int]], max_length: int | None = None, truncate: bool = True):
        """Right-pad (and truncate) id lists to one length; returns (ids, mask) as lists of lists."""
        L = max_length or max((len(s) for s in seqs), default=0)
        ids, mask = [], []
        for s in seqs:
            if len(s) > L:
                if not truncate:
                    raise XomniError(f"sequence of {len(s)} tokens is longer than max_length {L}")
                s = s[:L]
            ids.append(list(s) + [self.pad_id] * (L - len(s)))
            mask.append([1] * len(s) + [0] * (L - len(s)))
        return ids, mask


class ByteTokenizer(_Base):
    """UTF-8 bytes are ids 0..255; pad 256, bos 257, eos 258."""

    kind = "byte"

    def __init__(self):
        self.pad_id, self.bos_id, self.eos_id = 256, 257, 258
        self.vocab_size = 259

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        ids = list(text.encode("utf-8"))
        return [self.bos_id] + ids + [self.eos_id] if add_special_tokens else ids

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        out = bytearray()
        for i in ids:
            i = int(i)
            if i < 256:
                out.append(i)
            elif not skip_special_tokens:
                out.extend({256: b"<pad>", 257: b"<bos>", 258: b"<eos>"}.get(i, b"<unk>"))
        return out.decode("utf-8", errors="replace")

    def save_pretrained(self, path: str | Path) -> None:
        atomic_write_text(Path(path) / CONFIG_NAME, json.dumps(
            {"type": "byte", "vocab_size": self.vocab_size, "pad_id": self.pad_id, "bos_id": self.bos_id,
             "eos_id": self.eos_id}, indent=2) + "\n")

    @classmethod
    def from_pretrained(cls, path: str | Path) -> "ByteTokenizer":
        cfg = _read_config(Path(path))
        if cfg.get("type") != "byte":
            raise XomniError(f"{Path(path) / CONFIG_NAME} is not a byte tokenizer config")
        tok = cls()
        if (cfg.get("pad_id"), cfg.get("bos_id"), cfg.get("eos_id")) != (tok.pad_id, tok.bos_id, tok.eos_id):
            raise XomniError(f"{Path(path) / CONFIG_NAME}: unexpected special token ids")
        return tok


class HFTokenizer(_Base):
    """A Hugging Face tokenizer from a local directory (no download)."""

    kind = "hf"

    def __init__(self, path: str | Path):
        try:
            from transformers import AutoTokenizer
            self.tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        except Exception as e:
            raise XomniError(f"cannot load a Hugging Face tokenizer from {path}: {type(e).__name__}: "
                             f"{str(e).splitlines()[0] if str(e) else ''}") from None
        self.path = str(path)
        t = self.tok
        self.vocab_size = len(t)
        self.eos_id = t.eos_token_id if t.eos_token_id is not None else t.sep_token_id
        self.bos_id = t.bos_token_id if t.bos_token_id is not None else (t.cls_token_id if t.cls_token_id
                                                                         is not None else self.eos_id)
        self.pad_id = t.pad_token_id if t.pad_token_id is not None else self.eos_id
        if self.eos_id is None:
            raise XomniError(f"tokenizer in {path} has no eos (or sep) token")

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        ids = self.tok.encode(text, add_special_tokens=False)
        return [self.bos_id] + ids + [self.eos_id] if add_special_tokens else ids

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        return self.tok.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    def save_pretrained(self, path: str | Path) -> None:
        self.tok.save_pretrained(str(path))
        atomic_write_text(Path(path) / CONFIG_NAME, json.dumps({"type": "hf"}, indent=2) + "\n")


def _read_config(path: Path) -> dict:
    try:
        return json.loads((path / CONFIG_NAME).read_text())
    except (OSError, ValueError) as e:
        raise XomniError(f"cannot read {path / CONFIG_NAME}: {e}") from None


def load_text_tokenizer(spec: str | Path):
    """"byte" -> ByteTokenizer; a directory saved by save_pretrained or a Hugging Face tokenizer directory."""
    if str(spec) == "byte":
        return ByteTokenizer()
    p = Path(spec)
    if not p.is_dir():
        raise XomniError(f"text tokenizer {str(spec)!r}: expected 'byte' or a local tokenizer directory "
                         f"(not found: {p})")
    if (p / CONFIG_NAME).is_file() and _read_config(p).get("type") == "byte":
        return ByteTokenizer.from_pretrained(p)
    return HFTokenizer(p)
