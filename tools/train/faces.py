"""Face boxes and the upstream MiniFASNet crop geometry, shared by training and evaluation.

* Face detector: Ultra-Light-Fast-Generic-Face-Detector-1MB RFB-320 (ONNX, MIT), the detector the
  shared golden vectors were made with: input 1x3x240x320 RGB, (x - 127) / 128; outputs
  ``scores`` (1, N, 2) and ``boxes`` (1, N, 4, normalised x1 y1 x2 y2). The primary face is the
  highest-scoring box.
* Crop: the face box is scaled around its centre (2.7 for MiniFASNetV2), the scale is limited so
  the window fits the image, the window is shifted (not clipped) back inside the image, and the
  integer window is resized to 80x80 with bilinear interpolation (cv2.INTER_LINEAR), exactly as
  upstream ``CropImage`` does.
"""

from __future__ import annotations

import os
from typing import Optional, Sequence, Tuple

import cv2
import numpy as np

Box = Tuple[int, int, int, int]  # x, y, w, h in pixels

DEFAULT_DETECTOR = "models/upstream/ultralight/version-RFB-320.onnx"  # relative to shared/


class UltraLight:
    def __init__(self, onnx_path: str, threshold: float = 0.7):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        self.sess = ort.InferenceSession(onnx_path, opts, providers=["CPUExecutionProvider"])
        self.input = self.sess.get_inputs()[0].name
        self.threshold = threshold

    def detect(self, bgr: np.ndarray) -> Optional[Tuple[Box, float]]:
        """Highest-scoring face as (x, y, w, h) in image pixels, or None."""
        h, w = bgr.shape[:2]
        rgb = cv2.cvtColor(cv2.resize(bgr, (320, 240)), cv2.COLOR_BGR2RGB).astype(np.float32)
        x = ((rgb - 127.0) / 128.0).transpose(2, 0, 1)[None]
        scores, boxes = self.sess.run(None, {self.input: x})
        s = scores[0, :, 1]
        i = int(np.argmax(s))
        if s[i] < self.threshold:
            return None
        # Box convention of the golden vectors: x = int(x1), w = int(x2 - x1 + 1) in pixels.
        x1, y1, x2, y2 = (boxes[0, i] * np.array([w, h, w, h], np.float32)).tolist()
        x1, y1 = max(0.0, x1), max(0.0, y1)
        x2, y2 = min(float(w - 1), x2), min(float(h - 1), y2)
        if x2 - x1 < 2 or y2 - y1 < 2:
            return None
        return (int(x1), int(y1), int(x2 - x1 + 1), int(y2 - y1 + 1)), float(s[i])


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
