#!/usr/bin/env python3
"""Golden outputs of Meso4 (DariusAf/MesoNet, commit 2144d56) computed from the upstream weights.

Writes tests/golden/meso4.json (outputs only, never weights), which tests/meso_golden.rs compares
with the candle port in src/detect/nets/meso.rs. Written independently of the Rust code: a plain numpy
float64 forward pass of the Keras graph (`classifiers.py`, `Meso4.init_model`), channels-last:

    Conv2D(8, 3x3, same, relu) -> BatchNormalization -> MaxPool(2x2, same)
    Conv2D(8, 5x5, same, relu) -> BatchNormalization -> MaxPool(2x2, same)
    Conv2D(16, 5x5, same, relu) -> BatchNormalization -> MaxPool(2x2, same)
    Conv2D(16, 5x5, same, relu) -> BatchNormalization -> MaxPool(4x4, same)
    Flatten (H, W, C order) -> Dropout -> Dense(16) -> LeakyReLU(0.1) -> Dropout -> Dense(1, sigmoid)

Keras BatchNormalization epsilon is 1e-3; dropout is the identity at inference. The sigmoid
output is close to 1 for REAL faces.

Inputs (1x256x256x3, RGB / 255):
  * `pattern`: x[h, w, c] = ((7h + 13w + 29c) mod 256) / 255 (exact on both sides);
  * `gradient`: x[h, w, c] = (h + w + 64c) mod 256 / 255;
  * the 4 images in ../shared/data/mesonet-samples/{real,deepfake}/ decoded to RGB by PIL and
    resized to 256x256 by nearest neighbour with source index floor((i + 0.5) * src / 256)
    (what Keras `load_img(target_size=...)` does by default: PIL NEAREST). The SHA-256 of the
    256x256x3 u8 input is recorded, because JPEG decoders differ by a few grey levels: the Rust
    test holds the 1e-4 bound only when its decoded input hashes the same, and a looser one
    otherwise.

usage: python3 tools/meso_golden.py [--shared ../shared] [--out tests/golden/meso4.json]
needs: numpy, safetensors, pillow
"""
import argparse, hashlib, json, os

import numpy as np
from PIL import Image
from safetensors.numpy import load_file

MODELS = ["Meso4_DF", "Meso4_F2F"]
CONVS = ["conv2d_5", "conv2d_6", "conv2d_7", "conv2d_8"]
BNS = ["batch_normalization_5", "batch_normalization_6", "batch_normalization_7", "batch_normalization_8"]
POOLS = [2, 2, 2, 4]
BN_EPS = 1e-3


def t(w, layer, name):
    return w[f"{layer}.{layer}.{name}"].astype(np.float64)


def conv_same(x, k, b):
    """x: (H, W, Cin); k: (kh, kw, Cin, Cout) Keras HWIO; stride 1, TF 'same' padding."""
    kh, kw, _, cout = k.shape
    h, w, _ = x.shape
    ph, pw = kh - 1, kw - 1
    xp = np.pad(x, ((ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)))
    out = np.zeros((h, w, cout))
    for i in range(kh):
        for j in range(kw):
            out += np.tensordot(xp[i:i + h, j:j + w, :], k[i, j], axes=([2], [0]))
    return out + b


def maxpool_same(x, p):
    """Pool p x p, stride p, TF 'same' padding (pad with -inf, before = total // 2)."""
    h, w, c = x.shape
    oh, ow = -(-h // p), -(-w // p)
    th, tw = max((oh - 1) * p + p - h, 0), max((ow - 1) * p + p - w, 0)
    xp = np.pad(x, ((th // 2, th - th // 2), (tw // 2, tw - tw // 2), (0, 0)), constant_values=-np.inf)
    return xp.reshape(oh, p, ow, p, c).max(axis=(1, 3))


def meso4(w, x):
    """x: (256, 256, 3) float64 in 0..1. Returns (logit, sigmoid)."""
    for conv, bn, p in zip(CONVS, BNS, POOLS):
        x = np.maximum(conv_same(x, t(w, conv, "kernel"), t(w, conv, "bias")), 0.0)
        x = (x - t(w, bn, "moving_mean")) / np.sqrt(t(w, bn, "moving_variance") + BN_EPS) \
            * t(w, bn, "gamma") + t(w, bn, "beta")
        x = maxpool_same(x, p)
    v = x.reshape(-1)  # (8, 8, 16) channels-last flatten, as Keras Flatten does
    assert v.shape == (1024,), v.shape
    v = v @ t(w, "dense_3", "kernel") + t(w, "dense_3", "bias")
    v = np.where(v > 0, v, 0.1 * v)
    logit = float((v @ t(w, "dense_4", "kernel") + t(w, "dense_4", "bias"))[0])
    return logit, float(1.0 / (1.0 + np.exp(-logit)))


def synthetic():
    h, w, c = np.meshgrid(np.arange(256), np.arange(256), np.arange(3), indexing="ij")
    return {
        "pattern": ((7 * h + 13 * w + 29 * c) % 256).astype(np.uint8),
        "gradient": ((h + w + 64 * c) % 256).astype(np.uint8),
    }


def nearest_256(img):
    a = np.asarray(img.convert("RGB"), dtype=np.uint8)
    sh, sw = a.shape[:2]
    ys = np.floor((np.arange(256) + 0.5) * sh / 256).astype(int).clip(0, sh - 1)
    xs = np.floor((np.arange(256) + 0.5) * sw / 256).astype(int).clip(0, sw - 1)
    return a[ys][:, xs]


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", default=os.path.join(root, "..", "shared"))
    ap.add_argument("--out", default=os.path.join(root, "tests", "golden", "meso4.json"))
    args = ap.parse_args()
    mdir = os.path.join(args.shared, "models", "upstream", "mesonet")
    sdir = os.path.join(args.shared, "data", "mesonet-samples")

    inputs = {k: (v, None) for k, v in synthetic().items()}
    for label in ["real", "deepfake"]:
        for f in sorted(os.listdir(os.path.join(sdir, label))):
            with Image.open(os.path.join(sdir, label, f)) as im:
                inputs[f"{label}/{f}"] = (nearest_256(im), im.size)

    out = {"source": "tools/meso_golden.py (numpy float64)", "models": {}, "inputs": {}}
    for name, (a, size) in inputs.items():
        assert a.shape == (256, 256, 3) and a.dtype == np.uint8
        out["inputs"][name] = {
            "rgb_sha256": hashlib.sha256(a.tobytes()).hexdigest(),
            **({"source_size": list(size)} if size else {}),
        }
    for m in MODELS:
        path = os.path.join(mdir, f"{m}.safetensors")
        w = load_file(path)
        with open(path, "rb") as fh:
            sha = hashlib.sha256(fh.read()).hexdigest()
        res = {}
        for name, (a, _) in inputs.items():
            logit, prob = meso4(w, a.astype(np.float64) / 255.0)
            res[name] = {"logit": logit, "sigmoid_real": prob, "p_deepfake": 1.0 - prob}
            print(f"{m:10} {name:24} logit {logit:+.6f}  P(real) {prob:.6f}  P(deepfake) {1 - prob:.6f}")
        out["models"][m] = {"weights_sha256": sha, "outputs": res}
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as fh:
        json.dump(out, fh, indent=1, sort_keys=True)
        fh.write("\n")
    print("wrote", args.out)


if __name__ == "__main__":
    main()
