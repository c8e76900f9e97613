"""Column credit for the OCR reward: each token column gets the correctness of the characters drawn there, instead
of every token getting the rollout's one reward (the tokens of characters read right in every sample of a group
then get advantage 0, which takes noise out of the policy gradient). The steps: `char_correct` (align the reading
with the target), `char_spans` (where the renderer draws each character), `column_rewards`, `column_advantages`;
docs/RL.md explains each.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from xomni.data.fonts import load_font
from xomni.data.presets import get_preset
from xomni.data.render import fit_font_size, place_text
from xomni.errors import XomniError
from xomni.metrics.textmetrics import edit_table, normalize_ws


def char_correct(pred: str, target: str, confs: list[float] | None = None) -> list[float]:
    """Per character of `target` (whitespace-normalised, case-sensitive): 1.0 when the minimal-edit alignment
    reads it as itself, else 0.0. An inserted character in the reading marks its target neighbour (the next one,
    or the last at the end) wrong. `confs` (one per character of the already normalised `pred`, as
    rapidocr_batch gives them): a character read right counts its reading's probability instead of 1.0."""
    p, t = normalize_ws(pred), normalize_ws(target)
    if confs is not None and len(confs) != len(p):
        raise XomniError(f"char_correct: {len(confs)} confidences for a reading of {len(p)} characters")
    n, m = len(t), len(p)
    if n == 0:
        return []
    D = edit_table(t, p)
    ok = [1.0] * n
    i, j = n, m
    while i > 0 or j > 0:
        if i > 0 and j > 0 and D[i][j] == D[i - 1][j - 1] + (t[i - 1] != p[j - 1]):
            if t[i - 1] != p[j - 1]:
                ok[i - 1] = 0.0
            elif confs is not None:
                ok[i - 1] = min(ok[i - 1], float(confs[j - 1]))
            i, j = i - 1, j - 1
        elif i > 0 and D[i][j] == D[i - 1][j] + 1:  # target char dropped
            ok[i - 1] = 0.0
            i -= 1
        else:  # spurious char inserted before target char i (0-based), or after the last one
            ok[min(i, n - 1)] = 0.0
            j -= 1
    return ok


def check_layout_preset(preset: str) -> None:
    """Column credit recomputes where the renderer put each character from the text alone: that needs a preset
    with one font and one target size (mini). XomniError otherwise."""
    p = get_preset(preset)
    if len(p.fonts) != 1 or min(p.font_size) != max(p.font_size):
        raise XomniError(f"credit=column needs a preset whose text layout follows from the text alone (one font, "
                         f"one size); preset {preset!r} has {len(p.fonts)} fonts and sizes {tuple(p.font_size)}")


@lru_cache(maxsize=65536)
def char_spans(text: str, preset: str) -> tuple[tuple[float, float], ...]:
    """x-range [x0, x1) in pixels of each character of `text` as the preset's renderer lays it out (its first
    font, target size shrunk to fit the text box, centred). Empty when the text does not fit at all."""
    p = get_preset(preset)
    font_id = p.fonts[0]
    size = fit_font_size(font_id, text, max(p.font_size), p.min_font_size, p.text_box)
    if size is None:
        return ()
    (ox, _), _box = place_text(font_id, size, text, p.text_box)
    font = load_font(font_id, size)
    edges = [ox + font.getlength(text[:k]) for k in range(len(text) + 1)]
    return tuple((edges[k], edges[k + 1]) for k in range(len(text)))


def column_rewards(preds: list[str], targets: list[str], preset: str, width_px: int, grid_w: int,
                   whole: list[float], levels: int = 1, confs: list | None = None) -> np.ndarray:
    """B x grid_w rewards: per token column, the overlap-weighted correctness of the target characters drawn
    there; `whole[i]` (the rollout's whole-string reward) where no character overlaps the column. With `levels`
    codes per patch (side by side in the row, xomni.tokenizer levels) a patch's columns share its reward.
    `confs[i]`: per-character probabilities of reading i (`char_correct`)."""
    n = grid_w // levels  # patch columns
    col = width_px / n
    out = np.empty((len(preds), n), dtype=np.float64)
    for i, (pr, tg) in enumerate(zip(preds, targets)):
        t = normalize_ws(tg)
        spans = char_spans(t, preset) if t else ()
        ok = char_correct(pr, t, None if confs is None else confs[i]) if spans else []
        for c in range(n):
            a, b = c * col, (c + 1) * col
            w = [max(0.0, min(b, x1) - max(a, x0)) for x0, x1 in spans]
            s = sum(w)
            out[i, c] = sum(wk * okk for wk, okk in zip(w, ok)) / s if s > 0 else whole[i]
    return np.repeat(out, levels, axis=1)


def column_advantages(col_r_BW: np.ndarray, whole_B: list[float], G: int, h: int, eps: float = 1e-4,
                      scale: bool = True) -> torch.Tensor:
    """Column rewards of P groups x G rollouts -> token advantages B x (h * w): centred per column within each
    group, divided (with `scale`) by the group's population std of the whole-string reward + eps."""
    B, W = col_r_BW.shape
    if G < 1 or B % G:
        raise XomniError(f"column credit: {B} rollouts are not whole groups of {G}")
    r = torch.as_tensor(col_r_BW, dtype=torch.float64).view(B // G, G, W)
    a = r - r.mean(1, keepdim=True)
    if scale:  # two different single-letter misreads score the same whole-string reward: fall back to the
        s = torch.maximum(torch.as_tensor(whole_B, dtype=torch.float64).view(B // G, G).std(1, unbiased=False),
                          a.pow(2).mean((1, 2)).sqrt())  # centred columns' own spread
        a = a / (s[:, None, None] + eps)
    return a.reshape(B, 1, W).expand(B, h, W).reshape(B, h * W).float()


class ColumnCredit:
    """Token advantages for a GRPO batch with the OCR reward credited per column (see the module doc); every
    other reward stays per rollout. token reward r_ic = (w_ocr * column_ocr_ic + sum_k w_k r_k,i) / sum(w), then
    `column_advantages` (centred per column within each group, scaled by the group's std of the total reward)."""

    def __init__(self, weights: dict, preset: str, eps: float = 1e-4, scale: bool = True, levels: int = 1):
        check_layout_preset(preset)
        self.weights, self.preset, self.eps, self.scale = dict(weights), preset, eps, scale
        self.levels = levels  # codes per patch (the image tokenizer's `levels`)
        self.wsum = sum(float(w) for w in self.weights.values())
        self.width_px = get_preset(preset).width

    def __call__(self, total: list[float], comps: dict, reads: list[str], targets: list[str], G: int,
                 grid: tuple[int, int], confs: list | None = None) -> torch.Tensor:
        """`confs`: the readings' per-character probabilities (RewardSet.details["ocr_confs"] with
        ocr_confidence), None for plain correctness."""
        h, w = grid
        ocr = np.asarray(comps["ocr"], dtype=np.float64)
        col = column_rewards(reads, targets, self.preset, self.width_px, w, ocr.tolist(), self.levels, confs)
        rest = np.asarray(total, dtype=np.float64) - float(self.weights["ocr"]) * ocr / self.wsum
        tok = float(self.weights["ocr"]) * col / self.wsum + rest[:, None]
        return column_advantages(tok, total, G, h, self.eps, self.scale)
