"""Sample a scene (the full metadata of one sample) from a per-sample RNG seeded by (seed, split, index)."""
from __future__ import annotations

import hashlib
import random

from xomni.data.caption import make_caption
from xomni.data.fonts import font_spec
from xomni.data.palette import PALETTE, contrast_ratio, readable_pairs
from xomni.data.presets import Preset
from xomni.data.render import fit_font_size, place_text
from xomni.data.signtext import sample_sign_text
from xomni.data.words import split_words
from xomni.errors import XomniError

MIN_SHAPE_CONTRAST = 2.0   # shapes must stand out from the background


def sample_rng(seed: int, split: str, index: int) -> random.Random:
    """Independent RNG per sample: sample i is the same whatever N is and whichever process renders it."""
    h = hashlib.sha256(f"xomni-synth/{seed}/{split}/{index}".encode()).digest()
    return random.Random(int.from_bytes(h[:16], "big"))


def _number(rng: random.Random) -> str:
    n = str(rng.choice([rng.randint(1, 9), rng.randint(10, 99), rng.randint(100, 999), rng.randint(1000, 2099)]))
    r = rng.random()
    return "$" + n if r < 0.15 else (n + "%" if r < 0.25 else n)


def _apply_case(tokens: list[str], case: str) -> list[str]:
    if case == "upper":
        return [t.upper() for t in tokens]
    if case == "title":
        return [t[:1].upper() + t[1:] for t in tokens]
    return tokens


def sample_text(rng: random.Random, words: tuple[str, ...], p: Preset) -> tuple[str, str]:
    """1-3 tokens (words or numbers) with optional punctuation, total length <= p.max_chars; returns (text, case)."""
    case = rng.choice(p.cases)
    for _ in range(1000):
        n = rng.choices(range(1, len(p.n_words) + 1), weights=p.n_words)[0]
        tokens = [_number(rng) if rng.random() < p.p_number else rng.choice(words) for _ in range(n)]
        tokens = _apply_case(tokens, case)
        if n >= 2 and rng.random() < p.p_comma:
            tokens[0] += ","
        if n >= 2 and rng.random() < p.p_amp:
            tokens.insert(n - 1, "&")
        if rng.random() < p.p_end_punct:
            tokens[-1] += rng.choice("!?.")
        text = " ".join(tokens)
        if len(text) <= p.max_chars:
            return text, case
    raise XomniError(f"preset {p.name}: cannot sample a text of at most {p.max_chars} characters")


def sample_scene(p: Preset, seed: int, split: str, index: int) -> dict:
    """Metadata of sample `index` of `split` (everything `render.render` needs, plus caption and boxes)."""
    rng = sample_rng(seed, split, index)
    words = split_words(split)
    pairs = readable_pairs(p.colors, p.min_contrast)
    font = rng.choice(p.fonts)
    text_color, background = rng.choice(pairs)
    noun = rng.choice(p.nouns)
    target = rng.randint(*p.font_size)
    kind = None
    for _ in range(1000):
        if p.text_mix:  # a signage text mix (xomni.data.signtext) instead of the word/number grammar
            text, case, kind = sample_sign_text(rng, split, p)
        else:
            text, case = sample_text(rng, words, p)
        size = fit_font_size(font, text, target, p.min_font_size, p.text_box)
        if size is not None:
            break
    else:
        raise XomniError(f"preset {p.name}: texts do not fit {p.text_box} in {font} at {p.min_font_size} px")
    origin, text_box = place_text(font, size, text, p.text_box)
    shapes = []
    if rng.random() < p.p_shapes:
        count = rng.randint(1, p.max_shapes)
        positions = sorted(rng.sample(sorted(p.shape_centers), count), key=list(p.shape_centers).index)
        shape_colors = [c for c in p.colors if c != background
                        and contrast_ratio(PALETTE[c], PALETTE[background]) >= MIN_SHAPE_CONTRAST]
        for pos in positions:
            s = rng.randint(*p.shape_size)
            cx, cy = p.shape_centers[pos]
            color = rng.choice(shape_colors)
            shapes.append({"kind": rng.choice(p.shape_kinds), "color": color, "color_rgb": list(PALETTE[color]),
                           "position": pos, "box": [cx - s // 2, cy - s // 2, cx - s // 2 + s, cy - s // 2 + s]})
    fs = font_spec(font)
    meta = {
        "key": f"{split}-{index:06d}", "split": split, "preset": p.name,
        "text": text, "case": case, "noun": noun,
        "background": background, "background_rgb": list(PALETTE[background]),
        "text_color": text_color, "text_color_rgb": list(PALETTE[text_color]),
        "font": font, "font_family": fs.family, "font_style": fs.style, "font_size": size,
        "text_origin": list(origin), "text_box": text_box,
        "shapes": shapes, "width": p.width, "height": p.height,
    }
    if kind is not None:
        meta["text_kind"] = kind
    meta["caption"] = make_caption(meta)
    return meta
