"""The conflict study's own tables (README.md): scores per world, endpoints per group, routes vs world.

    python lessons/results/conflict/analyze.py            # reads the cells beside this file
    python lessons/results/conflict/analyze.py --cells runs/conflict

Reads the cells (this study, `--worlds=2`; packed or not, `minimoe/archive.py`) and
../plateau10_epyc/ (one world, the same seeds and machine) and writes analysis.md and analysis.json next to this file. Groups: the
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
from minimoe.archive import read_cells
from minimoe.config import DataConfig
from minimoe.endpoints import compare
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
    found = read_cells(folder)
    return {cell: {s: r for s, r in sorted(found.get(cell, {}).items()) if seeds is None or s in seeds}
            for cell in cells}


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


def endpoint_rows(results: dict, suite, base: str) -> dict:
    """Points (95 % t interval over seeds) and ARG with its swap null vs `base`, few-shot and
    zero-shot, over all unseen tasks and per group (`endpoints.compare`)."""
    unseen = suite.unseen_tasks()
    subsets = {"all": [t.name for t in unseen], **{g: [t.name for t in unseen if group_of(t) == g] for g in GROUPS}}
    rows = {}
    for cell in CELLS:
        if cell == base or not results.get(cell) or not results.get(base):
            continue
        for setting in ("few_shot", "zero_shot"):
            for sub, names in subsets.items():
                c = compare(by_seed(results[cell], setting, names), by_seed(results[base], setting, names))
                rows[f"{cell} | {setting} | {sub}"] = {"points": c["points"]["estimate"], "points_ci": c["points"]["ci"],
                                                      "arg": c["arg"]["estimate"], "swap_null": c["arg"]["swap_null"]}
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
    summary = {"seeds": seeds, "seen_by_group": seen, "vs_dense": endpoint_rows(results, suite, "dense"),
               "vs_average": endpoint_rows(results, suite, "average"), "route_world": route_world(results, suite)}
    (Path(args.out) / "analysis.json").write_text(json.dumps(summary, indent=2))
    lines = [f"# Conflict study: analysis (seeds {seeds[0]}–{seeds[-1]}, `analyze.py`)", "",
             "## Seen-task scores by group (mean over seeds and tasks)", "",
             "| model | " + " | ".join(GROUPS) + " |", "|---" * (len(GROUPS) + 1) + "|"]
    for name, row in seen.items():
        lines.append(f"| {name} | " + " | ".join(f"{row[g]:.3f}" if g in row else "—" for g in GROUPS) + " |")
    for title, table in (("dense", summary["vs_dense"]), ("average routing", summary["vs_average"])):
        lines += ["", f"## Unseen tasks vs {title}: points [95 % CI over seeds]; ARG % beside its swap null", "",
                  "| model | setting | tasks | points | ARG | ARG if exchangeable |", "|---|---|---|---|---|---|"]
        for key, r in table.items():
            cell, setting, sub = key.split(" | ")
            lo, hi = r["points_ci"]
            lines.append(f"| {cell} | {setting} | {sub} | {r['points']:+.1f} [{lo:+.1f}, {hi:+.1f}] | "
                         f"{r['arg']:+.1f} | {r['swap_null']:+.1f} |")
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
