#!/usr/bin/env python3
"""Site calibration (docs/training.md): v6's recipe trained on the shared data plus a booth's own
labelled captures, with the threshold chosen on held-out site sessions.

The shipped model family (the upstream MiniFASNetV2 + V1SE pair; v5 and v6 fine-tune its tails)
ranks a new booth's attacks far worse than a booth it has seen: v15
(tools/train/v15-preregistration.md) measured AUC 0.90 / 0.94 on two unseen sources, and 0.99 on
the same sources' other sessions once half of their sessions were trained on. This tool does that
for a site:

1. the upstream pair's conv_45 output (v6 D's input) for the site's images, once
   (v3_features.py / v5_features.py --site, 2 x 7 views, about 0.1 s per image and network);
2. v6's recipe (D-0.001: conv_5, conv_6 and the head of each network fine-tuned with L2-SP towards
   upstream, seed 20261204) on every shared training source plus the site's training sessions;
3. Q8_0 export, `veriframe eval --scores` on the site's validation sessions (the last --val-frac
   of each class's sessions in name order, never trained on), and the threshold by
   tools/train/v3_threshold.py's rule there (validation APCER at most 5 %);
4. `OUT/site.toml`, a `[detect]` section with the two model files and that threshold.

    veriframe faces --root captures captures > site/boxes.json
    python3 tools/train/v3_features.py --site captures --boxes site/boxes.json --out site/feats.npz
    python3 tools/train/v5_features.py --site captures --boxes site/boxes.json --net 0 --out site/c5-v2.npy --c45 site/c45-v2.npy
    python3 tools/train/v5_features.py --site captures --boxes site/boxes.json --net 1 --out site/c5-v1se.npy --c45 site/c45-v1se.npy
    python3 tools/train/site_calibrate.py $C --site captures --site-feats site/feats.npz \\
        --site-c45 site/c45-v2.npy,site/c45-v1se.npy --out site/model

($C: the shared data's caches, as in models/veriframe-pad-v6.md.) Keep some people or sessions
out of `captures` altogether and measure the result on them with `veriframe eval --config
site/model/site.toml` before deploying. `--exclude SOURCE` leaves shared sources out of training
(a simulation with a shared source as the site).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import v3_features as v3  # noqa: E402
import v3_head as h  # noqa: E402
import v3_threshold  # noqa: E402
import v6_select as v6  # noqa: E402

RECIPE = "D-0.001"  # v6's


def split_sessions(groups, labels, val_frac):
    """Validation sessions: the last ``val_frac`` (at least one) of each class's sessions in name
    order, real and attack separately; the rest train. A class with one session cannot be split."""
    val = set()
    for real in (True, False):
        sessions = sorted({g for g, lab in zip(groups, labels) if (lab == 1) == real})
        kind = "real" if real else "attack"
        if len(sessions) < 2:
            raise SystemExit(f"the site has {len(sessions)} {kind} session(s); a calibration needs two or "
                             f"more (one sub-directory per person or session, docs/training.md)")
        n = max(1, round(val_frac * len(sessions)))
        val |= set(sessions[len(sessions) - n:])
    return val


def eer_threshold(real, attack, steps=10_000):
    """The validation EER threshold, the PAD literature's usual operating point on a development
    set: the thresholds on a grid of [0, 1] where max(APCER, BPCER) is smallest, and the median of
    them, so a perfectly separated validation set gives the middle of the gap between classes."""
    real, attack = np.sort(np.asarray(real)), np.sort(np.asarray(attack))
    t = np.linspace(0.0, 1.0, steps + 1)
    apcer = 1 - np.searchsorted(attack, t, side="left") / len(attack)  # attacks scoring >= t
    bpcer = np.searchsorted(real, t, side="left") / len(real)  # reals scoring < t
    err = np.maximum(apcer, bpcer)
    return float(np.median(t[err == err.min()]))


def merge(shared, site):
    """The shared caches with the site's appended (same keys; conv_45 caches per network)."""
    d = {k: np.concatenate([shared[k], site[k]]) for k in ("feats", "label", "source", "group", "path")}
    d["c45"] = [np.concatenate([a, b]) for a, b in zip(shared["c45"], site["c45"])]
    return d


def evaluate(veriframe, config, tree, scores):
    """`veriframe eval` of the images in ``tree`` with ``config`` (None: the built-in defaults)."""
    cmd = [veriframe, "eval", "--real", os.path.join(tree, "real"), "--attack", os.path.join(tree, "attack"),
           "--json", "--scores", scores] + (["--config", config] if config else [])
    return json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)


def write_config(path, files, threshold=None, comment=""):
    with open(path, "w") as f:
        f.write(comment + f"[detect]\npad_model = {json.dumps(files)}\n")
        if threshold is not None:
            f.write(f"live_threshold = {threshold:.3f}\n")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    v6.cache_args(ap)
    ap.add_argument("--site", required=True, help="the captures: real/<session>/, attack/<session>/ (print/, screen/)")
    ap.add_argument("--site-feats", required=True, help="v3_features.py --site output")
    ap.add_argument("--site-c45", required=True, help="v5_features.py --site --c45 outputs, V2 then V1SE")
    ap.add_argument("--val-frac", type=float, default=0.2)
    ap.add_argument("--rule", choices=("eer", "apcer5"), default="eer",
                    help="threshold on the validation sessions: the EER point (default) or v3_threshold's "
                    "lowest threshold with APCER <= 5 %% (too low when validation attacks are few and easy)")
    ap.add_argument("--exclude", default="", help="shared sources to leave out of training (comma list)")
    ap.add_argument("--veriframe", default="target/release/veriframe")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    if os.path.exists(a.out):
        raise SystemExit(f"{a.out} exists; give a new directory")
    t0 = time.time()
    shared = v6.load(a, need_c5=False)
    site = v6.load(argparse.Namespace(feats=a.site_feats, c45=a.site_c45), need_c5=False)
    if set(site["source"]) != {"site"}:
        raise SystemExit(f"{a.site_feats} is not a --site cache")
    samples = v3.list_site(a.site)
    if not set(map(str, site["path"])) <= {s[0] for s in samples}:
        raise SystemExit(f"{a.site_feats} lists images that are not in {a.site}")
    val = split_sessions(site["group"], site["label"], a.val_frac)
    d = merge(shared, site)
    d["source"] = np.where((d["source"] == "site") & np.isin(d["group"], sorted(val)), "site-val", d["source"])
    exclude = [s for s in a.exclude.split(",") if s]
    unknown = [s for s in exclude if s not in h.TRAINABLE]
    if unknown:
        raise SystemExit(f"--exclude: not shared training sources: {unknown}")
    sources = [s for s in h.TRAINABLE if s not in exclude] + ["site"]
    n_train = int((d["source"] == "site").sum())
    print(json.dumps({"trained_on": sources, "site_train_images": n_train,
                      "site_val_sessions": sorted(val)}), file=sys.stderr, flush=True)
    models, trunks = v6.train_soup(d, sources, RECIPE, a.upstream)
    build = os.path.join(a.out, "build")
    v6.export(models, trunks, a.upstream, build, a.veriframe,
              f"tools/train/site_calibrate.py (v6 recipe {RECIPE} + site {os.path.basename(os.path.abspath(a.site))})")
    files = []
    for net in ("v2", "v1se"):
        dst = os.path.join(a.out, f"minifasnet-site-{net}.q8_0.gguf")
        shutil.copyfile(os.path.join(build, f"minifasnet-v3-{net}.q8_0.gguf"), dst)
        files.append(os.path.abspath(dst))
    tree = os.path.join(a.out, "val")
    v3.link_tree(a.site, [smp for smp in samples if smp[3] in val], tree)  # no-face images too
    scores = os.path.join(a.out, "val-scores.csv")
    config = os.path.join(a.out, "site.toml")
    write_config(config, files)  # the model files only, for the validation scores
    metrics = evaluate(a.veriframe, config, tree, scores)
    real, attack = v3_threshold.read_scores([scores])
    t = eer_threshold(real, attack) if a.rule == "eer" else v3_threshold.threshold(attack)
    if len(attack) < 20:
        print(f"warning: {len(attack)} validation attack images; the 5 % rule needs 20 or more to mean much",
              file=sys.stderr)
    write_config(config, files, t,
                 f"# tools/train/site_calibrate.py: v6's recipe + {a.site}; threshold by the {a.rule} rule on\n"
                 f"# {len(real)} real / {len(attack)} attack validation images ({', '.join(sorted(val))})\n")
    shipped = evaluate(a.veriframe, None, tree, os.path.join(a.out, "val-scores-shipped.csv"))
    apcer, bpcer = v3_threshold.rates(real, attack, t)
    print(json.dumps({"site_toml": os.path.join(a.out, "site.toml"), "threshold": round(t, 3),
                      "val": {"n_real": len(real), "n_attack": len(attack), "auc": metrics["auc"],
                              "apcer": apcer, "bpcer": bpcer},
                      "shipped_default_on_val": {k: shipped[k] for k in ("auc", "apcer", "bpcer", "acer")},
                      "seconds": round(time.time() - t0)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
