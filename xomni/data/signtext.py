"""Signage text: the string distribution of presets with a `text_mix` (the `sign` preset).

Each sample draws one kind by the preset's `text_mix` weights, then a string of that kind (<= max_chars):

  word    a dictionary word of the split in lower / Title / UPPER case, or two words in CamelCase ("SaltLake")
  number  integers (also "07", "1,250", "3.5"), times "9:30" "10:47:23", ranges "5-9", dates "5/12", "#42",
          quantities "500g" "1.5 l"
  price   "$3.75" "$12" "$1,299" "4.99" "12%" "-20%" "12.5%"
  code    "B12" "27A" "A-7" "X2Z9" "KX204" "QG-1024" "XYK" "A1-B2"
  phrase  words with a number, a code or punctuation: "Dock 3", "Bay: B12", "Suite 4B", "3 Pence", "OPEN!",
          "Cat's", "Red Panda", "Salt & Tea", "Up/Down", "Lot #7", "50% Off"

The patterns inside each kind and their weights are the tables below. Characters that are easily confused
(CONFUSABLE: l/i/I/1, O/0, z/2, q/g, X/K, V/Y) are drawn more often, with the preset's `confusable_boost` b: a
letter or digit drawn at random (codes, numbers, prices) weighs 1 + b when it is confusable, else 1, and a dictionary
word weighs (1 + b) ** min(k, 3), k = its confusable characters in the case it is written in (q, rare in English,
counts twice; the cap keeps words like "XXXVIII" from crowding out the vocabulary). Code letters skip I, O and J
(see CODE_LETTERS): Tesseract, the evaluator, cannot tell them from 1, 0 and j inside a code, so ground-truth renders
of such codes would not be read back; I and O come from words instead.

Splits stay clean, like the words of `xomni.data.words`:
  - a string s belongs to split S only if word_split(s.lower()) == S: the stable word hash of the case-folded
    string (for a bare dictionary word that is its word split), so no string, in any case, is in two splits;
  - every run of >= 2 letters (whole runs and CamelCase parts) that is a dictionary word or a LongText-Bench word
    is a word of S (train words never include a LongText-Bench word);
  - train never holds, case-folded, a LongText-Bench target string or a benchmark token that mixes letters and
    digits ("B14", "23A", "10K"), whole or as one of its space-separated tokens.
Strings are drawn until one passes; the kind is drawn once per string, so the kind shares are the mix weights.
"""
from __future__ import annotations

import functools
import json
import re
import string
from bisect import bisect
from itertools import accumulate
from pathlib import Path

from xomni.data.words import SPLITS, all_words, longtext_excluded_words, split_words, word_split
from xomni.errors import XomniError

CONFUSABLE = "liI1O0z2qgXKVY"
RARE_CONFUSABLE = "q"   # rare in English words: counts twice in a word's weight
WORD_MAX_BOOSTED = 3    # a word's weight stops growing at 3 confusable characters (keeps the vocabulary broad)
KINDS = ("word", "number", "price", "code", "phrase")
MAX_TRIES = 20_000
LONGTEXT_DIR = Path(__file__).resolve().parent / "longtext"

# pattern weights inside each kind
WORD_CASES = (("lower", 0.20), ("title", 0.30), ("upper", 0.35), ("camel", 0.15))
NUMBER_PATTERNS = (("int", 0.40), ("zeros", 0.05), ("thousands", 0.07), ("decimal", 0.07), ("time", 0.12),
                   ("range", 0.08), ("date", 0.06), ("hash", 0.07), ("quantity", 0.08))
PRICE_PATTERNS = (("$d.dd", 0.28), ("$d", 0.15), ("$dd.dd", 0.14), ("$d,ddd", 0.05), ("d.dd", 0.06),
                  ("d%", 0.17), ("-d%", 0.09), ("dd.d%", 0.06))
CODE_PATTERNS = (("LD", 0.18), ("DL", 0.12), ("L-D", 0.16), ("LL-D", 0.14), ("LLD", 0.12), ("LDLD", 0.08),
                 ("LD-LD", 0.10), ("LLL", 0.10))
# Code letters skip I, O and J, as many real codes (seat rows, plates) do: in a code Tesseract reads I and O as 1 and
# 0 (and J as j or ")") at these sizes; a 0 never touches a letter ("B07" reads as "BO7") and is never a group alone.
CODE_LETTERS = "ABCDEFGHKLMNPQRSTUVWXYZ"
PHRASE_PATTERNS = (("W N", 0.20), ("W: C", 0.09), ("W C", 0.07), ("N W", 0.10), ("W!", 0.10), ("W?", 0.03),
                   ("W.", 0.04), ("W's", 0.05), ("W W", 0.12), ("W & W", 0.05), ("W/W", 0.04), ("W #N", 0.05),
                   ("N% W", 0.06))
PHRASE_CASES = (("title", 0.45), ("upper", 0.40), ("lower", 0.15))
UNITS = ("g", "kg", "l", "ml", "mg", "km", "m", "cm", "oz", "lb")

_RUN_RE = re.compile(r"[A-Za-z]+")
_PART_RE = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])")
_STRIP = ".,!?:;'\"()"


class _Retry(Exception):
    """A piece of a string could not be drawn within its limits: draw the whole string again."""


def _pick(rng, table: tuple[tuple[str, float], ...]) -> str:
    return rng.choices([k for k, _ in table], weights=[w for _, w in table])[0]


class _Chars:
    """Cumulative weights of the letters and digits drawn at random: confusable ones weigh 1 + boost."""

    def __init__(self, boost: float):
        def table(chars):
            return chars, list(accumulate(1.0 + boost if c in CONFUSABLE else 1.0 for c in chars))
        self.sets = {"C": table(CODE_LETTERS), "D": table(string.digits), "N": table(string.digits[1:])}

    def draw(self, rng, kind: str, k: int = 1) -> str:
        chars, cum = self.sets[kind]
        return "".join(rng.choices(chars, cum_weights=cum, k=k))

    def number(self, rng, digits: int, zero: bool = False) -> str:
        """A number of `digits` digits without a leading zero; a single digit is 1..9 (0..9 when `zero`)."""
        if digits == 1:
            return self.draw(rng, "D" if zero else "N")
        return self.draw(rng, "N") + self.draw(rng, "D", digits - 1)


def confusable_count(word: str) -> int:
    """Easily confused characters in `word`, RARE_CONFUSABLE ones counted twice (the exponent of a word's weight)."""
    return sum(c in CONFUSABLE for c in word) + sum(c in RARE_CONFUSABLE for c in word)


def _cased(word: str, case: str) -> str:
    if case == "upper":
        return word.upper()
    if case == "title":
        return word[:1].upper() + word[1:]
    return word


@functools.lru_cache(maxsize=32)
def _weighted_words(split: str, case: str, boost: float) -> tuple[tuple[str, ...], list[float]]:
    words = split_words(split)
    return words, list(accumulate((1.0 + boost) ** min(WORD_MAX_BOOSTED, confusable_count(_cased(w, case)))
                                  for w in words))


@functools.lru_cache(maxsize=8)
def _split_word_set(split: str) -> frozenset[str]:
    return frozenset(split_words(split))


@functools.lru_cache(maxsize=1)
def _dictionary() -> frozenset[str]:
    return frozenset(all_words()) | longtext_excluded_words()


@functools.lru_cache(maxsize=1)
def longtext_strings() -> frozenset[str]:
    """Case-folded LongText-Bench target strings and their tokens that mix letters and digits (never in train)."""
    out: set[str] = set()
    files = sorted(LONGTEXT_DIR.glob("*.jsonl"))
    if not files:
        raise XomniError(f"the LongText-Bench prompts are missing from {LONGTEXT_DIR} (reinstall xomni)")
    for path in files:
        with open(path, encoding="utf-8") as f:
            for line in f:
                if not line.strip():
                    continue
                for t in json.loads(line).get("text", []):
                    out.add(t.strip().lower())
                    for tok in t.split():
                        tok = tok.strip(_STRIP).lower()
                        if re.search(r"[0-9]", tok) and re.search(r"[a-z]", tok):
                            out.add(tok)
    return frozenset(out)


_ZERO_TOUCH = re.compile(r"[A-Za-z]0|0[A-Za-z]|(^|-)0($|-)")


def code_readable(code: str) -> bool:
    """No 0 touching a letter and no group that is a lone 0 (code letters already skip I, O and J)."""
    return not _ZERO_TOUCH.search(code)


def string_split(text: str) -> str:
    """The split a string belongs to: the word hash of its case-folded form (a word's own split for a word)."""
    return word_split(text.lower())


def letter_runs(text: str) -> set[str]:
    """Case-folded runs of >= 2 letters: whole runs and their CamelCase parts ("TasteBuds": tastebuds, taste,
    buds)."""
    runs = {r.lower() for r in _RUN_RE.findall(text)}
    runs |= {r.lower() for r in _PART_RE.findall(text)}
    return {r for r in runs if len(r) >= 2}


def is_clean(text: str, split: str) -> bool:
    """True when `text` may be a string of `split` (the rules in the module doc)."""
    if string_split(text) != split:
        return False
    own, dictionary = _split_word_set(split), _dictionary()
    if any(r in dictionary and r not in own for r in letter_runs(text)):
        return False
    if split == "train":
        banned = longtext_strings()
        if text.lower() in banned or any(t.strip(_STRIP).lower() in banned for t in text.split()):
            return False
    return True


def case_of(text: str) -> str:
    """none (no letters) | upper | lower | title (every letter run capitalised) | mixed."""
    runs = _RUN_RE.findall(text)
    if not runs:
        return "none"
    if text == text.upper():
        return "upper"
    if text == text.lower():
        return "lower"
    if all(r[:1].isupper() and r[1:] == r[1:].lower() for r in runs):
        return "title"
    return "mixed"


class SignText:
    """Draws sign strings of one split (see the module doc); `sample(rng)` -> (text, case, kind)."""

    def __init__(self, split: str, mix: tuple[tuple[str, float], ...], boost: float, max_chars: int):
        if split not in SPLITS:
            raise XomniError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
        bad = [k for k, _ in mix if k not in KINDS]
        if bad or not mix or any(w < 0 for _, w in mix) or sum(w for _, w in mix) <= 0:
            raise XomniError(f"text_mix {mix!r}: expected positive weights of the kinds {', '.join(KINDS)}")
        self.split, self.mix, self.boost, self.max_chars = split, tuple(mix), float(boost), max_chars
        self.chars = _Chars(self.boost)

    # -------------------------------------------------------------------------------------------------- pieces
    def word(self, rng, case: str, max_len: int = 8) -> str:
        words, cum = _weighted_words(self.split, "lower" if case == "camel" else case, self.boost)
        for _ in range(100):
            w = words[bisect(cum, rng.random() * cum[-1])]
            if len(w) <= max_len:
                return _cased(w, "title" if case == "camel" else case)
        raise _Retry

    def small_number(self, rng) -> str:
        return self.chars.number(rng, rng.choices((1, 2, 3), weights=(0.45, 0.4, 0.15))[0])

    def short_code(self, rng) -> str:
        for _ in range(100):
            code = self._code(rng, "LD" if rng.random() < 0.6 else "DL")
            if len(code) <= 3 and code_readable(code):
                return code
        raise _Retry

    # ---------------------------------------------------------------------------------------------------- kinds
    def k_word(self, rng) -> tuple[str, str]:
        case = _pick(rng, WORD_CASES)
        if case == "camel":
            a = self.word(rng, "camel", 6)
            return a + self.word(rng, "camel", self.max_chars - len(a)), "camel"
        return self.word(rng, case), case

    def k_number(self, rng) -> str:
        c, pat = self.chars, _pick(rng, NUMBER_PATTERNS)
        if pat == "int":
            return c.number(rng, rng.choices((1, 2, 3, 4, 5), weights=(0.15, 0.3, 0.25, 0.2, 0.1))[0], zero=True)
        if pat == "zeros":
            return "0" + c.draw(rng, "D", rng.randint(1, 3))
        if pat == "thousands":
            return c.number(rng, rng.randint(1, 3)) + "," + c.draw(rng, "D", 3)
        if pat == "decimal":
            return c.number(rng, rng.randint(1, 2), zero=True) + "." + c.draw(rng, "D", rng.randint(1, 2))
        if pat == "time":
            hh = f"{rng.randint(0, 23):02d}" if rng.random() < 0.5 else str(rng.randint(1, 12))
            t = f"{hh}:{rng.randint(0, 5)}{c.draw(rng, 'D')}"
            if rng.random() < 0.3:
                t += f":{rng.randint(0, 5)}{c.draw(rng, 'D')}"
            return t
        if pat == "range":
            a = int(self.small_number(rng))
            return f"{a}-{a + rng.randint(1, 20)}"
        if pat == "date":
            return f"{rng.randint(1, 12)}/{rng.randint(1, 31)}"
        if pat == "hash":
            return "#" + c.number(rng, rng.randint(1, 4))
        num = c.number(rng, rng.randint(1, 3)) if rng.random() < 0.8 else \
            c.number(rng, 1) + "." + c.draw(rng, "N")
        return num + (" " if rng.random() < 0.3 else "") + rng.choice(UNITS)

    def k_price(self, rng) -> str:
        c, pat = self.chars, _pick(rng, PRICE_PATTERNS)
        cents = c.draw(rng, "D", 2)
        make = {"$d.dd": lambda: f"${c.number(rng, 1, zero=True)}.{cents}",
                "$d": lambda: "$" + c.number(rng, rng.randint(1, 3)),
                "$dd.dd": lambda: f"${c.number(rng, 2)}.{cents}",
                "$d,ddd": lambda: f"${c.number(rng, 1)},{c.draw(rng, 'D', 3)}",
                "d.dd": lambda: f"{c.number(rng, 1, zero=True)}.{cents}",
                "d%": lambda: c.number(rng, rng.randint(1, 2)) + "%",
                "-d%": lambda: "-" + c.number(rng, rng.randint(1, 2)) + "%",
                "dd.d%": lambda: f"{c.number(rng, 2)}.{c.draw(rng, 'D')}%"}
        return make[pat]()

    def k_code(self, rng) -> str:
        pat = _pick(rng, CODE_PATTERNS)
        for _ in range(100):
            code = self._code(rng, pat)
            if code_readable(code):
                return code
        raise _Retry

    def _code(self, rng, pat: str) -> str:
        c = self.chars
        digits = (lambda lo, hi: c.draw(rng, "D", rng.randint(lo, hi)))  # codes keep leading zeros ("A-07")
        make = {"LD": lambda: c.draw(rng, "C") + digits(1, 3),
                "DL": lambda: digits(1, 3) + c.draw(rng, "C"),
                "L-D": lambda: c.draw(rng, "C") + "-" + digits(1, 2),
                "LL-D": lambda: c.draw(rng, "C", rng.randint(2, 3)) + "-" + digits(2, 4),
                "LLD": lambda: c.draw(rng, "C", 2) + digits(2, 3),
                "LDLD": lambda: c.draw(rng, "C") + c.draw(rng, "D") + c.draw(rng, "C") + c.draw(rng, "D"),
                "LD-LD": lambda: c.draw(rng, "C") + c.draw(rng, "D") + "-" + c.draw(rng, "C") + c.draw(rng, "D"),
                "LLL": lambda: c.draw(rng, "C", rng.randint(3, 4))}
        return make[pat]()

    def k_phrase(self, rng) -> str:
        pat, case = _pick(rng, PHRASE_PATTERNS), _pick(rng, PHRASE_CASES)
        m = self.max_chars
        if pat == "W N":
            return f"{self.word(rng, case, m - 2)} {self.small_number(rng)}"
        if pat == "W: C":
            return f"{self.word(rng, case, m - 4)}: {self.short_code(rng)}"
        if pat == "W C":
            return f"{self.word(rng, case, m - 3)} {self.short_code(rng)}"
        if pat == "N W":
            return f"{self.small_number(rng)} {self.word(rng, case, m - 2)}"
        if pat in ("W!", "W?", "W."):
            return self.word(rng, case, m - 1) + pat[1]
        if pat == "W's":
            return self.word(rng, case, m - 2) + "'s"
        if pat == "W W":
            a = self.word(rng, case, m - 3)
            return f"{a} {self.word(rng, case, m - 1 - len(a))}"
        if pat == "W & W":
            a = self.word(rng, case, m - 5)
            return f"{a} & {self.word(rng, case, m - 3 - len(a))}"
        if pat == "W/W":
            a = self.word(rng, case, m - 3)
            return f"{a}/{self.word(rng, case, m - 1 - len(a))}"
        if pat == "W #N":
            return f"{self.word(rng, case, m - 3)} #{self.small_number(rng)}"
        return f"{self.chars.number(rng, rng.randint(1, 2))}% {self.word(rng, case, m - 3)}"

    # ----------------------------------------------------------------------------------------------------- draw
    def sample(self, rng) -> tuple[str, str, str]:
        """(text, case, kind): the kind by the mix weights, then strings of that kind until one is clean."""
        kind = _pick(rng, self.mix)
        make = getattr(self, "k_" + kind)
        for _ in range(MAX_TRIES):
            try:
                out = make(rng)
            except _Retry:
                continue
            text, case = out if isinstance(out, tuple) else (out, None)
            if text and len(text) <= self.max_chars and text == text.strip() and is_clean(text, self.split):
                return text, case or case_of(text), kind
        raise XomniError(f"cannot draw a clean {kind} string of at most {self.max_chars} characters for split "
                         f"{self.split!r}")


@functools.lru_cache(maxsize=16)
def sign_text(split: str, mix: tuple[tuple[str, float], ...], boost: float, max_chars: int) -> SignText:
    return SignText(split, mix, boost, max_chars)


def sample_sign_text(rng, split: str, p) -> tuple[str, str, str]:
    """(text, case, kind) of a preset with a text_mix."""
    return sign_text(split, p.text_mix, p.confusable_boost, p.max_chars).sample(rng)


def confusable_share(texts) -> float:
    """Fraction of the characters of `texts` (spaces excluded) that are in CONFUSABLE."""
    chars = [c for t in texts for c in t if not c.isspace()]
    return sum(c in CONFUSABLE for c in chars) / max(1, len(chars))


# ------------------------------------------------------------------------------------------ evaluation targets
def upper_targets(n: int, seed: int, split: str = "test", lengths: tuple[int, int] = (4, 7)) -> list[str]:
    """`n` distinct random upper-case strings of 4-7 letters (uniform letters and lengths), seeded, each a string of
    `split` by the rules above (with the default test split: never a string of any preset's train split)."""
    import hashlib
    import random
    h = hashlib.sha256(f"xomni-targets/upper/{seed}/{split}".encode()).digest()
    rng = random.Random(int.from_bytes(h[:16], "big"))
    out: list[str] = []
    seen: set[str] = set()
    for _ in range(max(100_000, 1000 * n)):
        s = "".join(rng.choices(string.ascii_uppercase, k=rng.randint(*lengths)))
        if s not in seen and is_clean(s, split):
            seen.add(s)
            out.append(s)
            if len(out) == n:
                return out
    raise XomniError(f"found only {len(out)} distinct upper-case strings for split {split!r}, asked for {n}")
