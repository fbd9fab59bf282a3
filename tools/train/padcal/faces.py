"""The runtime's crop, for the caches: the face box (from `veriframe faces`) scaled around its centre
(2.7 for MiniFASNetV2, 4.0 for V1SE), the scale limited so the window fits the image, the window
shifted (not clipped) back inside the image, and the integer window resized to 80x80 with bilinear
interpolation (cv2.INTER_LINEAR), exactly as upstream ``CropImage`` and Veriframe's runtime do.
"""

from __future__ import annotations

import os
from typing import Optional, Sequence, Tuple

import cv2
import numpy as np

Box = Tuple[int, int, int, int]  # x, y, w, h in pixels


def crop_window(src_w: int, src_h: int, box: Sequence[float], scale: float,
                shift: Tuple[float, float] = (0.0, 0.0)) -> Box:
    """Upstream crop window (x1, y1, x2, y2 inclusive) for a face box scaled by ``scale``.

    ``shift`` moves the centre by a fraction of the box size (0 at inference; jitter in training).
    """
    x, y, bw, bh = box
    scale = min((src_h - 1) / bh, min((src_w - 1) / bw, scale))
    nw, nh = bw * scale, bh * scale
    cx, cy = bw / 2 + x + shift[0] * bw, bh / 2 + y + shift[1] * bh
    x1, y1, x2, y2 = cx - nw / 2, cy - nh / 2, cx + nw / 2, cy + nh / 2
    if x1 < 0:
        x2 -= x1
        x1 = 0
    if y1 < 0:
        y2 -= y1
        y1 = 0
    if x2 > src_w - 1:
        x1 -= x2 - src_w + 1
        x2 = src_w - 1
    if y2 > src_h - 1:
        y1 -= y2 - src_h + 1
        y2 = src_h - 1
    return int(x1), int(y1), int(x2), int(y2)


def crop(bgr: np.ndarray, box: Optional[Sequence[float]], scale: float = 2.7, size: int = 80,
         shift: Tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """80x80 BGR uint8 crop. ``box=None`` means the whole image is the face region."""
    h, w = bgr.shape[:2]
    if box is None:
        return cv2.resize(bgr, (size, size))
    x1, y1, x2, y2 = crop_window(w, h, box, scale, shift)
    return cv2.resize(bgr[max(0, y1):y2 + 1, max(0, x1):x2 + 1], (size, size))


def read_bgr(path: str) -> Optional[np.ndarray]:
    img = cv2.imread(path, cv2.IMREAD_COLOR)
    return img


IMAGE_EXT = (".jpg", ".jpeg", ".png", ".bmp")


def list_images(root: str):
    out = []
    for dirpath, _, files in os.walk(root):
        for f in files:
            if f.lower().endswith(IMAGE_EXT):
                out.append(os.path.join(dirpath, f))
    return sorted(out)
