"""Tables and figures of `minimoe reproduce`: paired endpoints, ARG with its swap null, routes.

Input: results[cell][upstream_seed] = {"seen", "zero_shot", "few_shot", "routes", ...} as
written by `minimoe/reproduce.py::run_cell`. Output in the reproduce directory: results.json
(headline keys for the lessons), report.md, figures/*.png.

Route statistics pool the upstream seeds, or take each seed as a stratum when each has its own
task split (`minimoe/routes.py`).

Every comparison of a method with a baseline goes through `endpoints.compare`, whatever the
design: the difference in points (the primary endpoint) and the symmetric relative difference,
per upstream seed and then over seeds with a t interval; ARG beside them with its swap null and
reverse direction. With a task split per seed (`reproduce --resplit`) each seed has its own
unseen tasks, and each route statistic is the mean over seeds of the statistic on that seed's
own seen tasks, its p from a stratified permutation test
(`permutation.stratified_permutation_test`: labels shuffled within each seed).
Read next: `lessons/07_transfer_and_arg.md`.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path

import numpy as np
import torch

from minimoe.config import Config
from minimoe.endpoints import compare, verdict
from minimoe.figures import plot_arg_bars, plot_route_heatmap
from minimoe.report import category_gap, route_stats, stratified_route_stats
from minimoe.routes import always_seen, always_seen_routes, seed_suites, seen_strata, split_seeds

ARG_METHODS = ("average", "random", "learned", "two_stage", "two_stage_2x", "token", "fisher", "oracle")
# In results.json's per_method only when their cell ran (the others always, None when absent),
# so the results.json of a study that predates them is rebuilt unchanged.
OPTIONAL_METHODS = ("fisher", "oracle")
# Routing's own contribution: the routed methods vs average routing, the same upcycled experts
# (3× the dense model's parameters) mixed uniformly — the parameter-matched control.
VS_AVERAGE = ("random", "learned", "two_stage", "two_stage_2x", "oracle")
ROUTE_CELLS = ("learned_emb", "learned", "two_stage", "token", "fisher")  # cells whose routes are analysed
# The paper's ARG of its final recipe (two-stage) vs multi-task BART, in % (abstract; Table 2).
PAPER_ARG = {"few_shot": 2.6, "zero_shot": 5.6}
# `reproduce --quick`'s budgets: the same code path in minutes, numbers meaningless.
QUICK = {"pretrain_steps": 20, "steps": 20, "fs_steps": 4, "fs_lrs": "1e-3", "eval_every": 10,
         "n_upstream": 32, "n_test": 16, "k_per_class": 4, "k_other": 4}
# What a report and the screen say above numbers from `reproduce --quick`.
QUICK_BANNER = ("QUICK RUN (--quick): budgets of a few steps that only check the code path; every score, "
                "difference, ARG and p-value of this run is meaningless (nan and ARG near -100 % are expected). "
                "For results, run `minimoe reproduce` without --quick.")


def is_quick(config: dict) -> bool:
    """Was this config (`Config.to_dict()`) made with --quick? Its data sizes are QUICK's (the
    steps may have been overridden on top; a real study never has 16 test examples)."""
    data = config.get("data", {})
    return all(data.get(k) == QUICK[k] for k in ("n_upstream", "n_test", "k_per_class", "k_other"))


def _by_seed(results: dict, cell: str, setting: str) -> dict:
    """{seed: {task: [scores]}} of one cell and setting ("few_shot" or "zero_shot")."""
    out = {}
    for seed, res in results[cell].items():
        out[seed] = {t: (v if isinstance(v, list) else [v]) for t, v in res[setting].items()}
    return out


def compare_table(results: dict, base: str, setting: str, methods=ARG_METHODS) -> dict:
    """`endpoints.compare` of every method present vs `base` in one setting: {method: endpoints}.
    A method without scores in this setting (`fisher` has no zero-shot ones) has no row."""
    return {m: compare(_by_seed(results, m, setting), _by_seed(results, base, setting))
            for m in methods if m in results and base in results and any(r[setting] for r in results[m].values())}


# The p-values a route row shows, in this order, where present: task shuffles, skill shuffles,
# and (a split per seed) both shared between the seeds.
P_COLUMNS = ("_p", "_p_blocks", "_p_shared", "_p_blocks_shared")


def _fmt(e: dict) -> str:
    """"+1.2 [−0.3, +2.7]" of one endpoint (no interval with one seed)."""
    lo, hi = e["ci"]
    return f"{e['estimate']:+.1f}" + (f" [{lo:+.1f}, {hi:+.1f}]" if np.isfinite(lo) else "")


def _row(name: str, c: dict) -> str:
    """One markdown row: points, symmetric %, ARG with its swap null, p and reverse, the verdict."""
    a = c["arg"]
    judged = verdict(c["points"])
    return (f"| {name} | {_fmt(c['points'])} | {_fmt(c['symmetric_pct'])} | {a['estimate']:+.1f} | "
            f"{a['swap_null']:+.1f} | {a['p_swap']:.3f} | {a['reverse']:+.1f} | {judged} |")


COMPARE_HEAD = ["| method | Δ points [95 % CI] | symmetric % [95 % CI] | ARG % | ARG if exchangeable | p (swap) "
                "| reverse ARG % | points verdict |", "|---|---|---|---|---|---|---|---|"]


def write_results(cfg: Config, results: dict, out: Path, seeds, data_seeds, wall: float,
                  quick: bool = False) -> dict:
    """results.json, report.md and figures/ in `out`; `quick` puts QUICK_BANNER on the report."""
    suites = seed_suites(cfg, results)
    suite = suites[min(suites)]  # the first seed's: figures and the per-task table follow its order
    names, cats = [t.name for t in suite.tasks], [t.category for t in suite.tasks]
    pooled_names = always_seen(suites)
    pooled_cats = [suite.task(n).category for n in pooled_names]
    fs = compare_table(results, "dense", "few_shot")
    zs = compare_table(results, "dense", "zero_shot")
    fs_pre = compare_table(results, "pretrained", "few_shot") if "pretrained" in results else {}
    vs_avg = {setting: compare_table(results, "average", setting, VS_AVERAGE) for setting in ("few_shot", "zero_shot")}
    per_seed = all(k == seed for seed, k in split_seeds(results).items())  # reproduce --resplit
    # Categories to compare routes with (report.category_gap): pooled seeds need 2 tasks of every
    # category seen in all seeds; a split per seed needs 2 categories among its seen tasks.
    gap = (category_gap([t.category for su in suites.values() for t in su.seen_tasks()]) if per_seed
           else category_gap(pooled_cats, cats))
    route, skills = {}, [suite.task(n).skill for n in pooled_names]
    routed = [c for c in ROUTE_CELLS if c in results and np.asarray(next(iter(results[c].values()))["routes"]).size]
    for cell in routed if not gap else ():
        if per_seed:  # each seed its own seen tasks: statistics per seed, a stratified permutation test
            strata, seen_names = seen_strata(results, cell, suites)
            route[cell] = stratified_route_stats(strata, tasks=seen_names)
            route[cell + " (skill)"] = stratified_route_stats([(r, skill, None) for r, _, skill in strata])
        else:
            pooled, _ = always_seen_routes(results, cell, suites)
            route[cell] = route_stats(pooled, pooled_cats, blocks=skills)
            # Second level of the ontology: routes often follow sub-skills.
            route[cell + " (skill)"] = route_stats(pooled, skills)
    headline = fs.get("two_stage"), zs.get("two_stage")
    summary = {  # the headline: two-stage vs dense, points (the primary endpoint) and ARG
        "few_shot_points": headline[0]["points"]["estimate"] if headline[0] else None,
        "few_shot_points_ci": headline[0]["points"]["ci"] if headline[0] else None,
        "zero_shot_points": headline[1]["points"]["estimate"] if headline[1] else None,
        "zero_shot_points_ci": headline[1]["points"]["ci"] if headline[1] else None,
        "few_shot_arg": headline[0]["arg"]["estimate"] if headline[0] else None,
        "zero_shot_arg": headline[1]["arg"]["estimate"] if headline[1] else None,
        "per_method": {m: {"few_shot": fs.get(m), "zero_shot": zs.get(m), "few_shot_vs_pretrained": fs_pre.get(m)}
                       for m in ARG_METHODS if m in results or m not in OPTIONAL_METHODS},
        "route_category_nmi": route.get("learned_emb", {}).get("per_layer_nmi"),
        "route_category_ami": route.get("learned_emb", {}).get("per_layer_ami"),
        "route_category_p": route.get("learned_emb", {}).get("per_layer_nmi_p"),
        # The same NMI against skill-level shuffles: categories beyond the skills nested in them.
        "route_category_p_skill_controlled": route.get("learned_emb", {}).get("per_layer_nmi_p_blocks"),
        "per_method_vs_average": {m: {s: vs_avg[s].get(m) for s in vs_avg} for m in VS_AVERAGE
                                  if m in results or m not in OPTIONAL_METHODS},
        "route_stats": route,
        "seen_mean": {c: float(np.mean([np.mean(list(r["seen"].values())) for r in results[c].values()]))
                      for c in results},
        "upstream_seeds": list(seeds), "data_seeds": list(data_seeds), "wall_seconds": wall,
        # Compute actually spent in the cells (a resumed run's wall time covers only its part).
        "cell_seconds": float(sum(r.get("seconds", 0.0) for c in results.values() for r in c.values())),
        "command": "minimoe reproduce " + " ".join(sys.argv[2:]) if sys.argv[1:2] == ["reproduce"] else " ".join(sys.argv),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
                   f"{cfg.train.threads or torch.get_num_threads()} thread(s) per process",
        "config": cfg.to_dict(),
    }
    if per_seed:  # only then: older results.json stay as they were
        summary["split_per_seed"] = True  # reproduce --resplit: each seed its own unseen tasks
    if routed and gap:
        summary["route_stats_unavailable"] = gap
    if quick:
        summary["quick"] = True  # reproduce --quick: the numbers are meaningless (QUICK_BANNER)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(summary, indent=2, default=float))
    _figures(results, out, fs, zs, names, cats, [t.seen for t in suite.tasks], quick)
    (out / "report.md").write_text(_report(summary, results, fs, zs, fs_pre, vs_avg, route, suites))
    return summary


def _figures(results, out: Path, fs, zs, names, cats, seen, quick: bool = False) -> None:
    fig, tag = out / "figures", "QUICK RUN, numbers meaningless: " if quick else ""
    for table, setting in ((fs, "few_shot"), (zs, "zero_shot")):
        if table:  # points, not ARG: the paper's ARG has no place on this axis
            plot_arg_bars({m: (c["points"]["estimate"], *c["points"]["ci"]) for m, c in table.items()},
                          fig / f"points_{setting}.png", f"{tag}{setting.replace('_', '-')}: method − dense multi-task",
                          ylabel="difference (points, 95 % CI)")
    for cell in ROUTE_CELLS:
        if cell in results:
            first = results[cell][min(results[cell])]
            routes = np.asarray(first["routes"])
            if routes.size:
                plot_route_heatmap(routes, names, cats, seen, fig / f"routes_{cell}.png",
                                   title=f"{tag}{cell} (upstream seed {first['seed']})")


def _report(summary, results, fs, zs, fs_pre, vs_avg, route, suites) -> str:
    resplit = summary.get("split_per_seed", False)
    ci = ("each seed's own unseen tasks (a split per seed)" if resplit else "the same unseen tasks in every seed")
    banner = [f"> **{QUICK_BANNER}**", ""] if summary.get("quick") else []
    lines = ["# minimoe reproduce", "", *banner,
             f"Command: `{summary['command']}`  ", f"Machine: {summary['machine']}  ",
             f"Wall time: {summary['wall_seconds']:.0f} s; upstream seeds {summary['upstream_seeds']}, "
             f"data seeds {summary['data_seeds']}.", "",
             f"Each comparison is paired by upstream seed ({ci}): per seed the mean over unseen tasks of "
             "method − baseline, then the mean over seeds with a 95 % Student-t interval. The symmetric % is "
             "2 (m − b) / (m + b). ARG is the paper's measure; it is biased upward for noisy scores, so it is "
             "shown beside the ARG two exchangeable methods would get (swap null), the p of the observed ARG "
             "under it, and the reverse direction. Only the points interval judges (`minimoe/endpoints.py`).", ""]
    for setting, table in (("few-shot", fs), ("zero-shot", zs)):
        lines += [f"## {setting.capitalize()}: method vs the dense multi-task model", "", *COMPARE_HEAD]
        lines += [_row(m, c) for m, c in table.items()]
        lines.append("")
    lines += [f"Paper (BART-base on CrossFit, one run, ARG only): {PAPER_ARG['few_shot']:+.1f} % few-shot, "
              f"{PAPER_ARG['zero_shot']:+.1f} % zero-shot.", ""]
    if fs_pre:
        lines += ["## Few-shot: method vs the pre-trained model (no multi-task training)", "", *COMPARE_HEAD]
        lines += [_row(m, c) for m, c in fs_pre.items()] + [""]
    for setting, label in (("few_shot", "Few-shot"), ("zero_shot", "Zero-shot")):
        if vs_avg[setting]:
            lines += [f"## {label}, what routing adds: method vs average routing (same upcycled experts, "
                      "uniform gates)", "", *COMPARE_HEAD]
            lines += [_row(m, c) for m, c in vs_avg[setting].items()] + [""]
    lines += ["## Seen-task score (mean over seen tasks and seeds)", "",
              "| cell | seen |", "|---|---|"]
    lines += [f"| {c} | {v:.3f} |" for c, v in summary["seen_mean"].items()]
    unavailable = summary.get("route_stats_unavailable")
    if unavailable:
        lines += ["", "## Routes vs categories", "", f"Unavailable: {unavailable}."]
    elif resplit and not route:
        lines += ["", "## Routes vs categories", "", f"No routed cell ran (routes are analysed for {', '.join(ROUTE_CELLS)})."]
    elif resplit:
        lines += ["", "## Routes vs categories (each seed's seen tasks; mean over seeds; p from 1,000 stratified "
                  "permutations: each seed's labels shuffled within that seed)", "",
                  "Then, in the same brackets, p_shared and p_skill_shared: one shuffle of every task's label "
                  "(or of whole skills) shared by all seeds, so that a task's route, repeated in every seed, "
                  "counts once — would the association hold for other tasks?", ""]
    else:
        lines += ["", "## Routes vs categories (seen tasks, pooled over seeds; p from 1,000 label permutations)", ""]
    if not unavailable and (route or not resplit):
        ps = "p; p_skill; p_shared; p_skill_shared" if resplit else "p; p_skill"
        lines += ["p shuffles task labels; p_skill shuffles whole skills between categories (does a category "
                  "group its skills, beyond routes that follow skills?).", "",
                  "AMI is per-layer NMI adjusted for chance (0 = what shuffled labels give).", "",
                  f"| routes | per-layer NMI ({ps}) | per-layer AMI | signature NMI ({ps}) | selectivity ({ps}) |",
                  "|---|---|---|---|---|"]
    for cell, st in route.items():
        row = [f"{st[k]:.3f} (" + "; ".join("–" if st[k + p] is None else f"{st[k + p]:.3f}"
                                             for p in P_COLUMNS if k + p in st) + ")"
               for k in ("per_layer_nmi", "signature_nmi", "selectivity")]
        row.insert(1, f"{st['per_layer_ami']:.3f}")
        lines.append(f"| {cell} | " + " | ".join(row) + " |")
    cells = [c for c in ("pretrained", "dense") + ARG_METHODS if c in results]
    if not cells:  # e.g. only learned_emb ran (routes, no transfer table)
        return "\n".join(lines) + "\n"
    lines += ["", "## Unseen tasks: mean score over seeds (few-shot / zero-shot)", ""]
    first = suites[min(suites)]
    unseen = [t for t in first.tasks if any(not s.task(t.name).seen for s in suites.values())]
    if resplit:
        lines += ["Each task is averaged over the seeds that held it out (their number in brackets).", ""]
    lines += ["| task | category | " + " | ".join(cells) + " |", "|" + "---|" * (len(cells) + 2)]
    for task in unseen:
        vals = []
        for c in cells:
            held = [r for seed, r in results[c].items() if task.name in r["few_shot"]]
            f = np.mean([np.mean(r["few_shot"][task.name]) for r in held])
            z = [r["zero_shot"][task.name] for r in held if task.name in r["zero_shot"]]
            vals.append(f"{f:.2f} / " + (f"{np.mean(z):.2f}" if z else "–"))
        n_held = sum(task.name in r["few_shot"] for r in results[cells[0]].values())
        lines.append(f"| {task.name}{f' ({n_held})' if resplit else ''} | {task.category} | " + " | ".join(vals) + " |")
    lines += ["", "![few-shot points](figures/points_few_shot.png) ![zero-shot points](figures/points_zero_shot.png)", ""]
    # Link only the route heatmaps of cells that ran (their figures exist).
    lines += [f"![routes of {c}](figures/routes_{c}.png)" for c in ROUTE_CELLS if c in results]
    return "\n".join(lines) + "\n"
