#!/usr/bin/env python3
"""v14 (tools/train/v14-preregistration.md): a colour-texture + spectrum model fused with v6.

    --features: 385-d hand-crafted features of every image in feats.npz (same order), two views
      (the crop and its mirror): uniform LBP(8,1) histograms of YCrCb and HSV channels (sqrt of
      L1-normalised, 6 x 59) and the radial log spectrum of the grey crop (31), on the runtime's
      face box at scale 1.0, 64x64.
    --screen: texture fold models (v6's LOSO folds), fused with v6's LOSO score CSVs, threshold by
      v3_threshold's rule on the fused validation scores; per-source AUC and pooled rates.

    python3 tools/train/v14_texture.py --features --feats /tmp/v3/feats.npz --boxes /tmp/v3/boxes-all.json --out /tmp/v14/tex.npz
    python3 tools/train/v14_texture.py --screen --feats /tmp/v3/feats.npz --tex /tmp/v14/tex.npz \
        --loso /tmp/v7/loso-v6 --val /tmp/v14/v6val --pair /tmp/v4/pair-now
"""

from __future__ import annotations

import argparse
import csv
import glob
import json
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import faces  # noqa: E402
import v3_head as h  # noqa: E402
import v3_threshold  # noqa: E402

SIZE = 64
NUAA_VAL = ("0001", "0002", "0003")
L2 = 1e-2


def _uniform_table() -> np.ndarray:
    """Map of the 256 LBP(8,1) codes to 59 bins: 58 uniform patterns, then one for the rest."""
    table = np.full(256, 58, np.int64)
    k = 0
    for c in range(256):
        bits = [(c >> i) & 1 for i in range(8)]
        if sum(bits[i] != bits[(i + 1) % 8] for i in range(8)) <= 2:
            table[c] = k
            k += 1
    assert k == 58  # invariant: 58 uniform patterns for P = 8
    return table


UNIFORM = _uniform_table()
# Neighbours in a fixed order (dy, dx); bit i set when neighbour i >= centre.
OFFSETS = ((-1, -1), (-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1))


def lbp_hist(ch: np.ndarray) -> np.ndarray:
    c = ch[1:-1, 1:-1].astype(np.int16)
    code = np.zeros(c.shape, np.int64)
    n = ch.shape[0]
    for i, (dy, dx) in enumerate(OFFSETS):
        nb = ch[1 + dy:n - 1 + dy, 1 + dx:n - 1 + dx].astype(np.int16)
        code |= (nb >= c).astype(np.int64) << i
    hist = np.bincount(UNIFORM[code].ravel(), minlength=59).astype(np.float64)
    return np.sqrt(hist / hist.sum())


_Y, _X = np.mgrid[:SIZE, :SIZE]
_R = np.rint(np.hypot(_Y - SIZE // 2, _X - SIZE // 2)).astype(np.int64)
_HANN = np.outer(np.hanning(SIZE), np.hanning(SIZE))


def spectrum(grey: np.ndarray) -> np.ndarray:
    g = grey.astype(np.float64)
    f = np.fft.fftshift(np.abs(np.fft.fft2((g - g.mean()) * _HANN)))
    prof = np.log1p(np.bincount(_R.ravel(), weights=f.ravel()) / np.bincount(_R.ravel()))[1:32]
    return prof - prof.mean()


def features(bgr64: np.ndarray) -> np.ndarray:
    import cv2

    ycc = cv2.cvtColor(bgr64, cv2.COLOR_BGR2YCrCb)
    hsv = cv2.cvtColor(bgr64, cv2.COLOR_BGR2HSV)
    parts = [lbp_hist(img[:, :, k]) for img in (ycc, hsv) for k in range(3)]
    parts.append(spectrum(cv2.cvtColor(bgr64, cv2.COLOR_BGR2GRAY)))
    return np.concatenate(parts)


def cmd_features(a) -> int:
    d = np.load(a.feats)
    boxes = json.load(open(a.boxes))
    paths = d["path"]
    out = np.zeros((len(paths), 2, 385), np.float32)
    t0 = time.time()
    for i, rel in enumerate(paths):
        img = faces.read_bgr(os.path.join(a.shared, str(rel)))
        c = faces.crop(img, boxes[str(rel)], 1.0, SIZE)
        out[i, 0] = features(c)
        out[i, 1] = features(np.ascontiguousarray(c[:, ::-1]))
        if i % 2000 == 0:
            print(f"{i}/{len(paths)} {time.time() - t0:.0f} s", file=sys.stderr)
    np.savez_compressed(a.out, tex=out, path=paths)
    print(f"wrote {a.out} in {time.time() - t0:.0f} s", file=sys.stderr)
    return 0


def fit(x, y, w, l2=L2, iters=500, lr=0.5):
    """Weighted binary logistic regression (full-batch gradient descent on standardised x)."""
    mu, sd = x.mean(0), x.std(0) + 1e-6
    z = (x - mu) / sd
    wt = w / w.sum()
    beta, b = np.zeros(z.shape[1]), 0.0
    for _ in range(iters):
        p = 1 / (1 + np.exp(-(z @ beta + b)))
        g = wt * (p - y)
        beta -= lr * (z.T @ g + l2 * beta)
        b -= lr * g.sum()
    return mu, sd, beta, b


def predict(model, x):
    mu, sd, beta, b = model
    return 1 / (1 + np.exp(-(((x - mu) / sd) @ beta + b)))


def train(d, tex, sources):
    m = h.trainable_mask(d, sources, NUAA_VAL)
    x = np.concatenate([tex[m, 0], tex[m, 1]]).astype(np.float64)
    y = np.concatenate([d["label"][m] == 1] * 2).astype(np.float64)
    w = np.concatenate([h.weights(d["label"][m], d["source"][m])] * 2)
    return fit(x, y, w)


def logit(p):
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def fuse(p_cnn, p_tex):
    return 1 / (1 + np.exp(-(logit(p_cnn) + logit(p_tex))))


def read_scores(path):
    """{shared-relative path: (class, score)} of a `veriframe eval --scores` CSV."""
    out = {}
    for row in csv.DictReader(open(path)):
        rel = os.path.relpath(os.path.realpath(row["path"]), os.path.realpath("../shared"))
        out[rel] = (row["class"], float(row["score"]))
    return out


def fused_rows(scores, index, tex, model):
    """(class, v6 score, texture score or None, fused score) per CSV row; no face -> rejected."""
    rows = []
    for rel, (cls, s) in scores.items():
        i = index.get(rel)
        if i is None:
            rows.append((cls, s, None, 0.0))
            continue
        pt = float(predict(model, tex[i, 0][None].astype(np.float64))[0])
        rows.append((cls, s, pt, float(fuse(np.array(s), np.array(pt)))))
    return rows


def rates(rows, k, t):
    return v3_threshold.rates([r[k] for r in rows if r[0] == "real"], [r[k] for r in rows if r[0] != "real"], t)


def auc_of(rows, k):
    real = np.array([r[k] if r[k] is not None else 0.0 for r in rows if r[0] == "real"])
    att = np.array([r[k] if r[k] is not None else 0.0 for r in rows if r[0] != "real"])
    return h.auc(real, att)


def cmd_screen(a) -> int:
    d = h.load(a.feats)
    tex = np.load(a.tex)["tex"]
    index = {str(p): i for i, p in enumerate(d["path"])}
    final = train(d, tex, h.TRAINABLE)
    val = []
    for f in sorted(glob.glob(os.path.join(a.val, "val-*.csv"))):
        val += fused_rows(read_scores(f), index, tex, final)
    t = v3_threshold.threshold([r[3] for r in val if r[0] != "real"])
    t6 = v3_threshold.threshold([r[1] for r in val if r[0] != "real"])
    va, vb = rates(val, 3, t)
    print(json.dumps({"fused_threshold": round(t, 3), "val_apcer": va, "val_bpcer": vb,
                      "v6_rule_threshold_check": round(t6, 3),
                      "val_auc_tex": auc_of(val, 2), "val_auc_fused": auc_of(val, 3)}))
    pooled, pair_pooled = [], []
    print(f"{'source':14s} {'n r/a':>9s} {'pair':>6s} {'v6':>6s} {'tex':>6s} {'fused':>6s}  fused APCER/BPCER")
    for s in h.TRAINABLE:
        model = train(d, tex, h.fold_sources(s))
        rows = fused_rows(read_scores(os.path.join(a.loso, f"fold-{s}", "scores.csv")), index, tex, model)
        pair = list(read_scores(os.path.join(a.pair, f"fold-{s}", "scores.csv")).values())
        pair_auc = h.auc(np.array([x for c, x in pair if c == "real"]), np.array([x for c, x in pair if c != "real"]))
        ap, bp = rates(rows, 3, t)
        n_r = sum(r[0] == "real" for r in rows)
        print(f"{s:14s} {n_r:4d}/{len(rows) - n_r:<4d} {pair_auc:6.3f} {auc_of(rows, 1):6.3f} {auc_of(rows, 2):6.3f} "
              f"{auc_of(rows, 3):6.3f}  {100 * ap:5.1f} / {100 * bp:5.1f} %")
        pooled += rows
        pair_pooled += pair
    ap, bp = rates(pooled, 3, t)
    ap6, bp6 = rates(pooled, 1, 0.589)
    print(f"pooled fused @ {t:.3f}: AUC {auc_of(pooled, 3):.3f} APCER {100 * ap:.1f} % BPCER {100 * bp:.1f} % "
          f"ACER {50 * (ap + bp):.1f} %")
    print(f"pooled v6 @ 0.589: AUC {auc_of(pooled, 1):.3f} APCER {100 * ap6:.1f} % BPCER {100 * bp6:.1f} % "
          f"ACER {50 * (ap6 + bp6):.1f} %; texture alone AUC {auc_of(pooled, 2):.3f}")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--features", action="store_true")
    ap.add_argument("--screen", action="store_true")
    ap.add_argument("--shared", default="../shared")
    ap.add_argument("--feats", required=True)
    ap.add_argument("--boxes")
    ap.add_argument("--out")
    ap.add_argument("--tex")
    ap.add_argument("--loso")
    ap.add_argument("--val")
    ap.add_argument("--pair")
    a = ap.parse_args()
    if a.features:
        return cmd_features(a)
    if a.screen:
        return cmd_screen(a)
    ap.error("give --features or --screen")
    return 2


if __name__ == "__main__":
    sys.exit(main())
