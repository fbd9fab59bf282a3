#!/usr/bin/env python3
"""PAD v5: cache the upstream networks' `conv_5` outputs (128 x 5 x 5) in seven views per image.

v5 (tools/train/v5-preregistration.md) fine-tunes `conv_6_sep`, `conv_6_dw` and the head; every
block up to `conv_5` stays upstream, so the trunk runs once, here. Images, boxes and crops are
v3's (tools/train/v3_features.py). Views:

  0 crop, 1 mirror, 2 exposure (v3's three views, the same seed and draw order, so the upstream
  tail applied to this cache gives v3's embedding cache: `v5_tail.py --check` tests that),
  3 gamma 0.7-1.4, 4 colour cast (per-channel gain 0.92-1.08), 5 JPEG quality 40-90,
  6 Gaussian blur sigma 0-1 px  (one transform per view, parameters seeded per image and net).

One network per process, so the two cores can each run one:

    python tools/train/v5_features.py --boxes /tmp/v3/boxes-all.json --net 0 --out /tmp/v5/c5-v2.npy
    python tools/train/v5_features.py --boxes /tmp/v3/boxes-all.json --net 1 --out /tmp/v5/c5-v1se.npy

Output: (N, 7, 128, 25) float32 in v3_features' image order (labels etc. come from its cache).
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
import v3_features as v3  # noqa: E402

VIEWS = 7
C5 = "/conv_5/model/model.1/Add_output_0"  # conv_6_sep's input in both upstream ONNX graphs
C45 = "/conv_45/project/conv/Conv_output_0"  # conv_5's input (v6 D), BN folded by the ONNX export
C4 = "/conv_4/model/model.5/Add_output_0"  # conv_45's input (v10 D45), 128 x 10 x 10


def photometric(c: np.ndarray, kind: int, rng: np.random.Generator) -> np.ndarray:
    """One seeded photometric view of an 80x80 BGR uint8 crop (kind 3..6 as in the docstring)."""
    f = c.astype(np.float32)
    if kind == 3:
        g = rng.uniform(0.7, 1.4)
        return np.clip(255.0 * (f / 255.0) ** g, 0, 255).astype(np.uint8)
    if kind == 4:
        return np.clip(f * rng.uniform(0.92, 1.08, size=3), 0, 255).astype(np.uint8)
    if kind == 5:
        q = int(rng.integers(40, 91))
        ok, buf = cv2.imencode(".jpg", c, [cv2.IMWRITE_JPEG_QUALITY, q])
        assert ok  # encoding an in-memory 80x80 uint8 image cannot fail
        return cv2.imdecode(buf, cv2.IMREAD_COLOR)
    s = rng.uniform(0.0, 1.0)
    return c.copy() if s < 1e-3 else cv2.GaussianBlur(c, (0, 0), s)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", default="../shared")
    ap.add_argument("--boxes", required=True)
    ap.add_argument("--net", type=int, choices=(0, 1), required=True, help="0 = V2 (2.7), 1 = V1SE (4.0)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--c45", help="also write conv_45's output (conv_5's input, for v6 D) here, same layout")
    ap.add_argument("--c4", help="also write conv_4's output (conv_45's input, for v10 D45) here, "
                    "as (N, 7, 100, 128) float32: positions 10y + x, channels last")
    ap.add_argument("--seed", type=int, default=20261203)
    ap.add_argument("--site", help="a site's captures (v3_features.list_site) instead of the shared data")
    a = ap.parse_args()
    boxes = json.load(open(a.boxes))
    samples = v3.list_site(a.site) if a.site else v3.list_samples(a.shared)
    if a.site:
        boxes = v3.site_boxes(a.site, samples, boxes)
    kept = [s for s in samples if boxes.get(s[0]) is not None]
    root = a.site or a.shared
    onnx_file, scale = v3.NETS[a.net]
    outs = (C5, C45) + ((C4,) if a.c4 else ())
    sess = v3.session(os.path.join(a.shared, "models/upstream/minifasnet", onnx_file), outs)
    rng = np.random.default_rng(a.seed)  # v3's exposure draws: one per (image, net), image-major
    prng = np.random.default_rng([a.seed, 5, a.net])  # v5's photometric views
    out = np.zeros((len(kept), VIEWS, 128, 25), np.float32)
    out45 = np.zeros_like(out) if a.c45 else None
    out4 = np.lib.format.open_memmap(a.c4, "w+", np.float32, (len(kept), VIEWS, 100, 128)) if a.c4 else None
    t0 = time.time()
    for i, (rel, _, _, _) in enumerate(kept):
        img = faces.read_bgr(os.path.join(root, rel))
        if img is None:
            raise SystemExit(f"cannot decode {rel}")
        c = faces.crop(img, boxes[rel], scale)
        exp = None
        for j in range(len(v3.NETS)):
            e = v3.exposure(c, rng)
            if j == a.net:
                exp = e
        views = [c, c[:, ::-1], exp] + [photometric(c, k, prng) for k in range(3, VIEWS)]
        for v, img_v in enumerate(views):
            x = np.ascontiguousarray(img_v).astype(np.float32).transpose(2, 0, 1)[None]
            r = sess.run(list(outs), {"input": x})
            out[i, v] = r[0].reshape(128, 25)
            if out45 is not None:
                out45[i, v] = r[1].reshape(128, 25)
            if out4 is not None:
                out4[i, v] = r[2].reshape(128, 100).T
        if i % 1000 == 0:
            print(f"{i}/{len(kept)} {time.time() - t0:.0f} s", file=sys.stderr, flush=True)
    np.save(a.out, out)
    if out45 is not None:
        np.save(a.c45, out45)
    if out4 is not None:
        out4.flush()
    print(f"wrote {a.out}: {len(kept)} images x {VIEWS} views in {time.time() - t0:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
