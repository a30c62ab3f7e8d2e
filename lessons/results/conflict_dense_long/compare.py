"""The follow-up's table (README.md): the routed cells of ../conflict/ (2,400 steps) against the
dense cells here (4,800 steps), on the same two-world suite and seeds.

    python lessons/results/conflict_dense_long/compare.py
    python lessons/results/conflict_dense_long/compare.py --dense runs/conflict_dense_long

Writes comparison.md and comparison.json next to this file (or --out). The functions are
../conflict/analyze.py's, so both studies read their cells the same way.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

from minimoe.config import DataConfig
from minimoe.suite import build_suite

HERE = Path(__file__).resolve().parent
CONFLICT = HERE.parent / "conflict"
_spec = importlib.util.spec_from_file_location("conflict_analyze", CONFLICT / "analyze.py")
analyze = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(analyze)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dense", default=str(HERE), help="folder with seed*/dense.json at 4,800 steps")
    p.add_argument("--out", default=str(HERE), help="where comparison.md/.json go (default: here)")
    args = p.parse_args()
    suite = build_suite(DataConfig(worlds=2))
    long_dense = analyze.load(Path(args.dense), ("dense",))["dense"]
    short = analyze.load(CONFLICT, analyze.CELLS, set(long_dense))
    results = {**short, "dense": long_dense}  # routed: 2,400 steps; dense: 4,800
    seen = {"dense, 2,400 steps": analyze.seen_by_group(short["dense"], suite),
            "dense, 4,800 steps": analyze.seen_by_group(long_dense, suite),
            **{f"{c}, 2,400 steps": analyze.seen_by_group(short[c], suite) for c in analyze.CELLS if c != "dense"}}
    unseen_mean = {}
    for name, runs in (("dense, 2,400 steps", short["dense"]), ("dense, 4,800 steps", long_dense)):
        few = [sum(sum(v) / len(v) for v in r["few_shot"].values()) / len(r["few_shot"]) for r in runs.values()]
        zero = [sum(r["zero_shot"].values()) / len(r["zero_shot"]) for r in runs.values()]
        unseen_mean[name] = {"few_shot": sum(few) / len(few), "zero_shot": sum(zero) / len(zero)}
    summary = {"seeds": sorted(long_dense), "seen_by_group": seen, "dense_unseen_mean": unseen_mean,
               "vs_long_dense": analyze.endpoint_rows(results, suite, "dense")}
    out = Path(args.out)
    (out / "comparison.json").write_text(json.dumps(summary, indent=2))
    groups = analyze.GROUPS
    lines = [f"# Routed cells (2,400 steps) vs dense at 4,800 steps, two worlds, seeds "
             f"{summary['seeds'][0]}–{summary['seeds'][-1]} (`compare.py`)", "",
             "## Seen-task scores by group", "", "| model | " + " | ".join(groups) + " |",
             "|---" * (len(groups) + 1) + "|"]
    for name, row in seen.items():
        lines.append(f"| {name} | " + " | ".join(f"{row[g]:.3f}" for g in groups) + " |")
    lines += ["", "Dense mean unseen score: " + "; ".join(
        f"{name} few-shot {v['few_shot']:.3f}, zero-shot {v['zero_shot']:.3f}" for name, v in unseen_mean.items()),
        "", "## vs the 4,800-step dense model: points [95 % CI over seeds]; ARG % beside its swap null", "",
        "| model | setting | tasks | points | ARG | ARG if exchangeable |", "|---|---|---|---|---|---|"]
    for key, r in summary["vs_long_dense"].items():
        cell, setting, sub = key.split(" | ")
        lo, hi = r["points_ci"]
        lines.append(f"| {cell} | {setting} | {sub} | {r['points']:+.1f} [{lo:+.1f}, {hi:+.1f}] | "
                     f"{r['arg']:+.1f} | {r['swap_null']:+.1f} |")
    (out / "comparison.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
