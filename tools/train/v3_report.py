#!/usr/bin/env python3
"""Per-source and pooled PAD figures from `veriframe eval --scores` CSVs (markdown rows).

    python tools/train/v3_report.py [--hold-nuaa 0001,0002,0003] [--without S1,S2] NAME:THRESHOLD:DIR [...]

--hold-nuaa drops those NUAA subjects' rows (the v4 protocol's NUAA validation subjects), so a
model scored on all of NUAA is compared on the same NUAA test images as the v4 folds.

DIR holds either `<source>.csv` files or `fold-<source>/scores.csv` (a leave-one-source-out run,
each source scored by the model that did not see it). Pooled = every source's images together,
each scored by its own fold's model, at the one threshold. No-face images carry score -1 and so
count as rejected, as in `veriframe eval`.

--without adds a second pooled row per model without those sources (v11: the sources its
selection signal used).

--oracle adds, per model, what a threshold tuned on the pooled left-out images themselves would
give: the pooled BPCER at the smallest threshold with pooled APCER <= 5 %, and the lowest pooled
ACER over all thresholds. These are a DIAGNOSTIC of ranking against calibration (could one
threshold meet issue 13's goal with this model?), tuned on test: never a figure to ship or select by.
"""
import bisect
import csv
import glob
import os
import sys

SOURCES = ["nuaa", "replay-crops", "aksultan", "jtboing", "krzysiek354", "neonipun", "shivamyadav",
           "shubhamlala"]


def read(path, hold=()):
    real, attack = [], []
    for row in csv.DictReader(open(path)):
        parts = row["path"].replace("\\", "/").split("/")
        if hold and "nuaa" in row["path"] and any(
                parts[i] in ("real", "attack") and parts[i + 1] in hold for i in range(len(parts) - 1)):
            continue
        (real if row["class"] == "real" else attack).append(float(row["score"]))
    return real, attack


def auc(real, attack):
    wins = 0.0
    rs = sorted(real)
    for a in attack:
        lo, hi = bisect.bisect_left(rs, a), bisect.bisect_right(rs, a)
        wins += (len(rs) - hi) + 0.5 * (hi - lo)
    return wins / (len(real) * len(attack))


def row(name, thr, real, attack):
    apcer = sum(a >= thr for a in attack) / len(attack)
    bpcer = sum(r < thr for r in real) / len(real)
    return (f"| {name} | {len(real)} / {len(attack)} | {auc(real, attack):.3f} | {apcer:.1%} | "
            f"{bpcer:.1%} | {(apcer + bpcer) / 2:.1%} |")


def oracle(name, real, attack):
    """Test-tuned thresholds on pooled scores (diagnostic only; see the module text)."""
    ra, rr = sorted(attack), sorted(real)

    def at(t):  # (APCER, BPCER) at threshold t, by bisection on the sorted scores
        return (len(ra) - bisect.bisect_left(ra, t)) / len(ra), bisect.bisect_left(rr, t) / len(rr)

    cands = sorted(set(real) | set(attack) | {1.01})
    t5 = next(t for t in cands if at(t)[0] <= 0.05)
    tb = min(cands, key=lambda t: sum(at(t)))
    (a5, b5), (ab, bb) = at(t5), at(tb)
    return (f"| {name} | APCER <= 5 % at t = {t5:.3f}: APCER {a5:.1%}, BPCER {b5:.1%}, ACER {(a5 + b5) / 2:.1%} | "
            f"lowest ACER {(ab + bb) / 2:.1%} at t = {tb:.3f} (APCER {ab:.1%}, BPCER {bb:.1%}) |")


def main():
    args = sys.argv[1:]
    hold = ()
    want_oracle = "--oracle" in args
    args = [a for a in args if a != "--oracle"]
    if args[:1] == ["--hold-nuaa"]:
        hold, args = tuple(args[1].split(",")), args[2:]
    without = ()
    if args[:1] == ["--without"]:
        without, args = tuple(args[1].split(",")), args[2:]
    models = [a.split(":", 2) for a in args]
    print("| source | model @ threshold | real / attack | AUC | APCER | BPCER | ACER |")
    print("|---|---|---|---|---|---|---|")
    pooled, pooled_without = {}, {}
    for s in SOURCES:
        for name, thr, d in models:
            f = os.path.join(d, f"{s}.csv")
            if not os.path.exists(f):
                f = os.path.join(d, f"fold-{s}", "scores.csv")
            if not os.path.exists(f):
                continue
            real, attack = read(f, hold)
            pr, pa = pooled.setdefault((name, thr), ([], []))
            pr.extend(real)
            pa.extend(attack)
            if without and s not in without:
                wr, wa = pooled_without.setdefault((name, thr), ([], []))
                wr.extend(real)
                wa.extend(attack)
            print(row(f"{s} | {name} @ {thr}", float(thr), real, attack))
    for (name, thr), (real, attack) in pooled.items():
        print(row(f"**pooled** | {name} @ {thr}", float(thr), real, attack))
    for (name, thr), (real, attack) in pooled_without.items():
        print(row(f"pooled without {', '.join(without)} | {name} @ {thr}", float(thr), real, attack))
    if want_oracle:
        print("\n| model | test-tuned (diagnostic): pooled APCER <= 5 % | test-tuned: lowest pooled ACER |")
        print("|---|---|---|")
        seen = set()
        for (name, _), (real, attack) in pooled.items():
            if name not in seen:
                seen.add(name)
                print(oracle(name, real, attack))


if __name__ == "__main__":
    main()
