#!/usr/bin/env python3
"""PAD v4: recapture augmentation — synthetic print and screen attacks made from real faces.

The v3 heads forget prints when no print source is trained on (its NUAA fold), and every
trainable attack source is a screen replay of a few people. This script renders, from every real
image in the embedding cache, one simulated *print* and one simulated *screen replay* of the whole
image (so the runtime crop then resizes the artefacts exactly as it would a real recapture), crops
it as the runtime does (upstream CropImage, V2 at 2.7, V1SE at 4.0) and caches the upstream
trunks' 512-d embeddings, labelled print (0) and screen (2). `v3_head.py --recapture FILE` adds
them to the training set of every model whose training sources contain that real image.

What is simulated (all parameters drawn per image from a seeded generator):
- print: ink cannot reach black or full saturation (black lift 10-35, contrast 0.55-0.85,
  saturation 0.6-0.95), paper tint (blue channel 0.88-0.98), optical blur (sigma 0.4-1.2 % of the
  face width), paper grain (low-frequency multiplicative 2-6 % and fine noise), JPEG 60-90.
- screen: display gamma 0.8-1.25, backlight black level 5-25, blue cast, a moire pattern (two
  crossed gratings, period 2.5-7 px of the source image, amplitude 3-10 levels), RGB sub-pixel
  column stripes (amplitude 2-6), slight blur, JPEG 60-90.
It is a rendering of the known cues, not of any test source; its parameters were fixed before any
figure was computed with it (notes: models/veriframe-pad-v3.md, v4 section).

    python tools/train/v4_recapture.py --feats /tmp/v3/feats.npz --boxes /tmp/v3/boxes-all.json \
        --out /tmp/v4/recapture.npz
Output arrays: idx (M,) index into the cache's images (reals only); feats (M, 2 nets, 2 kinds
[print, screen], 512) float32.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import cv2
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import faces  # noqa: E402
from v3_features import FEATURE, NETS, session  # noqa: E402


def jpeg(img: np.ndarray, q: int) -> np.ndarray:
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, int(q)])
    return cv2.imdecode(buf, cv2.IMREAD_COLOR) if ok else img


def face_width(img: np.ndarray, box) -> float:
    return float(box[2]) if box is not None else float(min(img.shape[:2]))


def print_attack(img: np.ndarray, box, rng: np.random.Generator) -> np.ndarray:
    h, w = img.shape[:2]
    x = img.astype(np.float32)
    hsv = cv2.cvtColor(np.clip(x, 0, 255).astype(np.uint8), cv2.COLOR_BGR2HSV).astype(np.float32)
    hsv[..., 1] *= rng.uniform(0.6, 0.95)
    x = cv2.cvtColor(np.clip(hsv, 0, 255).astype(np.uint8), cv2.COLOR_HSV2BGR).astype(np.float32)
    m = x.mean()
    x = m + (x - m) * rng.uniform(0.55, 0.85)
    lift = rng.uniform(10, 35)
    x = lift + x * (255 - lift) / 255
    x *= np.array([rng.uniform(0.88, 0.98), rng.uniform(0.96, 1.0), 1.0], np.float32)
    sigma = max(0.3, face_width(img, box) * rng.uniform(0.004, 0.012))
    x = cv2.GaussianBlur(x, (0, 0), sigma)
    low = cv2.resize(rng.normal(0, 1, (max(2, h // 16), max(2, w // 16))).astype(np.float32), (w, h))
    x *= 1 + low[..., None] * rng.uniform(0.02, 0.06)
    x += rng.normal(0, rng.uniform(1, 4), x.shape).astype(np.float32)
    return jpeg(np.clip(x, 0, 255).astype(np.uint8), rng.integers(60, 91))


def screen_attack(img: np.ndarray, box, rng: np.random.Generator) -> np.ndarray:
    h, w = img.shape[:2]
    x = 255 * (img.astype(np.float32) / 255) ** rng.uniform(0.8, 1.25)
    black = rng.uniform(5, 25)
    x = black + x * (255 - black) / 255
    x *= np.array([rng.uniform(1.0, 1.08), 1.0, rng.uniform(0.92, 1.0)], np.float32)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    pattern = np.zeros((h, w), np.float32)
    for _ in range(2):
        period = rng.uniform(2.5, 7.0)
        theta = rng.uniform(0, np.pi)
        pattern += np.sin(2 * np.pi * (xx * np.cos(theta) + yy * np.sin(theta)) / period + rng.uniform(0, 2 * np.pi))
    x += (pattern * rng.uniform(3, 10) / 2)[..., None]
    stripes = np.zeros((1, w, 3), np.float32)
    amp = rng.uniform(2, 6)
    for c in range(3):  # BGR sub-pixel columns: R, G, B lit in turn
        stripes[0, (2 - c)::3, c] = amp
    x += stripes - amp / 3
    x = cv2.GaussianBlur(x, (0, 0), rng.uniform(0.3, 1.0))
    return jpeg(np.clip(x, 0, 255).astype(np.uint8), rng.integers(60, 91))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", default="../shared")
    ap.add_argument("--feats", required=True, help="the v3_features.py cache (its image list is reused)")
    ap.add_argument("--boxes", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=20261204)
    ap.add_argument("--save-examples", help="directory: write the first few rendered images (for a look)")
    a = ap.parse_args()
    z = np.load(a.feats)
    idx = np.flatnonzero(z["label"] == 1)
    paths = z["path"]
    boxes = json.load(open(a.boxes))
    up = os.path.join(a.shared, "models/upstream/minifasnet")
    sessions = [(session(os.path.join(up, f)), scale) for f, scale in NETS]
    rng = np.random.default_rng(a.seed)
    feats = np.zeros((len(idx), len(NETS), 2, 512), np.float32)
    t0 = time.time()
    for k, i in enumerate(idx):
        rel = str(paths[i])
        img = faces.read_bgr(os.path.join(a.shared, rel))
        box = boxes[rel]
        fakes = (print_attack(img, box, rng), screen_attack(img, box, rng))
        if a.save_examples and k < 12:
            os.makedirs(a.save_examples, exist_ok=True)
            for name, f in zip(("print", "screen"), fakes):
                cv2.imwrite(os.path.join(a.save_examples, f"{k:02d}-{name}.jpg"), f)
        for j, (sess, scale) in enumerate(sessions):
            crops = np.stack([faces.crop(f, box, scale) for f in fakes]).astype(np.float32).transpose(0, 3, 1, 2)
            feats[k, j] = np.concatenate([sess.run([FEATURE], {"input": c[None]})[0] for c in crops])
        if k % 1000 == 0:
            print(f"{k}/{len(idx)} {time.time() - t0:.0f} s", file=sys.stderr)
    np.savez_compressed(a.out, idx=idx, feats=feats)
    print(f"wrote {a.out}: {len(idx)} reals x 2 attacks in {time.time() - t0:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
