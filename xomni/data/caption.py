"""The caption grammar and its parser.

    caption := ART BACKGROUND NOUN ' with the text "' TEXT '" in ' TEXT_COLOR ' ' [STYLE ' '] FAMILY ' letters'
               [', ' SHAPE (' and ' SHAPE)*]
    SHAPE   := ART COLOR ' ' KIND ' at the ' POSITION
    STYLE   := bold | italic | bold italic          (regular fonts name no style)
    FAMILY  := sans-serif | serif | monospace        (metadata font_family: sans | serif | mono)

Example: `a yellow poster with the text "OPEN 24 HOURS" in black bold serif letters, a red circle at the top left`

`parse_caption` inverts `make_caption` exactly for our grammar (the evaluation's compliance judge uses it to know
what a prompt asked for) and extracts what it can from other captions (`grammar` False).
"""
from __future__ import annotations

import re

from xomni.data.palette import article

FAMILY_WORDS = {"sans": "sans-serif", "serif": "serif", "mono": "monospace"}
WORD_FAMILY = {v: k for k, v in FAMILY_WORDS.items()}
STYLES = ("bold italic", "bold", "italic", "regular")
POSITIONS = ("top left", "top center", "top right", "bottom left", "bottom center", "bottom right")


def shape_phrase(shape: dict) -> str:
    return f"{article(shape['color'])} {shape['color']} {shape['kind']} at the {shape['position']}"


def make_caption(meta: dict) -> str:
    style = "" if meta["font_style"] == "regular" else meta["font_style"] + " "
    cap = (f"{article(meta['background'])} {meta['background']} {meta['noun']} with the text \"{meta['text']}\" "
           f"in {meta['text_color']} {style}{FAMILY_WORDS[meta['font_family']]} letters")
    shapes = meta.get("shapes") or []
    if shapes:
        cap += ", " + " and ".join(shape_phrase(s) for s in shapes)
    return cap


_WORD = r"[a-z]+"
_POS = "|".join(POSITIONS)
_SHAPE = rf"an? ({_WORD}) ({_WORD}) at the ({_POS})"
_SHAPE_RE = re.compile(_SHAPE)
_CAPTION_RE = re.compile(
    rf"an? (?P<background>{_WORD}) (?P<noun>{_WORD}) with the text \"(?P<text>.*)\" in (?P<text_color>{_WORD}) "
    rf"(?:(?P<style>bold italic|bold|italic) )?(?P<family>sans-serif|serif|monospace) letters"
    rf"(?:, (?P<shapes>{_SHAPE.replace('(', '(?:')}(?: and {_SHAPE.replace('(', '(?:')})*))?",
    re.DOTALL)


def _shapes(txt: str) -> list[dict]:
    return [{"kind": k, "color": c, "position": p} for c, k, p in _SHAPE_RE.findall(txt)]


def parse_caption(caption: str) -> dict:
    """Attributes of a caption: text, noun, background, text_color, font_family, font_style, shapes
    [{kind, color, position}], and `grammar` (True when the whole caption follows our grammar)."""
    cap = caption.strip()
    m = _CAPTION_RE.fullmatch(cap)
    if m:
        return {
            "grammar": True, "text": m.group("text"), "noun": m.group("noun"), "background": m.group("background"),
            "text_color": m.group("text_color"), "font_family": WORD_FAMILY[m.group("family")],
            "font_style": m.group("style") or "regular", "shapes": _shapes(m.group("shapes") or ""),
        }
    # Best effort for free-form prompts.
    out: dict = {"grammar": False, "shapes": []}
    t = re.search(r"\"(.*)\"", cap, re.DOTALL)
    if t:
        out["text"] = t.group(1)
    low = cap.lower()
    fam = re.search(r"\b(sans-serif|serif|monospace)\b", low)
    if fam:
        out["font_family"] = WORD_FAMILY[fam.group(1)]
    out["shapes"] = _shapes(low)
    return out
