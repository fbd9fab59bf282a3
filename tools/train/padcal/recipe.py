"""Recipes as data: one TOML file per recipe under recipes/, read here and trained by tail.py.

A recipe file holds ``description``, ``train_conv5`` (also fine-tune conv_5, on the conv_45
cache; else only the last two blocks and the head, on the conv_5 cache), ``lam`` (L2-SP weight),
``epochs``, ``lr`` and ``seeds`` (several: the tensor-by-tensor mean of one model per seed).
``recipes/veriframe-pad-v6.toml`` is the shipped opt-in model's and the calibration's default; ``veriframe-pad-v5.toml`` is
the earlier round's. A new recipe is a new file, not new code.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass

from . import tail

RECIPES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "recipes")
KEYS = {"description": str, "train_conv5": bool, "lam": float, "epochs": int, "lr": float, "seeds": list}


@dataclass(frozen=True)
class Recipe:
    name: str
    description: str
    train_conv5: bool
    lam: float
    epochs: int
    lr: float
    seeds: tuple

    def hyper(self, upstream):
        """The fine-tune's hyper-parameters (tail.train's ``cand``)."""
        return {"lam": self.lam, "epochs": self.epochs, "lr": self.lr, "upstream": upstream}


def names():
    return sorted(f[:-5] for f in os.listdir(RECIPES) if f.endswith(".toml"))


def load(name_or_path: str) -> Recipe:
    """A recipe by name (recipes/NAME.toml) or by path; unknown or missing keys are errors."""
    path = name_or_path if name_or_path.endswith(".toml") else os.path.join(RECIPES, name_or_path + ".toml")
    if not os.path.exists(path):
        raise SystemExit(f"unknown recipe {name_or_path!r}: {', '.join(names())} (or a .toml path)")
    with open(path, "rb") as f:
        raw = tomllib.load(f)
    unknown = sorted(set(raw) - set(KEYS))
    missing = sorted(set(KEYS) - set(raw))
    if unknown or missing:
        raise SystemExit(f"{path}: unknown keys {unknown}, missing keys {missing}")
    for k, ty in KEYS.items():
        v = raw[k]
        if ty is float and isinstance(v, int) and not isinstance(v, bool):
            v = raw[k] = float(v)
        if not isinstance(v, ty) or (ty is int and isinstance(v, bool)):
            raise SystemExit(f"{path}: {k} must be a {ty.__name__}, not {v!r}")
    if not raw["seeds"] or not all(isinstance(s, int) for s in raw["seeds"]):
        raise SystemExit(f"{path}: seeds must be a non-empty list of integers")
    name = os.path.basename(path)[:-5]
    return Recipe(name=name, **{**raw, "seeds": tuple(raw["seeds"])})


def trunks(r: Recipe, upstream):
    """Per network, the blocks trained before the tail (conv_5), or None."""
    return {net: tail.Conv5(upstream, net) for net in tail.NETS} if r.train_conv5 else None


def train(d, sources, r: Recipe, upstream):
    """Train the recipe's members (one per seed) on ``sources`` and average them tensor by tensor;
    returns (models, trunks) for tail.export."""
    tr = trunks(r, upstream)
    members = [tail.train(d, sources, r.hyper(upstream), seed=s, trunks=tr) for s in r.seeds]
    return tail.soup(members), tr
