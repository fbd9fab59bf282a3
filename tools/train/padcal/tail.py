"""The fine-tune: the last blocks and the head of both upstream networks, on the cached activations.

Per network, on the cached `conv_5` output x (128 channels x 25 positions, embeddings.py):

    u = W1 x + b1          conv_6_sep, 1x1 conv 128 -> 512 with its batch norm folded in
    z = prelu(u; a)        per-channel slope
    e = sum_p Wd[:, p] z_p + b2   conv_6_dw, depthwise 5x5 on the 5x5 map (valid) -> 512, BN folded
    logits = Wh e + bh     the head, 512 -> 3 (print, real, screen)

and, when the recipe trains conv_5 too (``Conv5``), conv_5's two residual blocks on the cached
`conv_45` output before it. Start: the tail and conv_5 are upstream's; the head is heads.train's
(on the upstream embeddings, started from and pulled towards the upstream head). Then mini-batch
Adam (batch 256, seeded shuffles) on the cell-weighted cross-entropy over seven views, with L2-SP:
lambda/2 |trained - upstream|^2 + 0.03/2 |(head - upstream head) * sd|^2 (sd = per-dimension
spread of the upstream embedding on the training images). Class rows with no training example
(print, without NUAA) stay at the upstream head. Everything is float32 numpy with hand-written
gradients (``check`` compares them with finite differences) and a fixed thread count: the same
inputs give the same bytes on the same machine.
"""

from __future__ import annotations

import os

import numpy as np

from . import heads as h
from .heads import BN_EPS, UPSTREAM, softmax
from .splits import NUAA_VAL, training_mask

NETS = ("v2", "v1se")
HEAD_L2 = 0.03  # the head's L2-SP lambda
BATCH = 256
TAIL_KEYS = ("W1", "b1", "a", "Wd", "b2")


def load(feats, c45_paths=(), c5_paths=()):
    """feats.npz plus the conv_45 (``d["c45"]``) and conv_5 (``d["c5"]``) caches, each as
    (N, 7, 25, 128) float32 per network."""
    d = h.load(feats)
    for key, paths in (("c5", c5_paths), ("c45", c45_paths)):
        if not paths:
            continue
        d[key] = []
        for p in paths:
            c = np.load(p, mmap_mode="r")
            if c.shape[0] != len(d["label"]):
                raise SystemExit(f"{p}: {c.shape[0]} images, {feats} has {len(d['label'])}")
            d[key].append(np.ascontiguousarray(np.asarray(c).transpose(0, 1, 3, 2)))
    return d


def upstream_tail(upstream_dir, net):
    """conv_6_sep / conv_6_dw of the upstream state dict with their batch norms folded in."""
    from safetensors.numpy import load_file

    sd = load_file(os.path.join(upstream_dir, UPSTREAM[net]))

    def fold(p):
        k = sd[f"{p}.bn.weight"] / np.sqrt(sd[f"{p}.bn.running_var"] + BN_EPS)
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


def grads(t, x, y, w, want_dx=False):
    """Loss mean(w * CE) and its gradient for one batch (parameters t: tail, head W (3, 512), bh);
    with ``want_dx`` also the gradient with respect to the input x (for the blocks that feed it)."""
    e, (u, neg, z) = embed(t, x, keep=True)
    W = t["W"]
    p = softmax(e @ W.T + t["bh"])
    n = len(y)
    ce = -np.log(p[np.arange(n), y] + 1e-12)
    loss = float((w * ce).mean())
    g = p
    g[np.arange(n), y] -= 1
    g *= (w / n)[:, None]
    gr = {"W": g.T @ e, "bh": g.sum(0)}
    de = g @ W  # (B, 512)
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


def train_net(d, j, m, cand, head0, prior_head, freeze, seed, trunk=None):
    """Fine-tune one network on images ``m`` (bool mask); returns (tail, (W, bh)).

    ``cand``: lam, epochs, lr, upstream. ``trunk`` (a Conv5): blocks before the tail that are
    trained too, on the cache ``d[trunk.cache]``; then the tail dict also holds them."""
    t0 = upstream_tail(cand["upstream"], NETS[j])
    if trunk is not None:
        t0 = {**t0, **trunk.init}
    W, bh = head0[0].astype(np.float32), head0[1].astype(np.float32)  # astype copies
    Wp = prior_head[0].astype(np.float32)
    idx = np.flatnonzero(m)
    x_all = d["c5" if trunk is None else trunk.cache][j]
    views = x_all.shape[1]
    sd2 = (d["feats"][idx, j, 0].std(0) + 1e-6).astype(np.float32) ** 2  # the head's standardisation
    w_img = h.weights(d["label"][idx], d["source"][idx]).astype(np.float32)
    w_img *= len(w_img) / w_img.sum()  # mean 1
    pairs = np.array([(i, v) for i in range(len(idx)) for v in range(views)], np.int64)
    params = {**{k: v.copy() for k, v in t0.items()}, "W": W, "bh": bh}
    mom = {k: np.zeros_like(v) for k, v in params.items()}
    vel = {k: np.zeros_like(v) for k, v in params.items()}
    rng = np.random.default_rng([seed, j])
    lam, lr, step = np.float32(cand["lam"]), cand["lr"], 0
    for _ in range(cand["epochs"]):
        order = rng.permutation(len(pairs))
        for s in range(0, len(order), BATCH):
            bi = pairs[order[s:s + BATCH]]
            x = x_all[idx[bi[:, 0]], bi[:, 1]]
            wb = w_img[bi[:, 0]]
            if trunk is None:
                _, gr = grads(params, x, d["label"][idx[bi[:, 0]]], wb)
            else:
                xo, saved = trunk.forward(params, x)
                _, gr, dxo = grads(params, xo, d["label"][idx[bi[:, 0]]], wb, want_dx=True)
                gr.update(trunk.backward(params, saved, dxo))
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
    return {k: params[k] for k in t0}, (params["W"], params["bh"])


def train(d, sources, cand, held_groups=NUAA_VAL, seed=20261204, trunks=None):
    """Both networks: the heads on upstream embeddings first (heads.train), then the joint
    fine-tune (``trunks``: per network, a Conv5 trained too, or None)."""
    heads = h.train(d, sources, HEAD_L2, prior_dir=cand["upstream"], freeze_absent=True,
                    held_groups=held_groups)
    m = training_mask(d, sources, held_groups)
    out = {}
    for j, net in enumerate(NETS):
        prior = h.upstream_head(cand["upstream"], net)
        freeze = [k for k in range(3) if not (d["label"][m] == k).any()]
        if freeze:  # the head kept these rows at the prior; so does the fine-tune
            assert np.allclose(heads[net][0][freeze], prior[0][freeze], atol=1e-4)
        out[net] = train_net(d, j, m, cand, heads[net], prior, freeze, seed,
                             None if trunks is None else trunks[net])
    return out


def tail_tensors(t):
    """The tuned tail as upstream state-dict tensors (BN as identity + bias, as heads.export does
    for the head)."""
    g = np.full(512, np.sqrt(1 + BN_EPS), np.float32)
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


# --- conv_5: two MobileFaceNet residual blocks (V1SE: the second with squeeze-excitation) -------

def _fold(sd, bn):
    k = sd[f"{bn}.weight"] / np.sqrt(sd[f"{bn}.running_var"] + BN_EPS)
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
    out.update({f"{name}.weight": np.full(n, np.sqrt(1 + BN_EPS), np.float32),
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

        sd = load_file(os.path.join(upstream_dir, UPSTREAM[net]))
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


def soup(members):
    """The tensor-by-tensor mean of several trained models (one member: itself)."""
    out = {}
    for net in NETS:
        tails = [m[net][0] for m in members]
        heads = [m[net][1] for m in members]
        t = {k: np.mean([x[k] for x in tails], 0).astype(np.float32) for k in tails[0]}
        out[net] = (t, tuple(np.mean([x[i] for x in heads], 0).astype(np.float32) for i in range(2)))
    return out


def export(models, trunks, upstream, out, veriframe, recipe):
    """A trained model as safetensors and Q8_0 / F32 GGUF files (heads.export)."""
    extra = {net: {**tail_tensors(t), **(trunks[net].tensors(t) if trunks else {})}
             for net, (t, _) in models.items()}
    h.export({net: hd for net, (_, hd) in models.items()}, upstream, out, veriframe, extra=extra, recipe=recipe)


def check_tail(d, upstream):
    """The upstream tail on the conv_5 cache must give feats.npz's embeddings (same crops, views)."""
    for j, net in enumerate(NETS):
        t = upstream_tail(upstream, net)
        for v in range(3):
            e = embed_all(t, d["c5"][j][:, v])
            ref = d["feats"][:, j, v]
            rel = np.abs(e - ref).max() / np.abs(ref).max()
            print(f"{net} view {v}: max |e - feats| / max |feats| = {rel:.2e}")
            if rel > 1e-4:
                raise SystemExit("the conv_5 cache does not reproduce the embedding cache")


def check_conv5(d, upstream, gradients=True):
    """conv_5 in numpy on the conv_45 cache gives the conv_5 cache; with ``gradients`` its
    gradients (through the tail and the head) match central finite differences in float64 on 16
    images (a maintainer's check on the shared data: on a tiny cache a sampled coordinate can sit
    on a PReLU kink, where a finite difference is not a derivative)."""
    cls = Conv5
    key = cls.cache
    for j, net in enumerate(NETS):
        tr = cls(upstream, net)
        x = np.asarray(d[key][j][:512, 0])
        y, _ = tr.forward(tr.init, x)
        ref = d["c5"][j][:512, 0]
        rel = np.abs(y - ref).max() / np.abs(ref).max()
        print(f"{net}: {cls.__name__}({key} cache) vs conv_5 cache: max rel diff {rel:.2e}")
        if rel > 1e-4:
            raise SystemExit("numpy conv_5 does not reproduce the ONNX graph")
        if not gradients:
            continue
        P = {k: v.astype(np.float64) for k, v in {**tr.init, **upstream_tail(upstream, net)}.items()}
        P["W"], P["bh"] = [t.astype(np.float64) for t in h.upstream_head(upstream, net)]
        rng = np.random.default_rng(1)
        pick = rng.choice(len(d["label"]), min(16, len(d["label"])), replace=False)
        x = np.asarray(d[key][j][pick, 0]).astype(np.float64)
        # true labels: with a random one the upstream model can give p ~ 1e-8, where the loss's
        # log(p + 1e-12) differs from the analytic log(p) gradient by ~1e-4 relative
        y_lab, w = d["label"][pick], rng.uniform(0.5, 1.5, len(pick))

        def loss(P):
            xo, _ = tr.forward(P, x)
            return grads(P, xo, y_lab, w)[0]

        xo, saved = tr.forward(P, x)
        _, gr, dxo = grads(P, xo, y_lab, w, want_dx=True)
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
        print(f"{net}: {len(gr)} conv_5 tensors, finite differences vs analytic: worst relative error "
              f"{worst:.1e} ({max(per, key=per.get)}; median tensor {np.median(list(per.values())):.1e})")
        if worst > 1e-3:
            raise SystemExit("conv_5 gradients do not match finite differences")
