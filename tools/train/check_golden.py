#!/usr/bin/env python3
"""Check tools/train's MiniFASNet module, detector and crop against the shared golden vectors.

    python tools/train/check_golden.py --shared ../shared

1. Loads the upstream MiniFASNetV2 / V1SE safetensors into our PyTorch module (strict: identical
   names and shapes) and reproduces the golden logits from the golden 80x80 crops.
2. Runs the Ultra-Light detector + our crop on the golden full images and compares the box and the
   crop with the golden ones.
Exits non-zero on any mismatch.
"""

import argparse
import json
import os
import sys

import cv2
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import faces  # noqa: E402
from minifasnet import load_safetensors, minifasnet_v1se, minifasnet_v2  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", default=os.path.join(os.path.dirname(__file__), "../../../shared"))
    a = ap.parse_args()
    up = os.path.join(a.shared, "models/upstream/minifasnet")
    gold = os.path.join(up, "golden")
    expected = json.load(open(os.path.join(gold, "expected.json")))
    nets = {
        "2.7_80x80_MiniFASNetV2": (minifasnet_v2(), 2.7),
        "4_0_0_80x80_MiniFASNetV1SE": (minifasnet_v1se(), 4.0),
    }
    for name, (net, _) in nets.items():
        load_safetensors(net, os.path.join(up, name + ".safetensors"))
        net.eval()
    det = faces.UltraLight(os.path.join(a.shared, faces.DEFAULT_DETECTOR))
    worst_logit, worst_full, ok = 0.0, 0.0, True
    for img, e in expected.items():
        full = cv2.imread(os.path.join(gold, img))
        found = det.detect(full)
        box = found[0] if found else None
        if box is None or list(box) != list(e["bbox_xywh"]):
            print(f"{img}: box {box} != golden {e['bbox_xywh']}")
            ok = False
        for name, (net, scale) in nets.items():
            png = cv2.imread(os.path.join(gold, f"{os.path.splitext(img)[0]}__{name}.png"))
            want = np.array(e["models"][name + ".pth"]["logits"])
            with torch.no_grad():
                got = net(torch.from_numpy(png.transpose(2, 0, 1)[None].astype(np.float32)))[0]
            d = float(np.abs(got.numpy() - want).max())
            worst_logit = max(worst_logit, d)
            ours = faces.crop(full, e["bbox_xywh"], scale)
            dc = int(np.abs(ours.astype(int) - png.astype(int)).max())
            worst_full = max(worst_full, dc)
    print(f"max |logit - golden| from golden crops: {worst_logit:.2e}")
    print(f"max |crop - golden crop| (0-255) from full image + golden box: {worst_full}")
    ok = ok and worst_logit < 1e-4 and worst_full <= 1
    print("OK" if ok else "MISMATCH")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
