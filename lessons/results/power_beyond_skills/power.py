"""Power of the "categories beyond skills" test (`minimoe verdicts`), by simulation.

TinyCrossFit's 13 skills in its three categories (6/6/5, 4×4 and 6×3 tasks), routes of 4 layers
× 3 experts. Each skill takes its category's route with probability q, else a random route of its
own; the test shuffles whole skills between categories (any size, `same_size=False`) with per-layer
AMI as the statistic, 199 shuffles, one seed's routes. Power = share of simulations with p < 0.05
(q = 0: the false-positive rate, which must be about 0.05).

    python lessons/results/power_beyond_skills/power.py     # ~1 CPU-minute; writes power.json here
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from minimoe.analysis import per_layer_ami
from minimoe.permutation import block_permutation_test

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2] / "tests"))
from route_tables import one_hot_routes  # noqa: E402  (the tests' route-table helper)

SIZES = {"extractive": [6, 6, 5], "classification": [4, 4, 4, 4], "world_knowledge": [3] * 6}


def power(q: float, rng: np.random.Generator, n_sims: int = 60, n_perm: int = 199) -> float:
    skills = np.array([f"{c}{i}" for c, ns in SIZES.items() for i, n in enumerate(ns) for _ in range(n)])
    cats = np.array([s.rstrip("0123456789") for s in skills])
    names, cat_names = list(dict.fromkeys(skills.tolist())), list(SIZES)
    rows = [names.index(s) for s in skills]
    hits = 0
    for sim in range(n_sims):
        cat_route = rng.integers(0, 3, (3, 4))  # [categories layers]
        table = np.array([cat_route[cat_names.index(s.rstrip("0123456789"))] if rng.random() < q
                          else rng.integers(0, 3, 4) for s in names])  # [skills layers]
        p = block_permutation_test(per_layer_ami, one_hot_routes(table[rows], 3), cats, skills,
                                   n_perm=n_perm, seed=sim, same_size=False)[1]
        hits += p < 0.05
    return hits / n_sims


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE, help="where power.json goes (default: here)")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    result = {f"q={q}": power(q, rng) for q in (0.0, 0.5, 0.75, 1.0)}
    (args.out / "power.json").write_text(json.dumps(result, indent=1) + "\n")
    print(result)
