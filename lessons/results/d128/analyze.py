"""What README.md reads beyond `report.md`: prediction 7 and where the differences sit.

`minimoe reproduce` keeps `learned_emb` out of its ARG tables (it is the route-analysis cell);
this compares it with dense and with average routing from the committed cells by the report's
own function (`minimoe/repro_report.py::compare_table`: points with a t interval over seeds, ARG
with its swap null), and gives each method's mean difference to dense by category of unseen task
(points, over seeds × the category's tasks).

    python lessons/results/d128/analyze.py            # prints, writes analysis.json here (or --out)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from minimoe.archive import read_cells
from minimoe.repro_report import compare_table
from minimoe.tasks import catalogue

HERE = Path(__file__).resolve().parent
CELLS = ("dense", "average", "two_stage", "learned_emb")
CATEGORIES = ("extractive", "classification", "world_knowledge")


def by_category(results: dict, cell: str) -> dict:
    """{category: {setting: mean points of cell − dense}} over seeds and unseen tasks."""
    category = {t.name: t.category for t in catalogue()}
    dense, other = results["dense"], results[cell]
    out = {}
    for c in CATEGORIES:
        few = [np.mean(other[s]["few_shot"][t]) - np.mean(dense[s]["few_shot"][t])
               for s in dense for t in dense[s]["few_shot"] if category[t] == c]
        zero = [other[s]["zero_shot"][t] - dense[s]["zero_shot"][t]
                for s in dense for t in dense[s]["zero_shot"] if category[t] == c]
        out[c] = {"few_shot": 100 * float(np.mean(few)), "zero_shot": 100 * float(np.mean(zero))}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(HERE), help="where analysis.json goes (default: here)")
    args = p.parse_args()
    found = read_cells(HERE)
    results = {c: dict(sorted(found[c].items())) for c in CELLS}
    summary = {"learned_emb": {f"vs {base}": {s: compare_table(results, base, s, methods=("learned_emb",))["learned_emb"]
                                              for s in ("few_shot", "zero_shot")}
                               for base in ("dense", "average")},
               "points_vs_dense_by_category": {c: by_category(results, c) for c in CELLS if c != "dense"}}
    (Path(args.out) / "analysis.json").write_text(json.dumps(summary, indent=2))
    for name, row in summary["learned_emb"].items():
        print(f"learned_emb {name}: " + "; ".join(
            f"{s} {r['points']['estimate']:+.1f} points {np.round(r['points']['ci'], 1).tolist()}, "
            f"ARG {r['arg']['estimate']:+.1f} % (if exchangeable {r['arg']['swap_null']:+.1f})" for s, r in row.items()))
    for cell, row in summary["points_vs_dense_by_category"].items():
        print(f"{cell} − dense, points few / zero: " + ", ".join(
            f"{c} {v['few_shot']:+.1f} / {v['zero_shot']:+.1f}" for c, v in row.items()))


if __name__ == "__main__":
    main()
