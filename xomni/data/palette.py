"""A small palette of named, clearly distinct colours, and the WCAG luminance contrast ratio."""
from __future__ import annotations

# name -> sRGB. Names are single words so that captions stay parseable.
PALETTE: dict[str, tuple[int, int, int]] = {
    "black": (0, 0, 0),
    "white": (255, 255, 255),
    "red": (210, 30, 30),
    "green": (20, 120, 45),
    "blue": (25, 70, 200),
    "yellow": (250, 215, 30),
    "orange": (245, 130, 20),
    "purple": (120, 40, 160),
    "pink": (250, 150, 190),
    "gray": (128, 128, 128),
}


def _lin(c: int) -> float:
    c = c / 255.0
    return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4


def luminance(rgb) -> float:
    """WCAG relative luminance in [0, 1]."""
    r, g, b = rgb
    return 0.2126 * _lin(r) + 0.7152 * _lin(g) + 0.0722 * _lin(b)


def contrast_ratio(a, b) -> float:
    """WCAG contrast ratio between two colours, 1 (same) .. 21 (black on white)."""
    la, lb = luminance(a), luminance(b)
    hi, lo = max(la, lb), min(la, lb)
    return (hi + 0.05) / (lo + 0.05)


def rgb(name: str) -> tuple[int, int, int]:
    return PALETTE[name]


def readable_pairs(names, min_ratio: float) -> list[tuple[str, str]]:
    """All (text colour, background) pairs from `names` whose contrast ratio is at least `min_ratio`."""
    return [(t, b) for b in names for t in names
            if t != b and contrast_ratio(PALETTE[t], PALETTE[b]) >= min_ratio]


def article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"
