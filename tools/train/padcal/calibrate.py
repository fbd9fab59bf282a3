#!/usr/bin/env python3
"""Site calibration (docs/training.md): a recipe (default v6's) trained on the shared data plus a
booth's own labelled captures, with the threshold chosen on held-out site sessions.

The shipped model family (the upstream MiniFASNetV2 + V1SE pair, and veriframe-pad-v6, which
fine-tunes its last blocks) ranks a new booth's attacks far worse than a booth it has seen: AUC
0.90 / 0.94 on two unseen sources, 0.99 on the same sources' other sessions once half of their
sessions were trained on (research/pad/README.md). This tool does that for a site:

    veriframe faces --root captures captures > site/boxes.json
    calibrate.py embed --site captures --boxes site/boxes.json --out site/cache       # the site's caches
    calibrate.py site --cache SHARED_CACHE --site captures --site-cache site/cache --out site/model

1. ``embed``: the upstream pair's activations for every image with a face (embeddings.py), once;
   with ``--shared`` instead of ``--site``, the shared data's (SHARED_CACHE; ``--part`` splits the
   work over processes);
2. ``site``: the recipe (recipes/veriframe-pad-v6.toml: conv_5, conv_6 and the head of each network fine-tuned
   with L2-SP towards upstream) on every shared training source plus the site's training
   sessions; Q8_0 export; `veriframe eval --scores` on the site's validation sessions (the last
   --val-frac of each class's sessions in name order, never trained on); the threshold by the
   EER rule there (``--rule apcer5``: validation APCER at most 5 %); ``OUT/site.toml``, a
   ``[detect]`` section with the two model files and that threshold;
3. ``check``: the caches reproduce the ONNX graphs, and the hand-written gradients are right;
4. ``train``: the recipe on the shared training sources alone (how veriframe-pad-v6 was made).

Keep some people or sessions out of `captures` altogether and measure the result on them with
`veriframe eval --config site/model/site.toml` before deploying. `--exclude SOURCE` leaves shared
sources out of training (a simulation with a shared source as the site).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

if __package__ in (None, ""):  # run as a script: import the package from the directory above
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    __package__ = "padcal"

import numpy as np  # noqa: E402

from padcal import embeddings, recipe, splits, tail, threshold  # noqa: E402


def merge(shared, site):
    """The shared caches with the site's appended (same keys; per-network caches per network)."""
    d = {k: np.concatenate([shared[k], site[k]]) for k in ("feats", "label", "source", "group", "path")}
    for key in ("c5", "c45"):
        if key in shared:
            d[key] = [np.concatenate([a, b]) for a, b in zip(shared[key], site[key])]
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


def load_cache(cache_dir, r):
    """A cache directory's feats.npz and the per-network caches the recipe trains on."""
    feats, c5, c45 = embeddings.cache_paths(cache_dir)
    return tail.load(feats, c45_paths=c45 if r.train_conv5 else (), c5_paths=() if r.train_conv5 else c5)


def cmd_embed(a) -> int:
    os.makedirs(a.out, exist_ok=True)
    feats, c5, c45 = embeddings.cache_paths(a.out)
    parts = ("feats", "v2", "v1se") if a.part == "all" else (a.part,)
    for part in parts:
        if part == "feats":
            embeddings.write_feats(a.shared, a.boxes, feats, site=a.site)
        else:
            net = embeddings.NET_NAMES.index(part)
            embeddings.write_blocks(a.shared, a.boxes, net, c5[net], c45[net], site=a.site)
    return 0


def cmd_check(a) -> int:
    feats, c5, c45 = embeddings.cache_paths(a.cache)
    d = tail.load(feats, c45_paths=c45, c5_paths=c5)
    tail.check_tail(d, a.upstream)
    tail.check_conv5(d, a.upstream, gradients=not a.forward_only)
    return 0


def cmd_train(a) -> int:
    """The recipe on the shared training sources alone: how the shipped opt-in model was made."""
    if os.path.exists(a.out):
        raise SystemExit(f"{a.out} exists; give a new directory")
    r = recipe.load(a.recipe)
    d = load_cache(a.cache, r)
    models, trunks = recipe.train(d, splits.TRAINABLE, r, a.upstream)
    tail.export(models, trunks, a.upstream, a.out, a.veriframe, f"tools/train/padcal (recipe {r.name})")
    print(json.dumps({"recipe": r.name, "trained_on": splits.TRAINABLE, "out": a.out}))
    return 0


def cmd_site(a) -> int:
    if os.path.exists(a.out):
        raise SystemExit(f"{a.out} exists; give a new directory")
    r = recipe.load(a.recipe)
    t0 = time.time()
    shared = load_cache(a.cache, r)
    site = load_cache(a.site_cache, r)
    if set(site["source"]) != {"site"}:
        raise SystemExit(f"{a.site_cache} is not a site cache (calibrate.py embed --site)")
    samples = embeddings.list_site(a.site)
    if not set(map(str, site["path"])) <= {s[0] for s in samples}:
        raise SystemExit(f"{a.site_cache} lists images that are not in {a.site}")
    val = splits.split_sessions(site["group"], site["label"], a.val_frac)
    d = merge(shared, site)
    d["source"] = np.where((d["source"] == "site") & np.isin(d["group"], sorted(val)), "site-val", d["source"])
    exclude = [s for s in a.exclude.split(",") if s]
    unknown = [s for s in exclude if s not in splits.TRAINABLE]
    if unknown:
        raise SystemExit(f"--exclude: not shared training sources: {unknown}")
    sources = [s for s in splits.TRAINABLE if s not in exclude] + ["site"]
    n_train = int((d["source"] == "site").sum())
    print(json.dumps({"recipe": r.name, "trained_on": sources, "site_train_images": n_train,
                      "site_val_sessions": sorted(val)}), file=sys.stderr, flush=True)
    models, trunks = recipe.train(d, sources, r, a.upstream)
    build = os.path.join(a.out, "build")
    tail.export(models, trunks, a.upstream, build, a.veriframe,
                f"tools/train/padcal (recipe {r.name} + site {os.path.basename(os.path.abspath(a.site))})")
    files = []
    for net in tail.NETS:
        dst = os.path.join(a.out, f"minifasnet-site-{net}.q8_0.gguf")
        shutil.copyfile(os.path.join(build, f"padcal-{net}.q8_0.gguf"), dst)
        files.append(os.path.abspath(dst))
    tree = os.path.join(a.out, "val")
    embeddings.link_tree(a.site, [smp for smp in samples if smp[3] in val], tree)  # no-face images too
    scores = os.path.join(a.out, "val-scores.csv")
    config = os.path.join(a.out, "site.toml")
    write_config(config, files)  # the model files only, for the validation scores
    metrics = evaluate(a.veriframe, config, tree, scores)
    real, attack = threshold.read_scores([scores])
    if not real or not attack:
        raise SystemExit(f"the validation sessions gave {len(real)} real and {len(attack)} attack scores "
                         f"({', '.join(sorted(val))}); both classes are needed for a threshold")
    t = threshold.eer_threshold(real, attack) if a.rule == "eer" else threshold.threshold(attack)
    if len(attack) < 20:
        print(f"warning: {len(attack)} validation attack images; the 5 % rule needs 20 or more to mean much",
              file=sys.stderr)
    write_config(config, files, t,
                 f"# tools/train/padcal: recipe {r.name} + {a.site}; threshold by the {a.rule} rule on\n"
                 f"# {len(real)} real / {len(attack)} attack validation images ({', '.join(sorted(val))})\n")
    shipped = evaluate(a.veriframe, None, tree, os.path.join(a.out, "val-scores-shipped.csv"))
    apcer, bpcer = threshold.rates(real, attack, t)
    print(json.dumps({"site_toml": os.path.join(a.out, "site.toml"), "threshold": round(t, 3),
                      "val": {"n_real": len(real), "n_attack": len(attack), "auc": metrics["auc"],
                              "apcer": apcer, "bpcer": bpcer},
                      "shipped_default_on_val": {k: shipped[k] for k in ("auc", "apcer", "bpcer", "acer")},
                      "seconds": round(time.time() - t0)}))
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    upstream = "../shared/models/upstream/minifasnet"

    e = sub.add_parser("embed", help="cache the upstream pair's activations (feats.npz, c5-*.npy, c45-*.npy)")
    e.add_argument("--boxes", required=True, help="`veriframe faces --root ROOT ROOT` output")
    e.add_argument("--out", required=True, help="the cache directory")
    e.add_argument("--site", help="a site's captures: real/<session>/, attack/<session>/ (print/, screen/)")
    e.add_argument("--shared", default="../shared", help="the shared data (its images without --site, "
                   "and the upstream ONNX graphs under models/upstream/minifasnet)")
    e.add_argument("--part", choices=("all", "feats", "v2", "v1se"), default="all",
                   help="only this part (to run the parts as parallel processes)")
    e.set_defaults(run=cmd_embed)

    c = sub.add_parser("check", help="the caches reproduce the ONNX graphs; the gradients are right")
    c.add_argument("--cache", required=True)
    c.add_argument("--upstream", default=upstream)
    c.add_argument("--forward-only", action="store_true",
                   help="skip the finite-difference gradient check (it needs a cache of real data)")
    c.set_defaults(run=cmd_check)

    t = sub.add_parser("train", help="the recipe on the shared training sources alone (the shipped opt-in)")
    t.add_argument("--cache", required=True, help="the shared data's cache directory (embed --shared)")
    t.add_argument("--recipe", default="veriframe-pad-v6", help=f"a recipe name ({', '.join(recipe.names())}) or a .toml file")
    t.add_argument("--upstream", default=upstream)
    t.add_argument("--veriframe", default="target/release/veriframe")
    t.add_argument("--out", required=True)
    t.set_defaults(run=cmd_train)

    s = sub.add_parser("site", help="calibrate: train, export, threshold, write OUT/site.toml")
    s.add_argument("--cache", required=True, help="the shared data's cache directory (embed --shared)")
    s.add_argument("--site", required=True, help="the captures: real/<session>/, attack/<session>/ (print/, screen/)")
    s.add_argument("--site-cache", required=True, help="the site's cache directory (embed --site)")
    s.add_argument("--recipe", default="veriframe-pad-v6", help=f"a recipe name ({', '.join(recipe.names())}) or a .toml file")
    s.add_argument("--val-frac", type=float, default=0.2)
    s.add_argument("--rule", choices=("eer", "apcer5"), default="eer",
                   help="threshold on the validation sessions: the EER point (default) or the lowest "
                   "threshold with APCER <= 5 %% (too low when validation attacks are few and easy)")
    s.add_argument("--exclude", default="", help="shared sources to leave out of training (comma list)")
    s.add_argument("--upstream", default=upstream)
    s.add_argument("--veriframe", default="target/release/veriframe")
    s.add_argument("--out", required=True)
    s.set_defaults(run=cmd_site)

    a = ap.parse_args(argv)
    return a.run(a)


if __name__ == "__main__":
    sys.exit(main())
