"""Font variants of a preset: `BASE:FONT[,FONT...]`, e.g. `mini:dejavu-serif-bold`.

A variant is the base preset with its font list replaced (size, colours, layout, OCR region and text grammar stay
the base's), so renders of a font the base preset never drew come out in the base preset's layout: the data of a
LoRA "font pack" (docs/LORA.md). Its prompt template names the first font's style and family in the caption
grammar's words ("bold serif" instead of "bold sans-serif"). The registered presets are untouched: a name without a
colon is the preset itself, bit for bit.

    xomni data synth --preset mini --font dejavu-serif-bold ...     # preset name "mini:dejavu-serif-bold"
"""
from __future__ import annotations

import functools
from dataclasses import replace

from xomni.data.caption import FAMILY_WORDS
from xomni.data.fonts import font_spec
from xomni.errors import XomniError

SEP = ":"


def font_words(font_id: str) -> str:
    """How a caption names a font: '[style ]family' in the caption grammar ("bold sans-serif", "serif")."""
    fs = font_spec(font_id)
    style = "" if fs.style == "regular" else fs.style + " "
    return style + FAMILY_WORDS[fs.family]


def variant_name(base: str, fonts: str | list[str] | tuple[str, ...]) -> str:
    """The preset name of `base` drawn in `fonts` (a comma-separated string or a list of font ids)."""
    ids = [f.strip() for f in (fonts.split(",") if isinstance(fonts, str) else fonts) if f.strip()]
    if not ids:
        raise XomniError("--font is empty; give one or more font ids, comma-separated")
    return f"{base}{SEP}{','.join(ids)}"


@functools.lru_cache(maxsize=32)
def font_variant(name: str, get_preset):
    """The Preset called `name` = BASE:FONT[,FONT...] (fonts checked against xomni.data.fonts); `get_preset`
    looks up BASE (passed in by xomni.data.presets, which imports this module)."""
    base_name, _, fonts = name.partition(SEP)
    if SEP in fonts:
        raise XomniError(f"preset {name!r}: one font list only (BASE:FONT[,FONT...])")
    base = get_preset(base_name)
    ids = tuple(f.strip() for f in fonts.split(",") if f.strip())
    if not ids:
        raise XomniError(f"preset {name!r} names no font (BASE:FONT[,FONT...])")
    if len(set(ids)) != len(ids):
        raise XomniError(f"preset {name!r} names a font twice")
    for f in ids:
        font_spec(f)
    old, new = font_words(base.fonts[0]), font_words(ids[0])
    template = base.prompt_template
    if f" {old} letters" in template:
        template = template.replace(f" {old} letters", f" {new} letters")
    return replace(base, name=variant_name(base_name, ids), fonts=ids, prompt_template=template)
