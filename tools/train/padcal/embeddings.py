"""Caches of the upstream MiniFASNet pair's activations, computed once per image: the expensive
part of a calibration (the trunk runs here, training runs on the cache).

For each image with a face box (from `veriframe faces`, the runtime's own detector with the
tight-crop border retry) and each network (V2 on the 2.7 crop, V1SE on the 4.0 crop, cut exactly
as the runtime does: upstream CropImage + OpenCV INTER_LINEAR), through ONNX Runtime:

* ``feats.npz`` (``write_feats``): the 512-d embedding (``conv_6_flatten``, the head's input) in
  three views: the crop, its mirror image, and a copy whose exposure is rescaled to a random mean
  level (50-200; seeded), which breaks the brightness shortcut some sources offer. Arrays: feats
  (N, 2 nets, 3 views, 512) float32; label (N,) 0 print / 1 real / 2 screen; source (N,); group
  (N,) subject, block or session; path (N,) relative to the root.
* ``c5-<net>.npy`` and ``c45-<net>.npy`` (``write_blocks``): the outputs of ``conv_5`` and
  ``conv_45`` (128 x 5 x 5, stored (N, 7, 128, 25) float32, in feats.npz's image order) in seven
  views: 0 crop, 1 mirror, 2 exposure (the same seed and draw order as feats.npz, so the upstream
  tail applied to c5 gives feats.npz: ``calibrate.py check`` tests that), 3 gamma 0.7-1.4,
  4 colour cast (per-channel gain 0.92-1.08), 5 JPEG quality 40-90, 6 Gaussian blur sigma 0-1 px
  (one transform per view, parameters seeded per image and net).

Images without a face box are left out (the runtime rejects them; `veriframe eval` counts them).
"""

from __future__ import annotations

import json
import os
import sys
import time

import cv2
import numpy as np

from . import faces
from .splits import PRINT, REAL, SCREEN

NETS = (("2.7_80x80_MiniFASNetV2.onnx", 2.7), ("4_0_0_80x80_MiniFASNetV1SE.onnx", 4.0))
NET_NAMES = ("v2", "v1se")
FEATURE = "/conv_6_flatten/Reshape_output_0"
VIEWS = 7
C5 = "/conv_5/model/model.1/Add_output_0"  # conv_6_sep's input in both upstream ONNX graphs
C45 = "/conv_45/project/conv/Conv_output_0"  # conv_5's input, BN folded by the ONNX export
SEED = 20261203


def list_samples(shared: str):
    """(relative path, label, source, group) for every image of the shared data's eleven sources."""
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


def photometric(c: np.ndarray, kind: int, rng: np.random.Generator) -> np.ndarray:
    """One seeded photometric view of an 80x80 BGR uint8 crop (kind 3..6 as in the docstring)."""
    f = c.astype(np.float32)
    if kind == 3:
        g = rng.uniform(0.7, 1.4)
        return np.clip(255.0 * (f / 255.0) ** g, 0, 255).astype(np.uint8)
    if kind == 4:
        return np.clip(f * rng.uniform(0.92, 1.08, size=3), 0, 255).astype(np.uint8)
    if kind == 5:
        q = int(rng.integers(40, 91))
        ok, buf = cv2.imencode(".jpg", c, [cv2.IMWRITE_JPEG_QUALITY, q])
        assert ok  # encoding an in-memory 80x80 uint8 image cannot fail
        return cv2.imdecode(buf, cv2.IMREAD_COLOR)
    s = rng.uniform(0.0, 1.0)
    return c.copy() if s < 1e-3 else cv2.GaussianBlur(c, (0, 0), s)


def samples_and_boxes(boxes_file: str, shared: str, site: str | None):
    """The images (list_site or list_samples) and their boxes, keyed by path relative to the root."""
    boxes = json.load(open(boxes_file))
    samples = list_site(site) if site else list_samples(shared)
    if site:
        boxes = site_boxes(site, samples, boxes)
    return samples, boxes


def write_feats(shared: str, boxes_file: str, out: str, seed: int = SEED, site: str | None = None) -> None:
    """feats.npz (the module docstring) for the shared data, or for a site's captures."""
    samples, boxes = samples_and_boxes(boxes_file, shared, site)
    root = site or shared
    missing = [s[0] for s in samples if s[0] not in boxes]
    if missing:
        raise SystemExit(f"{len(missing)} images have no entry in {boxes_file}, e.g. {missing[0]}")
    kept = [s for s in samples if boxes[s[0]] is not None]
    print(f"{len(samples)} images, {len(samples) - len(kept)} without a face (left out)", file=sys.stderr)
    up = os.path.join(shared, "models/upstream/minifasnet")
    sessions = [(session(os.path.join(up, f)), scale) for f, scale in NETS]
    rng = np.random.default_rng(seed)
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
        out,
        feats=feats,
        label=np.array([s[1] for s in kept], np.int64),
        source=np.array([s[2] for s in kept]),
        group=np.array([s[3] for s in kept]),
        path=np.array([s[0] for s in kept]),
    )
    print(f"wrote {out}: {len(kept)} images in {time.time() - t0:.0f} s", file=sys.stderr)


def write_blocks(shared: str, boxes_file: str, net: int, out: str, out45: str, seed: int = SEED,
                 site: str | None = None) -> None:
    """c5-<net>.npy and c45-<net>.npy (the module docstring) for network ``net`` (0 = V2, 1 = V1SE)."""
    samples, boxes = samples_and_boxes(boxes_file, shared, site)
    kept = [s for s in samples if boxes.get(s[0]) is not None]
    root = site or shared
    onnx_file, scale = NETS[net]
    outs = (C5, C45)
    sess = session(os.path.join(shared, "models/upstream/minifasnet", onnx_file), outs)
    rng = np.random.default_rng(seed)  # the exposure draws of feats.npz: one per (image, net), image-major
    prng = np.random.default_rng([seed, 5, net])  # the photometric views
    c5 = np.zeros((len(kept), VIEWS, 128, 25), np.float32)
    c45 = np.zeros_like(c5)
    t0 = time.time()
    for i, (rel, _, _, _) in enumerate(kept):
        img = faces.read_bgr(os.path.join(root, rel))
        if img is None:
            raise SystemExit(f"cannot decode {rel}")
        c = faces.crop(img, boxes[rel], scale)
        exp = None
        for j in range(len(NETS)):
            e = exposure(c, rng)
            if j == net:
                exp = e
        views = [c, c[:, ::-1], exp] + [photometric(c, k, prng) for k in range(3, VIEWS)]
        for v, img_v in enumerate(views):
            x = np.ascontiguousarray(img_v).astype(np.float32).transpose(2, 0, 1)[None]
            r = sess.run(list(outs), {"input": x})
            c5[i, v] = r[0].reshape(128, 25)
            c45[i, v] = r[1].reshape(128, 25)
        if i % 1000 == 0:
            print(f"{i}/{len(kept)} {time.time() - t0:.0f} s", file=sys.stderr, flush=True)
    np.save(out, c5)
    np.save(out45, c45)
    print(f"wrote {out}: {len(kept)} images x {VIEWS} views in {time.time() - t0:.0f} s", file=sys.stderr)


def cache_paths(cache_dir: str):
    """The files of a cache directory: feats.npz, then per network its conv_5 and conv_45 caches."""
    return (os.path.join(cache_dir, "feats.npz"),
            [os.path.join(cache_dir, f"c5-{n}.npy") for n in NET_NAMES],
            [os.path.join(cache_dir, f"c45-{n}.npy") for n in NET_NAMES])
