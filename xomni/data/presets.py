"""Dataset presets: image size, fonts, palette, layout bands and sampling probabilities.

The tiny preset (64x256) is laid out in three horizontal bands so that nothing overlaps the text:
    rows  0..3   frame stripes/borders (banner, sign, label)
    rows  4..16  top shape band    (shapes 12-13 px at left / center / right)
    rows 19..44  text ink          (one line, fit-to-box, 26 px down to ~17 px for long strings)
    rows 47..59  bottom shape band
    rows 60..63  frame stripes/borders
OCR reads only `ocr_region` (rows 17..46, columns 4..251): the text band without shapes or frames. The region is
a property of the preset, so generated images of the preset are read exactly like the ground-truth renders.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

from xomni.data.fontvariant import font_variant
from xomni.errors import XomniError


@dataclass(frozen=True)
class Preset:
    name: str
    width: int
    height: int
    fonts: tuple[str, ...]
    colors: tuple[str, ...]
    min_contrast: float                     # WCAG ratio between text and background colour
    max_chars: int                          # total text length, spaces and punctuation included
    font_size: tuple[int, int]              # sampled target size; shrunk until the text fits the box
    min_font_size: int                      # never smaller than this (the string is resampled instead)
    text_box: tuple[int, int, int, int]     # x0, y0, x1, y1 the text ink must fit in
    shape_size: tuple[int, int]
    ocr_region: tuple[int, int, int, int] | None = None   # crop (x0, y0, x1, y1) that OCR reads; None: all
    shape_centers: dict = field(default_factory=dict)   # position name -> (cx, cy)
    p_shapes: float = 0.5                   # probability that an image has any shapes
    max_shapes: int = 2
    shape_kinds: tuple[str, ...] = ("circle", "square", "triangle", "star")
    nouns: tuple[str, ...] = ("poster", "sign", "label", "banner")
    n_words: tuple[float, ...] = (0.3, 0.4, 0.3)   # P(1, 2, 3 tokens)
    p_number: float = 0.12                  # a token is a number instead of a word
    p_end_punct: float = 0.2                # "!", "?" or "." after the last token
    p_comma: float = 0.08                   # "," after the first of several tokens
    p_amp: float = 0.06                     # " & " between the last two tokens
    cases: tuple[str, ...] = ("upper", "title", "lower")
    # the prompt a model of this preset gets for a bare string (`xomni eval text --targets`, best-of-N, RL val)
    prompt_template: str = 'a white poster with the text "{text}" in black sans-serif letters'
    # A text mix replaces the word/number grammar above (n_words .. cases): ((kind, weight), ...), the kinds of
    # xomni.data.signtext (word, number, price, code, phrase); () keeps the grammar. confusable_boost: a randomly
    # drawn easily-confused character (l/i/I/1, O/0, z/2, q/g, X/K, V/Y) weighs 1 + boost, a dictionary word
    # (1 + boost) ** min(3, its number of such characters) (only with a text mix).
    text_mix: tuple[tuple[str, float], ...] = ()
    confusable_boost: float = 0.0


TINY = Preset(
    name="tiny", width=256, height=64,
    # 12 fonts, all read by Tesseract >= 0.98 exact on 200-250 renders each (regular-weight monospace fonts only
    # reached ~0.956: s/S, l/L confusions; their bold cuts reach 0.984-0.988, so monospace is bold only).
    fonts=("dejavu-sans", "dejavu-sans-bold", "dejavu-serif", "dejavu-serif-bold", "dejavu-sans-mono-bold",
           "liberation-sans", "liberation-sans-bold", "liberation-serif", "liberation-serif-bold",
           "liberation-mono-bold", "freesans", "freesans-bold"),
    colors=("black", "white", "red", "green", "blue", "yellow", "orange", "purple", "pink", "gray"),
    min_contrast=4.5, max_chars=16, font_size=(26, 26), min_font_size=16,
    text_box=(8, 19, 248, 45), shape_size=(12, 13), ocr_region=(4, 17, 252, 47),
    shape_centers={"top left": (22, 10), "top center": (128, 10), "top right": (234, 10),
                   "bottom left": (22, 53), "bottom center": (128, 53), "bottom right": (234, 53)},
)

# The mini preset: the bundled CPU model's domain, small enough to learn on 2 CPU cores in hours (a 4x16 grid of 64
# image tokens, a prompt of ~75 bytes). One line of one word or number (<= 10 characters, three cases) in one bold
# sans font, centred in a 120x24 box (20 px, shrunk to >= 14 px for long words); no shapes; posters and signs in four
# colours (8 readable text/background pairs). Fewer colour pairs leave the tokenizer more codes per glyph piece
# (docs/RESULTS.md, tokenizer table). The tiny preset stays the harder benchmark (12 fonts, up to 3 tokens, shapes).
MINI = Preset(
    name="mini", width=128, height=32,
    fonts=("dejavu-sans-bold",),
    colors=("black", "white", "yellow", "blue"), min_contrast=4.5, max_chars=10, font_size=(20, 20), min_font_size=14,
    text_box=(4, 4, 124, 28), shape_size=(0, 0), ocr_region=(3, 3, 125, 29), shape_centers={}, p_shapes=0.0, max_shapes=0,
    nouns=("poster", "sign"), n_words=(1.0,), p_number=0.1, p_end_punct=0.0, p_comma=0.0, p_amp=0.0,
    prompt_template='a white poster with the text "{text}" in black bold sans-serif letters',
)

# The sign preset: the mini preset's image (size, font, colours, nouns, OCR region, prompt template) with a text
# distribution like short real signage (xomni.data.signtext): dictionary words in lower / Title / UPPER case (and
# CamelCase), numbers, prices, codes and short phrases with the punctuation of LongText-Bench's short strings
# (. : - ' & ! ? / # % $ ,), drawn so that easily confused characters are frequent. Kind weights:
#   word 0.45 ("tulip", "Salt", "DOCK", "SaltLake")    number 0.15 ("42", "1,250", "9:30", "5-9", "500g")
#   price 0.10 ("$3.75", "12%", "-20%")                code 0.15 ("B12", "A-7", "X2Z9", "QG-1024")
#   phrase 0.15 ("Dock 3", "Bay: B12", "OPEN!", "Red Panda", "Lot #7")
# confusable_boost 3: a confusable code letter or digit weighs 4 (others 1), a word 4 ** min(3, k). Val/test
# strings are never train strings, in any case (the string hash split and clean words, see xomni.data.signtext).
SIGN = replace(
    MINI, name="sign",
    text_mix=(("word", 0.45), ("number", 0.15), ("price", 0.10), ("code", 0.15), ("phrase", 0.15)),
    confusable_boost=3.0,
)

PRESETS = {"tiny": TINY, "mini": MINI, "sign": SIGN}


def get_preset(name: str) -> Preset:
    if ":" in str(name):  # a font variant BASE:FONT[,FONT...] (xomni.data.fontvariant)
        return font_variant(name, get_preset)
    try:
        return PRESETS[name]
    except KeyError:
        raise XomniError(f"unknown preset {name!r}; available presets: {', '.join(sorted(PRESETS))}") from None
