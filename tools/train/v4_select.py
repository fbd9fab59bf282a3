#!/usr/bin/env python3
"""PAD v4 model selection: the pre-registered grid and rule (models/veriframe-pad-v3.md, v4).

For every candidate (loss x freeze-absent x recapture x L2-SP lambda; prior always on):
  F = heads trained on every trainable source (NUAA without its validation subjects),
  P = heads trained on every trainable source except NUAA (the print probe: no print data),
  score = min(AUC_F on balveer, trickyf0x, vishalkrishna; AUC_P on the NUAA validation subjects).
The pick is the highest score; within 0.002 of it, the higher pooled validation AUC of F, then the
simpler candidate (earlier in the grid). Float embeddings from the cache; no test source is read.

    python tools/train/v4_select.py --feats /tmp/v3/feats.npz --recapture /tmp/v4/recapture.npz
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys

import numpy as np

import v3_head as h

NUAA_VAL = ("0001", "0002", "0003")  # the three lowest NUAA subject ids with both classes


def validation_masks(d):
    out = {v: d["source"] == v for v in h.VALIDATION}
    out["nuaa-val"] = (d["source"] == "nuaa") & np.isin(d["group"], NUAA_VAL)
    return out


def auc_on(d, heads, mask):
    s = h.score(d, heads, mask)
    lab = d["label"][mask]
    return h.auc(s[lab == 1], s[lab != 1])


def evaluate(d, cand, recapture, upstream):
    kw = dict(prior_dir=upstream, loss=cand["loss"], freeze_absent=cand["freeze"],
              recapture=recapture if cand["recapture"] else None, held_groups=NUAA_VAL)
    masks = validation_masks(d)
    full = h.train(d, h.TRAINABLE, cand["l2"], **kw)
    probe = h.train(d, [s for s in h.TRAINABLE if s != "nuaa"], cand["l2"], **kw)
    per = {v: auc_on(d, full, masks[v]) for v in h.VALIDATION}
    per["nuaa-val(probe)"] = auc_on(d, probe, masks["nuaa-val"])
    pooled = np.zeros(len(d["label"]), bool)
    for v in h.VALIDATION:
        pooled |= masks[v]
    return {**cand, "score": min(per.values()), "pooled_val_auc": auc_on(d, full, pooled),
            "auc": {k: round(v, 4) for k, v in per.items()}}


def pick(rows):
    """The selection rule on scored rows in grid order: the highest score; within 0.002 of it, the
    higher pooled validation AUC, then the earlier (simpler) row."""
    best = max(r["score"] for r in rows)
    near = [r for r in rows if r["score"] >= best - 0.002]
    top = max(r["pooled_val_auc"] for r in near)
    return next(r for r in near if r["pooled_val_auc"] == top)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--feats", required=True)
    ap.add_argument("--recapture", required=True)
    ap.add_argument("--upstream", default="../shared/models/upstream/minifasnet")
    a = ap.parse_args()
    d = h.load(a.feats)
    rc = h.load(a.recapture)
    grid = [dict(loss=lo, freeze=fr, recapture=rc_, l2=l2)
            for rc_, fr, lo, l2 in itertools.product((False, True), (False, True), ("multi", "binary"),
                                                     (1e-3, 1e-2, 1e-1, 1.0))]
    rows = []
    for cand in grid:
        r = evaluate(d, cand, rc, a.upstream)
        rows.append(r)
        print(json.dumps(r), flush=True)
    print(json.dumps({"pick": pick(rows)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
