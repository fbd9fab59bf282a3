#!/usr/bin/env python3
"""Train Veriframe's presentation-attack (PAD) model: MiniFASNetV2 from scratch, or fine-tune.

Shipped model (trains on the training subjects of ../shared/data only; see
models/veriframe-pad-v2.md for the split, recipe and metrics):

    python tools/train/train_pad.py --shared ../shared --out models/veriframe-pad-v2.safetensors

Site calibration (start from the shipped model, adapt to a booth's own labelled captures):

    python tools/train/train_pad.py --init models/veriframe-pad-v2.safetensors \\
        --real captures/real --attack captures/attack --out site-pad.safetensors

The exported .safetensors holds f32 weights and BN running stats under the upstream MiniFASNetV2
names, so Veriframe's Rust runtime loads it like ``2.7_80x80_MiniFASNetV2.safetensors``
(input 80x80 BGR 0-255 crop of the face box scaled by 2.7; class 1 = real).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Dict, List

import cv2
import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import faces  # noqa: E402
import pad_data as D  # noqa: E402
from minifasnet import load_safetensors, minifasnet_v1se, minifasnet_v2, save_safetensors  # noqa: E402

REPO = os.path.abspath(os.path.join(HERE, "../.."))


def log(*a):
    print(*a, flush=True)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", default=os.path.join(REPO, "../shared"),
                    help="shared data root (default: ../shared beside the repo)")
    ap.add_argument("--real", action="append", default=[], help="directory of real (bona fide) images")
    ap.add_argument("--attack", action="append", default=[], help="directory of attack images")
    ap.add_argument("--attack-class", choices=["print", "screen"], default="screen",
                    help="class given to --attack images (default screen = replay)")
    ap.add_argument("--print", dest="print_dirs", action="append", default=[], help="print attacks")
    ap.add_argument("--screen", action="append", default=[], help="screen/replay attacks")
    ap.add_argument("--mix-shared", action="store_true",
                    help="with --real/--attack: also train on the shared training split (rehearsal)")
    ap.add_argument("--init", help="start from these weights (site calibration)")
    ap.add_argument("--out", default=os.path.join(REPO, "models/veriframe-pad-v2.safetensors"))
    ap.add_argument("--epochs", type=int, default=None, help="default 8 (from scratch) / 4 (--init)")
    ap.add_argument("--steps-per-epoch", type=int, default=25)
    ap.add_argument("--val-every", type=int, default=2, help="validate every N epochs (and after the last)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=None, help="default 3e-3 (scratch) / 3e-4 (--init)")
    ap.add_argument("--weight-decay", type=float, default=5e-4)
    ap.add_argument("--label-smoothing", type=float, default=0.1)
    ap.add_argument("--p-synth", type=float, default=0.15,
                    help="probability that a real training crop becomes a synthetic screen replay")
    ap.add_argument("--p-exposure", type=float, default=0.0,
                    help="probability that a training crop's exposure is rescaled to a random mean "
                         "level (50-200), so brightness cannot separate the classes")
    ap.add_argument("--teacher", action="append", default=[],
                    help="upstream MiniFASNet .safetensors used as a distillation teacher (optional; "
                         "repeat for an ensemble: the target is the mean of the teachers' softmax). "
                         "Architecture (V2 / V1SE) from the weights, crop scale from the upstream "
                         "file name (2.7_80x80_... -> 2.7, 4_0_0_80x80_... -> 4.0) or PATH@SCALE")
    ap.add_argument("--distill-weight", type=float, default=0.3)
    ap.add_argument("--temperature", type=float, default=2.0)
    ap.add_argument("--feat-weight", type=float, default=0.0,
                    help="feature distillation: weight of the normalised MSE between the student's and "
                         "the first 2.7-crop MiniFASNetV2 teacher's conv_4 output and 128-d embedding "
                         "(same architecture, so no adapter; 0 = off)")
    ap.add_argument("--seed", type=int, default=20261126)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--detector", default=None,
                    help="Ultra-Light RFB-320 ONNX (default <shared>/" + faces.DEFAULT_DETECTOR + ")")
    ap.add_argument("--box-cache", default=None,
                    help="JSON face-box cache (default tools/train/boxes-blazeface.json, from `veriframe faces`, for shared data, "
                         "<out>.boxes.json for user data)")
    ap.add_argument("--val-frac", type=float, default=0.2, help="user data: validation fraction")
    return ap.parse_args(argv)


class Bank:
    """Training images held in memory (decoded BGR uint8) with their boxes and labels."""

    def __init__(self, samples: List[D.Sample]):
        self.items = []
        for s in samples:
            img = faces.read_bgr(s.path)
            if img is None:
                log(f"  warning: cannot read {s.path}, skipped")
                continue
            self.items.append((img, s.box, s.label, f"{s.set}:{'real' if s.label == D.REAL else 'attack'}"))
        # Balanced sampling over (set, real/attack) buckets.
        buckets: Dict[str, List[int]] = {}
        for i, it in enumerate(self.items):
            buckets.setdefault(it[3], []).append(i)
        self.buckets = buckets
        w = np.zeros(len(self.items))
        for idx in buckets.values():
            w[idx] = 1.0 / (len(idx) * len(buckets))
        self.weights = w / w.sum()

    def batch(self, n: int, rng: np.random.Generator, p_synth: float, extra_scales=(),
              p_exposure: float = 0.0):
        """(x, y) or, with ``extra_scales``, (x, y, [x at each extra scale]) from the same boxes."""
        idx = rng.choice(len(self.items), size=n, p=self.weights)
        xs, ys = [], []
        for i in idx:
            img, box, label, _ = self.items[i]
            x, y = D.augment(img, box, label, rng, p_synth=p_synth, extra_scales=extra_scales,
                             p_exposure=p_exposure)
            xs.append(x if extra_scales else [x])
            ys.append(y)
        t = [torch.from_numpy(np.stack([c[k] for c in xs]).transpose(0, 3, 1, 2).astype(np.float32))
             for k in range(1 + len(extra_scales))]
        y = torch.tensor(ys, dtype=torch.long)
        return (t[0], y, t[1:]) if extra_scales else (t[0], y)


def teacher_scale(spec: str):
    """PATH[@SCALE] -> (path, scale); the scale defaults from upstream's file-name prefix."""
    if "@" in spec:
        path, sc = spec.rsplit("@", 1)
        return path, float(sc)
    base = os.path.basename(spec)
    if "_80x80" in base:  # upstream parse_model_name: scale = float(name.split("_")[0])
        try:
            return spec, float(base.split("_")[0])
        except ValueError:
            pass
    return spec, 2.7


FEAT_LAYERS = ("conv_4",)


def forward_feats(model, x):
    """(logits, [conv_4 output, embedding]) in one pass (the layers of MiniFASNet.embed)."""
    feats = []
    for name in ("conv1", "conv2_dw", "conv_23", "conv_3", "conv_34", "conv_4", "conv_45", "conv_5",
                 "conv_6_sep", "conv_6_dw"):
        x = getattr(model, name)(x)
        if name in FEAT_LAYERS:
            feats.append(x)
    e = model.bn(model.linear(x.flatten(1)))
    feats.append(e)
    return model.prob(model.drop(e)), feats


def feat_loss(fs, ft):
    """Mean over layers of MSE(student, teacher) / mean(teacher^2)."""
    return sum(F.mse_loss(a, b) / b.pow(2).mean().clamp_min(1e-6) for a, b in zip(fs, ft)) / len(ft)


def load_teacher(path: str):
    """Upstream MiniFASNet weights; V2 or V1SE, whichever loads strictly."""
    for arch, make in (("MiniFASNetV2", minifasnet_v2), ("MiniFASNetV1SE", minifasnet_v1se)):
        m = make()
        try:
            load_safetensors(m, path)
        except ValueError:
            continue
        m.eval()
        return m, arch
    raise ValueError(f"{path}: neither MiniFASNetV2 nor MiniFASNetV1SE")


def eval_crops(samples: List[D.Sample]):
    """Nominal (inference) crops; images without a face are kept aside (counted as rejected)."""
    xs, labels, sets, noface = [], [], [], []
    for s in samples:
        img = faces.read_bgr(s.path)
        if img is None or s.box is None:
            noface.append(s)
            continue
        xs.append(faces.crop(img, s.box, 2.7))
        labels.append(s.label)
        sets.append(s.set)
    x = np.stack(xs).transpose(0, 3, 1, 2).astype(np.float32) if xs else np.zeros((0, 3, 80, 80), np.float32)
    return torch.from_numpy(x), np.array(labels), np.array(sets), noface


@torch.no_grad()
def real_scores(model, x: torch.Tensor, bs: int = 256) -> np.ndarray:
    model.eval()
    out = [F.softmax(model(x[i:i + bs]), dim=1)[:, D.REAL] for i in range(0, len(x), bs)]
    return torch.cat(out).numpy() if out else np.zeros(0)


def metrics_by_set(scores, labels, sets, noface):
    res = {}
    for name in sorted(set(sets.tolist()) | {s.set for s in noface}) + ["all"]:
        m = np.ones(len(scores), bool) if name == "all" else sets == name
        nf = [s for s in noface if name in ("all", s.set)]
        real = np.concatenate([scores[m & (labels == D.REAL)],
                               np.zeros(sum(s.label == D.REAL for s in nf))])
        att = np.concatenate([scores[m & (labels != D.REAL)],
                              np.zeros(sum(s.label != D.REAL for s in nf))])
        r = D.pad_metrics(real, att)
        r["no_face"] = len(nf)
        res[name] = r
    return res


def main(argv=None):
    a = parse_args(argv)
    t_start = time.time()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    rng = np.random.default_rng(a.seed)
    cv2.setNumThreads(1)
    finetune = a.init is not None
    epochs = a.epochs if a.epochs is not None else (4 if finetune else 8)
    lr = a.lr if a.lr is not None else (3e-4 if finetune else 3e-3)
    detector = a.detector or os.path.join(a.shared, faces.DEFAULT_DETECTOR)

    user_dirs = ([(d, D.REAL) for d in a.real]
                 + [(d, D.PRINT if a.attack_class == "print" else D.SCREEN) for d in a.attack]
                 + [(d, D.PRINT) for d in a.print_dirs] + [(d, D.SCREEN) for d in a.screen])
    samples: List[D.Sample] = []
    if user_dirs:
        if not any(l == D.REAL for _, l in user_dirs) or all(l == D.REAL for _, l in user_dirs):
            sys.exit("need at least one real and one attack directory")
        us = D.user_samples(user_dirs, a.val_frac)
        D.attach_boxes(us, detector, a.box_cache or os.path.splitext(a.out)[0] + ".boxes.json", log=log)
        samples += us
    if not user_dirs or a.mix_shared:
        ss = D.shared_samples(a.shared)
        if user_dirs:
            ss = [s for s in ss if s.split == "train"]  # rehearsal only; validate on the user's data
        D.attach_boxes(ss, detector, a.box_cache if not user_dirs and a.box_cache
                       else os.path.join(HERE, "boxes-blazeface.json"), key_root=a.shared, log=log)
        samples += ss

    train = [s for s in samples if s.split == "train"]
    # Training keeps images without a detected face only when they are tight crops (small
    # images): the whole image then stands in for the face region.
    train = [s for s in train if s.box is not None or max(cv2.imread(s.path).shape[:2]) <= 320]
    val = [s for s in samples if s.split == "val"]
    for name, part in (("train", train), ("val", val)):
        groups = sorted({s.group for s in part})
        log(f"{name}: {len(part)} images ({sum(s.label == D.REAL for s in part)} real, "
            f"{sum(s.label != D.REAL for s in part)} attack), groups: {', '.join(groups)}")
    if not train or not val:
        sys.exit("empty train or validation split")

    bank = Bank(train)
    log("train buckets: " + ", ".join(f"{k}={len(v)}" for k, v in sorted(bank.buckets.items())))
    vx, vy, vsets, vnoface = eval_crops(val)
    log(f"val crops: {len(vx)} (+{len(vnoface)} without a face, counted as rejected)")

    model = minifasnet_v2(drop=0.2 if not finetune else 0.0)
    if finetune:
        load_safetensors(model, a.init)
        log(f"initialised from {a.init}")
    teachers = []  # [(model, crop scale, arch)]; the target is the mean of their softmax
    for spec in a.teacher:
        path, sc = teacher_scale(spec)
        m, arch = load_teacher(path)
        teachers.append((m, sc, arch))
        log(f"teacher {path}: {arch}, crop scale {sc}")
    if teachers:
        log(f"distilling from {len(teachers)} teacher(s) (weight {a.distill_weight}, T={a.temperature})")
    # Teachers at 2.7 see the student's crop; others get their own crop of the same jittered box.
    extra_scales = sorted({sc for _, sc, _ in teachers if sc != 2.7})
    feat_teacher = None
    if a.feat_weight > 0:
        feat_teacher = next((i for i, (_, sc, arch) in enumerate(teachers)
                             if sc == 2.7 and arch == "MiniFASNetV2"), None)
        if feat_teacher is None:
            sys.exit("--feat-weight needs a MiniFASNetV2 teacher on the 2.7 crop")
        log(f"feature distillation from teacher {feat_teacher} ({', '.join(FEAT_LAYERS)} + embedding, "
            f"weight {a.feat_weight})")

    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=a.weight_decay)
    total = epochs * a.steps_per_epoch
    warm = min(a.steps_per_epoch, total // 10) if not finetune else 0

    def lr_at(step):
        if step < warm:
            return lr * (step + 1) / warm
        p = (step - warm) / max(1, total - warm)
        return lr * 0.5 * (1 + np.cos(np.pi * p))

    history = []
    step = 0
    for ep in range(1, epochs + 1):
        model.train()
        t0 = time.time()
        losses = []
        for _ in range(a.steps_per_epoch):
            for g in opt.param_groups:
                g["lr"] = lr_at(step)
            if extra_scales:
                x, y, xe = bank.batch(a.batch, rng, a.p_synth, extra_scales, a.p_exposure)
            else:
                x, y = bank.batch(a.batch, rng, a.p_synth, p_exposure=a.p_exposure)
                xe = []
            logits, fs = forward_feats(model, x) if feat_teacher is not None else (model(x), None)
            loss = F.cross_entropy(logits, y, label_smoothing=a.label_smoothing)
            if teachers:
                crops = dict(zip(extra_scales, xe))
                crops[2.7] = x
                with torch.no_grad():
                    outs = []
                    for i, (tm, sc, _) in enumerate(teachers):
                        if i == feat_teacher:
                            tl, ft = forward_feats(tm, crops[sc])
                        else:
                            tl = tm(crops[sc])
                        outs.append(F.softmax(tl / a.temperature, dim=1))
                    t = torch.stack(outs).mean(0)
                kd = F.kl_div(F.log_softmax(logits / a.temperature, dim=1), t, reduction="batchmean")
                loss = (1 - a.distill_weight) * loss + a.distill_weight * a.temperature ** 2 * kd
                if feat_teacher is not None:
                    loss = loss + a.feat_weight * feat_loss(fs, ft)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
            step += 1
        row = {"epoch": ep, "loss": float(np.mean(losses)), "lr": lr_at(step - 1),
               "secs": time.time() - t0}
        parts = "(no validation this epoch)"
        if ep % a.val_every == 0 or ep == epochs:
            scores = real_scores(model, vx)
            vm = metrics_by_set(scores, vy, vsets, vnoface)
            row["val"] = vm
            parts = " | ".join(f"{k}: AUC {m['auc']:.4f} APCER {m['apcer']:.3f} "
                               f"BPCER {m['bpcer']:.3f} ACER {m['acer']:.3f}" for k, m in vm.items())
        history.append(row)
        log(f"epoch {ep:3d}/{epochs} loss {row['loss']:.4f} ({row['secs']:.0f}s) val {parts}")

    wall = time.time() - t_start
    meta = {
        "format": "veriframe-pad/minifasnetv2",
        "input": "1x3x80x80 BGR 0-255, face box x2.7, cv2 INTER_LINEAR",
        "classes": "0=print,1=real,2=screen",
        "seed": str(a.seed),
        "epochs": str(epochs),
        "init": os.path.basename(a.init) if a.init else "scratch",
        "teacher": "+".join(os.path.basename(t) for t in a.teacher) if a.teacher else "none",
        "train_wall_s": f"{wall:.0f}",
        "torch": torch.__version__,
    }
    os.makedirs(os.path.dirname(os.path.abspath(a.out)) or ".", exist_ok=True)
    save_safetensors(model, a.out, meta)
    # A reload check: what we wrote is what we evaluated.
    chk = minifasnet_v2()
    load_safetensors(chk, a.out)
    d = float(np.abs(real_scores(chk, vx[:64]) - scores[:64]).max()) if len(vx) else 0.0
    log(f"wrote {a.out} (reload max |d score| {d:.2e}); training wall time {wall / 60:.1f} min "
        f"on {a.threads} thread(s)")
    with open(os.path.splitext(a.out)[0] + ".train.json", "w") as f:
        json.dump({"args": vars(a), "meta": meta, "history": history}, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
