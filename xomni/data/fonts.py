"""Real fonts from Debian packages, by id. Each font knows its family (sans|serif|mono), style and package.

Only files installed by `fonts-dejavu-core`, `fonts-liberation2` and `fonts-freefont-ttf` are used, so renders are
identical on every Debian/Ubuntu machine with the same package versions. A missing file raises XomniError naming
the package that provides it.
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass

from xomni.errors import XomniError

FONT_DIRS = ("/usr/share/fonts/truetype", "/usr/share/fonts/TTF", "/usr/local/share/fonts")


@dataclass(frozen=True)
class FontSpec:
    id: str           # e.g. "dejavu-serif-bold"
    file: str         # file name relative to a Debian font dir, e.g. "dejavu/DejaVuSerif-Bold.ttf"
    family: str       # sans | serif | mono
    style: str        # regular | bold | italic | bold italic
    package: str      # the Debian package that installs `file`
    name: str         # human name, e.g. "DejaVu Serif Bold"


_DJ, _LB, _FF = "fonts-dejavu-core", "fonts-liberation2", "fonts-freefont-ttf"

# Every font that the renderer knows. Presets pick a subset (see presets.py).
FONTS: dict[str, FontSpec] = {f.id: f for f in [
    FontSpec("dejavu-sans", "dejavu/DejaVuSans.ttf", "sans", "regular", _DJ, "DejaVu Sans"),
    FontSpec("dejavu-sans-bold", "dejavu/DejaVuSans-Bold.ttf", "sans", "bold", _DJ, "DejaVu Sans Bold"),
    FontSpec("dejavu-serif", "dejavu/DejaVuSerif.ttf", "serif", "regular", _DJ, "DejaVu Serif"),
    FontSpec("dejavu-serif-bold", "dejavu/DejaVuSerif-Bold.ttf", "serif", "bold", _DJ, "DejaVu Serif Bold"),
    FontSpec("dejavu-sans-mono", "dejavu/DejaVuSansMono.ttf", "mono", "regular", _DJ, "DejaVu Sans Mono"),
    FontSpec("dejavu-sans-mono-bold", "dejavu/DejaVuSansMono-Bold.ttf", "mono", "bold", _DJ,
             "DejaVu Sans Mono Bold"),
    FontSpec("liberation-sans", "liberation2/LiberationSans-Regular.ttf", "sans", "regular", _LB, "Liberation Sans"),
    FontSpec("liberation-sans-bold", "liberation2/LiberationSans-Bold.ttf", "sans", "bold", _LB,
             "Liberation Sans Bold"),
    FontSpec("liberation-serif", "liberation2/LiberationSerif-Regular.ttf", "serif", "regular", _LB,
             "Liberation Serif"),
    FontSpec("liberation-serif-bold", "liberation2/LiberationSerif-Bold.ttf", "serif", "bold", _LB,
             "Liberation Serif Bold"),
    FontSpec("liberation-mono", "liberation2/LiberationMono-Regular.ttf", "mono", "regular", _LB, "Liberation Mono"),
    FontSpec("liberation-mono-bold", "liberation2/LiberationMono-Bold.ttf", "mono", "bold", _LB,
             "Liberation Mono Bold"),
    FontSpec("liberation-sans-italic", "liberation2/LiberationSans-Italic.ttf", "sans", "italic", _LB,
             "Liberation Sans Italic"),
    FontSpec("freesans", "freefont/FreeSans.ttf", "sans", "regular", _FF, "FreeSans"),
    FontSpec("freesans-bold", "freefont/FreeSansBold.ttf", "sans", "bold", _FF, "FreeSans Bold"),
    FontSpec("freeserif", "freefont/FreeSerif.ttf", "serif", "regular", _FF, "FreeSerif"),
    FontSpec("freeserif-bold", "freefont/FreeSerifBold.ttf", "serif", "bold", _FF, "FreeSerif Bold"),
    FontSpec("freemono-bold", "freefont/FreeMonoBold.ttf", "mono", "bold", _FF, "FreeMono Bold"),
]}


def font_spec(font_id: str) -> FontSpec:
    try:
        return FONTS[font_id]
    except KeyError:
        raise XomniError(f"unknown font {font_id!r}; known fonts: {', '.join(sorted(FONTS))}") from None


def font_path(font_id: str) -> str:
    """Absolute path of a font file; XomniError naming the Debian package when it is not installed."""
    spec = font_spec(font_id)
    env = os.environ.get("XOMNI_FONT_DIRS")  # colon-separated; replaces the Debian defaults (tests use it)
    for d in (env.split(":") if env else FONT_DIRS):
        p = os.path.join(d, spec.file)
        if os.path.isfile(p):
            return p
    raise XomniError(f"font {spec.name} ({spec.file}) is missing: install the Debian package {spec.package} "
                     f"(apt-get install {spec.package})")


def check_fonts(font_ids) -> dict[str, str]:
    """Resolve all fonts up front (one clear error before any rendering); returns id -> path."""
    return {f: font_path(f) for f in font_ids}


@functools.lru_cache(maxsize=512)
def load_font(font_id: str, size: int):
    from PIL import ImageFont
    return ImageFont.truetype(font_path(font_id), size)
