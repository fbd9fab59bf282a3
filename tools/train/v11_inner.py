#!/usr/bin/env python3
"""PAD v11: score candidates on an inner holdout of two training sources (neonipun, jtboing).

Pre-registered in tools/train/v11-preregistration.md (read it and its addenda first). A
selection-only model of each trained candidate is trained on the training split less the inner
sources I (v6_select's member path, F model only); every candidate is then scored on I at the
threshold the shipping rule (tools/train/v3_threshold.py) gives on the validation sets:

    score11 = 1 - pooled ACER over I's images (float scores, view 0)

Candidates: v6 (D-0.001), v5, E56 (v5 + v6), EP6 (upstream pair + v6), W-0.5 / W-0.75 (v6
interpolated towards its starting point, WiSE-FT), RA-0.1 / RA-1 (v6 with real faces aligned across
sources, addendum 1) and the upstream pair as a reference row. v12 (tools/train/v12-preregistration.md)
adds v5's recipe regularised (v5L-0.01, v5E-3, v5E-30, v5R-3e-4, E55), picked by the inner AUC.

    C="--feats /tmp/v3/feats.npz --c5 /tmp/v5/c5-v2.npy,/tmp/v5/c5-v1se.npy --c45 /tmp/v6/c45-v2.npy,/tmp/v6/c45-v1se.npy"
    python tools/train/v11_inner.py $C --train D-0.001 --members /tmp/v11/m   # v5, RA-0.1, RA-1 (one per core)
    python tools/train/v11_inner.py $C --score --members /tmp/v11/m
    python tools/train/v11_inner.py $C --train D-0.001 --full --members /tmp/v11/m   # check: = the v6 member's F
    python tools/train/v11_inner.py $C --train v5 --data plus-val --members /tmp/v11/m  # v12 addendum 3 (or less-aksultan)

Images without a face box are not in the caches (the runtime rejects them); they shift every
candidate's inner BPCER and APCER alike, so the ranking is unaffected.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import v3_head as h  # noqa: E402
import v4_select  # noqa: E402
import v5_tail as v5  # noqa: E402
import v6_select as v6  # noqa: E402
from v3_threshold import threshold  # noqa: E402

INNER = ("neonipun", "jtboing")  # the two training replay-sets sources with the most attacks
SEED = v6.V5_SEED
ALPHAS = (0.5, 0.75)
MARGIN = 0.02  # the pre-registered bar over v6's score11
TRAINED = ("D-0.001", "v5") + tuple(f"RA-{b:g}" for b in v6.RA_BETAS) + ("D-0.01",)  # RA: addendum 1; D-0.01: 2
V12 = tuple(v6.V12)  # tools/train/v12-preregistration.md: v5's recipe regularised, scored by inner AUC
V12_MARGIN = 0.01


DATA = {"plus-val": list(h.VALIDATION), "less-aksultan": ["-aksultan"]}  # v12 addendum 3 (a diagnostic)


def inner_sources(full=False, data=None):
    """The inner models' training sources (``full``: every training source; ``data``: a DATA key)."""
    out = list(h.TRAINABLE) if full else [s for s in h.TRAINABLE if s not in INNER]
    for s in DATA.get(data, []):
        out = [x for x in out if x != s[1:]] if s.startswith("-") else out + [s]
    return out


def member_path(members, rec, full=False, seed=SEED, data=None):
    return os.path.join(members, f"{'full' if full else 'inner'}{'-' + data if data else ''}-{rec}-{seed}.npz")


def train_inner(d, rec, sources, path, upstream, seed=SEED):
    """Train one selection-only model of recipe ``rec`` (v6_select.recipe) on ``sources`` of the
    caches ``d``, save it at ``path``; returns the seconds it took."""
    hp, _ = v6.recipe(rec)
    t0 = time.time()
    F = v5.train(d, sources, {**hp, "upstream": upstream}, seed=seed, trunks=v6.trunks_for(rec, upstream))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    save(path, F)
    return round(time.time() - t0)


def save(path, F):
    np.savez(path, **{f"{net}/{k}": v for net, (t, (W, bh)) in F.items()
                      for k, v in {**t, "W": W, "bh": bh}.items()})


def load_model(path):
    z = np.load(path)
    out = {}
    for net in v5.NETS:
        pre = f"{net}/"
        t = {k[len(pre):]: z[k] for k in z.files if k.startswith(pre) and k[len(pre):] not in ("W", "bh")}
        out[net] = (t, (z[pre + "W"], z[pre + "bh"]))
    return out


def start_point(d, sources, upstream, trunks):
    """v6's starting point on ``sources``: upstream conv_5 and tail, the v4 head (as v5.train)."""
    heads = h.train(d, sources, v5.HEAD_L2, prior_dir=upstream, freeze_absent=True,
                    held_groups=v4_select.NUAA_VAL)
    return {net: ({**v5.upstream_tail(upstream, net), **trunks[net].init},
                  tuple(x.astype(np.float32) for x in heads[net])) for net in v5.NETS}


def interpolate(m0, m1, alpha):
    """theta0 + alpha (theta1 - theta0), tensor by tensor (both in v6's folded parametrisation),
    computed as (1 - alpha) theta0 + alpha theta1 so that alpha 0 and 1 give the end points exactly."""
    a1, a0 = np.float32(alpha), np.float32(1 - alpha)
    mix = lambda x0, x1: (a0 * x0 + a1 * x1).astype(np.float32)  # noqa: E731
    out = {}
    for net in v5.NETS:
        (t0, h0), (t1, h1) = m0[net], m1[net]
        assert t0.keys() == t1.keys()  # same recipe family: v6's conv_5 + tail keys
        out[net] = ({k: mix(t0[k], t1[k]) for k in t0}, tuple(mix(x0, x1) for x0, x1 in zip(h0, h1)))
    return out


def fit_hf(x, y, w, iters=50):
    """Addendum 3's HF model: logistic regression of real (1) vs attack on standardised features,
    weights ``w`` scaled to mean 1, objective mean(w * log loss) + |beta|^2 / (2 n) (C = 1, as
    scikit-learn's); Newton's method. Returns P(real) as a function of raw features."""
    mu, sd = x.mean(0), x.std(0) + 1e-12
    z = np.c_[(x - mu) / sd, np.ones(len(x))]
    w = w / w.mean()
    n = len(x)
    beta = np.zeros(z.shape[1])
    reg = np.r_[np.ones(z.shape[1] - 1), 0.0] / n  # the intercept is not penalised
    for _ in range(iters):
        p = 1 / (1 + np.exp(-z @ beta))
        g = z.T @ (w * (p - y)) / n + reg * beta
        hess = (z * (w * p * (1 - p))[:, None]).T @ z / n + np.diag(reg)
        beta -= np.linalg.solve(hess, g)
    return lambda xr: 1 / (1 + np.exp(-(np.c_[(xr - mu) / sd, np.ones(len(xr))] @ beta)))


def metrics(d, score_fn):
    """score11 and its parts for one candidate (``score_fn(mask)`` -> real scores)."""
    val = v4_select.validation_masks(d)
    names = list(h.VALIDATION) + ["nuaa-val"]
    sv = {v: score_fn(val[v]) for v in names}
    lab = {v: d["label"][val[v]] for v in names}
    thr = threshold(np.concatenate([sv[v][lab[v] != 1] for v in names]).tolist())
    val_bpcer = {v: float((sv[v][lab[v] == 1] < thr).mean()) for v in names}
    per, real_all, att_all = {}, [], []
    for s in INNER:
        m = d["source"] == s
        sc, lb = score_fn(m), d["label"][m]
        r, a = sc[lb == 1], sc[lb != 1]
        apcer, bpcer = float((a >= thr).mean()), float((r < thr).mean())
        per[s] = {"auc": round(h.auc(r, a), 4), "apcer": round(apcer, 4), "bpcer": round(bpcer, 4)}
        real_all.append(r)
        att_all.append(a)
    r, a = np.concatenate(real_all), np.concatenate(att_all)
    apcer, bpcer = float((a >= thr).mean()), float((r < thr).mean())
    return {"score11": round(1 - (apcer + bpcer) / 2, 4), "threshold": round(thr, 3),
            "inner_apcer": round(apcer, 4), "inner_bpcer": round(bpcer, 4), "inner_auc": round(h.auc(r, a), 4),
            "per_source": per, "val_worst_bpcer": round(max(val_bpcer.values()), 4)}


V11_ROWS = ("v6", "v5", "E56", "EP6", "W-0.5", "W-0.75", "S3D", "HF", "D+HF")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    v6.cache_args(ap)
    ap.add_argument("--members", required=True, help="directory of the inner models")
    ap.add_argument("--train", help="train one inner model: " + ", ".join(TRAINED + V12))
    ap.add_argument("--full", action="store_true", help="with --train: on every training source (the check)")
    ap.add_argument("--seed", type=int, default=SEED, help="with --train (addendum 2: D-0.001 seeds for S3D)")
    ap.add_argument("--data", choices=sorted(DATA), help="with --train v5: v12 addendum 3's other training sets")
    ap.add_argument("--score", action="store_true", help="score11 of every candidate")
    ap.add_argument("--hf", help="with --score: v11_hf.py's features (addendum 3's HF and D+HF rows)")
    a = ap.parse_args()
    if a.train:
        if a.train not in TRAINED + V12:
            raise SystemExit(f"v11 and v12 train {', '.join(TRAINED + V12)}")
        if a.data and (a.train != "v5" or a.full or a.seed != SEED):
            raise SystemExit("--data is v12 addendum 3's diagnostic: only with --train v5, its seed, no --full")
        _, deep = v6.recipe(a.train)
        d = v6.load_for(a, deep)
        sources = inner_sources(a.full, a.data)
        path = member_path(a.members, a.train, a.full, a.seed, a.data)
        seconds = train_inner(d, a.train, sources, path, a.upstream, a.seed)
        print(json.dumps({"trained": a.train, "sources": sources, "out": path, "seconds": seconds}), flush=True)
        return 0
    if not a.score:
        raise SystemExit("give --train RECIPE or --score")
    d = v6.load(a)
    conv5 = v6.trunks_for("D-0.001", a.upstream)
    m6 = load_model(member_path(a.members, "D-0.001"))
    m5 = load_model(member_path(a.members, "v5"))
    m0 = start_point(d, inner_sources(), a.upstream, conv5)
    pair = {net: (v5.upstream_tail(a.upstream, net),
                  tuple(x.astype(np.float32) for x in h.upstream_head(a.upstream, net))) for net in v5.NETS}
    on_conv5 = lambda w: lambda m: v6.scores(d, w, m, conv5)  # noqa: E731  (v6's family)
    on_c5 = lambda w: lambda m: v6.scores(d, w, m)  # noqa: E731  (v5's family, the pair)
    s6, s5, sp = on_conv5(m6), on_c5(m5), on_c5(pair)
    cands = {"v6": s6, "v5": s5, "E56": lambda m: (s5(m) + s6(m)) / 2, "EP6": lambda m: (sp(m) + s6(m)) / 2}
    for alpha in ALPHAS:
        cands[f"W-{alpha:g}"] = on_conv5(interpolate(m0, m6, alpha))
    for rec in TRAINED[2:]:
        if os.path.exists(member_path(a.members, rec)):
            cands[rec] = on_conv5(load_model(member_path(a.members, rec)))
        else:
            print(json.dumps({"cand": rec, "not_run": member_path(a.members, rec)}), flush=True)
    seeds = {s: member_path(a.members, "D-0.001", seed=s) for s in v6.SEEDS}  # addendum 2
    for s in v6.SEEDS[1:]:
        if os.path.exists(seeds[s]):
            cands[f"v6 seed {s}"] = on_conv5(load_model(seeds[s]))
    if all(os.path.exists(p) for p in seeds.values()):
        cands["S3D"] = on_conv5(v6.soup([load_model(p) for p in seeds.values()]))
    for rec in V12:  # v12
        if os.path.exists(member_path(a.members, rec)):
            cands[rec] = on_c5(load_model(member_path(a.members, rec)))
    p5 = member_path(a.members, "v5", seed=v6.SEEDS[1])
    if os.path.exists(p5):
        m55 = load_model(p5)
        cands["v5 seed " + str(v6.SEEDS[1])] = on_c5(m55)
        cands["E55"] = lambda m: (s5(m) + on_c5(m55)(m)) / 2
    for key in DATA:  # v12 addendum 3: read by the inner AUC only
        p = member_path(a.members, "v5", data=key)
        if os.path.exists(p):
            cands[f"v5 trained {key} (diagnostic)"] = on_c5(load_model(p))
    m4 = {net: (v5.upstream_tail(a.upstream, net), m0[net][1]) for net in v5.NETS}
    cands["v4 (start)"] = on_c5(m4)
    if a.hf:  # addendum 3
        x = np.load(a.hf)
        m = h.trainable_mask(d, inner_sources(), v4_select.NUAA_VAL)
        hf = fit_hf(x[m], (d["label"][m] == 1).astype(np.float64), h.weights(d["label"][m], d["source"][m]))
        cands["HF"] = lambda mask: hf(x[mask])
        cands["D+HF"] = lambda mask: (s6(mask) + hf(x[mask])) / 2
    # checks (pre-registered): W-1 is v6, W-0 is the starting point
    ref = v4_select.validation_masks(d)["vishalkrishna"]
    for alpha, want in ((1.0, s6(ref)), (0.0, v6.scores(d, m0, ref, conv5))):
        got = v6.scores(d, interpolate(m0, m6, alpha), ref, conv5)
        if not np.array_equal(got, want):
            raise SystemExit(f"W-{alpha:g} does not reproduce its end point (max diff {np.abs(got - want).max():.2e})")
    print(json.dumps({"check": "W-1 = v6 and W-0 = start, bit for bit"}), flush=True)
    rows = []
    for name, fn in cands.items():
        rows.append({"cand": name, **metrics(d, fn)})
        print(json.dumps(rows[-1]), flush=True)
    print(json.dumps({"cand": "pair (reference)", **metrics(d, sp)}), flush=True)
    v11 = [r for r in rows if r["cand"] in V11_ROWS or r["cand"] in TRAINED[2:] or r["cand"].startswith("v6 seed")]
    base = v11[0]
    best = max(v11, key=lambda r: r["score11"])  # max keeps v6 of equals (listed first)
    print(json.dumps({"pick": best["cand"], "score11": best["score11"], "v6_score11": base["score11"],
                      f"beats_v6_by_more_than_{MARGIN}": best["score11"] > base["score11"] + MARGIN}))
    v12 = [r for r in rows if r["cand"] == "v5" or r["cand"] in V12 + ("E55",)]
    best = max(v12, key=lambda r: r["inner_auc"])  # max keeps v5 of equals (listed first)
    print(json.dumps({"v12_pick": best["cand"], "inner_auc": best["inner_auc"], "v5_inner_auc": v12[0]["inner_auc"],
                      f"beats_v5_by_more_than_{V12_MARGIN}": best["inner_auc"] > v12[0]["inner_auc"] + V12_MARGIN}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
