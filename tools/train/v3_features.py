#!/usr/bin/env python3
"""Cache the upstream MiniFASNet pair's 512-d embeddings for every labelled image in ../shared/data.

The v3 recipe (see models/veriframe-pad-v3.md) keeps the upstream convolutional trunk frozen and
learns only the linear head (512 -> 3) of each network, so the expensive part — running the trunk
— happens once, here. For each image with a face box (from `veriframe faces`, the runtime's own
detector with the tight-crop border retry) and each network (V2 on the 2.7 crop, V1SE on the 4.0
crop, cut exactly as the runtime does: upstream CropImage + OpenCV INTER_LINEAR), the output of
`conv_6_flatten` (input of `linear`) is stored for three views: the crop, its mirror image, and a
copy whose exposure is rescaled to a random mean level (50-200; seeded), which breaks the
brightness shortcut some sources offer (see tools/train/pad3-experiments.md).

    veriframe faces --root ../shared ../shared/data/{nuaa,replay-crops,replay-sets} > /tmp/v3/boxes.json
    python tools/train/v3_features.py --shared ../shared --boxes /tmp/v3/boxes.json --out /tmp/v3/feats.npz

Output arrays: feats (N, 2 nets, 3 views, 512) float32; label (N,) 0 print / 1 real / 2 screen;
source (N,) source name; group (N,) subject or block; path (N,) relative to shared/.
Images without a face box are left out (the runtime rejects them; `veriframe eval` counts them).
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
import faces  # noqa: E402

NETS = (("2.7_80x80_MiniFASNetV2.onnx", 2.7), ("4_0_0_80x80_MiniFASNetV1SE.onnx", 4.0))
FEATURE = "/conv_6_flatten/Reshape_output_0"
REAL, PRINT, SCREEN = 1, 0, 2


def list_samples(shared: str):
    """(relative path, label, source, group) for every image of the eleven sources."""
    out = []
    data = os.path.join(shared, "data")
    for cls, label in (("real", REAL), ("attack", PRINT)):
        root = os.path.join(data, "nuaa", cls)
        for p in faces.list_images(root):
            out.append((os.path.relpath(p, shared), label, "nuaa", os.path.relpath(p, root).split(os.sep)[0]))
    for cls, label in (("real", REAL), ("attack", SCREEN)):
        root = os.path.join(data, "replay-crops", cls)
        for p in faces.list_images(root):
            out.append((os.path.relpath(p, shared), label, "replay-crops", "replay-crops"))
    sets = os.path.join(data, "replay-sets")
    for src in sorted(os.listdir(sets)):
        if not os.path.isdir(os.path.join(sets, src)):
            continue
        for cls, label in (("real", REAL), ("attack", SCREEN)):
            root = os.path.join(sets, src, cls)
            for p in faces.list_images(root):
                out.append((os.path.relpath(p, shared), label, src, os.path.relpath(p, root).split(os.sep)[0]))
    return out


def list_site(root: str):
    """(path relative to ``root``, label, "site", session) for a site calibration's captures:
    ``root/real/<session>/*``, ``root/attack/<session>/*`` or ``root/screen/<session>/*`` (screen
    replays), ``root/print/<session>/*`` (print attacks), as docs/training.md lays them out."""
    out = []
    for cls, label in (("real", REAL), ("attack", SCREEN), ("screen", SCREEN), ("print", PRINT)):
        base = os.path.join(root, cls)
        for p in faces.list_images(base) if os.path.isdir(base) else []:
            parts = os.path.relpath(p, base).split(os.sep)
            out.append((os.path.relpath(p, root), label, "site", f"{cls}/{parts[0]}" if len(parts) > 1 else cls))
    if not out:
        raise SystemExit(f"{root}: no images under real/, attack/, screen/ or print/")
    return out


def site_boxes(root: str, samples, boxes: dict) -> dict:
    """``boxes`` keyed by the samples' paths relative to ``root``. `veriframe faces` resolves
    symbolic links, so a linked image's entry is under its real path (relative to the resolved
    root when inside it, else absolute)."""
    real_root = os.path.realpath(root)
    out = {}
    for rel, *_ in samples:
        real = os.path.realpath(os.path.join(root, rel))
        for key in (rel, os.path.relpath(real, real_root), real):
            if key in boxes:
                out[rel] = boxes[key]
                break
    return out


def link_tree(root: str, samples, out: str) -> None:
    """Link each sample's image (paths relative to ``root``) into OUT/{real,attack}/<group>/, the
    layout `veriframe eval --real --attack` reads."""
    for rel, label, _, group in samples:
        d = os.path.join(out, "real" if label == REAL else "attack", group.replace("/", "-"))
        os.makedirs(d, exist_ok=True)
        os.symlink(os.path.realpath(os.path.join(root, rel)), os.path.join(d, os.path.basename(rel)))


def session(path: str, output: str | tuple[str, ...] = FEATURE):
    """One-thread ONNX Runtime session that also returns the internal tensor(s) ``output``."""
    import onnx
    import onnxruntime as ort

    m = onnx.load(path)
    for o in (output,) if isinstance(output, str) else output:
        m.graph.output.append(onnx.helper.make_tensor_value_info(o, onnx.TensorProto.FLOAT, None))
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(m.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def exposure(crop: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    target = rng.uniform(50, 200)
    gain = target / max(1.0, float(crop.mean()))
    return np.clip(crop.astype(np.float32) * gain, 0, 255).astype(np.uint8)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", default="../shared")
    ap.add_argument("--boxes", required=True, help="`veriframe faces --root SHARED` output")
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=20261203)
    ap.add_argument("--site", help="a site's captures (list_site) instead of the shared data; "
                    "--boxes then from `veriframe faces --root SITE SITE`")
    a = ap.parse_args()
    boxes = json.load(open(a.boxes))
    samples = list_site(a.site) if a.site else list_samples(a.shared)
    root = a.site or a.shared
    if a.site:
        boxes = site_boxes(a.site, samples, boxes)
    missing = [s[0] for s in samples if s[0] not in boxes]
    if missing:
        raise SystemExit(f"{len(missing)} images have no entry in {a.boxes}, e.g. {missing[0]}")
    kept = [s for s in samples if boxes[s[0]] is not None]
    print(f"{len(samples)} images, {len(samples) - len(kept)} without a face (left out)", file=sys.stderr)
    up = os.path.join(a.shared, "models/upstream/minifasnet")
    sessions = [(session(os.path.join(up, f)), scale) for f, scale in NETS]
    rng = np.random.default_rng(a.seed)
    feats = np.zeros((len(kept), len(NETS), 3, 512), np.float32)
    t0 = time.time()
    for i, (rel, _, _, _) in enumerate(kept):
        img = faces.read_bgr(os.path.join(root, rel))
        if img is None:
            raise SystemExit(f"cannot decode {rel}")
        for j, (sess, scale) in enumerate(sessions):
            c = faces.crop(img, boxes[rel], scale)
            views = np.stack([c, c[:, ::-1], exposure(c, rng)]).astype(np.float32).transpose(0, 3, 1, 2)
            feats[i, j] = np.concatenate([sess.run([FEATURE], {"input": v[None]})[0] for v in views])
        if i % 1000 == 0:
            print(f"{i}/{len(kept)} {time.time() - t0:.0f} s", file=sys.stderr)
    np.savez_compressed(
        a.out,
        feats=feats,
        label=np.array([s[1] for s in kept], np.int64),
        source=np.array([s[2] for s in kept]),
        group=np.array([s[3] for s in kept]),
        path=np.array([s[0] for s in kept]),
    )
    print(f"wrote {a.out}: {len(kept)} images in {time.time() - t0:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
