#!/usr/bin/env python3
"""PAD v5: fine-tune `conv_6_sep`, `conv_6_dw` and the head of both upstream MiniFASNets.

Pre-registered in tools/train/v5-preregistration.md (read it first; its addenda say how "head as
v4" is read). Per network, on the cached `conv_5` output x (128 channels x 25 positions) of
tools/train/v5_features.py:

    u = W1 x + b1          conv_6_sep, 1x1 conv 128 -> 512 with its batch norm folded in
    z = prelu(u; a)        per-channel slope
    e = sum_p Wd[:, p] z_p + b2   conv_6_dw, depthwise 5x5 on the 5x5 map (valid) -> 512, BN folded
    logits = Wh e + bh     the head, 512 -> 3 (print, real, screen)

Start: the tail is upstream's; the head is v4's (v3_head.train with v4's settings on the upstream
embeddings, itself started from and pulled towards the upstream head). Then mini-batch Adam
(batch 256, seeded shuffles) on the cell-weighted cross-entropy over seven views, with L2-SP:
lambda/2 |tail - upstream tail|^2 + 0.03/2 |(head - upstream head) * sd|^2 (sd = per-dimension
spread of the upstream embedding on the training images, v4's standardised penalty). Class rows
with no training example (print, without NUAA) stay at the upstream head ("freeze-absent").
Everything is float32 numpy with a fixed thread count: the same inputs give the same bytes.

    # the pre-registered grid (validation sources only; --only K runs row K, to split it over cores)
    python tools/train/v5_tail.py --feats /tmp/v3/feats.npz --c5 /tmp/v5/c5-v2.npy,/tmp/v5/c5-v1se.npy --select > rows.jsonl
    python tools/train/v5_tail.py --feats ... --c5 ... --pick rows.jsonl     # the selection rule
    # one model (like v3_head.py: --train train | --leave-out SOURCE, --out DIR)
    python tools/train/v5_tail.py ... --lam 1e-2 --epochs 3 --lr 1e-4 --train train --out DIR
    # the upstream tail on the cache reproduces v3's embedding cache
    python tools/train/v5_tail.py ... --check
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import v3_head as h  # noqa: E402
import v4_select  # noqa: E402
from v3_head import softmax  # noqa: E402
from v4_select import NUAA_VAL  # noqa: E402

NETS = ("v2", "v1se")
HEAD_L2 = 0.03  # v4's head lambda
BATCH = 256
TAIL_KEYS = ("W1", "b1", "a", "Wd", "b2")


def load(feats, c5_paths):
    d = h.load(feats)
    d["c5"] = []
    for p in c5_paths:
        c5 = np.load(p, mmap_mode="r")
        if c5.shape[0] != len(d["label"]):
            raise SystemExit(f"{p}: {c5.shape[0]} images, {feats} has {len(d['label'])}")
        d["c5"].append(np.ascontiguousarray(np.asarray(c5).transpose(0, 1, 3, 2)))  # (N, 7, 25, 128)
    return d


def upstream_tail(upstream_dir, net):
    """conv_6_sep / conv_6_dw of the upstream state dict with their batch norms folded in."""
    from safetensors.numpy import load_file

    sd = load_file(os.path.join(upstream_dir, h.UPSTREAM[net]))

    def fold(p):
        k = sd[f"{p}.bn.weight"] / np.sqrt(sd[f"{p}.bn.running_var"] + h.BN_EPS)
        return k, sd[f"{p}.bn.bias"] - sd[f"{p}.bn.running_mean"] * k

    k1, b1 = fold("conv_6_sep")
    k2, b2 = fold("conv_6_dw")
    t = {"W1": sd["conv_6_sep.conv.weight"].reshape(512, 128) * k1[:, None], "b1": b1,
         "a": sd["conv_6_sep.prelu.weight"].reshape(512),
         "Wd": sd["conv_6_dw.conv.weight"].reshape(512, 25) * k2[:, None], "b2": b2}
    return {k: v.astype(np.float32) for k, v in t.items()}


def embed(t, x, keep=False):
    """x (B, 25, 128) -> e (B, 512); with ``keep`` also what backward needs."""
    b = x.shape[0]
    u = x.reshape(b * 25, 128) @ t["W1"].T + t["b1"]
    neg = u <= 0
    z = np.where(neg, u * t["a"], u).reshape(b, 25, 512)
    e = np.einsum("bpc,cp->bc", z, t["Wd"], optimize=True) + t["b2"]
    return (e, (u, neg, z)) if keep else e


def embed_all(t, xs, chunk=2048):
    return np.concatenate([embed(t, xs[i:i + chunk]) for i in range(0, len(xs), chunk)])


def grads(t, x, y, w, want_dx=False, ce_out=None, align=None):
    """Loss mean(w * CE) and its gradient for one batch (parameters t: tail, head W (3, 512), bh);
    with ``want_dx`` also the gradient with respect to the input x (v6 trains what feeds it).
    ``align`` (v11 RA): (beta, per-image source) adds beta/512 sum_s (n_s/n_r) |mu_s - mu|^2 over
    the batch's real images (mu_s: mean embedding of source s's reals, mu: of all n_r reals)."""
    e, (u, neg, z) = embed(t, x, keep=True)
    W = t["W"]
    p = softmax(e @ W.T + t["bh"])
    n = len(y)
    ce = -np.log(p[np.arange(n), y] + 1e-12)
    loss = float((w * ce).mean())
    if ce_out is not None:  # v8 group DRO: the per-image cross-entropy
        ce_out.append(ce)
    g = p
    g[np.arange(n), y] -= 1
    g *= (w / n)[:, None]
    gr = {"W": g.T @ e, "bh": g.sum(0)}
    de = g @ W  # (B, 512)
    if align is not None:
        loss += _align(e, y, align, de)
    gr["Wd"] = np.einsum("bc,bpc->cp", de, z, optimize=True)
    gr["b2"] = de.sum(0)
    dz = (de[:, None, :] * t["Wd"].T[None]).reshape(-1, 512)  # (B*25, 512)
    gr["a"] = (dz * u * neg).sum(0)
    du = np.where(neg, dz * t["a"], dz)
    gr["W1"] = du.T @ x.reshape(-1, 128)
    gr["b1"] = du.sum(0)
    if want_dx:
        return loss, gr, (du @ t["W1"]).reshape(x.shape)
    return loss, gr


def _align(e, y, align, de):
    """v11 RA's single-side alignment of real embeddings across sources: adds its gradient
    2 beta / (512 n_r) (mu_s - mu) to ``de`` in place (the term through mu sums to zero) and
    returns its value."""
    beta, src = align
    r = np.flatnonzero(y == 1)
    if not len(r):
        return 0.0
    er = e[r]
    mu = er.mean(0)
    _, inv = np.unique(src[r], return_inverse=True)
    sums = np.zeros((inv.max() + 1, e.shape[1]), e.dtype)
    np.add.at(sums, inv, er)
    cnt = np.bincount(inv)
    diff = sums / cnt[:, None].astype(e.dtype) - mu
    de[r] += (2 * beta / (e.shape[1] * len(r))) * diff[inv]
    return float(beta / e.shape[1] * (cnt / len(r) * (diff.astype(np.float64) ** 2).sum(1)).sum())


def mixstyle(x, src, alpha, mode, rng):
    """MixStyle (v9, tools/train/v9-preregistration.md) on a batch x (B, positions, channels):
    each image's per-channel mean and standard deviation over the positions become a Beta(alpha,
    alpha) mix of its own and a partner's; partners by a random permutation ("r") or drawn from the
    batch's images of another source ("d"; an image whose batch holds no other source keeps its own)."""
    b = len(x)
    mu = x.mean(1, keepdims=True)
    sig = np.sqrt(x.var(1, keepdims=True) + 1e-6)
    lam = rng.beta(alpha, alpha, size=(b, 1, 1)).astype(np.float32)
    if mode == "r":
        part = rng.permutation(b)
    else:
        part = np.arange(b)
        for i in range(b):
            other = np.flatnonzero(src != src[i])
            if len(other):
                part[i] = other[rng.integers(len(other))]
    mu2 = lam * mu + (1 - lam) * mu[part]
    sig2 = lam * sig + (1 - lam) * sig[part]
    return ((x - mu) / sig * sig2 + mu2).astype(np.float32)


def train_net(d, j, m, cand, head0, prior_head, freeze, seed, trunk=None):
    """Fine-tune one network on images ``m`` (bool mask); returns (tail, (W, bh)).

    ``trunk`` (v6 D): blocks before the tail that are trained too, on the cache ``d["c45"]``; an
    object with ``init`` (upstream parameters, trained under the same L2-SP), ``forward(p, x)`` ->
    (out, saved) and ``backward(p, saved, dout)`` -> gradients. Then the tail dict also holds them."""
    t0 = upstream_tail(cand["upstream"], NETS[j])
    if trunk is not None:
        t0 = {**t0, **trunk.init}
    W, bh = head0[0].astype(np.float32), head0[1].astype(np.float32)  # astype copies
    Wp = prior_head[0].astype(np.float32)
    idx = np.flatnonzero(m)
    x_all = d["c5" if trunk is None else trunk.cache][j]
    views = x_all.shape[1]
    sd2 = (d["feats"][idx, j, 0].std(0) + 1e-6).astype(np.float32) ** 2  # v4's standardisation
    w_img = h.weights(d["label"][idx], d["source"][idx]).astype(np.float32)
    w_img *= len(w_img) / w_img.sum()  # mean 1
    pairs = np.array([(i, v) for i in range(len(idx)) for v in range(views)], np.int64)
    params = {**{k: v.copy() for k, v in t0.items()}, "W": W, "bh": bh}
    mom = {k: np.zeros_like(v) for k, v in params.items()}
    vel = {k: np.zeros_like(v) for k, v in params.items()}
    rng = np.random.default_rng([seed, j])
    lam, lr, step = np.float32(cand["lam"]), cand["lr"], 0
    eta = cand.get("dro", 0.0)  # v8: online group DRO over (source, class) cells; 0 = off
    if eta:
        key = np.char.add(d["source"][idx].astype(str), np.char.add("/", d["label"][idx].astype(str)))
        cells, cell = np.unique(key, return_inverse=True)
        n_c = np.bincount(cell).astype(np.float64)
        q = np.full(len(cells), 1.0 / len(cells))
    ms = cand.get("mixstyle")  # v9: (p, alpha, "r" random or "d" cross-source partners); None = off
    ms_rng = np.random.default_rng([seed, j, 9])
    for _ in range(cand["epochs"]):
        order = rng.permutation(len(pairs))
        for s in range(0, len(order), BATCH):
            bi = pairs[order[s:s + BATCH]]
            x = x_all[idx[bi[:, 0]], bi[:, 1]]
            if ms and ms_rng.random() < ms[0]:
                x = mixstyle(x, d["source"][idx[bi[:, 0]]], ms[1], ms[2], ms_rng)
            wb, ce = w_img[bi[:, 0]], None
            al = None if not cand.get("align") else (np.float32(cand["align"]), d["source"][idx[bi[:, 0]]])
            if eta:  # weight q_c * N / n_c: uniform q gives the cell weights above
                cb = cell[bi[:, 0]]
                wb, ce = (q[cb] * len(idx) / n_c[cb]).astype(np.float32), []
            if trunk is None:
                _, gr = grads(params, x, d["label"][idx[bi[:, 0]]], wb, ce_out=ce, align=al)
            else:
                xo, saved = trunk.forward(params, x)
                _, gr, dxo = grads(params, xo, d["label"][idx[bi[:, 0]]], wb, want_dx=True, ce_out=ce,
                                   align=al)
                gr.update(trunk.backward(params, saved, dxo))
            if eta:  # exponentiated-gradient step on q with this batch's per-cell mean loss
                present = np.unique(cb)
                lc = np.bincount(cb, weights=ce[0], minlength=len(cells))[present] / np.bincount(cb)[present]
                q[present] *= np.exp(eta * lc)
                q /= q.sum()
            for k in t0:
                gr[k] += lam * (params[k] - t0[k])
            gr["W"] += np.float32(HEAD_L2) * (params["W"] - Wp) * sd2
            for k in freeze:
                gr["W"][k] = 0
                gr["bh"][k] = 0
            step += 1
            for k, gk in gr.items():
                mom[k] = 0.9 * mom[k] + 0.1 * gk
                vel[k] = 0.999 * vel[k] + 0.001 * gk * gk
                mh = mom[k] / (1 - 0.9 ** step)
                vh = vel[k] / (1 - 0.999 ** step)
                params[k] = (params[k] - lr * mh / (np.sqrt(vh) + 1e-8)).astype(np.float32)
    if eta:
        print(json.dumps({"net": NETS[j], "dro": eta, "q": {c: round(float(v), 4) for c, v in zip(cells, q)}}),
              file=sys.stderr, flush=True)
    return {k: params[k] for k in t0}, (params["W"], params["bh"])


def training_mask(d, sources, held_groups=NUAA_VAL):
    """The images a fine-tune trains on: those of ``sources`` (h.trainable_mask) and, where v13's
    renderings are appended to the caches (``d["origin"]``: the real image each was rendered
    from, -1 for the originals), the renderings of exactly those real images."""
    m = h.trainable_mask(d, sources, held_groups)
    if "origin" in d:
        o = d["origin"]
        m |= (o >= 0) & m[np.maximum(o, 0)]
    return m


def train(d, sources, cand, held_groups=NUAA_VAL, seed=20261204, trunks=None):
    """Both networks: the v4 head on upstream embeddings first, then the joint fine-tune
    (``trunks``: per network, v6 D's trained blocks; see train_net)."""
    heads = h.train(d, sources, HEAD_L2, prior_dir=cand["upstream"], freeze_absent=True,
                    held_groups=held_groups)
    m = training_mask(d, sources, held_groups)
    out = {}
    for j, net in enumerate(NETS):
        prior = h.upstream_head(cand["upstream"], net)
        freeze = [k for k in range(3) if not (d["label"][m] == k).any()]
        if freeze:  # v4 kept these rows at the prior; so does v5
            assert np.allclose(heads[net][0][freeze], prior[0][freeze], atol=1e-4)
        out[net] = train_net(d, j, m, cand, heads[net], prior, freeze, seed,
                             None if trunks is None else trunks[net])
    return out


def score(d, models, mask, view=0):
    s = 0
    for j, net in enumerate(NETS):
        t, (W, bh) = models[net]
        e = embed_all(t, d["c5"][j][mask, view])
        s = s + softmax(e @ W.T + bh)[:, 1]
    return s / 2


def auc_on(d, models, mask):
    s = score(d, models, mask)
    lab = d["label"][mask]
    return h.auc(s[lab == 1], s[lab != 1])


def evaluate(d, cand):
    """v4's selection score for one candidate (see v4_select.py)."""
    masks = v4_select.validation_masks(d)
    full = train(d, h.TRAINABLE, cand)
    probe = train(d, [s for s in h.TRAINABLE if s != "nuaa"], cand)
    per = {v: auc_on(d, full, masks[v]) for v in h.VALIDATION}
    per["nuaa-val(probe)"] = auc_on(d, probe, masks["nuaa-val"])
    pooled = np.isin(d["source"], h.VALIDATION)
    return {"score": min(per.values()), "pooled_val_auc": auc_on(d, full, pooled),
            "auc": {k: round(v, 4) for k, v in per.items()}}


def tail_tensors(t):
    """The tuned tail as upstream state-dict tensors (BN as identity + bias, as v3_head.export does
    for the head)."""
    g = np.full(512, np.sqrt(1 + h.BN_EPS), np.float32)
    return {
        "conv_6_sep.conv.weight": t["W1"].reshape(512, 128, 1, 1),
        "conv_6_sep.bn.weight": g, "conv_6_sep.bn.bias": t["b1"],
        "conv_6_sep.bn.running_mean": np.zeros(512, np.float32),
        "conv_6_sep.bn.running_var": np.ones(512, np.float32),
        "conv_6_sep.prelu.weight": t["a"],
        "conv_6_dw.conv.weight": t["Wd"].reshape(512, 1, 5, 5),
        "conv_6_dw.bn.weight": g, "conv_6_dw.bn.bias": t["b2"],
        "conv_6_dw.bn.running_mean": np.zeros(512, np.float32),
        "conv_6_dw.bn.running_var": np.ones(512, np.float32),
    }


def export(models, upstream_dir, out_dir, veriframe, recipe):
    """Write the tuned tail into the upstream state dicts and convert (v3_head.export)."""
    extra = {net: tail_tensors(t) for net, (t, _) in models.items()}
    h.export({net: hd for net, (_, hd) in models.items()}, upstream_dir, out_dir, veriframe,
             extra=extra, recipe=recipe)


def check(d, upstream):
    """The upstream tail on this cache must give v3's cached embeddings (same crops, same views)."""
    for j, net in enumerate(NETS):
        t = upstream_tail(upstream, net)
        for v in range(3):
            e = embed_all(t, d["c5"][j][:, v])
            ref = d["feats"][:, j, v]
            rel = np.abs(e - ref).max() / np.abs(ref).max()
            print(f"{net} view {v}: max |e - v3| / max |v3| = {rel:.2e}")
            if rel > 1e-4:
                raise SystemExit("the conv_5 cache does not reproduce v3's embeddings")


V4_SCORE = 0.98709  # v4's selection score (tools/train/v4_select.py; epochs 0 here gives it too)


def pick(rows):
    """v4's rule on the grid rows, then the pre-registered bar: beat v4 by more than 0.002."""
    choice = v4_select.pick(sorted(rows, key=lambda r: r["row"]))
    return {"pick": choice, "beats_v4": choice["score"] > V4_SCORE + 0.002}


def training_sources(train_arg, leave_out):
    """The sources of one model: every trainable one ("--train train") or a LOSO fold's."""
    if leave_out:
        return h.fold_sources(leave_out)
    if train_arg == "train":
        return h.TRAINABLE
    raise SystemExit("give --train train or --leave-out SOURCE")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--feats", required=True, help="v3_features.py cache (labels, sources, v4 head input)")
    ap.add_argument("--c5", required=True, help="v5_features.py caches, V2 then V1SE, comma separated")
    ap.add_argument("--upstream", default="../shared/models/upstream/minifasnet")
    ap.add_argument("--veriframe", default="target/release/veriframe")
    ap.add_argument("--check", action="store_true")
    ap.add_argument("--select", action="store_true", help="the pre-registered grid (JSON line each)")
    ap.add_argument("--only", type=int, help="with --select: only grid row K (0-based), to split the grid")
    ap.add_argument("--pick", help="comma list of --select outputs: apply the selection rule")
    ap.add_argument("--lam", type=float, default=1e-2)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--train", help='"train" = every trainable source')
    ap.add_argument("--leave-out", help="LOSO fold: train on every trainable source but this one")
    ap.add_argument("--hold-nuaa", default=",".join(NUAA_VAL), help="accepted for v3_loso.sh; must be v4's")
    ap.add_argument("--out")
    a, _ = ap.parse_known_args()
    if a.pick:
        rows = [json.loads(line) for f in a.pick.split(",") for line in open(f) if line.strip()]
        if sorted(r["row"] for r in rows) != list(range(12)):
            raise SystemExit(f"the grid has 12 rows; got {sorted(r['row'] for r in rows)}")
        print(json.dumps(pick(rows)))
        return 0
    if tuple(g for g in a.hold_nuaa.split(",") if g) != NUAA_VAL:
        raise SystemExit(f"--hold-nuaa must be {','.join(NUAA_VAL)} (v4's protocol)")
    d = load(a.feats, a.c5.split(","))
    if a.check:
        check(d, a.upstream)
        return 0
    if a.select:
        grid = [dict(lam=lam, epochs=ep, lr=lr) for lam, ep, lr in
                itertools.product((1e-3, 1e-2, 1e-1), (3, 10), (1e-4, 1e-3))]
        for k, cand in enumerate(grid):
            if a.only is not None and k != a.only:
                continue
            t0 = time.time()
            r = evaluate(d, {**cand, "upstream": a.upstream})
            print(json.dumps({"row": k, **cand, **r, "seconds": round(time.time() - t0)}), flush=True)
        return 0
    cand = dict(lam=a.lam, epochs=a.epochs, lr=a.lr, upstream=a.upstream)
    sources = training_sources(a.train, a.leave_out)
    models = train(d, sources, cand)
    print(json.dumps({"trained_on": sources, "lam": a.lam, "epochs": a.epochs, "lr": a.lr}), file=sys.stderr)
    if a.out:
        export(models, a.upstream, a.out, a.veriframe,
               f"tools/train/v5_tail.py --lam {a.lam} --epochs {a.epochs} --lr {a.lr}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
