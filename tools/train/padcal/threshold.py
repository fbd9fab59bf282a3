"""Operating thresholds from validation scores only (`veriframe eval --scores FILE` CSVs).

Two rules, both fixed before any test figure is seen:

* ``eer_threshold`` (the calibration's default): the validation EER point, the PAD literature's
  usual operating point on a development set;
* ``threshold`` (``--rule apcer5``): the smallest threshold at which the pooled validation APCER
  (attacks scoring >= threshold) is at most 5 %, rounded up to 3 decimals. It sets the threshold
  too low when the validation attacks come from a single easy session.
"""

from __future__ import annotations

import csv
import math

import numpy as np


def threshold(attack):
    """The APCER <= 5 % rule on the pooled validation attack scores."""
    attack = sorted(attack)
    k = math.floor(0.05 * len(attack))  # at most k attacks may score >= t
    t = attack[len(attack) - k - 1] if k < len(attack) else 0.0  # t must exceed this attack's score
    return math.floor(t * 1000) / 1000 + 0.001


def eer_threshold(real, attack, steps=10_000):
    """The validation EER threshold: the thresholds on a grid of [0, 1] where max(APCER, BPCER) is
    smallest, and the median of them, so a perfectly separated validation set gives the middle of
    the gap between classes."""
    real, attack = np.sort(np.asarray(real)), np.sort(np.asarray(attack))
    t = np.linspace(0.0, 1.0, steps + 1)
    apcer = 1 - np.searchsorted(attack, t, side="left") / len(attack)  # attacks scoring >= t
    bpcer = np.searchsorted(real, t, side="left") / len(real)  # reals scoring < t
    err = np.maximum(apcer, bpcer)
    return float(np.median(t[err == err.min()]))


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
