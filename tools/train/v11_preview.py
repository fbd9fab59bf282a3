#!/usr/bin/env python3
"""PAD v11 addendum 4: the D+HF leave-one-source-out PREVIEW (the runtime does not compute HF yet).

v6's part is an existing v6 LOSO run's per-image scores (`veriframe eval --scores`, Q8_0 fold
models); HF (tools/train/v11_hf.py's features, v11_inner.fit_hf) is fitted per fold on that fold's
training images, in Python; the fused score is their mean. Images without a face box keep score
-1 (rejected), as in `veriframe eval`. The threshold is v3_threshold's rule on the fused
validation scores of the final model (v6's committed Q8_0 files through `veriframe eval --scores`,
HF fitted on every training image).

    python tools/train/v11_preview.py --feats /tmp/v3/feats.npz --hf /tmp/v11/hf.npy \\
        --loso /tmp/v7/loso-v6 --val /tmp/v11/val --out /tmp/v11/loso-dhf
    python tools/train/v3_report.py --hold-nuaa 0001,0002,0003 --without neonipun,jtboing \\
        pair:0.5:/tmp/v4/pair-now v6:0.589:/tmp/v7/loso-v6 d+hf-preview:THR:/tmp/v11/loso-dhf

--val holds `veriframe eval --scores` CSVs of the final v6 files on the validation sets
(balveer.csv, trickyf0x.csv, vishalkrishna.csv, nuaa-val.csv).
"""

from __future__ import annotations

import argparse
import csv
import glob
import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import v3_head as h  # noqa: E402
import v4_select  # noqa: E402
from v11_inner import fit_hf  # noqa: E402
from v3_threshold import threshold  # noqa: E402


def rel_path(p):
    """The feature cache's path ("data/...") of a CSV path: under ../shared, or in a NUAA subject
    tree of symlinks (v3_loso.sh's nuaa-test, the validation nuaa-val)."""
    p = p.replace("\\", "/")
    for tree in ("/nuaa-test/", "/nuaa-val/"):
        if tree in p:
            return "data/nuaa/" + p.split(tree, 1)[1]
    return p.split("shared/", 1)[1]


def fused_rows(csv_path, hf, x, index):
    """The CSV's rows with the score replaced by mean(v6, HF); -1 (no face) stays -1."""
    out = []
    for row in csv.DictReader(open(csv_path)):
        rel = rel_path(row["path"])
        s = float(row["score"])
        if s >= 0:
            if rel not in index:
                raise SystemExit(f"{rel}: scored by the runtime but not in the feature cache")
            s = (s + float(hf(x[[index[rel]]])[0])) / 2
        out.append({**row, "score": repr(s)})
    return out


def write(path, rows):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["class", "score", "path"])
        w.writeheader()
        w.writerows(rows)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--feats", required=True)
    ap.add_argument("--hf", required=True)
    ap.add_argument("--loso", required=True, help="a v6 LOSO run: fold-<source>/scores.csv")
    ap.add_argument("--val", required=True, help="the final v6 files' validation CSVs")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    d = h.load(a.feats)
    x = np.load(a.hf)
    index = {str(p): i for i, p in enumerate(d["path"])}
    y = (d["label"] == 1).astype(np.float64)

    def hf_on(sources):
        m = h.trainable_mask(d, sources, v4_select.NUAA_VAL)
        return fit_hf(x[m], y[m], h.weights(d["label"][m], d["source"][m]))

    final = hf_on(h.TRAINABLE)
    attack = []
    for name in list(h.VALIDATION) + ["nuaa-val"]:
        rows = fused_rows(os.path.join(a.val, f"{name}.csv"), final, x, index)
        write(os.path.join(a.out, "val", f"{name}.csv"), rows)
        attack += [float(r["score"]) for r in rows if r["class"] != "real"]
    thr = threshold(attack)
    for fold in sorted(glob.glob(os.path.join(a.loso, "fold-*", "scores.csv"))):
        left_out = os.path.basename(os.path.dirname(fold))[len("fold-"):]
        rows = fused_rows(fold, hf_on(h.fold_sources(left_out)), x, index)
        write(os.path.join(a.out, f"fold-{left_out}", "scores.csv"), rows)
    print(json.dumps({"threshold": round(thr, 3), "val_attacks": len(attack), "out": a.out}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
