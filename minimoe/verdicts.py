"""One verdict table for both findings, rebuilt from the committed cells of every study.

    minimoe verdicts                          # lessons/results → lessons/results/verdicts.json
    minimoe verdicts --pool DIR [DIR ...]     # pool the seeds of several reproduce folders

Finding 1 (transfer): every comparison present in a study (each method vs dense, the routed
methods vs average routing), few-shot and zero-shot, through `endpoints.compare`: one row per
endpoint — points (the primary endpoint), symmetric %, and ARG with its swap null and reverse.
Finding 2 (routes): per-layer AMI between routes and categories (p from the study's label
permutations), and "categories beyond skills": skills shuffled between categories, one shuffle
shared by all seeds (the 13 skills are the unit), AMI as the statistic; its power, by simulation,
is in lessons/results/power_beyond_skills/ (a structure half the skills follow: found in 60 %).

A row's verdict (`endpoints.verdict`): points are "established" when the 95 % interval excludes
0; symmetric % and ARG only where the points are, on the same side (symmetric %: its interval
excludes 0 too; ARG: its swap null rejects), and an "artifact" when their own interval excludes
0 without that. Routes: "established" at p < 0.05.
Read next: `lessons/07_transfer_and_arg.md` (the verdicts, and the ARG trap).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

from minimoe.analysis import per_layer_ami
from minimoe.archive import read_cells
from minimoe.checkpoint import science
from minimoe.config import Config, read_config
from minimoe.endpoints import ENDPOINTS, compare, verdict
from minimoe.errors import ConfigError, Parser
from minimoe.permutation import block_permutation_test, permutation_test, stratified_permutation_test
from minimoe.repro_report import QUICK_BANNER, VS_AVERAGE, is_quick
from minimoe.routes import always_seen_routes, seed_suites, seen_strata

RESULTS = Path(__file__).resolve().parent.parent / "lessons" / "results"
SETTINGS = ("few_shot", "zero_shot")
VS_DENSE = ("average", "random", "oracle", "learned", "two_stage", "two_stage_2x", "token")
COMPARISONS = tuple((m, "dense") for m in VS_DENSE) + tuple((m, "average") for m in VS_AVERAGE)
ROUTE_CELLS = ("learned_emb", "learned", "two_stage")
# Studies judged, {name: folders under lessons/results}; the resplit batches also pooled.
RESPLIT = ("resplit", "resplit/replication", "resplit/replication2", "resplit/replication3")
STUDIES = {
    "fixed split, 800 steps": (".",), "budget 1600 steps": ("budget/steps1600",),
    "budget 2400 steps": ("budget/steps2400",), "plateau": ("plateau",), "plateau10": ("plateau10",),
    "plateau10_epyc": ("plateau10_epyc",), "relatedness0": ("relatedness0",), "conflict": ("conflict",),
    "d32": ("d32",), "d128": ("d128",), "ffn": ("ffn",),
    **{name: (name,) for name in RESPLIT}, "resplit/xeon": ("resplit/xeon",),
    "resplit, all 130 seeds": RESPLIT,
    **{f"interference {level}": (f"interference/level_{level}",) for level in ("0", "0.5", "1.0")},
}


def load_cells(folders) -> tuple[dict, dict]:
    """({cell: {seed: cell json}}, config dict) of one or more reproduce folders (cell files or a
    packed `cells.jsonl.gz`, `minimoe/archive.py`). Folders pooled must share their
    settings (`checkpoint.science`, as `reproduce` checks its cells on a rerun), and a seed may
    appear in only one of them.
    """
    results, config = {}, None
    for folder in map(Path, folders):
        if not (folder / "config.json").is_file():
            raise ConfigError(f"{folder} has no config.json; pass folders written by `minimoe reproduce`")
        cfg = science(read_config(folder / "config.json").to_dict())  # where and how fast: ignored
        if config is not None and cfg != config:
            differ = [f"{sec}.{k}" for sec in cfg for k in cfg[sec] if cfg[sec][k] != config[sec].get(k)]
            raise ConfigError(f"{folder} was made with other settings than the first folder ({', '.join(differ)}); "
                              f"pool only folders of one `minimoe reproduce` configuration")
        config = config or cfg
        for cell, by_seed in read_cells(folder).items():
            clash = set(by_seed) & set(results.get(cell, {}))
            if clash:
                raise ConfigError(f"seed {min(clash)} of cell {cell!r} appears in two folders; pool "
                                  f"folders whose seeds differ")
            results.setdefault(cell, {}).update(by_seed)
    return results, config


def paired_scores(results: dict, method: str, base: str, setting: str) -> tuple[dict, dict]:
    """{seed: {task: scores}} of method and base over the seeds where both ran."""
    seeds = sorted(set(results[method]) & set(results[base]))
    return ({s: results[method][s][setting] for s in seeds}, {s: results[base][s][setting] for s in seeds})


def transfer_rows(study: str, results: dict) -> list[dict]:
    """Rows of finding 1: every comparison present, both settings, every endpoint."""
    rows = []
    for method, base in COMPARISONS:
        if method not in results or base not in results:
            continue
        for setting in SETTINGS:
            c = compare(*paired_scores(results, method, base, setting))
            for endpoint in ENDPOINTS:
                e = c[endpoint]
                row = {"comparison": f"{method} vs {base}", "setting": setting, "endpoint": endpoint,
                       "study": study, "seeds": c["seeds"], "estimate": e["estimate"], "ci": e["ci"],
                       "p": e["p"] if endpoint != "arg" else e["p_swap"]}
                if endpoint == "arg":
                    row.update(swap_null=e["swap_null"], reverse=e["reverse"])
                row["verdict"] = verdict(e if endpoint == "points" else {**e, "points_ci": c["points"]["ci"]})
                rows.append(row)
    return rows


def route_rows(study: str, results: dict, config: dict, n_perm: int = 1000) -> list[dict]:
    """Rows of finding 2 for every routed cell: AMI vs categories (p: task labels shuffled), and
    AMI vs categories beyond skills (p: whole skills shuffled between categories, shared by all
    seeds)."""
    cfg = Config.from_dict(config)  # the folder's settings rebuild each seed's suite
    rows = []
    for cell in ROUTE_CELLS:
        if cell not in results or not np.asarray(next(iter(results[cell].values()))["routes"]).size:
            continue
        suites = seed_suites(cfg, {cell: results[cell]})
        strata, names = seen_strata({cell: results[cell]}, cell, suites)
        resplit = len({tuple(n) for n in names}) > 1
        if resplit:  # each seed its own seen tasks: statistics per seed, shuffles within seeds
            obs, p = stratified_permutation_test(per_layer_ami, [(r, c, None) for r, c, _ in strata], n_perm=n_perm)
            _, p_skill = stratified_permutation_test(per_layer_ami, strata, n_perm=n_perm, blocked=True,
                                                     tasks=names, same_size=False)
        else:  # one task set: seeds stacked along the layer axis, one shuffle for all
            routes, keep = always_seen_routes({cell: results[cell]}, cell, suites)
            first = suites[min(suites)]
            cats, skills = [first.task(n).category for n in keep], [first.task(n).skill for n in keep]
            obs, p = permutation_test(per_layer_ami, routes, cats, n_perm=n_perm)
            _, p_skill = block_permutation_test(per_layer_ami, routes, cats, skills, n_perm=n_perm, same_size=False)
        for comparison, p_value in ((f"{cell} routes vs categories", p),
                                    (f"{cell} routes vs categories beyond skills", p_skill)):
            rows.append({"comparison": comparison, "setting": "routes", "endpoint": "ami", "study": study,
                         "seeds": len(strata), "estimate": obs, "ci": None, "p": p_value,
                         "verdict": "established" if p_value < 0.05 else "not established"})
    return rows


def build(studies: dict | None = None, root: Path = RESULTS, n_perm: int = 1000) -> list[dict]:
    """Every row of every study ({name: folders under root})."""
    rows = []
    for study, folders in (studies or STUDIES).items():
        results, config = load_cells([root / f for f in folders])
        rows += transfer_rows(study, results) + route_rows(study, results, config, n_perm)
    return rows


def _fmt(row: dict) -> str:
    est, ci = row["estimate"], row["ci"]
    interval = f" [{ci[0]:+.1f}, {ci[1]:+.1f}]" if ci and math.isfinite(ci[0]) else ""
    text = f"{est:.3f}" if row["endpoint"] == "ami" else f"{est:+.1f}{interval}"
    if row["endpoint"] == "arg":
        text += f" (if exchangeable {row['swap_null']:+.1f}; reverse {row['reverse']:+.1f})"
    return text


def table(rows: list[dict], endpoints=("points", "arg", "ami")) -> str:
    """Markdown table of the rows with the given endpoints."""
    lines = ["| study | comparison | setting | endpoint | seeds | estimate [95 % CI] | p | verdict |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["endpoint"] in endpoints:
            p = "–" if r["p"] is None or not math.isfinite(r["p"]) else f"{r['p']:.3f}"
            lines.append(f"| {r['study']} | {r['comparison']} | {r['setting']} | {r['endpoint']} | {r['seeds']} | "
                         f"{_fmt(r)} | {p} | {r['verdict']} |")
    return "\n".join(lines)


def build_cli(name: str) -> argparse.ArgumentParser:
    parser = Parser(prog=f"minimoe {name}", description=__doc__.split("\n\n")[0])
    parser.add_argument("--pool", nargs="+", metavar="DIR", help="reproduce folders whose seeds to pool "
                        "(one configuration; e.g. a class's folders); prints their verdict table")
    parser.add_argument("--out", type=Path, help="where to write the rows as JSON (default without "
                        "--pool: lessons/results/verdicts.json)")
    return parser


def cli_main(name: str, args: argparse.Namespace) -> int:
    banner = []
    if args.pool:
        rows = build({f"{len(args.pool)} folders pooled": tuple(args.pool)}, root=Path.cwd())
        if any(is_quick(read_config(Path(f) / "config.json").to_dict()) for f in args.pool):
            banner = [QUICK_BANNER]  # above and below the table, as reproduce --quick prints it
    else:
        rows = build()
        args.out = args.out or RESULTS / "verdicts.json"
    print("\n".join([*banner, table(rows), *banner]))
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1, default=float) + "\n")
        print(f"wrote {len(rows)} rows to {args.out}")
    return 0
