#!/usr/bin/env python3
"""Pick the operating threshold from validation scores only (`veriframe eval --scores FILE` CSVs).

Rule, fixed before any test figure is seen: the smallest threshold at which the pooled validation
APCER (attacks scoring >= threshold) is at most 5 % — the issue's APCER goal — rounded up to 3
decimals. Prints the threshold and the validation APCER/BPCER there.

    python tools/train/v3_threshold.py /tmp/v3/val-*.csv
"""
import csv
import json
import math
import sys


def threshold(attack):
    """The rule on the pooled validation attack scores (v6's selection applies it to float scores)."""
    attack = sorted(attack)
    k = math.floor(0.05 * len(attack))  # at most k attacks may score >= t
    t = attack[len(attack) - k - 1] if k < len(attack) else 0.0  # t must exceed this attack's score
    return math.floor(t * 1000) / 1000 + 0.001


def read_scores(files):
    """(real scores, attack scores) of `veriframe eval --scores` CSVs."""
    real, attack = [], []
    for f in files:
        for row in csv.DictReader(open(f)):
            (real if row["class"] == "real" else attack).append(float(row["score"]))
    return real, attack


def rates(real, attack, t):
    """(APCER, BPCER) at threshold ``t``: attacks scoring >= t, reals scoring < t."""
    return sum(a >= t for a in attack) / len(attack), sum(r < t for r in real) / len(real)


def main():
    real, attack = read_scores(sys.argv[1:])
    t = threshold(attack)
    apcer, bpcer = rates(real, attack, t)
    print(json.dumps({"threshold": round(t, 3), "val_apcer": apcer, "val_bpcer": bpcer, "val_acer": (apcer + bpcer) / 2,
                      "n_real": len(real), "n_attack": len(attack)}))


if __name__ == "__main__":
    main()
