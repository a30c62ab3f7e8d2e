"""The pilot's tables: paired points (endpoints.compare) and seen-task scores by group.

Usage: python lessons/results/interference/pilot_table.py [FOLDER]  (default: pilot/ beside this file)
Prints markdown: oracle and average vs each other and vs dense, few-shot and zero-shot, on all
unseen tasks and on the unseen recall tasks (where the groups conflict); then each cell's mean
seen-task score per group (group 0's recall tasks, group 1's, the other group-0 tasks).
"""

import sys
from pathlib import Path

import numpy as np

from minimoe.archive import read_cells
from minimoe.endpoints import compare

folder = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "pilot"
results = read_cells(folder)


def by_seed(cell: str, setting: str, recall_only: bool) -> dict:
    return {seed: {t: s for t, s in c[setting].items() if not recall_only or t.startswith("recall")}
            for seed, c in results[cell].items()}


print("| comparison | setting | tasks | points [95 % CI] | per seed |\n|---|---|---|---|---|")
for method, base in (("oracle", "average"), ("oracle", "dense"), ("average", "dense")):
    for setting in ("few_shot", "zero_shot"):
        for recall_only in (False, True):
            row = compare(by_seed(method, setting, recall_only), by_seed(base, setting, recall_only))["points"]
            lo, hi = row["ci"]
            seeds = " ".join(f"{v:+.1f}" for v in row["per_seed"].values())
            print(f"| {method} vs {base} | {setting.replace('_', '-')} | {'recall' if recall_only else 'all'} | "
                  f"{row['estimate']:+.1f} [{lo:+.1f}, {hi:+.1f}] | {seeds} |")

print("\n| cell | seen recall, group 0 | seen recall, group 1 | other seen tasks (group 0) |\n|---|---|---|---|")
for cell in ("dense", "average", "oracle"):
    parts = {"g0": [], "g1": [], "other": []}
    for c in results[cell].values():
        for task, score in c["seen"].items():
            parts["g1" if task.endswith("@g1") else "g0" if task.startswith("recall") else "other"].append(score)
    print(f"| {cell} | " + " | ".join(f"{np.mean(v):.3f}" for v in parts.values()) + " |")
