"""Word lists and the train/val/test word split.

Words come from the Debian `wamerican` list (/usr/share/dict/american-english), filtered to ASCII lowercase words
of 2-8 letters. Each word belongs to exactly one split by a stable hash (90/5/5), so val/test measure unseen words.
Words that occur in the LongText-Bench target strings (evaluation data) never enter the train split; the frozen
list in `longtext_words.py` is checked against the benchmark files by the tests.
"""
from __future__ import annotations

import functools
import hashlib
import os
import re

from xomni.data.longtext_words import LONGTEXT_WORDS
from xomni.errors import XomniError

WORDLIST_PATHS = ("/usr/share/dict/american-english", "/usr/share/dict/words")
WORD_RE = re.compile(r"^[a-z]{2,8}$")
SPLITS = ("train", "val", "test")
SPLIT_PERCENT = {"train": 90, "val": 5, "test": 5}

# A few words that must not appear on a demo poster. Short and explicit on purpose.
BLOCKLIST = frozenset("""
nigger niggers nigga faggot faggots fag fags dyke dykes kike kikes spic spics chink chinks gook gooks wop wops
coon coons slut sluts whore whores cunt cunts fuck fucks fucked fucker fucking shit shits shitty bitch bitchy
cock cocks dick dicks pussy prick pricks twat twats wank wanker bastard rape raped rapes rapist porn porno
retard retards tranny homo homos nazi nazis hitler jap japs paki pakis
""".split())


def wordlist_path() -> str:
    p = os.environ.get("XOMNI_WORDLIST")
    for cand in ((p,) if p else WORDLIST_PATHS):
        if cand and os.path.isfile(cand):
            return cand
    raise XomniError("word list /usr/share/dict/american-english is missing: install the Debian package wamerican "
                     "(apt-get install wamerican)")


@functools.lru_cache(maxsize=4)
def _all_words(path: str) -> tuple[str, ...]:
    with open(path, encoding="utf-8", errors="replace") as f:
        words = {w.strip() for w in f}
    return tuple(sorted(w for w in words if WORD_RE.match(w) and w not in BLOCKLIST))


def all_words() -> tuple[str, ...]:
    """All usable words (sorted, unique)."""
    return _all_words(wordlist_path())


def wordlist_sha256() -> str:
    with open(wordlist_path(), "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def word_split(word: str) -> str:
    """The split a word belongs to: a stable hash, independent of the word list and of Python's hash seed."""
    h = int.from_bytes(hashlib.sha256(b"xomni-split:" + word.encode()).digest()[:8], "big") % 100
    if h < SPLIT_PERCENT["train"]:
        return "train"
    return "val" if h < SPLIT_PERCENT["train"] + SPLIT_PERCENT["val"] else "test"


def longtext_excluded_words() -> frozenset[str]:
    return LONGTEXT_WORDS


@functools.lru_cache(maxsize=8)
def _split_words(path: str, split: str) -> tuple[str, ...]:
    words = [w for w in _all_words(path) if word_split(w) == split]
    if split == "train":
        excluded = longtext_excluded_words()
        words = [w for w in words if w not in excluded]
    return tuple(words)


def split_words(split: str) -> tuple[str, ...]:
    """The words of one split (sorted). Train excludes every LongText-Bench word."""
    if split not in SPLITS:
        raise XomniError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    return _split_words(wordlist_path(), split)


def benchmark_words(bench_dir: str) -> set[str]:
    """Lowercase letter runs of all target strings in LongText-Bench jsonl files under `bench_dir`."""
    import json
    out: set[str] = set()
    for name in sorted(os.listdir(bench_dir)):
        if not name.endswith(".jsonl"):
            continue
        with open(os.path.join(bench_dir, name), encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    for t in json.loads(line).get("text", []):
                        out.update(re.findall(r"[a-z]+", t.lower()))
    return out
