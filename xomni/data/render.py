"""Draw a scene (a metadata dict, see docs/INTERNALS.md) into an RGB image. Pure function of the metadata.

Shapes and rounded frames are drawn on a 4x supersampled mask and downsampled (antialiased, deterministic).
"""
from __future__ import annotations

import math

from PIL import Image, ImageDraw

from xomni.data.fonts import load_font

SS = 4  # supersampling factor for shapes and rounded frames


def ink_bbox(font_id: str, size: int, text: str) -> tuple[int, int, int, int]:
    """Ink bounding box of `text` drawn at origin (0, 0) with the default left-ascender anchor."""
    return load_font(font_id, size).getbbox(text)


def fit_font_size(font_id: str, text: str, target: int, min_size: int, box) -> int | None:
    """Largest size <= target whose ink box fits `box` (x0, y0, x1, y1); None when even min_size does not fit."""
    bw, bh = box[2] - box[0], box[3] - box[1]
    for size in range(target, min_size - 1, -1):
        x0, y0, x1, y1 = ink_bbox(font_id, size, text)
        if x1 - x0 <= bw and y1 - y0 <= bh:
            return size
    return None


def place_text(font_id: str, size: int, text: str, box) -> tuple[tuple[int, int], list[int]]:
    """Centre the ink box of `text` in `box`; returns (draw origin, ink box [x0, y0, x1, y1])."""
    bx0, by0, bx1, by1 = ink_bbox(font_id, size, text)
    w, h = bx1 - bx0, by1 - by0
    x = box[0] + (box[2] - box[0] - w) // 2 - bx0
    y = box[1] + (box[3] - box[1] - h) // 2 - by0
    return (x, y), [x + bx0, y + by0, x + bx1, y + by1]


def _shape_polygon(kind: str, s: float) -> list[tuple[float, float]] | None:
    """Polygon of a shape inside an s x s box (supersampled coordinates); None for circle/square."""
    if kind == "triangle":
        return [(s / 2, 0.0), (s, s * 0.9), (0.0, s * 0.9)]
    if kind == "star":
        pts = []
        for i in range(10):
            r = s / 2 if i % 2 == 0 else s * 0.21
            a = -math.pi / 2 + i * math.pi / 5
            pts.append((s / 2 + r * math.cos(a), s * 0.55 + r * math.sin(a)))
        return pts
    return None


def draw_shape(img: Image.Image, kind: str, box, rgb) -> None:
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    s = w * SS
    mask = Image.new("L", (s, h * SS), 0)
    d = ImageDraw.Draw(mask)
    if kind == "circle":
        d.ellipse((0, 0, s - 1, s - 1), fill=255)
    elif kind == "square":
        m = SS  # a square looks heavier than a circle of the same box: inset it by 1 px
        d.rectangle((m, m, s - 1 - m, s - 1 - m), fill=255)
    else:
        d.polygon(_shape_polygon(kind, s - 1), fill=255)
    mask = mask.resize((w, h), Image.LANCZOS)
    img.paste(Image.new("RGB", (w, h), tuple(rgb)), (x0, y0), mask)


def draw_frame(img: Image.Image, noun: str, rgb) -> None:
    """Frame style by noun: poster none, sign square border, label rounded border, banner top+bottom stripes."""
    W, H = img.size
    rgb = tuple(rgb)
    d = ImageDraw.Draw(img)
    if noun == "sign":
        d.rectangle((0, 0, W - 1, H - 1), outline=rgb, width=2)
    elif noun == "banner":
        d.rectangle((0, 0, W - 1, 3), fill=rgb)
        d.rectangle((0, H - 4, W - 1, H - 1), fill=rgb)
    elif noun == "label":
        mask = Image.new("L", (W * SS, H * SS), 0)
        ImageDraw.Draw(mask).rounded_rectangle((1 * SS, 1 * SS, (W - 1) * SS - 1, (H - 1) * SS - 1),
                                               radius=9 * SS, outline=255, width=2 * SS)
        img.paste(Image.new("RGB", (W, H), rgb), (0, 0), mask.resize((W, H), Image.LANCZOS))


def render(meta: dict) -> Image.Image:
    """Render the image described by `meta` (keys: width, height, background_rgb, noun, text_color_rgb, shapes,
    text, font, font_size, text_origin)."""
    img = Image.new("RGB", (meta["width"], meta["height"]), tuple(meta["background_rgb"]))
    draw_frame(img, meta["noun"], meta["text_color_rgb"])
    for sh in meta.get("shapes", []):
        draw_shape(img, sh["kind"], sh["box"], sh["color_rgb"])
    font = load_font(meta["font"], meta["font_size"])
    ImageDraw.Draw(img).text(tuple(meta["text_origin"]), meta["text"], font=font, fill=tuple(meta["text_color_rgb"]))
    return img
