"""Datasets, subject-disjoint splits, attack-aware augmentation and PAD metrics for tools/train.

Labels: 1 = real (bona fide), 0 = print attack, 2 = screen/replay attack (upstream MiniFASNet
convention; the real score is softmax[1]).
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

import faces

REAL, PRINT, SCREEN = 1, 0, 2

# ---------------------------------------------------------------------------------------------
# The shipped recipe's split of ../shared/data, fixed up front (see models/veriframe-pad-v2.md).
# NUAA: subject-disjoint. replay-crops: real/ holds one person (A) only; attack/ holds person A
# (files 0..REPLAY_B_START-1) and person B (files REPLAY_B_START..616). Person B is an attack-only,
# subject-disjoint test set; person A is split into contiguous file-number blocks (NOT
# subject-disjoint: same person, same session, later frames) because no other replay subject has
# real images.
NUAA_TRAIN = ["0001", "0002", "0003", "0004", "0005", "0016"]
NUAA_VAL = ["0006", "0007"]
NUAA_TEST = ["0008", "0009", "0010"]
REPLAY_B_START = 457  # first attack file (numeric order) showing person B; checked by eye
REPLAY_A_BLOCKS = (0.60, 0.75)  # person A, numeric file order: [0,60%) train, [60,75%) val, rest test


@dataclass
class Sample:
    path: str
    label: int
    group: str  # subject / block id, for reporting
    split: str  # train | val | test
    set: str  # nuaa | replay | user
    box: Optional[List[int]] = None  # x, y, w, h; None = no face found
    extra: Dict = field(default_factory=dict)


def _num(path: str) -> int:
    m = re.match(r"(\d+)", os.path.basename(path))
    return int(m.group(1)) if m else 0


def shared_samples(shared: str) -> List[Sample]:
    out: List[Sample] = []
    nuaa = os.path.join(shared, "data/nuaa")
    for cls_dir, label in (("real", REAL), ("attack", PRINT)):
        for subj in sorted(os.listdir(os.path.join(nuaa, cls_dir))):
            split = "train" if subj in NUAA_TRAIN else "val" if subj in NUAA_VAL else "test"
            if subj not in NUAA_TRAIN + NUAA_VAL + NUAA_TEST:
                raise ValueError(f"NUAA subject {subj} not assigned to a split")
            for p in faces.list_images(os.path.join(nuaa, cls_dir, subj)):
                out.append(Sample(p, label, f"nuaa/{subj}", split, "nuaa"))
    rep = os.path.join(shared, "data/replay-crops")
    for cls_dir, label in (("real", REAL), ("attack", SCREEN)):
        files = sorted(faces.list_images(os.path.join(rep, cls_dir)), key=_num)
        a_files = [p for p in files if label == REAL or _num(p) < REPLAY_B_START]
        for p in files:
            if label == SCREEN and _num(p) >= REPLAY_B_START:
                out.append(Sample(p, label, "replay/B", "test", "replay"))
                continue
            i = a_files.index(p)
            f = i / len(a_files)
            split = "train" if f < REPLAY_A_BLOCKS[0] else "val" if f < REPLAY_A_BLOCKS[1] else "test"
            out.append(Sample(p, label, f"replay/A-{split}", split, "replay"))
    return out


def user_samples(dirs: Sequence[Tuple[str, int]], val_frac: float = 0.2) -> List[Sample]:
    """Samples from user directories. Subject-disjoint validation when a directory has >= 2
    sub-directories (one per person/session): the last ``val_frac`` of them (sorted) are
    validation. Otherwise the last ``val_frac`` of the files in name order (a contiguous block)."""
    out: List[Sample] = []
    for d, label in dirs:
        files = faces.list_images(d)
        if not files:
            raise ValueError(f"no images under {d}")
        subdirs = sorted({os.path.relpath(p, d).split(os.sep)[0] for p in files
                          if os.sep in os.path.relpath(p, d)})
        if len(subdirs) >= 2:
            n_val = max(1, int(round(len(subdirs) * val_frac)))
            val = set(subdirs[-n_val:])
            for p in files:
                g = os.path.relpath(p, d).split(os.sep)[0]
                out.append(Sample(p, label, f"{d}:{g}", "val" if g in val else "train", "user"))
        else:
            n_train = int(math.ceil(len(files) * (1 - val_frac)))
            for i, p in enumerate(files):
                split = "train" if i < n_train else "val"
                out.append(Sample(p, label, f"{d}:block-{split}", split, "user"))
    return out


# ---------------------------------------------------------------------------------------------
# Face boxes (cached; boxes are derived data, not images)

def attach_boxes(samples: List[Sample], detector_path: Optional[str], cache_path: Optional[str],
                 key_root: Optional[str] = None, log=print) -> None:
    cache: Dict[str, Optional[List[int]]] = {}
    if cache_path and os.path.exists(cache_path):
        cache = json.load(open(cache_path))
    det = None
    new = 0

    def key(p):
        return os.path.relpath(p, key_root) if key_root else os.path.abspath(p)

    for s in samples:
        k = key(s.path)
        if k not in cache:
            if det is None:
                if not detector_path or not os.path.exists(detector_path):
                    raise FileNotFoundError(
                        f"face detector {detector_path} missing and {k} not in box cache")
                det = faces.UltraLight(detector_path)
            img = faces.read_bgr(s.path)
            found = det.detect(img) if img is not None else None
            cache[k] = list(found[0]) if found else None
            new += 1
            if new % 200 == 0:
                log(f"  detected faces in {new} new images")
        s.box = cache[k]
    if cache_path and new:
        os.makedirs(os.path.dirname(os.path.abspath(cache_path)), exist_ok=True)
        with open(cache_path, "w") as f:
            json.dump(dict(sorted(cache.items())), f, indent=0, separators=(",", ":"))
            f.write("\n")
        log(f"  box cache {cache_path}: {new} new entries")


# ---------------------------------------------------------------------------------------------
# Augmentation. Geometric jitter of the face box (emulates other detectors), colour and exposure,
# blur, sensor noise, resolution loss, JPEG re-compression; attack-specific simulation (screen
# moire, display gamma/colour cast, planar glare). With probability p_synth a real sample is
# turned into a synthetic screen replay (moire + display colour + glare), labelled SCREEN.

def _moire(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    out = np.zeros((h, w), np.float32)
    for _ in range(rng.integers(1, 3)):
        period = rng.uniform(2.2, 9.0)  # pixels, in the full-resolution crop window
        theta = rng.uniform(0, math.pi)
        phase = rng.uniform(0, 2 * math.pi)
        out += np.sin((xx * math.cos(theta) + yy * math.sin(theta)) * 2 * math.pi / period + phase)
    return out


def _glare(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    cy, cx = rng.uniform(0, h), rng.uniform(0, w)
    sy, sx = rng.uniform(0.1, 0.5) * h, rng.uniform(0.1, 0.5) * w
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    g = np.exp(-(((yy - cy) / sy) ** 2 + ((xx - cx) / sx) ** 2))
    if rng.random() < 0.5:  # a streak across a glossy surface
        t = rng.uniform(0, math.pi)
        d = (xx - cx) * math.cos(t) + (yy - cy) * math.sin(t)
        g = np.maximum(g, np.exp(-(d / (rng.uniform(0.03, 0.12) * w)) ** 2) * rng.uniform(0.3, 0.8))
    return g


def screen_effects(win: np.ndarray, rng: np.random.Generator, strength: float = 1.0) -> np.ndarray:
    x = win.astype(np.float32)
    h, w = x.shape[:2]
    if rng.random() < 0.8:
        m = _moire(h, w, rng)[..., None] * rng.uniform(3, 14) * strength
        tint = rng.uniform(0.6, 1.0, size=3).astype(np.float32)
        x = x + m * tint
    if rng.random() < 0.7:  # display tone curve and colour cast
        x = 255.0 * (np.clip(x, 0, 255) / 255.0) ** rng.uniform(0.7, 1.3)
        x = x * rng.uniform(0.85, 1.15, size=3).astype(np.float32)
    if rng.random() < 0.5:
        x = x + _glare(h, w, rng)[..., None] * rng.uniform(40, 140) * strength
    return np.clip(x, 0, 255).astype(np.uint8)


def photometric(win: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    x = win
    if rng.random() < 0.8:  # colour / exposure / white balance
        f = x.astype(np.float32)
        f = f * rng.uniform(0.6, 1.4) + rng.uniform(-30, 30)
        mean = f.mean(axis=2, keepdims=True)
        f = mean + (f - mean) * rng.uniform(0.6, 1.4)  # saturation
        f = f * rng.uniform(0.88, 1.12, size=3).astype(np.float32)
        x = np.clip(f, 0, 255).astype(np.uint8)
    if rng.random() < 0.25:
        k = int(rng.choice([3, 5, 7]))
        if rng.random() < 0.5:
            x = cv2.GaussianBlur(x, (k, k), rng.uniform(0.4, 1.8))
        else:  # motion blur
            ker = np.zeros((k, k), np.float32)
            ker[k // 2, :] = 1.0 / k
            rot = cv2.getRotationMatrix2D((k / 2 - 0.5, k / 2 - 0.5), rng.uniform(0, 180), 1.0)
            ker = cv2.warpAffine(ker, rot, (k, k))
            x = cv2.filter2D(x, -1, ker / max(ker.sum(), 1e-6))
    if rng.random() < 0.2:  # resolution loss
        h, w = x.shape[:2]
        f = rng.uniform(0.3, 0.7)
        x = cv2.resize(cv2.resize(x, (max(8, int(w * f)), max(8, int(h * f)))), (w, h))
    if rng.random() < 0.25:
        n = rng.normal(0, rng.uniform(2, 8), size=x.shape).astype(np.float32)
        x = np.clip(x.astype(np.float32) + n, 0, 255).astype(np.uint8)
    if rng.random() < 0.4:
        ok, enc = cv2.imencode(".jpg", x, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(30, 96))])
        if ok:
            x = cv2.imdecode(enc, cv2.IMREAD_COLOR)
    return x


def exposure_norm(win: np.ndarray, rng: np.random.Generator,
                  lo: float = 50.0, hi: float = 200.0) -> np.ndarray:
    """Rescale the window's exposure (a gain, clipped) to a random mean level in [lo, hi], so
    overall brightness carries no class information.

    In replay-crops, person A's real crops are dark (mean ~73) and the replays bright (~175), a
    perfect shortcut on the training data that sends the darker, unseen person B's replays to
    "real".
    """
    f = win.astype(np.float32)
    target = rng.uniform(lo, hi)
    f = np.clip(f * (target / max(float(f.mean()), 1.0)), 0, 255)
    return f.astype(np.uint8)


def augment(img: np.ndarray, box: Optional[Sequence[int]], label: int, rng: np.random.Generator,
            scale: float = 2.7, p_synth: float = 0.15,
            extra_scales: Sequence[float] = (), p_exposure: float = 0.0) -> Tuple[np.ndarray, int]:
    """One augmented 80x80 training crop at ``scale`` (and its label, which may become SCREEN).

    With ``extra_scales`` (e.g. (4.0,) for a MiniFASNetV1SE teacher) the result is a list of
    crops, the first at ``scale``: every crop uses the *same* jittered face box (scale factor,
    size and centre jitter) scaled by its own factor, as upstream's CropImage would, and the same
    photometric / attack augmentation, applied once to the union of the crop windows, so a
    teacher sees the same picture at its own crop scale. Without ``extra_scales`` the random draws
    and the crop are those of the single-scale recipe.
    """
    h, w = img.shape[:2]
    scales = [scale] + list(extra_scales)
    if box is None:  # tight crop without a detected face: jitter a box over most of the image
        bw, bh = w * rng.uniform(0.75, 1.0), h * rng.uniform(0.75, 1.0)
        x1, y1 = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
        x1, y1, x2, y2 = int(x1), int(y1), int(x1 + bw) - 1, int(y1 + bh) - 1
        wins = [(x1, y1, x2, y2)] * len(scales)  # no face box: the same region for every scale
    else:
        f = rng.uniform(0.8, 1.2)
        bx, by, bw_, bh_ = box
        bw_, bh_ = bw_ * rng.uniform(0.9, 1.1), bh_ * rng.uniform(0.9, 1.1)
        shift = (rng.uniform(-0.08, 0.08), rng.uniform(-0.08, 0.08))
        wins = [faces.crop_window(w, h, (bx, by, bw_, bh_), sc * f, shift) for sc in scales]
    wins = [(max(0, x1), max(0, y1), x2, y2) for x1, y1, x2, y2 in wins]
    ux1, uy1 = min(wn[0] for wn in wins), min(wn[1] for wn in wins)
    ux2, uy2 = max(wn[2] for wn in wins), max(wn[3] for wn in wins)
    win = img[uy1:uy2 + 1, ux1:ux2 + 1]
    if label == REAL and rng.random() < p_synth:
        win, label = screen_effects(win, rng, 1.3), SCREEN
    elif label != REAL and rng.random() < 0.3:
        win = screen_effects(win, rng, 1.0 if label == SCREEN else 0.6)
    if p_exposure > 0 and rng.random() < p_exposure:
        win = exposure_norm(win, rng)
    win = photometric(win, rng)
    outs = [cv2.resize(win[y1 - uy1:y2 - uy1 + 1, x1 - ux1:x2 - ux1 + 1], (80, 80))
            for x1, y1, x2, y2 in wins]
    if rng.random() < 0.5:
        outs = [o[:, ::-1] for o in outs]
    outs = [np.ascontiguousarray(o) for o in outs]
    return (outs if extra_scales else outs[0]), label


# ---------------------------------------------------------------------------------------------
# Metrics (real = positive; an attack is accepted when score >= threshold)

def auc(real: np.ndarray, attack: np.ndarray) -> float:
    if len(real) == 0 or len(attack) == 0:
        return float("nan")
    s = np.concatenate([real, attack])
    order = s.argsort(kind="mergesort")
    ranks = np.empty(len(s), np.float64)
    # average ranks for ties
    sorted_s = s[order]
    i = 0
    while i < len(s):
        j = i
        while j + 1 < len(s) and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    r = ranks[: len(real)].sum()
    return float((r - len(real) * (len(real) + 1) / 2) / (len(real) * len(attack)))


def threshold_at_bpcer(real: np.ndarray, bpcer: float = 0.05) -> float:
    """Smallest threshold t from the real scores with BPCER(t) = frac(real < t) <= bpcer."""
    r = np.sort(real)
    k = int(math.floor(bpcer * len(r)))
    return float(r[min(k, len(r) - 1)]) if len(r) else 0.5


def pad_metrics(real: np.ndarray, attack: np.ndarray, thr: float = 0.5,
                thr_fixed: Optional[float] = None) -> Dict[str, float]:
    real, attack = np.asarray(real, np.float64), np.asarray(attack, np.float64)
    apcer = float((attack >= thr).mean()) if len(attack) else float("nan")
    bpcer = float((real < thr).mean()) if len(real) else float("nan")
    m = {"n_real": int(len(real)), "n_attack": int(len(attack)), "auc": auc(real, attack),
         "threshold": thr, "apcer": apcer, "bpcer": bpcer, "acer": (apcer + bpcer) / 2}
    if len(real):
        t5 = threshold_at_bpcer(real)
        m["threshold_bpcer5"] = t5
        m["bpcer_at_t5"] = float((real < t5).mean())
        m["apcer_at_bpcer5"] = float((attack >= t5).mean()) if len(attack) else float("nan")
    if thr_fixed is not None:
        m["thr_val"] = thr_fixed
        m["apcer_at_thr_val"] = float((attack >= thr_fixed).mean()) if len(attack) else float("nan")
        m["bpcer_at_thr_val"] = float((real < thr_fixed).mean()) if len(real) else float("nan")
    return m


def fmt_metrics(m: Dict[str, float]) -> str:
    s = (f"n_real={m['n_real']} n_attack={m['n_attack']} AUC={m['auc']:.4f} "
         f"@{m['threshold']:.2f}: APCER={m['apcer']:.4f} BPCER={m['bpcer']:.4f} ACER={m['acer']:.4f}")
    if "apcer_at_bpcer5" in m:
        s += f" | BPCER5 thr={m['threshold_bpcer5']:.4f} APCER={m['apcer_at_bpcer5']:.4f}"
    return s
