#!/usr/bin/env python3
"""PAD v7: ensembles of already-trained recipes, picked by v6's calibration-aware score.

Pre-registered in tools/train/v7-preregistration.md (read it and its addenda first). Nothing is
trained here that v6_select.py does not train; a candidate is a list of parts whose real scores
are averaged, as the runtime averages the networks of `[detect] pad_model`:

  v6   D-0.001 (v6 itself, the baseline)
  E56  v5 + D-0.001        (four networks)
  EP6  the upstream pair + D-0.001 (four networks; the pair's F and P are the pair itself)

    C="--feats /tmp/v3/feats.npz --c5 /tmp/v5/c5-v2.npy,/tmp/v5/c5-v1se.npy --c45 /tmp/v6/c45-v2.npy,/tmp/v6/c45-v1se.npy"
    python tools/train/v6_select.py $C --member v5 --seed 20261204 --members /tmp/v6/m      # as in v6
    python tools/train/v6_select.py $C --member D-0.001 --seed 20261204 --members /tmp/v6/m
    python tools/train/v7_select.py $C --score --members /tmp/v6/m        # every candidate; the pick
    python tools/train/v7_select.py $C --cand E56 --train train --members /tmp/v6/m --out DIR
    python tools/train/v7_select.py $C --cand E56 --leave-out SOURCE --out DIR   # a LOSO fold

An exported candidate is its parts' Q8_0 (and F32) GGUF files in DIR, renamed
minifasnet-<part>-<net>.<quant>.gguf, so `veriframe eval --model DIR` (or `[detect] pad_model`
listing them) runs all four networks.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import v3_head as h  # noqa: E402
import v5_tail as v5  # noqa: E402
import v6_select as v6  # noqa: E402

CANDIDATES = {"v6": ("D-0.001",), "E56": ("v5", "D-0.001"), "EP6": ("pair", "D-0.001")}
PAIR_FILES = ("models/minifasnet-v2.q8_0.gguf", "models/minifasnet-v1se.q8_0.gguf",
              "models/minifasnet-v2.f32.gguf", "models/minifasnet-v1se.f32.gguf")


def pair_model(upstream):
    """The upstream networks from conv_5 on, in float: tail and head as v5 starts from them."""
    return {net: (v5.upstream_tail(upstream, net), h.upstream_head(upstream, net)) for net in v5.NETS}


def part_models(part, members, upstream):
    """(F, P) models of one part: a v6_select member file, or the fixed upstream pair."""
    if part == "pair":
        m = pair_model(upstream)
        return m, m
    m = v6.load_member(os.path.join(members, f"{part}-{v6.V5_SEED}.npz"))
    return m["F"], m["P"]


def score_all(a):
    d = v6.load(a)
    trunks = {net: v6.Conv5(a.upstream, net) for net in v5.NETS}
    parts = {p: part_models(p, a.members, a.upstream) for p in {p for c in CANDIDATES.values() for p in c}}
    rows = []
    for name, ps in CANDIDATES.items():
        def mean_of(which, mask, ps=ps):
            return sum(v6.scores(d, parts[p][which], mask, trunks) for p in ps) / len(ps)
        rows.append({"cand": name, **v6.evaluate_scores(d, lambda m: mean_of(0, m), lambda m: mean_of(1, m))})
        print(json.dumps(rows[-1]), flush=True)
    base = next(r for r in rows if r["cand"] == "v6")
    best = max(rows, key=lambda r: r["score"])  # max keeps the first of equals: v6 itself
    print(json.dumps({"pick": best["cand"], "score": best["score"], "v6_score": base["score"],
                      "beats_v6_by_more_than_0.005": best["score"] > base["score"] + 0.005}))


def export(a, rest):
    """Train (or take from the members) each Veriframe part with v6_select.py, then gather the
    candidate's GGUF files in --out under part-specific names."""
    os.makedirs(a.out, exist_ok=True)
    for part in CANDIDATES[a.cand]:
        if part == "pair":
            for f in PAIR_FILES:
                shutil.copyfile(f, os.path.join(a.out, os.path.basename(f).replace("minifasnet-", "minifasnet-pair-")))
            continue
        sub = os.path.join(a.out, f"part-{part}")
        subprocess.run([sys.executable, os.path.join(HERE, "v6_select.py"), *rest, "--cand", part, "--out", sub],
                       check=True)
        for f in glob.glob(os.path.join(sub, "minifasnet-*.gguf")):
            tag = "v5" if part == "v5" else "v6"
            shutil.copyfile(f, os.path.join(a.out, os.path.basename(f).replace("minifasnet-v3-", f"minifasnet-{tag}-")))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--feats", required=True)
    ap.add_argument("--c5", required=True)
    ap.add_argument("--c45", required=True)
    ap.add_argument("--upstream", default="../shared/models/upstream/minifasnet")
    ap.add_argument("--members", help="directory of v6_select.py member files")
    ap.add_argument("--score", action="store_true", help="score v6, E56 and EP6; print the pick")
    ap.add_argument("--cand", choices=sorted(CANDIDATES), help="with --train train / --leave-out S, --out")
    ap.add_argument("--out")
    a, _ = ap.parse_known_args()
    if a.score:
        if not a.members:
            raise SystemExit("--score needs --members")
        score_all(a)
        return 0
    if not (a.cand and a.out):
        raise SystemExit("give --score, or --cand with --train/--leave-out and --out")
    # everything but --cand/--out goes to v6_select.py as given (--train/--leave-out/--members/...)
    rest, skip = [], False
    for x in sys.argv[1:]:
        if skip:
            skip = False
        elif x in ("--cand", "--out"):
            skip = True
        elif not x.startswith(("--cand=", "--out=")):
            rest.append(x)
    export(a, rest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
