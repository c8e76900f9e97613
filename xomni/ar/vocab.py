"""Unified vocabulary layout and sequence format (X-Omni style).

Ids live in one space:
    [0, n_text)                      text tokens of the text tokenizer (bytes + its specials for the default)
    SOM, EOM, IMG                    start/end of image, "image follows"
    SIZE_1 .. SIZE_{max_grid}        grid height / width as tokens
    [image_offset, image_offset + K) image codes (own embedding table and output head)

Generation (text -> image):   <bos> prompt <SOM> <SIZE_h> <SIZE_w> <IMG> t_1 ... t_{h*w} <EOM>
Captioning (image -> text):   <bos> <SOM> <SIZE_h> <SIZE_w> <IMG> t_1 ... t_{h*w} <EOM> caption <eos>
The unconditional prompt for classifier-free guidance is the empty caption.

With residual codes (`levels` = L > 1 codes per patch, side by side in the token grid) the sequence is coarse to
fine: every patch's level-0 code in raster order, then every patch's level-1 code, and so on. Level 0 alone is a
whole image sketch, so the fine levels are written knowing the whole sketch. Captioning may read fewer levels than
are written (`read_levels`): its image prefix then carries the first `read_levels` codes of every patch, coarse to
fine, with the header's width that of the grid it reads.
"""
from __future__ import annotations

import dataclasses

import torch


def training_length(text_tokens: int, h: int, w: int) -> int:
    """Context a training pair needs: the longer format (captioning) with `text_tokens` of caption: <bos>, the
    4-token image header, h*w codes, <EOM>, the caption, <eos>."""
    return 1 + 4 + h * w + 1 + text_tokens + 1


def generation_length(prompt_tokens: int, h: int, w: int) -> int:
    """Context that drawing an h x w grid after a prompt of `prompt_tokens` needs: <bos>, the prompt, the 4-token
    image header and h*w codes (the closing <EOM> is never fed). The longest prompt a model takes is
    max_seq_len - generation_length(0, h, w)."""
    return 1 + prompt_tokens + 4 + h * w


@dataclasses.dataclass(frozen=True)
class VocabLayout:
    n_text: int           # text tokenizer vocabulary (incl. its pad/bos/eos)
    image_vocab: int      # image token vocabulary (levels x K)
    max_grid: int = 64    # largest h or w
    bos_id: int = 0
    eos_id: int = 0
    pad_id: int = 0
    levels: int = 1       # codes per patch (side by side in the token grid)
    read_levels: int = 0  # codes per patch that captioning reads (0 = all)

    def image_tokens(self, codes: torch.Tensor, levels: int | None = None) -> torch.Tensor:
        """Token grid(s) [..., h, w] -> sequence order [..., h*w] (coarse to fine when levels > 1)."""
        *lead, h, w = codes.shape
        L = self.levels if levels is None else levels
        if L == 1:
            return codes.reshape(*lead, h * w)
        x = codes.reshape(-1, h, w // L, L).permute(0, 3, 1, 2)
        return x.reshape(*lead, h * w)

    def image_grid(self, seq: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """Inverse of `image_tokens`: [..., h*w] in sequence order -> [..., h, w] token grid."""
        *lead, n = seq.shape
        L = self.levels
        if L == 1:
            return seq.reshape(*lead, h, w)
        x = seq.reshape(-1, L, h, w // L).permute(0, 2, 3, 1)
        return x.reshape(*lead, h, w)

    @property
    def som(self) -> int:
        return self.n_text

    @property
    def eom(self) -> int:
        return self.n_text + 1

    @property
    def img(self) -> int:
        return self.n_text + 2

    def size_token(self, k: int) -> int:
        if not 1 <= k <= self.max_grid:
            raise ValueError(f"grid size {k} outside 1..{self.max_grid}")
        return self.n_text + 2 + k

    @property
    def n_textside(self) -> int:
        """Size of the text-side table/head: text tokens + specials + size tokens."""
        return self.n_text + 3 + self.max_grid

    @property
    def image_offset(self) -> int:
        return self.n_textside

    @property
    def total(self) -> int:
        return self.n_textside + self.image_vocab

    def image_header(self, h: int, w: int) -> list[int]:
        return [self.som, self.size_token(h), self.size_token(w), self.img]

    def t2i_sequence(self, prompt_ids: list[int], codes: torch.Tensor) -> tuple[list[int], int]:
        """Full training sequence and the index where image tokens start."""
        h, w = codes.shape
        head = [self.bos_id] + list(prompt_ids) + self.image_header(h, w)
        img = (self.image_tokens(codes) + self.image_offset).tolist()
        return head + img + [self.eom], len(head)

    def read_grid(self, codes: torch.Tensor) -> torch.Tensor:
        """The part of an h x w token grid that captioning reads: every patch's first `read_levels` codes."""
        r, L = self.read_levels, self.levels
        if r in (0, L):
            return codes
        h, w = codes.shape
        return codes.reshape(h, w // L, L)[..., :r].reshape(h, w // L * r)

    def i2t_prefix(self, codes: torch.Tensor) -> list[int]:
        """What a caption follows: bos, the image header, the read grid's tokens, eom (training and captioning)."""
        codes = self.read_grid(codes)
        h, w = codes.shape
        img = (self.image_tokens(codes, self.read_levels or self.levels) + self.image_offset).tolist()
        return [self.bos_id] + self.image_header(h, w) + img + [self.eom]

    def i2t_sequence(self, codes: torch.Tensor, caption_ids: list[int]) -> tuple[list[int], int]:
        """Captioning sequence and the index where the caption starts."""
        head = self.i2t_prefix(codes)
        return head + list(caption_ids) + [self.eos_id], len(head)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
