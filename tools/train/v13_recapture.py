#!/usr/bin/env python3
"""PAD v13: v4's synthetic recaptures in v5's and v6's trained tails, scored on the inner holdout.

Pre-registered in tools/train/v13-preregistration.md (read it first). v4 rendered one synthetic
print and one synthetic screen replay from every real image (tools/train/v4_recapture.py: the
functions and seed used here, unchanged) and added their upstream embeddings to a head; v13 adds
them to the fine-tune of v5 (tail + head) and of v6 (conv_5 + tail + head). The renderings are
cropped as the runtime does and cached at conv_5's output and input in v5_features' seven views,
then appended to the caches as two more attack cells (sources `recapture-0` print, `recapture-2`
screen); a model trains on the renderings of exactly the real images in its training mask.

    # 1. the renderings' caches, one network per core (both render the same images)
    python3 tools/train/v13_recapture.py --render --net 0 --feats /tmp/v3/feats.npz --boxes /tmp/v3/boxes-all.json --rc /tmp/v13
    python3 tools/train/v13_recapture.py --render --net 1 --feats /tmp/v3/feats.npz --boxes /tmp/v3/boxes-all.json --rc /tmp/v13
    # 2. the inner models (v11's: neonipun and jtboing held out), one per core
    C="--feats /tmp/v3/feats.npz --c5 /tmp/v5/c5-v2.npy,/tmp/v5/c5-v1se.npy --c45 /tmp/v6/c45-v2.npy,/tmp/v6/c45-v1se.npy"
    python3 tools/train/v13_recapture.py $C --rc /tmp/v13 --train v5+RC --members /tmp/v11/m
    python3 tools/train/v13_recapture.py $C --rc /tmp/v13 --train D+RC --members /tmp/v11/m
    # 3. score13 = the inner AUC of every candidate (and its mirror-TTA row), and the rule
    python3 tools/train/v13_recapture.py $C --rc /tmp/v13 --score --members /tmp/v11/m
    # 4. only for a candidate that passed: the final model, and LOSO folds through v3_loso.sh
    python3 tools/train/v13_recapture.py $C --rc /tmp/v13 --cand CAND --final --out DIR
    HOLD_NUAA="0001 0002 0003" TRAINER=tools/train/v13_recapture.py HEAD_ARGS="$C --rc /tmp/v13 --cand CAND" \
        tools/train/v3_loso.sh /tmp/v3/feats.npz DIR THRESHOLD
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
import v4_select  # noqa: E402
import v5_tail as v5  # noqa: E402
import v6_select as v6  # noqa: E402
import v11_inner as v11  # noqa: E402

KINDS = ((0, "print"), (2, "screen"))  # (label, rendering) in v4_recapture's draw order
# candidate -> (the v6_select recipe it extends, the renderings it trains on); addendum 2: one kind
CANDIDATES = {"v5+RC": ("v5", (0, 1)), "D+RC": ("D-0.001", (0, 1)), "v5+RCs": ("v5", (1,)), "v5+RCp": ("v5", (0,))}
V5_INNER_AUC = 0.9444  # v5's inner AUC (v12 addendum 1), the bar's base
MARGIN = 0.01


def render(a):
    """Write RC/idx.npy and RC/c5-NET.npy, RC/c45-NET.npy: (M, 2 kinds, 7 views, 128, 25) float32."""
    import faces
    import v3_features as v3
    from v4_recapture import print_attack, screen_attack
    from v5_features import C5, C45, VIEWS, photometric

    z = np.load(a.feats)
    idx = np.flatnonzero(z["label"] == 1)
    boxes = json.load(open(a.boxes))
    onnx_file, scale = v3.NETS[a.net]
    sess = v3.session(os.path.join(a.shared, "models/upstream/minifasnet", onnx_file), (C5, C45))
    rng = np.random.default_rng(20261204)  # v4_recapture's seed and draw order: the same renderings
    vrng = np.random.default_rng([20261204, 13, a.net])  # this network's views of them
    shape = (len(idx), len(KINDS), VIEWS, 128, 25)
    os.makedirs(a.rc, exist_ok=True)
    net = v5.NETS[a.net]
    out5 = np.lib.format.open_memmap(os.path.join(a.rc, f"c5-{net}.npy"), "w+", np.float32, shape)
    out45 = np.lib.format.open_memmap(os.path.join(a.rc, f"c45-{net}.npy"), "w+", np.float32, shape)
    t0 = time.time()
    for k, i in enumerate(idx):
        rel = str(z["path"][i])
        img = faces.read_bgr(os.path.join(a.shared, rel))
        if img is None:
            raise SystemExit(f"cannot decode {rel}")
        box = boxes[rel]
        for kind, fake in enumerate((print_attack(img, box, rng), screen_attack(img, box, rng))):
            c = faces.crop(fake, box, scale)
            views = [c, c[:, ::-1], v3.exposure(c, vrng)] + [photometric(c, v, vrng) for v in range(3, VIEWS)]
            for v, img_v in enumerate(views):
                x = np.ascontiguousarray(img_v).astype(np.float32).transpose(2, 0, 1)[None]
                r5, r45 = sess.run([C5, C45], {"input": x})
                out5[k, kind, v] = r5.reshape(128, 25)
                out45[k, kind, v] = r45.reshape(128, 25)
        if k % 500 == 0:
            print(f"{k}/{len(idx)} {time.time() - t0:.0f} s", file=sys.stderr, flush=True)
    out5.flush()
    out45.flush()
    np.save(os.path.join(a.rc, "idx.npy"), idx)
    print(json.dumps({"rendered": len(idx), "net": net, "seconds": round(time.time() - t0)}), flush=True)


def extend(d, rc, upstream, deep, kinds=(0, 1)):
    """``d`` with the renderings of ``kinds`` (indices into KINDS) appended as rows: labels print
    (0) / screen (2), sources recapture-0 / recapture-2, ``origin`` the real image each was
    rendered from (-1 for the originals), ``feats`` the upstream embeddings of views 0-2 (for v5's
    head standardisation)."""
    idx = np.load(os.path.join(rc, "idx.npy"))
    if not (d["label"][idx] == 1).all():
        raise SystemExit(f"{rc}: idx.npy does not index real images of this --feats cache")
    n, m, k = len(d["label"]), len(idx), len(kinds)
    out = dict(d)
    out["origin"] = np.r_[np.full(n, -1), np.tile(idx, k)]
    out["label"] = np.r_[d["label"], np.repeat([KINDS[i][0] for i in kinds], m)]
    out["source"] = np.r_[d["source"], np.repeat([f"recapture-{KINDS[i][0]}" for i in kinds], m)].astype(
        d["source"].dtype)
    out["group"] = np.r_[d["group"], np.tile(d["group"][idx], k)]
    out["path"] = np.r_[d["path"], np.tile(d["path"][idx], k)]
    cache = "c45" if deep else "c5"
    feats = np.zeros((k * m,) + d["feats"].shape[1:], np.float32)
    out[cache] = list(d[cache])
    for j, net in enumerate(v5.NETS):
        extra = {}
        for key in ("c5", cache):
            x = np.load(os.path.join(rc, f"{key}-{net}.npy"), mmap_mode="r")
            if x.shape[0] != m:
                raise SystemExit(f"{rc}/{key}-{net}.npy: {x.shape[0]} renderings, idx.npy has {m}")
            # (M, kind, view, 128, 25) -> (k M, view, 25, 128): kind-major, as the labels above
            extra[key] = np.concatenate([np.asarray(x[:, i]).transpose(0, 1, 3, 2) for i in kinds])
        t = v5.upstream_tail(upstream, net)
        for v in range(feats.shape[2]):
            feats[:, j, v] = v5.embed_all(t, extra["c5"][:, v])
        out[cache][j] = np.concatenate([d[cache][j], extra[cache]])
    out["feats"] = np.concatenate([d["feats"], feats])
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--render", action="store_true", help="write the renderings' caches for --net")
    ap.add_argument("--net", type=int, choices=(0, 1), help="with --render: 0 = V2 (2.7), 1 = V1SE (4.0)")
    ap.add_argument("--boxes", help="with --render: `veriframe faces` boxes (v3's)")
    ap.add_argument("--shared", default="../shared")
    ap.add_argument("--feats", required=True)
    ap.add_argument("--c5", help="v5_features.py conv_5 caches, V2 then V1SE")
    ap.add_argument("--c45", help="v5_features.py --c45 caches, V2 then V1SE")
    ap.add_argument("--upstream", default="../shared/models/upstream/minifasnet")
    ap.add_argument("--rc", required=True, help="directory of the renderings' caches")
    ap.add_argument("--members", help="directory of the inner models (v11's)")
    ap.add_argument("--train", choices=sorted(CANDIDATES), help="train one candidate's inner model")
    ap.add_argument("--score", action="store_true", help="score13 of every candidate and the rule")
    ap.add_argument("--cand", choices=sorted(c for c, (r, _) in CANDIDATES.items() if r == "v5"),
                    help="a final (--final) or LOSO fold (--leave-out, as tools/train/v3_loso.sh calls it) model")
    ap.add_argument("--final", action="store_true", help="with --cand: trained on every training source")
    ap.add_argument("--leave-out", help="with --cand: a LOSO fold, every training source but this one")
    ap.add_argument("--out", help="with --cand: the model directory (Q8_0 GGUF via --veriframe)")
    ap.add_argument("--veriframe", default="target/release/veriframe")
    ap.add_argument("--hold-nuaa", default=",".join(v4_select.NUAA_VAL), help="accepted for v3_loso.sh")
    a = ap.parse_args()
    if a.render:
        if a.net is None or not a.boxes:
            raise SystemExit("--render needs --net and --boxes")
        render(a)
        return 0
    if not (a.c5 and a.c45):
        raise SystemExit("give --c5 and --c45 (v5_features.py caches)")
    if a.cand:  # only if the candidate passed its bar (pre-registration): v5 family, exported as v5's
        if not a.out or bool(a.final) == bool(a.leave_out):
            raise SystemExit("--cand needs --out and one of --final, --leave-out SOURCE")
        if tuple(g for g in a.hold_nuaa.split(",") if g) != v4_select.NUAA_VAL:
            raise SystemExit("--hold-nuaa must be v4's")
        rec, kinds = CANDIDATES[a.cand]
        hp, _ = v6.recipe(rec)
        d = extend(v6.load_for(a, False), a.rc, a.upstream, False, kinds)
        sources = v5.training_sources("train" if a.final else None, a.leave_out)
        models = v5.train(d, sources, {**hp, "upstream": a.upstream}, seed=v11.SEED)
        v5.export(models, a.upstream, a.out, a.veriframe, f"tools/train/v13_recapture.py --cand {a.cand} "
                  + ("--final" if a.final else f"--leave-out {a.leave_out}"))
        print(json.dumps({"cand": a.cand, "trained_on": sources, "out": a.out}), file=sys.stderr)
        return 0
    if not a.members:
        raise SystemExit("--train and --score need --members")
    if a.train:
        rec, kinds = CANDIDATES[a.train]
        _, deep = v6.recipe(rec)
        d = extend(v6.load_for(a, deep), a.rc, a.upstream, deep, kinds)
        sources = v11.inner_sources()
        path = v11.member_path(a.members, a.train)
        seconds = v11.train_inner(d, rec, sources, path, a.upstream)
        m = v5.training_mask(d, sources)
        print(json.dumps({"trained": a.train, "sources": sources, "out": path, "images": int(m.sum()),
                          "renderings": int((m & (d["origin"] >= 0)).sum()), "seconds": seconds}), flush=True)
        return 0
    if not a.score:
        raise SystemExit("give --render, --train CANDIDATE or --score")
    d = v6.load(a)
    conv5 = v6.trunks_for("D-0.001", a.upstream)
    rows = {"v5": (v11.member_path(a.members, "v5"), None), "v6": (v11.member_path(a.members, "D-0.001"), conv5),
            **{c: (v11.member_path(a.members, c), conv5 if CANDIDATES[c][0] != "v5" else None) for c in CANDIDATES}}
    out = {}
    for name, (path, trunks) in rows.items():
        if not os.path.exists(path):
            print(json.dumps({"cand": name, "not_run": path}), flush=True)
            continue
        w = v11.load_model(path)
        for tta in (False, True):  # addendum 1: the mean over the crop and its mirror (views 0, 1)
            fn = ((lambda m, w=w, t=trunks: (v6.scores(d, w, m, t) + v6.scores(d, w, m, t, view=1)) / 2)
                  if tta else (lambda m, w=w, t=trunks: v6.scores(d, w, m, t)))
            r = v11.metrics(d, fn)
            key = name + (" TTA" if tta else "")
            out[key] = r["inner_auc"]
            print(json.dumps({"cand": key, "inner_auc": r["inner_auc"],
                              **{s: r["per_source"][s]["auc"] for s in v11.INNER}}), flush=True)
    if out.get("v5") != V5_INNER_AUC:
        raise SystemExit(f"v5's inner model scores {out.get('v5')}, v12 measured {V5_INNER_AUC}: not the same model")
    rc = {k: v for k, v in out.items() if k.split(" ")[0] in CANDIDATES or k.endswith(" TTA")}
    if len(rc) == 2 * len(CANDIDATES) + 2:
        best = max(rc, key=rc.get)
        print(json.dumps({"v13_pick": best, "inner_auc": rc[best], "v5_inner_auc": V5_INNER_AUC,
                          f"beats_v5_by_more_than_{MARGIN}": rc[best] > V5_INNER_AUC + MARGIN}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
