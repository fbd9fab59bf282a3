"""The networks' linear heads (512 -> 3 classes: print, real, screen) and the model export.

MiniFASNet's head is linear -> batch norm -> prob with no non-linearity between them, so a
512 -> 3 linear map is exactly what the runtime network can hold: ``export`` writes it back as
linear rows 0-2 = W, bn = identity + bias, prob = [I | 0], replaces the fine-tuned tensors of the
upstream state dict, and converts the result with `veriframe model convert` like any upstream
state dict. ``train`` fits the heads on the cached embeddings as a multinomial logistic regression
started from and pulled towards the upstream head (L2-SP), every (source, class) cell weighted
equally, over three views per image; the fine-tune (tail.py) starts from these heads.

Deterministic: full-batch Adam, no sampling; the same cache gives the same weights.
"""

from __future__ import annotations

import os
import subprocess

import numpy as np

from .splits import trainable_mask

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


def fit(x, y, w, l2, prior=None, iters=600, lr=0.05, freeze=()):
    """Weighted multinomial logistic regression; x standardised inside, folded back out.

    ``prior`` = (W (3, 512), b (3,)) on raw features: start there and pull towards it (L2-SP,
    the penalty is on the distance from the prior), so what the upstream head knows about
    attacks the training sources lack (prints, without NUAA) is kept unless the data argue
    against it. Without a prior: start from zero, penalise the weights.
    ``freeze``: class rows kept exactly at the prior (classes with no training example).
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
        g = (p - onehot) * wn[:, None]
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
    """Per-image weights that make every (source, real-or-attack) cell weigh the same."""
    cell = np.char.add(source.astype(str), (label == 1).astype(str))
    cells, inv, counts = np.unique(cell, return_inverse=True, return_counts=True)
    return 1.0 / counts[inv]


def train(d, sources, l2, views=(0, 1, 2), prior_dir=None, freeze_absent=False, held_groups=()):
    """Heads for both networks on the images of ``sources`` (splits.trainable_mask);
    ``freeze_absent`` keeps the rows of classes with no training example at the prior."""
    m = trainable_mask(d, sources, held_groups)
    heads = {}
    for j, net in enumerate(("v2", "v1se")):
        prior = upstream_head(prior_dir, net) if prior_dir else None
        x = [d["feats"][m, j, v] for v in views]
        y = [d["label"][m]] * len(views)
        x, y = np.concatenate(x), np.concatenate(y)
        w = np.concatenate([weights(d["label"][m], d["source"][m])] * len(views))
        freeze = [k for k in range(3) if freeze_absent and not (y == k).any()]
        heads[net] = fit(x.astype(np.float64), y, w, l2, prior, freeze=freeze)
    return heads


def auc(real, attack):
    # Probability a real image outscores an attack (ties count half).
    r = np.sort(real)
    lo = np.searchsorted(r, attack, side="left")
    hi = np.searchsorted(r, attack, side="right")
    return float(((len(r) - hi) + 0.5 * (hi - lo)).sum() / (len(r) * len(attack)))


def export(heads, upstream_dir, out_dir, veriframe, extra=None, recipe=None):
    """Write each head into a copy of the upstream state dict; ``extra[net]`` replaces more
    tensors (the fine-tuned blocks), ``recipe`` is the metadata text. Writes
    OUT/padcal-<net>.safetensors and OUT/padcal-<net>.{q8_0,f32}.gguf."""
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
        st = os.path.join(out_dir, f"padcal-{net}.safetensors")
        # One metadata key: safetensors writes a map's keys in no fixed order, and the GGUF records
        # this file's SHA-256, so more keys would make byte-identical reruns impossible.
        save_file(sd, st, metadata={"recipe": f"{recipe or 'tools/train/padcal'} on {UPSTREAM[net]}"})
        for q in ("q8_0", "f32"):
            subprocess.run([veriframe, "model", "convert", "--arch", ARCH[net], "--in", st, "--out",
                            os.path.join(out_dir, f"padcal-{net}.{q}.gguf"), "--quant", q],
                           check=True, stdout=subprocess.DEVNULL)
