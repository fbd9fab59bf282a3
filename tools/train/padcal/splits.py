"""Which images train, which validate: the shared data's sources and the site's sessions.

The shared training data (../shared/data, research use only: check its terms before deploying a
model trained on it) has eleven sources. Three small ones are validation sources and never
trained on; NUAA subjects 0001-0003 are held out of training too. A site's captures are split by
session, never by frame.
"""

from __future__ import annotations

import numpy as np

REAL, PRINT, SCREEN = 1, 0, 2  # class labels: the network's outputs 1 = real, 0 = print, 2 = screen
VALIDATION = ["balveer", "trickyf0x", "vishalkrishna"]  # counts.json "validation"
TRAINABLE = ["nuaa", "replay-crops", "aksultan", "jtboing", "krzysiek354", "neonipun",
             "shivamyadav", "shubhamlala"]
# replay-crops' second person is also one of shivamyadav's two people (../shared/README.md):
# a fold that leaves one of them out drops the other from training too.
LINKED = {"replay-crops": ["shivamyadav"], "shivamyadav": ["replay-crops"]}
NUAA_VAL = ("0001", "0002", "0003")  # the three lowest NUAA subject ids with both classes


def fold_sources(leave_out):
    """A leave-one-source-out fold's training sources: every trainable one but ``leave_out`` and
    the sources linked to it."""
    drop = [leave_out] + LINKED.get(leave_out, [])
    return [s for s in TRAINABLE if s not in drop]


def trainable_mask(d, sources, held_groups=()):
    """Images of ``sources``, less the NUAA subjects held out for validation."""
    m = np.isin(d["source"], sources)
    if held_groups:
        m &= ~((d["source"] == "nuaa") & np.isin(d["group"], list(held_groups)))
    return m


def training_mask(d, sources, held_groups=NUAA_VAL):
    """The images a fine-tune trains on: those of ``sources`` (trainable_mask)."""
    return trainable_mask(d, sources, held_groups)


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
