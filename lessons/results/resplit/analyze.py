"""What README.md reads beyond `report.md`: the predictions of the resplit study.

From the committed cells (no training): for the primary seeds (this folder), the Xeon replicate
(`xeon/`) and both pooled, ARG of two-stage and average routing vs dense and of two-stage vs
average (`metrics.bootstrap_split_arg_ci`: each seed's ARG over its own unseen tasks, bootstrap
over seeds); two-stage's and average's mean difference to dense by category of unseen task
(points, per seed over its tasks of that category, bootstrap over seeds) and by how hard the
task is for dense (its few-shot or zero-shot score band: where ARG and the points disagree); the machine
check (`xeon_dense/`: the Xeon's dense cells against this machine's, seed for seed); the
replication on fresh seeds (`replication/`, when it has cells) on its own, pooled with the primary
seeds, and pooled with both; the second replication (`replication2/`, when it has cells) on its
own and the final pooled rows (primary + both replications, also with a 98.3 % CI for the third
look at zero-shot, and with the Xeon's seeds) and, post hoc, how robust the final row is (median
seed, sign test, agreement of the three sets of seeds); the third replication (`replication3/`,
only once all its 36 seeds exist) on its own — the decision row — with its median seed, and all
130 seeds pooled (shown, not judged), and a figure of every seed's two-stage vs dense ARG by set
of seeds (`per_seed_arg.png`); for finding 2, how far each seed's route–category NMI lies above
its own null (the p-values themselves are in `results.json`, `report.stratified_route_stats`);
and, for the motivation, the fixed-split `../plateau10_epyc/` CI
taken apart into its seed and task parts.

    python lessons/results/resplit/analyze.py         # prints, writes analysis.json and per_seed_arg.png here (or --out)
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from minimoe.analysis import per_layer_nmi
from minimoe.config import read_config
from minimoe.figures import save
from minimoe.metrics import arg_from_means, bootstrap_split_arg_ci
from minimoe.repro_report import seed_suites, seen_strata
from minimoe.tasks import catalogue

HERE = Path(__file__).resolve().parent
CELLS = ("dense", "average", "two_stage")
CATEGORIES = ("extractive", "classification", "world_knowledge")
SETTINGS = ("few_shot", "zero_shot")
COMPARISONS = (("two_stage", "dense"), ("average", "dense"), ("two_stage", "average"))
MIN_BASE = 0.05  # metrics.arg's default: baselines below it are left out of ARG
LOOK_LEVEL = 1 - 0.05 / 3  # the final pooled row's third look at zero-shot (README): Bonferroni, 98.3 %
REPLICATION3_SEEDS = 36  # README "A third replication": a fixed N, no table of it before all exist


def load(folder: Path) -> dict:
    """{cell: {seed: cell json}} for the seeds whose three cells all finished."""
    cells = {c: {int(p.parent.name[4:]): json.loads(p.read_text()) for p in folder.glob(f"seed*/{c}.json")}
             for c in CELLS}
    complete = set.intersection(*(set(v) for v in cells.values()))
    return {c: {s: cells[c][s] for s in sorted(complete)} for c in CELLS}


def scores(results: dict, cell: str, setting: str) -> dict:
    """{seed: {task: [scores]}}, the input of the bootstrap."""
    return {s: {t: (v if isinstance(v, list) else [v]) for t, v in r[setting].items()}
            for s, r in results[cell].items()}


def seed_bootstrap(values: np.ndarray, n_boot: int = 2000, seed: int = 0) -> list[float]:
    """Mean and 95 % percentile interval of per-seed values, resampling seeds."""
    draw = np.random.default_rng(seed).integers(0, len(values), size=(n_boot, len(values)))
    lo, hi = np.percentile(values[draw].mean(1), [2.5, 97.5])
    return [float(values.mean()), float(lo), float(hi)]


def by_category(results: dict, cell: str, base: str = "dense") -> dict:
    """{category: {setting: [mean, lo, hi]}}: points of cell − base, per seed over that seed's
    unseen tasks of the category, then bootstrapped over seeds."""
    category = {t.name: t.category for t in catalogue()}
    out = {}
    for c in CATEGORIES:
        out[c] = {}
        for setting in SETTINGS:
            per_seed = []
            for s, cell_res in results[cell].items():
                a, b = cell_res[setting], results[base][s][setting]
                diffs = [np.mean(a[t]) - np.mean(b[t]) for t in a if category[t] == c]
                if diffs:
                    per_seed.append(100 * np.mean(diffs))
            out[c][setting] = seed_bootstrap(np.array(per_seed))
    return out


BANDS = ((0.0, 0.3), (0.3, 0.6), (0.6, 1.01))


def by_baseline(results: dict, cell: str, base: str = "dense", setting: str = "few_shot") -> dict:
    """{band: {tasks, points: [mean, lo, hi], relative_gain_pct}}: cell − base by how hard the task
    is for the base (its score band). Points per seed over that seed's tasks in the band, then
    bootstrapped over seeds; the relative gain is ARG (`arg_from_means`) over all the band's task-seeds."""
    out = {}
    for lo, hi in BANDS:
        per_seed = []  # [2 n] per seed: (cell, base) means of its tasks in the band
        for s, cell_res in results[cell].items():
            pairs = [(np.mean(cell_res[setting][t]), b) for t, v in results[base][s][setting].items()
                     if lo <= (b := np.mean(v)) < hi]
            if pairs:
                per_seed.append(np.array(pairs).T)
        if not per_seed:  # no task of any seed in this band
            continue
        m, b = np.concatenate(per_seed, axis=1)
        points = np.array([arg_from_means(ms, bs, MIN_BASE)[1] for ms, bs in per_seed])
        out[f"{lo:.1f}-{min(hi, 1.0):.1f}"] = {"tasks": int(m.size), "points": seed_bootstrap(points),
                                                "relative_gain_pct": float(arg_from_means(m, b, MIN_BASE)[0])}
    return out


def group(results: dict, level: float = 0.95) -> dict:
    """Every comparison and the category table for one set of seeds; `level` the CIs' coverage."""
    arg = {f"{m} vs {b}": {s: bootstrap_split_arg_ci(scores(results, m, s), scores(results, b, s), level=level)
                           for s in SETTINGS}
           for m, b in COMPARISONS}
    seen = {c: float(np.mean([np.mean(list(r["seen"].values())) for r in results[c].values()])) for c in CELLS}
    return {"seeds": sorted(results["dense"]), "level": level, "arg": arg, "seen_mean": seen,
            "points_vs_dense_by_category": {c: by_category(results, c) for c in ("average", "two_stage")},
            "few_shot_vs_dense_by_baseline": {c: by_baseline(results, c) for c in ("average", "two_stage")},
            "zero_shot_vs_dense_by_baseline": {c: by_baseline(results, c, setting="zero_shot")
                                               for c in ("average", "two_stage")}}


def robustness(batches: dict, n_perm: int = 5000, seed: int = 0) -> dict:
    """Post hoc (added after the second replication was read; README): for per-seed ARGs pooled
    over `batches` {name: group()}, per comparison and setting: the median seed and its
    bootstrap 95 % CI, how many seeds are above 0 and the two-sided sign-test p, each batch's
    mean, median and seeds above 0 (a shift of the whole batch or a few seeds?), and whether the
    batches' means differ more than shuffling seeds between batches gives (permutation p of the
    between-batch sum of squares; None for one batch) — the pooled bootstrap assumes the seeds
    exchangeable."""
    rng = np.random.default_rng(seed)
    out = {}
    for m, b in COMPARISONS:
        for setting in SETTINGS:
            per = [np.array(list(g["arg"][f"{m} vs {b}"][setting]["per_seed"].values())) for g in batches.values()]
            v, lab = np.concatenate(per), np.repeat(np.arange(len(per)), [len(x) for x in per])
            n, k = len(v), int((v > 0).sum())
            tail = sum(math.comb(n, i) for i in range(max(k, n - k), n + 1)) / 2 ** n
            medians = np.median(v[rng.integers(0, n, (4000, n))], axis=1)
            between = lambda lab: sum((lab == j).sum() * (v[lab == j].mean() - v.mean()) ** 2  # noqa: E731
                                      for j in range(len(per)))
            observed = between(lab)
            at_least = sum(between(rng.permutation(lab)) >= observed for _ in range(n_perm)) if len(per) > 1 else None
            out[f"{m} vs {b}, {setting}"] = {
                "seeds": n, "batch_means": {name: float(x.mean()) for name, x in zip(batches, per)},
                "batch_medians": {name: float(np.median(x)) for name, x in zip(batches, per)},
                "batch_above_0": {name: int((x > 0).sum()) for name, x in zip(batches, per)},
                "median": [float(np.median(v)), *map(float, np.percentile(medians, [2.5, 97.5]))],
                "seeds_above_0": k, "sign_p": float(min(1.0, 2 * tail)),
                "batch_heterogeneity_p": None if at_least is None else float((1 + at_least) / (1 + n_perm))}
    return out


def per_seed_figure(batches: dict, path: Path, comparison: str = "two_stage vs dense") -> Path:
    """Every seed's ARG, one strip per set of seeds and setting, with the set's mean (bar) and
    median (diamond): what a pooled mean and its CI summarise (lesson 07)."""
    fig = Figure(figsize=(9, 3.6))
    rng = np.random.default_rng(0)  # horizontal jitter only
    for ax, setting in zip(fig.subplots(1, 2, sharey=True), SETTINGS):
        for i, (name, g) in enumerate(batches.items()):
            v = np.array(list(g["arg"][comparison][setting]["per_seed"].values()))
            ax.scatter(i + rng.uniform(-0.18, 0.18, len(v)), v, s=9, alpha=0.6)
            ax.hlines(v.mean(), i - 0.3, i + 0.3, colors="k", label="mean" if i == 0 else None)
            ax.scatter([i], [np.median(v)], marker="D", c="w", edgecolors="k", zorder=3,
                       label="median" if i == 0 else None)
        ax.axhline(0, color="0.5", lw=0.8, ls=":")
        ax.set_xticks(range(len(batches)), [f"{k}\n({len(g['seeds'])})" for k, g in batches.items()], fontsize=8)
        ax.set_title(f"{comparison}, {setting.replace('_', '-')}", fontsize=9)
    fig.axes[0].set_ylabel("ARG of one seed (%)")
    fig.axes[0].legend(fontsize=8, loc="upper left")
    return save(fig, path)  # the package's figure settings


def fixed_split_parts(folder: Path, method: str = "two_stage", n_boot: int = 4000) -> dict:
    """A fixed split's two-level CI taken apart: seeds only (tasks fixed), tasks only (seed means)."""
    results = load(folder)
    out = {}
    for setting in SETTINGS:
        m = np.array([[np.mean(v) for _, v in sorted(r[setting].items())] for r in results[method].values()])
        b = np.array([[np.mean(v) for _, v in sorted(r[setting].items())] for r in results["dense"].values()])
        rng = np.random.default_rng(0)
        sd, td = rng.integers(0, len(m), (n_boot, len(m))), rng.integers(0, m.shape[1], (n_boot, m.shape[1]))
        ci = lambda mr, br: [float(x) for x in np.nanpercentile(arg_from_means(mr, br, MIN_BASE)[0], [2.5, 97.5])]  # noqa: E731
        out[setting] = {"arg": float(arg_from_means(m.mean(0), b.mean(0), MIN_BASE)[0]),
                        "both": ci(np.take_along_axis(m[sd].mean(1), td, 1), np.take_along_axis(b[sd].mean(1), td, 1)),
                        "seeds_only": ci(m[sd].mean(1), b[sd].mean(1)), "tasks_only": ci(m.mean(0)[td], b.mean(0)[td])}
    return out


def machine_check(epyc: dict, folder: Path) -> dict:
    """The Xeon's dense cells (`xeon_dense/`) against this machine's, seed for seed (same splits):
    ARG of Xeon-dense vs EPYC-dense and the seeds where the Xeon's reads lower."""
    xeon = {int(p.parent.name[4:]): json.loads(p.read_text()) for p in folder.glob("seed*/dense.json")}
    seeds = sorted(set(xeon) & set(epyc["dense"]))
    if not seeds:
        return {"seeds": []}
    both = {"xeon": {s: xeon[s] for s in seeds}, "epyc": {s: epyc["dense"][s] for s in seeds}}
    out = {"seeds": seeds}
    for setting in SETTINGS:
        ci = bootstrap_split_arg_ci(*(scores({"dense": both[m]}, "dense", setting) for m in ("xeon", "epyc")))
        out[setting] = {**ci, "seeds_xeon_lower": int(sum(v < 0 for v in ci["per_seed"].values()))}
    return out


def route_effect(folder: Path, cell: str, n_perm: int = 200) -> dict:
    """Effect size beside the stratified p: per seed, the per-layer NMI of its seen tasks' routes
    with the categories (and with the skills) and the mean of the same statistic over n_perm
    shuffles of that seed's labels (the null's centre; NMI of finite samples is above 0 by chance)."""
    results = {cell: {int(p.parent.name[4:]): json.loads(p.read_text()) for p in folder.glob(f"seed*/{cell}.json")}}
    if not results[cell]:
        return {"seeds": []}
    results[cell] = dict(sorted(results[cell].items()))
    strata, _ = seen_strata(results, cell, seed_suites(read_config(folder / "config.json"), results))
    rng = np.random.default_rng(0)
    out = {"seeds": list(results[cell])}
    for name, pick in (("categories", 1), ("skills", 2)):
        obs = np.array([per_layer_nmi(st[0], st[pick]) for st in strata])
        null = np.array([np.mean([per_layer_nmi(st[0], rng.permutation(st[pick])) for _ in range(n_perm)])
                         for st in strata])
        out[name] = {"observed": seed_bootstrap(obs), "null_mean": float(null.mean()),
                     "above_null": seed_bootstrap(obs - null), "seeds_above_null": int((obs > null).sum())}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(HERE), help="where analysis.json goes (default: here)")
    p.add_argument("--cells", default=str(HERE), help="the primary run's folder (default: here)")
    args = p.parse_args()
    primary, xeon, replication = load(Path(args.cells)), load(HERE / "xeon"), load(HERE / "replication")
    pooled = {c: {**primary[c], **xeon[c]} for c in CELLS}
    groups = {"primary": group(primary), "xeon": group(xeon), "pooled": group(pooled)}
    if replication["dense"]:  # the replication on fresh seeds (README: "A replication on fresh seeds")
        groups["replication"] = group(replication)
        groups["primary+replication"] = group({c: {**primary[c], **replication[c]} for c in CELLS})
        groups["all"] = group({c: {**pooled[c], **replication[c]} for c in CELLS})
    extra, replication2 = {}, load(HERE / "replication2")
    if replication2["dense"]:  # README: "A second replication, for the zero-shot half"
        final = {c: {**primary[c], **replication[c], **replication2[c]} for c in CELLS}
        groups["replication2"] = group(replication2)
        groups["final"] = group(final)
        groups[f"final, {LOOK_LEVEL:.1%} CI"] = group(final, level=LOOK_LEVEL)
        groups["final+xeon"] = group({c: {**final[c], **xeon[c]} for c in CELLS})
        extra["final_robustness"] = robustness({k: groups[k] for k in ("primary", "replication", "replication2")})
    replication3 = load(HERE / "replication3")
    if len(replication3["dense"]) == REPLICATION3_SEEDS:  # README: "A third replication, to test the caveat"
        groups["replication3"] = group(replication3)  # the decision row: alone, one look, 95 %
        groups["all130"] = group({c: {**final[c], **replication3[c]} for c in CELLS})  # shown, not judged
        extra["replication3_robustness"] = robustness({"replication3": groups["replication3"]})
        extra["all130_robustness"] = robustness({k: groups[k] for k in
                                                 ("primary", "replication", "replication2", "replication3")})
    elif replication3["dense"]:
        print(f"replication3: {len(replication3['dense'])} of {REPLICATION3_SEEDS} seeds complete; "
              "not analysed before all exist (README)")
    summary = {**groups, **extra, "routes": {c: route_effect(Path(args.cells), c) for c in ("learned_emb", "two_stage")},
               "fixed_split_plateau10_epyc": fixed_split_parts(HERE.parent / "plateau10_epyc"),
               "machine_check": machine_check(primary, HERE / "xeon_dense")}
    (Path(args.out) / "analysis.json").write_text(json.dumps(summary, indent=2))
    batches = [k for k in ("primary", "replication", "replication2", "replication3") if k in groups]
    per_seed_figure({k: groups[k] for k in batches}, Path(args.out) / "per_seed_arg.png")
    for name in groups:
        g = summary[name]
        print(f"== {name}: {len(g['seeds'])} seeds, {g['level']:.1%} CIs; seen " + ", ".join(f"{c} {v:.3f}" for c, v in g["seen_mean"].items()))
        for comp, row in g["arg"].items():
            print(f"  {comp}: " + "; ".join(f"{s} {r['arg']:+.1f} % [{r['lo']:+.1f}, {r['hi']:+.1f}] "
                                            f"(Δ {r['abs_diff']:+.1f} pt [{r['abs_lo']:+.1f}, {r['abs_hi']:+.1f}])"
                                            for s, r in row.items()))
        for cell, row in g["points_vs_dense_by_category"].items():
            print(f"  {cell} − dense, points: " + "; ".join(
                f"{c} few {v['few_shot'][0]:+.1f} [{v['few_shot'][1]:+.1f}, {v['few_shot'][2]:+.1f}] "
                f"zero {v['zero_shot'][0]:+.1f}" for c, v in row.items()))
        for cell, row in [(f"{c} few-shot", r) for c, r in g["few_shot_vs_dense_by_baseline"].items()] + \
                         [(f"{c} zero-shot", r) for c, r in g["zero_shot_vs_dense_by_baseline"].items()]:
            print(f"  {cell} − dense by dense score: " + "; ".join(
                f"{band} ({v['tasks']} task-seeds) {v['points'][0]:+.1f} pt [{v['points'][1]:+.1f}, {v['points'][2]:+.1f}], "
                f"relative {v['relative_gain_pct']:+.1f} %" for band, v in row.items()))
    for table in ("final_robustness", "replication3_robustness", "all130_robustness"):
        for key, r in summary.get(table, {}).items():
            het = r["batch_heterogeneity_p"]
            print(f"{table.removesuffix('_robustness')}, {key} ({r['seeds']} seeds): median {r['median'][0]:+.1f} % "
                  f"[{r['median'][1]:+.1f}, {r['median'][2]:+.1f}], {r['seeds_above_0']} above 0 (sign p "
                  f"{r['sign_p']:.4f}); batch mean/median/above 0: " + ", ".join(
                      f"{k} {x:+.1f}/{r['batch_medians'][k]:+.1f}/{r['batch_above_0'][k]}" for k, x in r["batch_means"].items())
                  + ("" if het is None else f" (heterogeneity p {het:.4f})"))
    for cell, r in summary["routes"].items():
        for name in ("categories", "skills"):
            if name in r:
                v = r[name]
                print(f"routes of {cell} vs {name} ({len(r['seeds'])} seeds): per-layer NMI {v['observed'][0]:.3f} "
                      f"vs null mean {v['null_mean']:.3f}; above null {v['above_null'][0]:+.3f} "
                      f"[{v['above_null'][1]:+.3f}, {v['above_null'][2]:+.3f}], {v['seeds_above_null']} seeds above")
    mc = summary["machine_check"]
    for s in SETTINGS:
        if s in mc:
            v = mc[s]
            print(f"machine check, Xeon dense vs EPYC dense, {s} ({len(mc['seeds'])} seeds): {v['arg']:+.1f} % "
                  f"[{v['lo']:+.1f}, {v['hi']:+.1f}] (Δ {v['abs_diff']:+.1f} pt); Xeon lower in {v['seeds_xeon_lower']} seeds")
    for s, v in summary["fixed_split_plateau10_epyc"].items():
        print(f"fixed split (plateau10_epyc), two_stage vs dense {s}: {v['arg']:+.1f} both {v['both']} "
              f"seeds only {v['seeds_only']} tasks only {v['tasks_only']}")


if __name__ == "__main__":
    main()
