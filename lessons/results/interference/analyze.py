"""The interference study's tables and figure, from the committed cells of every level.

Usage: python lessons/results/interference/analyze.py [FOLDER]   (reads FOLDER/level_*, default
this file's folder; writes results.md and the two dose-response figures there; prints results.md)

- Transfer: `endpoints.compare(...)["points"]` (the primary endpoint: paired points over unseen
  tasks, 95 % t interval over upstream seeds) of oracle, two_stage and learned vs average, and of
  every routed cell vs dense, per level and setting.
- Capacity: each cell's mean seen score on group 0's and group 1's recall tasks (a dense model
  that could fit both groups would score the same on both, and as high as without conflict).
- Routes: does the learned router find the oracle's routes? Per seed, per-layer AMI between the
  chosen expert and the task's group over the world-knowledge tasks (both groups, seen and
  unseen); the oracle scores 1, a route blind to the group 0. Mean over seeds with its t interval.
"""

import sys
from pathlib import Path

import numpy as np

from minimoe.analysis import per_layer_ami
from minimoe.config import Config
from minimoe.endpoints import compare, t_interval
from minimoe.figures import plot_dose_response
from minimoe.routes import seed_suites
from minimoe.verdicts import load_cells, paired_scores

HERE = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent
LEVELS = (0.0, 0.5, 1.0)
SETTINGS = {"few_shot": "few-shot", "zero_shot": "zero-shot"}
VS_AVERAGE, VS_DENSE = ("oracle", "two_stage", "learned"), ("average", "oracle", "two_stage", "learned")


def folder(level: float) -> Path:
    return HERE / {0.0: "level_0", 0.5: "level_0.5", 1.0: "level_1.0"}[level]


def paired(results: dict, method: str, base: str, setting: str) -> dict:
    return compare(*paired_scores(results, method, base, setting))["points"]


def seen_by_group(results: dict, cell: str) -> tuple[float, float]:
    g0 = [v for c in results[cell].values() for t, v in c["seen"].items() if t.startswith("recall") and "@g" not in t]
    g1 = [v for c in results[cell].values() for t, v in c["seen"].items() if t.endswith("@g1")]
    return float(np.mean(g0)), float(np.mean(g1))


def route_group_ami(results: dict, config: dict, cell: str) -> dict:
    suites = seed_suites(Config.from_dict(config), {cell: results[cell]})
    per_seed = []
    for seed, c in results[cell].items():
        tasks = suites[seed].tasks
        keep = [i for i, t in enumerate(tasks) if t.category == "world_knowledge"]
        routes = np.asarray(c["routes"])[keep]
        per_seed.append(per_layer_ami(routes, [str(tasks[i].group) for i in keep]))
    return t_interval(per_seed)


def fmt(row: dict) -> str:
    lo, hi = row["ci"]
    return f"{row['estimate']:+.1f} [{lo:+.1f}, {hi:+.1f}]"


def main() -> str:
    data = {level: load_cells([folder(level)]) for level in LEVELS if (folder(level) / "config.json").is_file()}
    out = ["# Interference study: results", "",
           "Points [95 % CI] over upstream seeds (paired, unseen tasks); seeds per level in the last column.", ""]
    panels = {f"{name}, vs average": {m: [] for m in VS_AVERAGE} for name in SETTINGS.values()}
    panels |= {f"{name}, vs dense": {m: [] for m in VS_DENSE} for name in SETTINGS.values()}
    out += ["| level | setting | " + " | ".join(f"{m} − average" for m in VS_AVERAGE) + " | "
            + " | ".join(f"{m} − dense" for m in VS_DENSE) + " | seeds |",
            "|---|---|" + "---|" * (len(VS_AVERAGE) + len(VS_DENSE)) + "---|"]
    for level, (results, _) in data.items():
        for setting, name in SETTINGS.items():
            a = [paired(results, m, "average", setting) for m in VS_AVERAGE]
            d = [paired(results, m, "dense", setting) for m in VS_DENSE]
            for m, row in zip(VS_AVERAGE, a):
                panels[f"{name}, vs average"][m].append((row["estimate"], *row["ci"]))
            for m, row in zip(VS_DENSE, d):
                panels[f"{name}, vs dense"][m].append((row["estimate"], *row["ci"]))
            out.append(f"| {level:g} | {name} | " + " | ".join(map(fmt, a + d)) + f" | {a[0]['seeds']} |")
    out += ["", "Seen recall tasks, mean score of group 0 / group 1 (what one set of weights can fit):", "",
            "| level | dense | average | oracle | two_stage | learned |", "|---|---|---|---|---|---|"]
    for level, (results, _) in data.items():
        out.append(f"| {level:g} | " + " | ".join("%.2f / %.2f" % seen_by_group(results, c) for c in ("dense",) + VS_DENSE) + " |")
    out += ["", "Route–group AMI (world-knowledge tasks; oracle = 1, blind to the group = 0), mean [95 % CI]:", "",
            "| level | two_stage | learned |", "|---|---|---|"]
    for level, (results, config) in data.items():
        cells = [route_group_ami(results, config, c) for c in ("two_stage", "learned")]
        out.append(f"| {level:g} | " + " | ".join(f"{r['estimate']:.2f} [{r['ci'][0]:.2f}, {r['ci'][1]:.2f}]"
                                                  for r in cells) + " |")
    levels = list(data)
    plot_dose_response(levels, {k: v for k, v in panels.items() if "average" in k}, HERE / "dose_response.png")
    plot_dose_response(levels, {k: v for k, v in panels.items() if "dense" in k}, HERE / "dose_response_dense.png",
                       ylabel="gain over dense (points)")
    text = "\n".join(out) + "\n\n![gain over average routing](dose_response.png)\n![gain over dense](dose_response_dense.png)\n"
    (HERE / "results.md").write_text(text)
    return text


if __name__ == "__main__":
    print(main())
