"""Images <-> tensors for the tokenizer and the decoder, and the in-memory training set built from a dataset.

- `images_to_tensor(images, (H, W))` -> images_B3HW in [-1, 1]; other sizes are resized (bicubic) with a one-line
  warning on stderr when the aspect ratio differs (once per distinct source size).
- `tensor_to_pil(images_B3HW)` -> list of RGB PIL images.
- `load_split(path, split, size, n)` -> `ImageSet` (uint8 images + metadata), unreadable images skipped and counted.
- `input_images(path)` lists image files of a file or folder without metadata (for `xomni reconstruct`).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from xomni.data.io import IMAGE_EXTS, open_dataset
from xomni.errors import XomniError
from xomni.utils import log

ASPECT_TOL = 0.01


class ResizeWarner:
    """Warns once per distinct source size whose aspect ratio differs from the target's."""

    def __init__(self):
        self.seen: set[tuple[int, int]] = set()

    def __call__(self, src_wh: tuple[int, int], dst_hw: tuple[int, int]) -> None:
        if src_wh in self.seen:
            return
        self.seen.add(src_wh)
        a_src, a_dst = src_wh[0] / src_wh[1], dst_hw[1] / dst_hw[0]
        if abs(a_src / a_dst - 1) > ASPECT_TOL:
            log(f"warning: images of {src_wh[0]}x{src_wh[1]} (W x H, aspect {a_src:.2f}) are resized to "
                f"{dst_hw[1]}x{dst_hw[0]} (aspect {a_dst:.2f}): the aspect ratio changes")


def pil_to_uint8(img, size_hw: tuple[int, int], warner: ResizeWarner | None = None) -> np.ndarray:
    """RGB PIL image -> H x W x 3 uint8 at `size_hw` (resized when needed)."""
    from PIL import Image
    img = img.convert("RGB") if img.mode != "RGB" else img
    h, w = size_hw
    if img.size != (w, h):
        (warner or ResizeWarner())(img.size, (h, w))
        img = img.resize((w, h), Image.BICUBIC)
    return np.asarray(img, dtype=np.uint8)


def uint8_to_tensor(arr_BHW3: np.ndarray | torch.Tensor) -> torch.Tensor:
    x = torch.as_tensor(np.asarray(arr_BHW3))
    return x.permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def images_to_tensor(images, size_hw, warner: ResizeWarner | None = None) -> torch.Tensor:
    """List of PIL images -> images_B3HW float in [-1, 1] at `size_hw`."""
    warner = warner or ResizeWarner()
    return uint8_to_tensor(np.stack([pil_to_uint8(im, tuple(size_hw), warner) for im in images]))


def tensor_to_pil(images_B3HW: torch.Tensor) -> list:
    from PIL import Image
    arr = ((images_B3HW.detach().float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(a, "RGB") for a in arr]


class ImageSet:
    """Readable samples of a dataset split, decoded once: `images` (N x H x W x 3 uint8) and `metas`."""

    def __init__(self, images: np.ndarray, metas: list[dict], skipped: int = 0, source: str = ""):
        self.images, self.metas, self.skipped, self.source = images, metas, skipped, source

    def __len__(self):
        return len(self.metas)

    def tensor(self, idx) -> torch.Tensor:
        return uint8_to_tensor(self.images[idx])


def load_split(path: str, split: str | None, size_hw, n: int = 0, desc: str = "") -> ImageSet:
    """Decode the first `n` (0 = all) samples of `split`; unreadable images are skipped and counted."""
    from tqdm import tqdm
    ds = open_dataset(path, split)
    total = len(ds) if n <= 0 else min(n, len(ds))
    if total == 0:
        raise XomniError(f"no samples in {path} (split {split})")
    warner = ResizeWarner()
    h, w = size_hw
    images = np.empty((total, h, w, 3), dtype=np.uint8)
    metas, skipped, first_err = [], 0, None
    for i in tqdm(range(total), desc=desc or f"load {split}", file=__import__("sys").stderr, leave=False,
                  mininterval=2.0):
        s = ds[i]
        if s.image is None:
            skipped += 1
            first_err = first_err or s.error
            continue
        images[len(metas)] = pil_to_uint8(s.image, (h, w), warner)
        meta = dict(s.meta)
        meta.setdefault("key", s.key)
        metas.append(meta)
    if skipped:
        log(f"skipped {skipped} unreadable image(s) in {path} ({split}); first: {first_err}")
    if not metas:
        raise XomniError(f"no readable images in {path} (split {split})")
    return ImageSet(images[:len(metas)], metas, skipped, str(path))


def input_images(path: str | Path) -> list[Path]:
    """Image files given as one file or a folder (sorted); XomniError when there are none."""
    p = Path(path)
    if p.is_file():
        return [p]
    if not p.is_dir():
        raise XomniError(f"not found: {p}")
    files = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower().lstrip(".") in IMAGE_EXTS)
    if not files:
        raise XomniError(f"no images in {p} (extensions: {', '.join(IMAGE_EXTS)})")
    return files
