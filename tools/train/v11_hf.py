#!/usr/bin/env python3
"""PAD v11 addendum 3: seven hand-crafted recapture cues per image, in v3_features' image order.

On the face box (scale 1.0, the upstream crop window clamped to the image) resized to 128 x 128
with INTER_AREA: the share of the grayscale spectrum's energy (DC removed) in three radial bands
(0.125-0.25, 0.25-0.5, > 0.5 of Nyquist), log variance of the Laplacian, mean and standard
deviation of HSV saturation, share of pixels with V >= 250. No brightness feature.

    python tools/train/v11_hf.py --shared ../shared --feats /tmp/v3/feats.npz --boxes /tmp/v3/boxes-all.json --out /tmp/v11/hf.npy
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import cv2
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import faces  # noqa: E402

SIZE = 128
NAMES = ("band1", "band2", "band3", "log_lap_var", "sat_mean", "sat_std", "specular")


def radial():
    f = np.fft.fftfreq(SIZE)
    r = np.sqrt(f[:, None] ** 2 + f[None, :] ** 2) / 0.5  # 1.0 = Nyquist on an axis
    return [(r >= 0.125) & (r < 0.25), (r >= 0.25) & (r < 0.5), r >= 0.5]


def features(bgr, box, bands):
    h, w = bgr.shape[:2]
    x1, y1, x2, y2 = faces.crop_window(w, h, box, 1.0)
    face = cv2.resize(bgr[max(0, y1):y2 + 1, max(0, x1):x2 + 1], (SIZE, SIZE), interpolation=cv2.INTER_AREA)
    g = cv2.cvtColor(face, cv2.COLOR_BGR2GRAY).astype(np.float64)
    p = np.abs(np.fft.fft2(g - g.mean())) ** 2
    total = p.sum() + 1e-9
    lap = cv2.Laplacian(g, cv2.CV_64F).var()
    hsv = cv2.cvtColor(face, cv2.COLOR_BGR2HSV)
    s = hsv[..., 1].astype(np.float64) / 255
    return [p[b].sum() / total for b in bands] + [np.log(lap + 1e-6), s.mean(), s.std(),
                                                 float((hsv[..., 2] >= 250).mean())]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", required=True)
    ap.add_argument("--feats", required=True, help="v3_features.py cache (its image order)")
    ap.add_argument("--boxes", required=True, help="veriframe faces --root SHARED output")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    paths = np.load(a.feats, allow_pickle=True)["path"]
    boxes = json.load(open(a.boxes))
    bands = radial()
    out = np.zeros((len(paths), len(NAMES)), np.float64)
    for i, rel in enumerate(paths):
        img = faces.read_bgr(os.path.join(a.shared, str(rel)))
        if img is None or boxes.get(str(rel)) is None:
            raise SystemExit(f"{rel}: unreadable or no box, but it is in the feature cache")
        out[i] = features(img, boxes[str(rel)], bands)
    np.save(a.out, out)
    print(json.dumps({"images": len(paths), "features": NAMES, "out": a.out}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
