#!/usr/bin/env python3
"""Evaluate PAD models on the held-out (test) split of ../shared/data, side by side with the
upstream MiniFASNetV2 + V1SE ensemble, through the same detector boxes and crops.

    python tools/train/eval_pad.py --shared ../shared --model models/veriframe-pad-v2.safetensors \\
        --json /tmp/veriframe-pad-v2.eval.json

    # symlink trees of the held-out images, for `veriframe eval --real DIR --attack DIR`
    python tools/train/eval_pad.py --shared ../shared --export-heldout /tmp/vf-heldout

Scores are softmax[1] (real). An attack is accepted when score >= threshold. Metrics per set
(nuaa, replay, all): AUC; APCER/BPCER/ACER at 0.5; the threshold that gives BPCER = 5 % on the
reported set itself and its APCER (as `veriframe eval` prints it); and the BPCER-5 % threshold
chosen on the *validation* split applied to the test split (no tuning on the reported set).
Images where the detector finds no face are handled two ways: ``pipeline`` counts them as
rejected (score 0, as `veriframe eval` does); ``whole`` scores the whole image as the face region
(tight crops only; NUAA has a face in every frame).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import faces  # noqa: E402
import pad_data as D  # noqa: E402
from minifasnet import load_safetensors, minifasnet_v1se, minifasnet_v2  # noqa: E402

REPO = os.path.abspath(os.path.join(HERE, "../.."))


def export_heldout(samples, out):
    n = 0
    for s in samples:
        if s.split != "test":
            continue
        kind = "real" if s.label == D.REAL else "attack"
        sub = os.path.join(out, s.set, kind)
        os.makedirs(sub, exist_ok=True)
        name = s.group.replace("/", "_") + "_" + os.path.basename(s.path)
        dst = os.path.join(sub, name)
        if not os.path.lexists(dst):
            os.symlink(os.path.abspath(s.path), dst)
        n += 1
    print(f"linked {n} held-out images under {out}/{{nuaa,replay}}/{{real,attack}}")


class Scorer:
    def __init__(self, name, parts):
        self.name, self.parts = name, parts  # [(model, scale)]

    @torch.no_grad()
    def score(self, img, box):
        total = 0.0
        for net, scale in self.parts:
            c = faces.crop(img, box, scale)
            x = torch.from_numpy(c.transpose(2, 0, 1)[None].astype(np.float32))
            total += float(F.softmax(net(x), dim=1)[0, D.REAL])
        return total / len(self.parts)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", default=os.path.join(REPO, "../shared"))
    ap.add_argument("--model", action="append", default=[], help="Veriframe PAD .safetensors (MiniFASNetV2)")
    ap.add_argument("--no-upstream", action="store_true", help="skip the upstream ensemble")
    ap.add_argument("--json", help="write all figures here")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--export-heldout", metavar="DIR")
    ap.add_argument("--stride", type=int, default=1, help="score every Nth image only (smoke tests)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    samples = D.shared_samples(a.shared)
    if a.export_heldout:
        export_heldout(samples, a.export_heldout)
        if not a.model and a.no_upstream:
            return
    D.attach_boxes(samples, os.path.join(a.shared, faces.DEFAULT_DETECTOR),
                   os.path.join(HERE, "boxes-shared.json"), key_root=a.shared)
    scorers = []
    for p in a.model:
        m = minifasnet_v2()
        load_safetensors(m, p)
        scorers.append(Scorer(os.path.basename(p), [(m.eval(), 2.7)]))
    if not a.no_upstream:
        up = os.path.join(a.shared, "models/upstream/minifasnet")
        v2, se = minifasnet_v2(), minifasnet_v1se()
        load_safetensors(v2, os.path.join(up, "2.7_80x80_MiniFASNetV2.safetensors"))
        load_safetensors(se, os.path.join(up, "4_0_0_80x80_MiniFASNetV1SE.safetensors"))
        scorers.append(Scorer("upstream-ensemble(V2+V1SE)", [(v2.eval(), 2.7), (se.eval(), 4.0)]))

    t0 = time.time()
    rows = {sc.name: {"val": [], "test": []} for sc in scorers}
    for s in samples[::a.stride]:
        if s.split == "train":
            continue
        img = faces.read_bgr(s.path)
        for sc in scorers:
            v = sc.score(img, s.box)  # s.box None -> whole image (tight crop)
            rows[sc.name][s.split].append((s.set, s.label, s.box is None, v, s.group))
    print(f"scored in {time.time() - t0:.0f}s", file=sys.stderr)

    report = {"split": {"nuaa_train": D.NUAA_TRAIN, "nuaa_val": D.NUAA_VAL, "nuaa_test": D.NUAA_TEST,
                        "replay_b_start": D.REPLAY_B_START, "replay_a_blocks": D.REPLAY_A_BLOCKS},
              "models": {}}
    for name, parts in rows.items():
        report["models"][name] = {}
        for mode in ("pipeline", "whole"):
            def arr(split, set_name, real):
                return np.array([(0.0 if (mode == "pipeline" and nf) else v)
                                 for (st, lab, nf, v, _) in parts[split]
                                 if (set_name == "all" or st == set_name) and (lab == D.REAL) == real])
            for set_name in ("nuaa", "replay", "all"):
                thr_val = D.threshold_at_bpcer(arr("val", set_name, True))
                m = D.pad_metrics(arr("test", set_name, True), arr("test", set_name, False), 0.5, thr_val)
                m["no_face"] = sum(1 for (st, _, nf, _, _) in parts["test"]
                                   if nf and (set_name == "all" or st == set_name))
                report["models"][name][f"{set_name}/{mode}"] = m
        # replay person B alone (unseen person, attack only): acceptance rate at 0.5
        b = [v for (st, lab, nf, v, g) in parts["test"] if g == "replay/B"]
        report["models"][name]["replay-B/whole"] = {
            "n_attack": len(b), "apcer@0.5": float(np.mean(np.array(b) >= 0.5)) if b else None}

    for name, r in report["models"].items():
        print(f"== {name}")
        for k, m in r.items():
            if "auc" in m:
                print(f"  {k:16s} {D.fmt_metrics(m)} no_face={m['no_face']} | val-thr {m['thr_val']:.4f}: "
                      f"APCER={m['apcer_at_thr_val']:.4f} BPCER={m['bpcer_at_thr_val']:.4f}")
            else:
                print(f"  {k:16s} {m}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(report, f, indent=1)
            f.write("\n")


if __name__ == "__main__":
    main()
