"""The conflict study's own tables (README.md): scores per world, ARG per group, routes vs world.

    python lessons/results/conflict/analyze.py            # reads the cells beside this file
    python lessons/results/conflict/analyze.py --cells runs/conflict

Reads seed*/<cell>.json (this study, `--worlds=2`) and ../plateau10_epyc/ (one world, the same
seeds and machine) and writes analysis.md and analysis.json next to this file. Groups: the
extractive and classification tasks, and the world-knowledge tasks of world 0 (no marker) and
world 1 (instruction starts with `later`; task names end in `@later`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from einops import rearrange

from minimoe.analysis import per_layer_nmi
from minimoe.config import DataConfig
from minimoe.metrics import bootstrap_arg_ci
from minimoe.permutation import permutation_test
from minimoe.suite import build_suite

HERE = Path(__file__).resolve().parent
CELLS = ("dense", "average", "two_stage", "learned")
GROUPS = ("extractive", "classification", "knowledge, world 0", "knowledge, world 1")


def group_of(task) -> str:
    if task.category != "world_knowledge":
        return task.category
    return f"knowledge, world {task.world}"


def load(folder: Path, cells, seeds=None) -> dict:
    """{cell: {seed: cell json}} for the seeds present (or the given ones)."""
    out = {}
    for cell in cells:
        files = sorted(folder.glob(f"seed*/{cell}.json"))
        runs = {int(f.parent.name[4:]): json.loads(f.read_text()) for f in files}
        out[cell] = {s: r for s, r in sorted(runs.items()) if seeds is None or s in seeds}
    return out


def seen_by_group(runs: dict, suite) -> dict:
    """{group: mean seen score over seeds and the group's seen tasks}."""
    table = {}
    for g in GROUPS:
        names = [t.name for t in suite.seen_tasks() if group_of(t) == g]
        if names and runs:
            table[g] = float(np.mean([[r["seen"][n] for n in names] for r in runs.values()]))
    return table


def by_seed(runs: dict, setting: str, names) -> dict:
    """{seed: {task: [scores]}} restricted to `names`."""
    return {s: {n: (r[setting][n] if isinstance(r[setting][n], list) else [r[setting][n]]) for n in names}
            for s, r in runs.items()}


def arg_rows(results: dict, suite, base: str) -> dict:
    """ARG vs `base`, few-shot and zero-shot, over all unseen tasks and per group."""
    unseen = suite.unseen_tasks()
    subsets = {"all": [t.name for t in unseen], **{g: [t.name for t in unseen if group_of(t) == g] for g in GROUPS}}
    rows = {}
    for cell in CELLS:
        if cell == base or not results.get(cell) or not results.get(base):
            continue
        for setting in ("few_shot", "zero_shot"):
            for sub, names in subsets.items():
                ci = bootstrap_arg_ci(by_seed(results[cell], setting, names), by_seed(results[base], setting, names))
                rows[f"{cell} | {setting} | {sub}"] = {k: ci[k] for k in ("arg", "lo", "hi", "abs_diff")}
    return rows


def route_world(results: dict, suite) -> dict:
    """Per-layer NMI between routes and world over the seen knowledge tasks, seeds pooled along
    the layer axis (as the report pools them), with a permutation-test p over tasks."""
    idx = [i for i, t in enumerate(suite.tasks) if t.seen and t.category == "world_knowledge"]
    worlds = [str(suite.tasks[i].world) for i in idx]
    half = len(idx) // 2  # world 0's tasks, then their world-1 twins in the same order
    assert [suite.tasks[i].name + "@later" for i in idx[:half]] == [suite.tasks[i].name for i in idx[half:]]
    out = {}
    for cell in ("two_stage", "learned"):
        if not results.get(cell):
            continue
        stack = np.stack([np.asarray(r["routes"])[idx] for r in results[cell].values()])  # [seeds n l e]
        pooled = rearrange(stack, "seeds n l e -> n (seeds l) e")
        nmi, p = permutation_test(per_layer_nmi, pooled, worlds, n_perm=1000)
        same = float(np.mean(stack.argmax(-1)[:, :half] == stack.argmax(-1)[:, half:]))
        out[cell] = {"per_layer_nmi": nmi, "p": p, "largest_gate": float(stack.max(-1).mean()),
                     "share_same_expert_as_twin": same}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cells", default=str(HERE), help="folder with seed*/<cell>.json (default: here)")
    p.add_argument("--out", default=str(HERE), help="where analysis.md/.json go (default: here)")
    args = p.parse_args()
    suite = build_suite(DataConfig(worlds=2))
    results = load(Path(args.cells), CELLS)
    seeds = sorted(results["dense"])
    one_world = load(HERE.parent / "plateau10_epyc", ("dense", "average", "two_stage"), set(seeds))
    suite1 = build_suite(DataConfig())
    seen = {f"{c} (2 worlds)": seen_by_group(results[c], suite) for c in CELLS if results.get(c)}
    seen.update({f"{c} (1 world)": seen_by_group(one_world[c], suite1) for c in one_world if one_world[c]})
    summary = {"seeds": seeds, "seen_by_group": seen, "arg_vs_dense": arg_rows(results, suite, "dense"),
               "arg_vs_average": arg_rows(results, suite, "average"), "route_world": route_world(results, suite)}
    (Path(args.out) / "analysis.json").write_text(json.dumps(summary, indent=2))
    lines = [f"# Conflict study: analysis (seeds {seeds[0]}–{seeds[-1]}, `analyze.py`)", "",
             "## Seen-task scores by group (mean over seeds and tasks)", "",
             "| model | " + " | ".join(GROUPS) + " |", "|---" * (len(GROUPS) + 1) + "|"]
    for name, row in seen.items():
        lines.append(f"| {name} | " + " | ".join(f"{row[g]:.3f}" if g in row else "—" for g in GROUPS) + " |")
    for title, table in (("dense", summary["arg_vs_dense"]), ("average routing", summary["arg_vs_average"])):
        lines += ["", f"## ARG vs {title} on the unseen tasks, % [95 % CI] (Δ points)", "",
                  "| model | setting | tasks | ARG | Δ |", "|---|---|---|---|---|"]
        for key, r in table.items():
            cell, setting, sub = key.split(" | ")
            lines.append(f"| {cell} | {setting} | {sub} | {r['arg']:+.1f} [{r['lo']:+.1f}, {r['hi']:+.1f}] | "
                         f"{r['abs_diff']:+.1f} |")
    lines += ["", "## Routes vs world (seen knowledge tasks, seeds pooled)", "",
              "| model | per-layer NMI | permutation p | mean largest gate | same expert as the other world's twin |",
              "|---|---|---|---|---|"]
    for cell, r in summary["route_world"].items():
        lines.append(f"| {cell} | {r['per_layer_nmi']:.3f} | {r['p']:.3f} | {r['largest_gate']:.2f} | "
                     f"{r['share_same_expert_as_twin']:.2f} |")
    (Path(args.out) / "analysis.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
