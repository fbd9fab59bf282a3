#!/usr/bin/env python3
"""PAD v6: seed soup (S3), conv_5 fine-tune (D), and the calibration-aware selection score.

Pre-registered in tools/train/v6-preregistration.md (read it and its addenda first). Everything
else is v5's (tools/train/v5_tail.py): data, views, split, Adam, L2-SP, the v4 head start.

  v5      v5_tail's recipe with seed 20261204 (lambda 1e-3, 10 epochs, lr 1e-4)
  S3      the tensor-by-tensor mean of v5 trained with seeds 20261204, 20261205, 20261206
  D-LAM   conv_5's two residual blocks trained too (on the conv_45 cache), L2-SP lambda LAM on
          every trained tensor; seed 20261204
  S3D-LAM the three-seed soup of D-LAM
  DG-ETA  v8: D-0.001 with online group DRO over (source, class) cells, step size ETA
          (tools/train/v8-preregistration.md; v5_tail.train_net's ``dro``)
  MS-r/-d v9: D-0.001 with MixStyle on conv_5's input, random or cross-source partners
          (tools/train/v9-preregistration.md; v5_tail.mixstyle)
  D45-LAM v10: conv_45 trained too (Conv45, on the conv_4 cache of v5_features.py --c4; give
          --c4 to --check, --member and --score), L2-SP lambda LAM (tools/train/v10-preregistration.md)
  RA-BETA v11: D-0.001 with real faces' mean embeddings aligned across sources, weight BETA
          (tools/train/v11-preregistration.md addendum 1; v5_tail.grads's ``align``)
  v5L-0.01, v5E-3, v5E-30, v5R-3e-4  v12: v5 with L2-SP lambda 1e-2, 3 or 30 epochs, or lr 3e-4
          (tools/train/v12-preregistration.md)

A member is one seed of one recipe, trained twice: F on every trainable source, P without NUAA
(the print probe). Members are saved, so the soups and v5 come from the same runs:

    C="--feats /tmp/v3/feats.npz --c5 /tmp/v5/c5-v2.npy,/tmp/v5/c5-v1se.npy --c45 /tmp/v6/c45-v2.npy,/tmp/v6/c45-v1se.npy"
    python tools/train/v6_select.py $C --check                      # conv_5 on conv_45 gives conv_5's cache; D's gradients
    python tools/train/v6_select.py $C --member v5 --seed 20261204 --members /tmp/v6/m
    python tools/train/v6_select.py $C --score --members /tmp/v6/m  # every candidate whose members exist; the pick
    python tools/train/v6_select.py $C --cand S3 --train train --out DIR     # final (or --leave-out SOURCE)
    python tools/train/v6_select.py $C --cand S3 --train train --members /tmp/v6/m --out DIR  # final from the members' F

v15 (tools/train/v15-preregistration.md), a site-calibration simulation: a LOSO fold that also
trains on the left-out source's first half of blocks, and the link tree of its test half:

    python tools/train/v6_select.py $C --cand D-0.001 --leave-out aksultan --calibrate --out DIR
    python tools/train/v6_select.py $C --leave-out aksultan --site-tree /tmp/v15/test-aksultan

Score (pre-registered): mean of v4's score (worst validation AUC, print probe included) and
1 - the worst per-source BPCER among balveer, trickyf0x, vishalkrishna and NUAA-val at the
threshold tools/train/v3_threshold.py's rule gives on F's pooled float scores there (view 0).
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
import v3_features as v3  # noqa: E402
import v3_head as h  # noqa: E402
import v4_select  # noqa: E402
import v5_tail as v5  # noqa: E402
from v3_head import softmax  # noqa: E402
from v3_threshold import threshold  # noqa: E402

SEEDS = (20261204, 20261205, 20261206)
V5 = dict(lam=1e-3, epochs=10, lr=1e-4)
D_LAMS = (1e-3, 1e-2)
DRO_ETAS = (0.003, 0.03)  # v8 (tools/train/v8-preregistration.md): D-0.001 with group DRO
RA_BETAS = (0.1, 1.0)  # v11 (tools/train/v11-preregistration.md): D-0.001 with real alignment
V12 = {"v5L-0.01": {"lam": 1e-2}, "v5E-3": {"epochs": 3},  # v12 (tools/train/v12-preregistration.md)
       "v5E-30": {"epochs": 30}, "v5R-3e-4": {"lr": 3e-4}}  # v12 addendum 1
V5_SEED = SEEDS[0]


def recipe(name):
    """(hyper-parameters, trains conv_5?) of a member recipe: "v5" or "D-<lambda>"."""
    if name == "v5":
        return V5, False
    if name.startswith("D-") and float(name[2:]) in D_LAMS:
        return {**V5, "lam": float(name[2:])}, True
    if name.startswith("DG-") and float(name[3:]) in DRO_ETAS:
        return {**V5, "lam": 1e-3, "dro": float(name[3:])}, True
    if name in ("MS-r", "MS-d"):  # v9 (tools/train/v9-preregistration.md)
        return {**V5, "lam": 1e-3, "mixstyle": (0.5, 0.1, name[3])}, True
    if name.startswith("D45-") and float(name[4:]) in D_LAMS:  # v10: conv_45 trained too
        return {**V5, "lam": float(name[4:])}, "45"
    if name.startswith("RA-") and float(name[3:]) in RA_BETAS:  # v11: real alignment across sources
        return {**V5, "lam": 1e-3, "align": float(name[3:])}, True
    if name in V12:  # v12: v5's recipe (tail and head only) held closer to upstream
        return {**V5, **V12[name]}, False
    raise SystemExit(f"unknown recipe {name!r}: " + ", ".join(RECIPES))


RECIPES = (["v5"] + [f"D-{lam:g}" for lam in D_LAMS] + [f"DG-{eta:g}" for eta in DRO_ETAS] + ["MS-r", "MS-d"]
           + [f"D45-{lam:g}" for lam in D_LAMS] + [f"RA-{b:g}" for b in RA_BETAS] + list(V12))


def candidate(name):
    """(member recipe, seeds) of a candidate: v5, S3, D-LAM, S3D-LAM."""
    if name == "S3":
        return "v5", SEEDS
    if name.startswith("S3D-"):
        return "D-" + name[4:], SEEDS
    return name, (V5_SEED,)


# --- conv_5: two MobileFaceNet residual blocks (V1SE: the second with squeeze-excitation) -------

def _fold(sd, bn):
    k = sd[f"{bn}.weight"] / np.sqrt(sd[f"{bn}.running_var"] + h.BN_EPS)
    return k, sd[f"{bn}.bias"] - sd[f"{bn}.running_mean"] * k


def _dw_forward(g, x, side, stride):
    """One Depth_Wise block without SE or residual, batch norms folded, on (n, side*side, c) maps:
    u1 = Wa x + ba, z1 = prelu(u1); u2 = depthwise 3x3 (pad 1, ``stride``) of z1 + bdw, z2 = prelu(u2);
    v = Wp z2 + bp. ``g(name)`` gives a parameter. Returns v and what _dw_backward needs."""
    n = x.shape[0]
    u1 = x @ g("Wa").T + g("ba")
    n1 = u1 <= 0
    z1 = np.where(n1, u1 * g("aa"), u1)
    m = z1.shape[2]
    zp = np.zeros((n, side + 2, side + 2, m), x.dtype)
    zp[:, 1:side + 1, 1:side + 1] = z1.reshape(n, side, side, m)
    o = side // stride
    span = stride * (o - 1) + 1
    u2 = np.zeros((n, o, o, m), x.dtype) + g("bdw")
    wdw = g("Wdw")
    for k in range(9):
        ky, kx = divmod(k, 3)
        u2 += zp[:, ky:ky + span:stride, kx:kx + span:stride] * wdw[:, k]
    u2 = u2.reshape(n, o * o, m)
    n2 = u2 <= 0
    z2 = np.where(n2, u2 * g("adw"), u2)
    v = z2 @ g("Wp").T + g("bp")
    return v, dict(x=x, u1=u1, n1=n1, zp=zp, u2=u2, n2=n2, z2=z2)


def _dw_backward(g, sv, dv, side, stride, gr):
    """Gradients of _dw_forward's parameters into ``gr`` from dv (the gradient of v); returns the
    gradient of u1 (the caller's input gradient is du1 @ Wa)."""
    n, _, c = dv.shape
    z2, u2, n2 = sv["z2"], sv["u2"], sv["n2"]
    m = z2.shape[2]
    o = side // stride
    span = stride * (o - 1) + 1
    gr["Wp"] = dv.reshape(-1, c).T @ z2.reshape(-1, m)
    gr["bp"] = dv.sum((0, 1))
    dz2 = dv @ g("Wp")
    gr["adw"] = (dz2 * u2 * n2).sum((0, 1))
    du2 = np.where(n2, dz2 * g("adw"), dz2).reshape(n, o, o, m)
    gr["bdw"] = du2.sum((0, 1, 2))
    zp, wdw = sv["zp"], g("Wdw")
    dzp = np.zeros_like(zp)
    dwdw = np.zeros_like(wdw)
    for k in range(9):
        ky, kx = divmod(k, 3)
        dwdw[:, k] = (du2 * zp[:, ky:ky + span:stride, kx:kx + span:stride]).sum((0, 1, 2))
        dzp[:, ky:ky + span:stride, kx:kx + span:stride] += du2 * wdw[:, k]
    gr["Wdw"] = dwdw
    dz1 = dzp[:, 1:side + 1, 1:side + 1].reshape(n, side * side, m)
    u1, n1 = sv["u1"], sv["n1"]
    gr["aa"] = (dz1 * u1 * n1).sum((0, 1))
    du1 = np.where(n1, dz1 * g("aa"), dz1)
    gr["Wa"] = du1.reshape(-1, m).T @ sv["x"].reshape(-1, c)
    gr["ba"] = du1.sum((0, 1))
    return du1


def _identity_bn(out, name, bias):
    """A folded batch norm written back as upstream state-dict tensors: identity scale, ``bias``."""
    n = len(bias)
    out.update({f"{name}.weight": np.full(n, np.sqrt(1 + h.BN_EPS), np.float32),
                f"{name}.bias": bias, f"{name}.running_mean": np.zeros(n, np.float32),
                f"{name}.running_var": np.ones(n, np.float32)})


class Conv5:
    """conv_5 of one upstream network, batch norms folded in, on (B, 25, 128) maps (p = 5y + x).

    Block b: u1 = Wa x + ba, z1 = prelu(u1); u2 = depthwise 3x3 (pad 1) of z1 + bdw, z2 = prelu(u2);
    v = Wp z2 + bp; V1SE's second block: v *= sigmoid(F2 relu(F1 mean_p(v) + c1) + c2); out = x + v.
    """

    cache = "c45"  # the cache its input comes from (trainers and scores read d[cache])

    def __init__(self, upstream_dir, net):
        from safetensors.numpy import load_file

        sd = load_file(os.path.join(upstream_dir, h.UPSTREAM[net]))
        self.se = []
        init = {}
        for b in (0, 1):
            p = f"conv_5.model.{b}"
            w = sd[f"{p}.conv.conv.weight"]
            m, c = w.shape[:2]
            k, bias = _fold(sd, f"{p}.conv.bn")
            init[f"c5.{b}.Wa"], init[f"c5.{b}.ba"] = w.reshape(m, c) * k[:, None], bias
            init[f"c5.{b}.aa"] = sd[f"{p}.conv.prelu.weight"].reshape(m)
            k, bias = _fold(sd, f"{p}.conv_dw.bn")
            init[f"c5.{b}.Wdw"] = sd[f"{p}.conv_dw.conv.weight"].reshape(m, 9) * k[:, None]
            init[f"c5.{b}.bdw"] = bias
            init[f"c5.{b}.adw"] = sd[f"{p}.conv_dw.prelu.weight"].reshape(m)
            k, bias = _fold(sd, f"{p}.project.bn")
            init[f"c5.{b}.Wp"] = sd[f"{p}.project.conv.weight"].reshape(c, m) * k[:, None]
            init[f"c5.{b}.bp"] = bias
            has_se = f"{p}.se_module.fc1.weight" in sd
            self.se.append(has_se)
            if has_se:
                f1 = sd[f"{p}.se_module.fc1.weight"]
                k, bias = _fold(sd, f"{p}.se_module.bn1")
                init[f"c5.{b}.F1"], init[f"c5.{b}.c1"] = f1.reshape(f1.shape[0], c) * k[:, None], bias
                k, bias = _fold(sd, f"{p}.se_module.bn2")
                init[f"c5.{b}.F2"] = sd[f"{p}.se_module.fc2.weight"].reshape(c, -1) * k[:, None]
                init[f"c5.{b}.c2"] = bias
        self.init = {k: v.astype(np.float32) for k, v in init.items()}

    def _block(self, P, b, x):
        g = lambda n: P[f"c5.{b}.{n}"]  # noqa: E731
        v, saved = _dw_forward(g, x, 5, 1)
        if self.se[b]:
            s = v.mean(1)
            q1 = s @ g("F1").T + g("c1")
            r = np.maximum(q1, 0)
            gate = 1 / (1 + np.exp(-(r @ g("F2").T + g("c2"))))
            saved.update(v=v, s=s, q1=q1, r=r, gate=gate)
            v = v * gate[:, None, :]
        return x + v, saved

    def _block_back(self, P, b, sv, dout):
        g = lambda n: P[f"c5.{b}.{n}"]  # noqa: E731
        gr = {}
        dv = dout
        if self.se[b]:
            gate = sv["gate"]
            dv = dout * gate[:, None, :]
            dq2 = (dout * sv["v"]).sum(1) * gate * (1 - gate)
            gr["F2"], gr["c2"] = dq2.T @ sv["r"], dq2.sum(0)
            dq1 = (dq2 @ g("F2")) * (sv["q1"] > 0)
            gr["F1"], gr["c1"] = dq1.T @ sv["s"], dq1.sum(0)
            dv = dv + (dq1 @ g("F1"))[:, None, :] / 25
        du1 = _dw_backward(g, sv, dv, 5, 1, gr)
        dx = dout + du1 @ g("Wa")
        return {f"c5.{b}.{k}": v.astype(dout.dtype) for k, v in gr.items()}, dx

    def forward(self, P, x):
        saved = []
        for b in (0, 1):
            x, s = self._block(P, b, x)
            saved.append(s)
        return x, saved

    def backward(self, P, saved, dout):
        out = {}
        for b in (1, 0):
            gr, dout = self._block_back(P, b, saved[b], dout)
            out.update(gr)
        return out

    def tensors(self, P):
        """Trained conv_5 as upstream state-dict tensors (BN as identity + bias, as v5's tail)."""
        out = {}
        for b in (0, 1):
            p, g = f"conv_5.model.{b}", lambda n: P[f"c5.{b}.{n}"]  # noqa: E731
            m, c = g("Wa").shape
            bn = lambda name, bias: _identity_bn(out, name, bias)  # noqa: E731
            out[f"{p}.conv.conv.weight"] = g("Wa").reshape(m, c, 1, 1)
            bn(f"{p}.conv.bn", g("ba"))
            out[f"{p}.conv.prelu.weight"] = g("aa")
            out[f"{p}.conv_dw.conv.weight"] = g("Wdw").reshape(m, 1, 3, 3)
            bn(f"{p}.conv_dw.bn", g("bdw"))
            out[f"{p}.conv_dw.prelu.weight"] = g("adw")
            out[f"{p}.project.conv.weight"] = g("Wp").reshape(c, m, 1, 1)
            bn(f"{p}.project.bn", g("bp"))
            if self.se[b]:
                out[f"{p}.se_module.fc1.weight"] = g("F1").reshape(-1, c, 1, 1)
                bn(f"{p}.se_module.bn1", g("c1"))
                out[f"{p}.se_module.fc2.weight"] = g("F2").reshape(c, -1, 1, 1)
                bn(f"{p}.se_module.bn2", g("c2"))
        return out


# --- data, training, scoring ------------------------------------------------------------------

class Conv45(Conv5):
    """v10 D45: conv_45 (1x1 expand 128 -> m + PReLU, depthwise 3x3 stride 2 pad 1 + PReLU, 1x1
    project m -> 128, no residual, no SE), batch norms folded, on (B, 100, 128) maps (p = 10y + x),
    then conv_5 (Conv5). Trains on the conv_4 cache ``d["c4"]``."""

    cache = "c4"

    def __init__(self, upstream_dir, net):
        from safetensors.numpy import load_file

        super().__init__(upstream_dir, net)
        sd = load_file(os.path.join(upstream_dir, h.UPSTREAM[net]))
        p, init = "conv_45", {}
        w = sd[f"{p}.conv.conv.weight"]
        m, c = w.shape[:2]
        k, bias = _fold(sd, f"{p}.conv.bn")
        init["c45.Wa"], init["c45.ba"] = w.reshape(m, c) * k[:, None], bias
        init["c45.aa"] = sd[f"{p}.conv.prelu.weight"].reshape(m)
        k, bias = _fold(sd, f"{p}.conv_dw.bn")
        init["c45.Wdw"], init["c45.bdw"] = sd[f"{p}.conv_dw.conv.weight"].reshape(m, 9) * k[:, None], bias
        init["c45.adw"] = sd[f"{p}.conv_dw.prelu.weight"].reshape(m)
        k, bias = _fold(sd, f"{p}.project.bn")
        init["c45.Wp"], init["c45.bp"] = sd[f"{p}.project.conv.weight"].reshape(c, m) * k[:, None], bias
        self.init.update({k: v.astype(np.float32) for k, v in init.items()})

    def forward(self, P, x):
        v, sv = _dw_forward(lambda n: P[f"c45.{n}"], x, 10, 2)
        out, s5 = super().forward(P, v)
        return out, (sv, s5)

    def backward(self, P, saved, dout):
        sv, s5 = saved
        out = {}
        for b in (1, 0):
            gr, dout = self._block_back(P, b, s5[b], dout)
            out.update(gr)
        gr = {}
        _dw_backward(lambda n: P[f"c45.{n}"], sv, dout, 10, 2, gr)  # conv_45 has no residual
        out.update({f"c45.{k}": v.astype(dout.dtype) for k, v in gr.items()})
        return out

    def tensors(self, P):
        out = super().tensors(P)
        g = lambda n: P[f"c45.{n}"]  # noqa: E731
        m, c = g("Wa").shape
        for name, bias in (("conv_45.conv.bn", g("ba")), ("conv_45.conv_dw.bn", g("bdw")),
                           ("conv_45.project.bn", g("bp"))):
            _identity_bn(out, name, bias)
        out["conv_45.conv.conv.weight"] = g("Wa").reshape(m, c, 1, 1)
        out["conv_45.conv.prelu.weight"] = g("aa")
        out["conv_45.conv_dw.conv.weight"] = g("Wdw").reshape(m, 1, 3, 3)
        out["conv_45.conv_dw.prelu.weight"] = g("adw")
        out["conv_45.project.conv.weight"] = g("Wp").reshape(c, m, 1, 1)
        return out


def load(a, need_c5=True, need_c45=True, need_c4=False):
    d = v5.load(a.feats, a.c5.split(",")) if need_c5 else h.load(a.feats)
    if need_c4:  # v10: already (N, 7, 100, 128); memory-mapped, so processes share the page cache
        if not getattr(a, "c4", None):
            raise SystemExit("D45 needs --c4 (v5_features.py --c4 caches, V2 then V1SE)")
        d["c4"] = [np.load(p, mmap_mode="r") for p in a.c4.split(",")]
        for p, c in zip(a.c4.split(","), d["c4"]):
            if c.shape[0] != len(d["label"]):
                raise SystemExit(f"{p}: {c.shape[0]} images, {a.feats} has {len(d['label'])}")
    if need_c45:
        d["c45"] = []
        for p in a.c45.split(","):
            c = np.load(p, mmap_mode="r")
            if c.shape[0] != len(d["label"]):
                raise SystemExit(f"{p}: {c.shape[0]} images, {a.feats} has {len(d['label'])}")
            d["c45"].append(np.ascontiguousarray(np.asarray(c).transpose(0, 1, 3, 2)))
    return d


def trunks_for(name, upstream):
    _, deep = recipe(name)
    if deep == "45":
        return {net: Conv45(upstream, net) for net in v5.NETS}
    return {net: Conv5(upstream, net) for net in v5.NETS} if deep else None


def load_for(a, deep):
    """The caches a recipe trains on: conv_5 (v5), conv_45 (D) or conv_4 (D45)."""
    return load(a, need_c5=not deep, need_c45=deep is True, need_c4=deep == "45")


def train_soup(d, sources, name, upstream):
    """Train the candidate's members on ``sources`` and average them tensor by tensor."""
    rec, seeds = candidate(name)
    hp, _ = recipe(rec)
    trunks = trunks_for(rec, upstream)
    members = [v5.train(d, sources, {**hp, "upstream": upstream}, seed=s, trunks=trunks) for s in seeds]
    return soup(members), trunks


def soup(members):
    out = {}
    for net in v5.NETS:
        tails = [m[net][0] for m in members]
        heads = [m[net][1] for m in members]
        t = {k: np.mean([x[k] for x in tails], 0).astype(np.float32) for k in tails[0]}
        out[net] = (t, tuple(np.mean([x[i] for x in heads], 0).astype(np.float32) for i in range(2)))
    return out


def scores(d, models, mask, trunks=None, view=0, chunk=2048):
    s = 0
    for j, net in enumerate(v5.NETS):
        t, (W, bh) = models[net]
        if any(k.startswith("c5.") for k in t):
            x = d[trunks[net].cache][j][mask, view]
            x = np.concatenate([trunks[net].forward(t, x[i:i + chunk])[0] for i in range(0, len(x), chunk)])
        else:
            x = d["c5"][j][mask, view]
        s = s + softmax(v5.embed_all(t, x) @ W.T + bh)[:, 1]
    return s / 2


def evaluate(d, F, P, trunks):
    """The pre-registered v6 score of one candidate from its F and P models."""
    return evaluate_scores(d, lambda m: scores(d, F, m, trunks), lambda m: scores(d, P, m, trunks))


def evaluate_scores(d, score_f, score_p):
    """The v6 score from two functions mask -> real scores: F's and the print probe P's."""
    masks = v4_select.validation_masks(d)

    def auc(s, mask):
        lab = d["label"][mask]
        return h.auc(s[lab == 1], s[lab != 1])

    names = list(h.VALIDATION) + ["nuaa-val"]
    sc = {v: score_f(masks[v]) for v in names}
    per = {v: auc(sc[v], masks[v]) for v in h.VALIDATION}
    per["nuaa-val(probe)"] = auc(score_p(masks["nuaa-val"]), masks["nuaa-val"])
    v4_score = min(per.values())
    lab = {v: d["label"][masks[v]] for v in names}
    thr = threshold(np.concatenate([sc[v][lab[v] != 1] for v in names]).tolist())
    bpcer = {v: float((sc[v][lab[v] == 1] < thr).mean()) for v in names}
    apcer = float(np.mean(np.concatenate([sc[v][lab[v] != 1] >= thr for v in names])))
    worst = max(bpcer.values())
    return {"score": round((v4_score + 1 - worst) / 2, 5), "v4_score": round(v4_score, 5),
            "worst_bpcer": round(worst, 4), "threshold": round(thr, 3), "val_apcer": round(apcer, 4),
            "bpcer": {k: round(v, 4) for k, v in bpcer.items()}, "auc": {k: round(v, 4) for k, v in per.items()}}


def save_member(path, F, P):
    arrays = {f"{which}/{net}/{k}": v for which, m in (("F", F), ("P", P)) for net, (t, (W, bh)) in m.items()
              for k, v in {**t, "W": W, "bh": bh}.items()}
    np.savez(path, **arrays)


def load_member(path):
    z = np.load(path)
    out = {}
    for which in ("F", "P"):
        out[which] = {}
        for net in v5.NETS:
            pre = f"{which}/{net}/"
            t = {k[len(pre):]: z[k] for k in z.files if k.startswith(pre) and k[len(pre):] not in ("W", "bh")}
            out[which][net] = (t, (z[pre + "W"], z[pre + "bh"]))
    return out


def check(d, upstream, cls=None):
    """conv_5 in numpy on the conv_45 cache gives the conv_5 cache; D's gradients are right
    (``cls`` Conv45: conv_45 + conv_5 on the conv_4 cache, v10's D45)."""
    cls = cls or Conv5
    key = cls.cache
    for j, net in enumerate(v5.NETS):
        tr = cls(upstream, net)
        x = np.asarray(d[key][j][:512, 0])
        y, _ = tr.forward(tr.init, x)
        ref = d["c5"][j][:512, 0]
        rel = np.abs(y - ref).max() / np.abs(ref).max()
        print(f"{net}: {cls.__name__}({key} cache) vs conv_5 cache: max rel diff {rel:.2e}")
        if rel > 1e-4:
            raise SystemExit("numpy conv_5 does not reproduce the ONNX graph")
        # finite differences in float64 through conv_5, the tail and the head, one batch of 16
        P = {k: v.astype(np.float64) for k, v in {**tr.init, **v5.upstream_tail(upstream, net)}.items()}
        P["W"], P["bh"] = [t.astype(np.float64) for t in h.upstream_head(upstream, net)]
        rng = np.random.default_rng(1)
        pick = rng.choice(len(d["label"]), 16, replace=False)
        x = np.asarray(d[key][j][pick, 0]).astype(np.float64)
        # true labels: with a random one the upstream model can give p ~ 1e-8, where the loss's
        # log(p + 1e-12) differs from the analytic log(p) gradient by ~1e-4 relative
        y_lab, w = d["label"][pick], rng.uniform(0.5, 1.5, 16)

        def loss(P):
            xo, _ = tr.forward(P, x)
            return v5.grads(P, xo, y_lab, w)[0]

        xo, saved = tr.forward(P, x)
        _, gr, dxo = v5.grads(P, xo, y_lab, w, want_dx=True)
        gr = tr.backward(P, saved, dxo)
        per = {}
        for k in sorted(gr):
            flat = P[k].reshape(-1)
            for i in rng.choice(flat.size, min(4, flat.size), replace=False):
                old = flat[i]
                flat[i] = old + 1e-5
                lp = loss(P)
                flat[i] = old - 1e-5
                lm = loss(P)
                flat[i] = old
                num = (lp - lm) / 2e-5
                an = gr[k].reshape(-1)[i]
                err = abs(num - an) / max(1e-6, abs(num) + abs(an))
                per[k] = max(per.get(k, 0.0), err)
        worst = max(per.values())
        print(f"{net}: {len(gr)} trunk tensors, finite differences vs analytic: worst relative error "
              f"{worst:.1e} ({max(per, key=per.get)}; median tensor {np.median(list(per.values())):.1e})")
        if worst > 1e-3:
            raise SystemExit("conv_5 gradients do not match finite differences")


def cache_args(ap):
    """The inputs every v6-family tool reads: v3's cache, the conv_5 and conv_45 caches, upstream."""
    ap.add_argument("--feats", required=True)
    ap.add_argument("--c5", required=True, help="v5_features.py conv_5 caches, V2 then V1SE")
    ap.add_argument("--c45", required=True, help="v5_features.py --c45 caches, V2 then V1SE")
    ap.add_argument("--upstream", default="../shared/models/upstream/minifasnet")


def export(models, trunks, upstream, out, veriframe, recipe):
    """A trained candidate as safetensors and Q8_0 / F32 GGUF files (v3_head.export)."""
    extra = {net: {**v5.tail_tensors(t), **(trunks[net].tensors(t) if trunks else {})}
             for net, (t, _) in models.items()}
    h.export({net: hd for net, (_, hd) in models.items()}, upstream, out, veriframe, extra=extra, recipe=recipe)


def site_split(d, site):
    """v15 (tools/train/v15-preregistration.md): each image of ``site`` as "calibrate" (the first
    half of its class's blocks in name order), "guard" (the next block) or "test" (the rest);
    other sources' images as "". The halves are by block, never by frame."""
    part = np.full(len(d["label"]), "", dtype=object)
    for real in (True, False):
        m = (d["source"] == site) & ((d["label"] == 1) == real)
        blocks = sorted(set(d["group"][m]))
        if len(blocks) < 3:
            raise SystemExit(f"{site}: {len(blocks)} blocks of one class; a site split needs 3 or more")
        half = len(blocks) // 2
        for k, b in enumerate(blocks):
            part[m & (d["group"] == b)] = "calibrate" if k < half else "guard" if k == half else "test"
    return part


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cache_args(ap)
    ap.add_argument("--c4", help="v5_features.py --c4 caches, V2 then V1SE (v10 D45 only)")
    ap.add_argument("--veriframe", default="target/release/veriframe")
    ap.add_argument("--check", action="store_true")
    ap.add_argument("--member", help="train one member: v5 or D-<lambda> (with --seed, --members)")
    ap.add_argument("--seed", type=int, default=V5_SEED)
    ap.add_argument("--members", help="directory of member files")
    ap.add_argument("--score", action="store_true", help="score every candidate whose members exist")
    ap.add_argument("--cand", help="with --train/--leave-out: v5, S3, D-LAM, S3D-LAM")
    ap.add_argument("--train", help='"train" = every trainable source')
    ap.add_argument("--leave-out", help="LOSO fold: train on every trainable source but this one")
    ap.add_argument("--hold-nuaa", default=",".join(v4_select.NUAA_VAL), help="accepted for v3_loso.sh; must be v4's")
    ap.add_argument("--calibrate", action="store_true",
                    help="v15: with --leave-out S, also train on S's calibration blocks (site_split)")
    ap.add_argument("--site-tree", help="v15: with --leave-out S, link S's test half into DIR/{real,attack}")
    ap.add_argument("--out")
    a, _ = ap.parse_known_args()
    if a.site_tree:
        d = h.load(a.feats)
        test = np.flatnonzero(site_split(d, a.leave_out) == "test")
        v3.link_tree("../shared", [(str(d["path"][i]), d["label"][i], "", str(d["group"][i])) for i in test],
                     a.site_tree)
        return 0
    if tuple(g for g in a.hold_nuaa.split(",") if g) != v4_select.NUAA_VAL:
        raise SystemExit(f"--hold-nuaa must be {','.join(v4_select.NUAA_VAL)} (v4's protocol)")
    if a.check:
        if a.c4:  # v10: D45's trunk on the conv_4 cache
            check(load(a, need_c45=False, need_c4=True), a.upstream, Conv45)
        else:
            check(load(a), a.upstream)
        return 0
    if a.member:
        hp, deep = recipe(a.member)
        d = load_for(a, deep)
        trunks = trunks_for(a.member, a.upstream)
        cand = {**hp, "upstream": a.upstream}
        t0 = time.time()
        F = v5.train(d, h.TRAINABLE, cand, seed=a.seed, trunks=trunks)
        P = v5.train(d, [s for s in h.TRAINABLE if s != "nuaa"], cand, seed=a.seed, trunks=trunks)
        os.makedirs(a.members, exist_ok=True)
        save_member(os.path.join(a.members, f"{a.member}-{a.seed}.npz"), F, P)
        print(json.dumps({"member": a.member, "seed": a.seed, "seconds": round(time.time() - t0)}), flush=True)
        return 0
    if a.score:
        d = load(a, need_c4=bool(a.c4))
        rows = []
        for name in (["v5", "S3"] + [f"D-{lam:g}" for lam in D_LAMS] + [f"S3D-{lam:g}" for lam in D_LAMS]
                     + [r for r in RECIPES if r != "v5" and not r.startswith("D-")]):
            rec, seeds = candidate(name)
            files = [os.path.join(a.members, f"{rec}-{s}.npz") for s in seeds]
            if not all(os.path.exists(f) for f in files):
                print(json.dumps({"cand": name, "not_run": [f for f in files if not os.path.exists(f)]}))
                continue
            ms = [load_member(f) for f in files]
            F, P = soup([m["F"] for m in ms]), soup([m["P"] for m in ms])
            if recipe(rec)[1] == "45" and "c4" not in d:
                print(json.dumps({"cand": name, "not_run": "needs --c4"}))
                continue
            rows.append({"cand": name, **evaluate(d, F, P, trunks_for(rec, a.upstream))})
            print(json.dumps(rows[-1]), flush=True)
        v6_row = next((r for r in rows if r["cand"] == "D-0.001"), None)
        for tag, pre in (("v8", "DG-"), ("v9", "MS-"), ("v10", "D45-")):  # each: the best of v6 and its own
            new = [r for r in rows if r["cand"].startswith(pre)]
            if v6_row is not None and new:
                best = max([v6_row] + new, key=lambda r: r["score"])  # max keeps v6 of equals
                print(json.dumps({f"{tag}_pick": best["cand"], "score": best["score"], "v6_score": v6_row["score"],
                                  "beats_v6_by_more_than_0.005": best["score"] > v6_row["score"] + 0.005}))
        v5_row = next((r for r in rows if r["cand"] == "v5"), None)
        if v5_row is not None:
            best = max(rows, key=lambda r: r["score"])  # max keeps the first (simplest) of equals
            print(json.dumps({"pick": best["cand"], "score": best["score"], "v5_score": v5_row["score"],
                              "beats_v5_by_more_than_0.005": best["score"] > v5_row["score"] + 0.005}))
        return 0
    if not a.cand:
        raise SystemExit("give --check, --member, --score or --cand with --train/--leave-out")
    rec, seeds = candidate(a.cand)
    _, deep = recipe(rec)
    d = load_for(a, deep)
    sources = v5.training_sources(a.train, a.leave_out)
    if a.calibrate:
        if not a.leave_out:
            raise SystemExit("--calibrate needs --leave-out SITE")
        part = site_split(d, a.leave_out)
        d["source"] = np.where(part == "calibrate", f"{a.leave_out}-site", d["source"])
        sources = sources + [f"{a.leave_out}-site"]
    files = [os.path.join(a.members or "", f"{rec}-{s}.npz") for s in seeds]
    if a.train == "train" and a.members and all(os.path.exists(f) for f in files):
        # the members' F models were trained on exactly these sources: reuse them
        models, trunks = soup([load_member(f)["F"] for f in files]), trunks_for(rec, a.upstream)
    else:
        models, trunks = train_soup(d, sources, a.cand, a.upstream)
    print(json.dumps({"trained_on": sources, "cand": a.cand}), file=sys.stderr)
    if a.out:
        export(models, trunks, a.upstream, a.out, a.veriframe, f"tools/train/v6_select.py --cand {a.cand}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
