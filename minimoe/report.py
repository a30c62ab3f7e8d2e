"""Writing a run directory: metrics.jsonl, routes.npy, figures and report.md.

    run_dir/
      config.json        the resolved Config
      metrics.jsonl      one JSON object per line: losses per stage, then per-task scores
      held_out_loss.jsonl  the held-out loss of the seen tasks at every upstream checkpoint
      routes.npy         final routes [n l e] (unseen tasks: the route they were given)
      routes/<method>/   route snapshots [n l e] at every checkpoint (route dynamics)
      figures/*.png      loss curves, route heatmap, route dynamics
      report.md          the tables

Read next: `minimoe/runner.py`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

from minimoe.analysis import mean_selectivity, per_layer_ami, per_layer_nmi, route_category_nmi
from minimoe.figures import plot_loss_curves, plot_route_dynamics, plot_route_heatmap
from minimoe.permutation import DegenerateNull, block_permutation_test, permutation_test, stratified_permutation_test


def write_jsonl(path: Path, records: Sequence[dict]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for rec in records:
            f.write(json.dumps(rec, sort_keys=True) + "\n")


# The route statistics every table reports, by name (each: routes [n l e], labels [n] → float).
ROUTE_STATS = (("signature_nmi", route_category_nmi), ("per_layer_nmi", per_layer_nmi),
               ("selectivity", mean_selectivity))


def category_gap(seen_categories: Sequence[str], categories: Sequence[str] = ()) -> str | None:
    """Why routes cannot be compared with these seen tasks' categories, or None when they can.

    A folder without tasks.json or an ontology labels every task "unknown", and one category
    (or one with a single seen task) leaves nothing to compare: NMI would be 0 and p 1 by
    construction. `categories`: every category that must have 2 seen tasks (default: none)."""
    found = sorted(set(seen_categories))
    if found == ["unknown"]:
        return ("every task's category is 'unknown' (no tasks.json in --data_dir and no ontology_file); set "
                "ontology_file to a {category: {skill: [tasks]}} JSON and run again into the same --out "
                "(train: with --resume); finished training is reused")
    if len(found) < 2:
        return f"the seen tasks span {len(found)} category {found}; comparing routes with categories needs 2 or more"
    few = sorted(c for c in set(categories) if list(seen_categories).count(c) < 2)
    if few:
        return f"categories {few} have fewer than 2 seen tasks"
    return None


def route_stats(routes: np.ndarray, categories: Sequence[str], n_perm: int = 1000, seed: int = 0,
                blocks: Sequence[str] | None = None) -> dict:
    """NMI (route signature and per layer) and selectivity vs categories, with permutation p, and
    per-layer AMI (the per-layer NMI adjusted for chance: the effect size; its p is the NMI's).

    blocks (e.g. skills nested in the categories) adds `<stat>_p_blocks`: the p-value when whole
    blocks are shuffled between categories (`permutation.block_permutation_test`), or None when
    no block can move to another category (`permutation.DegenerateNull`: an ontology whose
    categories' skills all differ in size), shown as "–".
    """
    cats = np.asarray(categories)
    out = {"per_layer_ami": per_layer_ami(routes, cats)}
    for name, fn in ROUTE_STATS:
        obs, p = permutation_test(lambda r, c, fn=fn: fn(r, c), routes, cats, n_perm=n_perm, seed=seed)
        out[name], out[name + "_p"] = float(obs), float(p)
        if blocks is not None:
            try:
                out[name + "_p_blocks"] = block_permutation_test(lambda r, c, fn=fn: fn(r, c), routes, cats,
                                                                 blocks, n_perm=n_perm, seed=seed)[1]
            except DegenerateNull:
                out[name + "_p_blocks"] = None
    return out


def stratified_route_stats(strata: Sequence[tuple[np.ndarray, Sequence[str], Sequence[str] | None]],
                           n_perm: int = 1000, seed: int = 0, tasks: Sequence[Sequence[str]] | None = None) -> dict:
    """`route_stats` for seeds that each saw their own tasks: every statistic is the mean over the
    strata (one per seed: routes [n_s l e], categories [n_s], blocks [n_s] or None) and every p
    comes from `permutation.stratified_permutation_test` (labels shuffled within each seed);
    `per_layer_ami` is the mean over strata.
    `<stat>_p_blocks` is added when every stratum has its blocks; with the strata's task names,
    `<stat>_p_shared` (and `_p_blocks_shared`) shuffle every task's label once for all seeds. A
    blocked null that cannot move any block to another category (`permutation.DegenerateNull`) has
    no p: None, shown as "–"."""
    out = {"strata": len(strata), "per_layer_ami": float(np.mean([per_layer_ami(r, c) for r, c, _ in strata]))}
    blocked = all(b is not None for _, _, b in strata)
    for name, fn in ROUTE_STATS:
        for suffix, shared in (("", None), ("_shared", tasks)) if tasks is not None else (("", None),):
            obs, p = stratified_permutation_test(fn, strata, n_perm=n_perm, seed=seed, tasks=shared)
            out[name], out[name + "_p" + suffix] = float(obs), float(p)
            if blocked:
                try:
                    out[name + "_p_blocks" + suffix] = stratified_permutation_test(
                        fn, strata, n_perm=n_perm, seed=seed, blocked=True, tasks=shared)[1]
                except DegenerateNull:  # e.g. every category's skills differ in size from the others'
                    out[name + "_p_blocks" + suffix] = None
    return out


def usage_table(routes: np.ndarray, names: Sequence[str], categories: Sequence[str],
                seen: Sequence[bool]) -> str:
    """Markdown table: per task, the chosen expert at every routed layer (and its gate)."""
    n, l, e = routes.shape
    head = "| task | category | " + " | ".join(f"L{i}" for i in range(l)) + " |"
    lines = [head, "|" + "---|" * (l + 2)]
    for i in sorted(range(n), key=lambda i: (categories[i], not seen[i], names[i])):
        cells = [f"E{int(routes[i, j].argmax())} ({routes[i, j].max():.2f})" for j in range(l)]
        lines.append(f"| {names[i]}{'' if seen[i] else ' *'} | {categories[i]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def score_table(rows: Sequence[dict], columns: Sequence[str]) -> str:
    """Markdown table of per-task scores (rows: dicts with task, category and the columns)."""
    lines = ["| task | category | " + " | ".join(columns) + " |", "|" + "---|" * (len(columns) + 2)]
    for r in rows:
        vals = [f"{r[c]:.3f}" if isinstance(r.get(c), float) else str(r.get(c, "")) for c in columns]
        lines.append(f"| {r['task']} | {r['category']} | " + " | ".join(vals) + " |")
    return "\n".join(lines)


def route_history(run_dir: Path, method: str) -> tuple[list[int], list[np.ndarray]]:
    files = sorted((run_dir / "routes" / method).glob("step*.npy"))
    return [int(f.stem[4:]) for f in files], [np.load(f) for f in files]


def upstream_curves(curves: dict, method: str) -> dict:
    """{stage: [(step, value)]} of the upstream stages, a second stage's steps shifted to follow
    the first's (two-stage training counts each stage from 0)."""
    first = curves.get(method, [])
    shift = max((step for step, _ in first), default=-1) + 1
    out = {method: first} if method in curves else {}
    for stage, points in curves.items():
        if stage.startswith(f"{method} stage "):
            out[stage] = [(step + shift, value) for step, value in points]
    return out


def write_figures(run_dir: Path, method: str, histories: dict, routes: np.ndarray | None,
                  names: Sequence[str], categories: Sequence[str], seen: Sequence[bool],
                  held_out: dict | None = None) -> list[Path]:
    """figures/loss.png (pre-training, upstream with held-out points), and for a routed model
    routes.png and route_dynamics.png (seen tasks). held_out: {stage: [(step, loss)]}."""
    fig_dir = run_dir / "figures"
    paths = [plot_loss_curves(histories.get("pretrain", []), upstream_curves(histories, method),
                              fig_dir / "loss.png", held_out=upstream_curves(held_out or {}, method))]
    if routes is not None and routes.size:
        paths.append(plot_route_heatmap(routes, names, categories, seen, fig_dir / "routes.png",
                                        title=f"{method}: expert per task and layer"))
        steps, snaps = route_history(run_dir, method)
        seen_idx = [i for i, s in enumerate(seen) if s]
        if snaps:
            paths.append(plot_route_dynamics([s[seen_idx] for s in snaps], [categories[i] for i in seen_idx],
                                             fig_dir / "route_dynamics.png", steps=steps,
                                             task_names=[names[i] for i in seen_idx]))
    return paths
