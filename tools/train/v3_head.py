#!/usr/bin/env python3
"""PAD v3: retrain the linear heads of the upstream MiniFASNetV2 + V1SE pair on frozen embeddings.

Input: the embedding cache of tools/train/v3_features.py. Each network keeps its upstream trunk
and gets a new linear head (512 -> 3 classes: print, real, screen), trained as a multinomial
logistic regression with L2, every (source, class) cell weighted equally, on three views per image
(crop, mirror, exposure-rescaled). MiniFASNet's head is linear -> batch norm -> prob with no
non-linearity between them, so a 512 -> 3 linear map is exactly what the runtime network can
hold: it is written back as linear rows 0-2 = W, bn = identity + bias, prob = [I | 0]
(`export`), and converted with `veriframe model convert` like any upstream state dict.

Deterministic: full-batch Adam from zeros, no sampling; the same cache gives the same weights.

    # one model: train on SOURCES (comma list, or "train" = every non-validation source)
    python tools/train/v3_head.py --feats /tmp/v3/feats.npz --train train --out DIR
    # the model-selection sweep on the validation sources (prints one line per setting)
    python tools/train/v3_head.py --feats /tmp/v3/feats.npz --sweep
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import numpy as np

VALIDATION = ["balveer", "trickyf0x", "vishalkrishna"]  # counts.json "validation"
TRAINABLE = ["nuaa", "replay-crops", "aksultan", "jtboing", "krzysiek354", "neonipun",
             "shivamyadav", "shubhamlala"]
# replay-crops' second person is also one of shivamyadav's two people (../shared/README.md):
# a fold that leaves one of them out drops the other from training too.
LINKED = {"replay-crops": ["shivamyadav"], "shivamyadav": ["replay-crops"]}
UPSTREAM = {"v2": "2.7_80x80_MiniFASNetV2.safetensors", "v1se": "4_0_0_80x80_MiniFASNetV1SE.safetensors"}
ARCH = {"v2": "minifasnet_v2", "v1se": "minifasnet_v1se"}
BN_EPS = 1e-5


def load(path):
    z = np.load(path)
    return {k: z[k] for k in z.files}


def softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def fit(x, y, w, l2, prior=None, iters=600, lr=0.05, loss="multi", freeze=()):
    """Weighted multinomial logistic regression; x standardised inside, folded back out.

    ``prior`` = (W (3, 512), b (3,)) on raw features: start there and pull towards it (L2-SP,
    the penalty is on the distance from the prior), so what the upstream head knows about
    attacks the training sources lack (prints, for a fold without NUAA) is kept unless the
    data argue against it. Without a prior: start from zero, penalise the weights.

    ``loss="binary"`` (v4 candidate): real against attack, where an attack may be either attack
    class (its probability is p_print + p_screen), so screens no longer push the print logit down.
    ``freeze``: class rows kept exactly at the prior (v4 candidate: classes with no training
    example, e.g. print in a fold without NUAA).
    """
    mu, sd = x.mean(0), x.std(0) + 1e-6
    xs = (x - mu) / sd
    n, d = xs.shape
    if prior is None:
        W0, b0 = np.zeros((d, 3)), np.zeros(3)
    else:
        W0 = (prior[0] * sd).T.astype(np.float64)  # standardised space
        b0 = (prior[1] + prior[0] @ mu).astype(np.float64)
    W, b = W0.copy(), b0.copy()
    mW, vW, mb, vb = (np.zeros_like(W), np.zeros_like(W), np.zeros_like(b), np.zeros_like(b))
    onehot = np.eye(3)[y]
    wn = w / w.sum()
    for t in range(1, iters + 1):
        p = softmax(xs @ W + b)
        if loss == "binary":
            attack = onehot[:, 1] == 0
            target = onehot.copy()
            q = p[attack][:, [0, 2]]
            target[np.ix_(attack, [0, 2])] = q / q.sum(1, keepdims=True)
        else:
            target = onehot
        g = (p - target) * wn[:, None]
        gW = xs.T @ g + l2 * (W - W0)
        gb = g.sum(0)
        for k in freeze:
            gW[:, k] = 0
            gb[k] = 0
        for (m, v, gr, par) in ((mW, vW, gW, W), (mb, vb, gb, b)):
            m *= 0.9
            m += 0.1 * gr
            v *= 0.999
            v += 0.001 * gr * gr
            par -= lr * (m / (1 - 0.9 ** t)) / (np.sqrt(v / (1 - 0.999 ** t)) + 1e-8)
    Wf = (W / sd[:, None]).T  # (3, 512) on raw features
    bf = b - (mu / sd) @ W
    return Wf.astype(np.float32), bf.astype(np.float32)


def upstream_head(upstream_dir, net):
    """The upstream network's head as one linear map on the 512-d embedding: prob . bn . linear."""
    from safetensors.numpy import load_file

    sd = load_file(os.path.join(upstream_dir, UPSTREAM[net]))
    k = sd["bn.weight"] / np.sqrt(sd["bn.running_var"] + BN_EPS)
    W = sd["prob.weight"] @ (k[:, None] * sd["linear.weight"])
    b = sd["prob.weight"] @ (sd["bn.bias"] - sd["bn.running_mean"] * k)
    return W.astype(np.float64), b.astype(np.float64)


def weights(label, source):
    cell = np.char.add(source.astype(str), (label == 1).astype(str))
    cells, inv, counts = np.unique(cell, return_inverse=True, return_counts=True)
    return 1.0 / counts[inv]


def fold_sources(leave_out):
    """A leave-one-source-out fold's training sources: every trainable one but ``leave_out`` and
    the sources linked to it."""
    drop = [leave_out] + LINKED.get(leave_out, [])
    return [s for s in TRAINABLE if s not in drop]


def trainable_mask(d, sources, held_groups=()):
    """Images of ``sources``, less the NUAA subjects held out for validation (v4 protocol)."""
    m = np.isin(d["source"], sources)
    if held_groups:
        m &= ~((d["source"] == "nuaa") & np.isin(d["group"], list(held_groups)))
    return m


def train(d, sources, l2, views=(0, 1, 2), prior_dir=None, loss="multi", freeze_absent=False,
          recapture=None, held_groups=()):
    """Heads for both networks. Defaults reproduce v3 exactly; the keywords are v4's candidates.

    ``recapture``: the v4_recapture.py cache; its synthetic print / screen views of the training
    reals are added as two more (source, class) cells of equal weight.
    """
    m = trainable_mask(d, sources, held_groups)
    heads = {}
    for j, net in enumerate(("v2", "v1se")):
        prior = upstream_head(prior_dir, net) if prior_dir else None
        x = [d["feats"][m, j, v] for v in views]
        y = [d["label"][m]] * len(views)
        src = [d["source"][m]] * len(views)
        if recapture is not None:
            keep = m[recapture["idx"]]
            for kind, label in ((0, 0), (1, 2)):
                x.append(recapture["feats"][keep, j, kind])
                y.append(np.full(int(keep.sum()), label))
                src.append(np.full(int(keep.sum()), f"recapture-{label}"))
        x, y, src = np.concatenate(x), np.concatenate(y), np.concatenate(src)
        if recapture is None:  # v3's weighting, kept bit for bit
            w = np.concatenate([weights(d["label"][m], d["source"][m])] * len(views))
        else:
            w = weights(y, src)
        freeze = [k for k in range(3) if freeze_absent and not (y == k).any()]
        heads[net] = fit(x.astype(np.float64), y, w, l2, prior, loss=loss, freeze=freeze)
    return heads


def score(d, heads, mask):
    s = 0
    for j, net in enumerate(("v2", "v1se")):
        W, b = heads[net]
        s = s + softmax(d["feats"][mask, j, 0] @ W.T + b)[:, 1]
    return s / 2


def auc(real, attack):
    # Probability a real image outscores an attack (ties count half).
    r = np.sort(real)
    lo = np.searchsorted(r, attack, side="left")
    hi = np.searchsorted(r, attack, side="right")
    return float(((len(r) - hi) + 0.5 * (hi - lo)).sum() / (len(r) * len(attack)))


def export(heads, upstream_dir, out_dir, veriframe, extra=None, recipe=None):
    """Write each head into a copy of the upstream state dict; ``extra[net]`` (v5) replaces more
    tensors, ``recipe`` the metadata text (the default keeps v3/v4 files byte-identical)."""
    from safetensors.numpy import load_file, save_file

    os.makedirs(out_dir, exist_ok=True)
    for net, (W, b) in heads.items():
        sd = load_file(os.path.join(upstream_dir, UPSTREAM[net]))
        lin = np.zeros_like(sd["linear.weight"])
        lin[:3] = W
        gamma = np.full_like(sd["bn.weight"], np.sqrt(1 + BN_EPS))  # (x - 0) / sqrt(1 + eps) * gamma = x
        beta = np.zeros_like(sd["bn.bias"])
        beta[:3] = b
        prob = np.zeros_like(sd["prob.weight"])
        prob[:, :3] = np.eye(3, dtype=prob.dtype)
        sd.update({"linear.weight": lin, "bn.weight": gamma, "bn.bias": beta,
                   "bn.running_mean": np.zeros_like(beta), "bn.running_var": np.ones_like(beta),
                   "prob.weight": prob})
        for k, v in (extra or {}).get(net, {}).items():
            assert sd[k].shape == v.shape, k  # a tuned tensor keeps the upstream shape
            sd[k] = v.astype(sd[k].dtype)
        st = os.path.join(out_dir, f"veriframe-pad-v3-{net}.safetensors")
        # One metadata key: safetensors writes a map's keys in no fixed order, and the GGUF records
        # this file's SHA-256, so more keys would make byte-identical reruns impossible.
        save_file(sd, st, metadata={"recipe": f"{recipe or 'tools/train/v3_head.py'} on {UPSTREAM[net]}"})
        for q in ("q8_0", "f32"):
            subprocess.run([veriframe, "model", "convert", "--arch", ARCH[net], "--in", st, "--out",
                            os.path.join(out_dir, f"minifasnet-v3-{net}.{q}.gguf"), "--quant", q],
                           check=True, stdout=subprocess.DEVNULL)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--feats", required=True)
    ap.add_argument("--train", help='comma list of sources, or "train" (all non-validation sources)')
    ap.add_argument("--leave-out", help="train on every trainable source but this one (LOSO fold)")
    ap.add_argument("--l2", type=float, default=1e-2)  # chosen by --sweep (best worst-source validation AUC)
    ap.add_argument("--out", help="directory for the safetensors + GGUF models")
    ap.add_argument("--upstream", default="../shared/models/upstream/minifasnet")
    ap.add_argument("--veriframe", default="target/release/veriframe")
    ap.add_argument("--sweep", action="store_true", help="model selection on the validation sources")
    ap.add_argument("--sweep-l2", default="1e-4,1e-3,1e-2,1e-1", help="L2 values the sweep tries")
    ap.add_argument("--prior", action="store_true",
                    help="start from the upstream heads and pull towards them (L2-SP) instead of zero")
    ap.add_argument("--loss", choices=("multi", "binary"), default="multi", help="v4 candidate (v4_select.py)")
    ap.add_argument("--freeze-absent", action="store_true", help="v4 candidate: keep rows of untrained classes")
    ap.add_argument("--recapture", help="v4: the v4_recapture.py cache, added to training")
    ap.add_argument("--hold-nuaa", default="", help="v4: NUAA subjects never trained on (comma list)")
    a = ap.parse_args()
    d = load(a.feats)
    v4 = dict(loss=a.loss, freeze_absent=a.freeze_absent, recapture=load(a.recapture) if a.recapture else None,
              held_groups=tuple(g for g in a.hold_nuaa.split(",") if g))
    if a.sweep:
        val = np.isin(d["source"], VALIDATION)
        for l2 in [float(v) for v in a.sweep_l2.split(",")]:
            for views in ((0,), (0, 1, 2)):
                h = train(d, TRAINABLE, l2, views, a.upstream if a.prior else None)
                s = score(d, h, val)
                lab = d["label"][val]
                per = {v: round(auc(s[(d["source"][val] == v) & (lab == 1)],
                                    s[(d["source"][val] == v) & (lab != 1)]), 4) for v in VALIDATION}
                print(json.dumps({"prior": a.prior, "l2": l2, "views": views, "val_auc_pooled": round(auc(s[lab == 1], s[lab != 1]), 4),
                                  "val_auc": per}), flush=True)
        return 0
    if a.leave_out:
        sources = fold_sources(a.leave_out)
    elif a.train == "train":
        sources = TRAINABLE
    else:
        sources = a.train.split(",")
    h = train(d, sources, a.l2, prior_dir=a.upstream if a.prior else None, **v4)
    print(json.dumps({"trained_on": sources, "l2": a.l2, "prior": a.prior, "loss": a.loss,
                      "freeze_absent": a.freeze_absent, "recapture": bool(a.recapture),
                      "hold_nuaa": a.hold_nuaa}), file=sys.stderr)
    if a.out:
        export(h, a.upstream, a.out, a.veriframe)
    return 0


if __name__ == "__main__":
    sys.exit(main())
