#!/usr/bin/env python3
"""A tiny synthetic calibration fixture for tests/padcal.rs, made from the bundled samples.

    fixture.py images OUT     OUT/site/{real,attack}/<session>/*.jpg (a booth's labelled captures)
                              and OUT/pool/{real,print,screen}/<session>/*.jpg (stands in for the
                              shared training data)
    fixture.py relabel CACHE  gives the pool cache's sessions the names of shared training sources

Real sessions are the bundled astronaut frames with small seeded changes of exposure, position
and noise; attack sessions are the same frames "replayed": shrunk onto a dark bezel, blurred,
colour-cast and striped like a screen (or flattened and grey-tinted like a print). Nothing here
is real attack data; the fixture tests that the calibration runs end to end, not how well.
"""

from __future__ import annotations

import os
import sys

import cv2
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FRAMES = [os.path.join(ROOT, "samples", f"astronaut_0{i}.jpg") for i in range(5)]
POOL_SOURCES = ["nuaa", "aksultan", "jtboing", "neonipun"]  # shared training sources (padcal.splits)


def real(img, rng):
    gain = rng.uniform(0.8, 1.2)
    dx, dy = (int(v) for v in rng.integers(-20, 21, size=2))
    out = np.roll(img.astype(np.float32) * gain, (dy, dx), axis=(0, 1))
    out += rng.normal(0, 3, out.shape)
    return np.clip(out, 0, 255).astype(np.uint8)


def screen(img, rng):
    h, w = img.shape[:2]
    s = rng.uniform(0.85, 0.95)
    small = cv2.resize(img, (int(w * s), int(h * s)), interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (0, 0), rng.uniform(0.3, 0.6)).astype(np.float32)
    small *= np.array([1.08, 1.0, 0.92], np.float32)  # BGR: a blue display cast
    yy = np.arange(small.shape[0], dtype=np.float32)[:, None, None]
    small *= 1 + 0.04 * np.sin(yy * rng.uniform(1.2, 2.0))  # refresh / moire stripes
    out = np.full_like(img, 40)
    y0, x0 = (h - small.shape[0]) // 2, (w - small.shape[1]) // 2
    out[y0:y0 + small.shape[0], x0:x0 + small.shape[1]] = np.clip(small, 0, 255).astype(np.uint8)
    return out


def printed(img, rng):
    grey = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)[:, :, None].astype(np.float32)
    out = 0.6 * img.astype(np.float32) + 0.4 * grey  # washed-out ink
    out = out * rng.uniform(0.7, 0.85) + 40
    return np.clip(cv2.GaussianBlur(out, (0, 0), 0.6), 0, 255).astype(np.uint8)


def session(out_dir, kind, fn, rng, n=3):
    os.makedirs(out_dir, exist_ok=True)
    for i in range(n):
        img = cv2.imread(FRAMES[(i + int(rng.integers(5))) % len(FRAMES)], cv2.IMREAD_COLOR)
        cv2.imwrite(os.path.join(out_dir, f"{kind}-{i:02d}.jpg"), fn(img, rng), [cv2.IMWRITE_JPEG_QUALITY, 90])


def images(out):
    rng = np.random.default_rng(20261207)
    for k in range(3):
        session(os.path.join(out, "site", "real", f"person-{k}"), "real", real, rng)
        session(os.path.join(out, "site", "attack", f"phone-{k}"), "screen", screen, rng)
    for src in POOL_SOURCES:
        session(os.path.join(out, "pool", "real", src), "real", real, rng)
        session(os.path.join(out, "pool", "screen", src), "screen", screen, rng)
    session(os.path.join(out, "pool", "print", "nuaa"), "print", printed, rng)


def relabel(cache):
    """Each pool image's source becomes its session's name (a shared training source)."""
    path = os.path.join(cache, "feats.npz")
    z = dict(np.load(path))
    z["source"] = np.array([str(g).split("/")[1] for g in z["group"]])
    if not set(z["source"]) <= set(POOL_SOURCES):
        raise SystemExit(f"unexpected pool sessions: {sorted(set(z['source']))}")
    np.savez_compressed(path, **z)


if __name__ == "__main__":
    {"images": images, "relabel": relabel}[sys.argv[1]](sys.argv[2])
