"""Dataset presets: image size, fonts, palette, layout bands and sampling probabilities.

The tiny preset (64x256) is laid out in three horizontal bands so that nothing overlaps the text:
    y  0..4    frame stripes/borders (banner, sign, label)
    y  5..18   top shape band    (shapes ~12-14 px at left / center / right)
    y 19..45   text band         (one line, fit-to-box, 18-26 px fonts)
    y 46..59   bottom shape band
    y 60..63   frame stripes/borders
"""
from __future__ import annotations

from dataclasses import dataclass, field

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


TINY = Preset(
    name="tiny", width=256, height=64,
    fonts=("dejavu-sans", "dejavu-sans-bold", "dejavu-serif", "dejavu-serif-bold", "dejavu-sans-mono",
           "liberation-sans", "liberation-sans-bold", "liberation-serif", "liberation-serif-bold",
           "liberation-mono", "freesans", "freesans-bold"),
    colors=("black", "white", "red", "green", "blue", "yellow", "orange", "purple", "pink", "gray"),
    min_contrast=4.5, max_chars=16, font_size=(26, 26), min_font_size=16,
    text_box=(8, 19, 248, 46), shape_size=(12, 14),
    shape_centers={"top left": (22, 11), "top center": (128, 11), "top right": (234, 11),
                   "bottom left": (22, 53), "bottom center": (128, 53), "bottom right": (234, 53)},
)

PRESETS = {"tiny": TINY}


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise XomniError(f"unknown preset {name!r}; available presets: {', '.join(sorted(PRESETS))}") from None
