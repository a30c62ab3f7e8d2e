"""Route swap: score the trained two-stage models on unseen world-knowledge tasks under other
routes (see README.md beside this file for the hypotheses and the command).

For each upstream seed, the two-stage cell's model is rebuilt from its checkpoints in
`--out/seed{s}/work/two_stage/` (retrained only if they are missing), and every unseen
world-knowledge task is scored zero-shot and few-shot (data seed 100) with four routes [l e]:
own (the instruction router's), relation (mean gates of the seen tasks of its relation),
format (mean gates of the seen knowledge tasks of its format) and uniform. Writes
results.json beside this file and prints the mean difference to dense, in points.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import time
from pathlib import Path

import numpy as np
import torch

from minimoe.config import read_config
from minimoe.evaluate import few_shot, seen_route, unseen_route, zero_shot
from minimoe.presets import apply_overrides
from minimoe.pipeline import pretrain, train_upstream
from minimoe.reproduce import CELLS, _seed_context

HERE = Path(__file__).resolve().parent
ROUTES = ("own", "relation", "format", "uniform")
DATA_SEED = 100  # the first of the five; the dense cell's few_shot lists follow data_seeds' order


def candidate_routes(model, ctx, task) -> dict[str, torch.Tensor]:
    """The four routes [l e] of one unseen task (module docstring)."""
    seen = [t for t in ctx.suite.seen_tasks() if t.category == task.category]
    mean_route = lambda tasks: torch.stack([seen_route(model, ctx, t) for t in tasks]).mean(0)  # noqa: E731
    own = unseen_route(model, ctx, task, dev=None)  # the instruction router routes it directly
    return {"own": own,
            "relation": mean_route([t for t in seen if t.skill == task.skill]),
            "format": mean_route([t for t in seen if t.variant == task.variant]),
            "uniform": torch.full_like(own, 1.0 / own.shape[-1])}


def one_seed(args: tuple) -> dict:
    out, dense_out, overrides, seed = args
    cfg = apply_overrides(read_config(dense_out / "config.json"),
                          dict(CELLS["two_stage"][1], seed=seed, **overrides))
    ctx = _seed_context(cfg, seed, out, "two_stage", quiet=True)
    model = train_upstream(ctx, "two_stage", pretrain(ctx))  # resumes the finished checkpoints
    model.eval()
    cell = json.loads((out / f"seed{seed}" / "two_stage.json").read_text())
    dense = json.loads((dense_out / f"seed{seed}" / "dense.json").read_text())
    d = dense["data_seeds"].index(DATA_SEED)
    rows = {}
    for task in (t for t in ctx.suite.unseen_tasks() if t.category == "world_knowledge"):
        routes = candidate_routes(model, ctx, task)
        rows[task.name] = {
            "dense": {"zero_shot": dense["zero_shot"][task.name], "few_shot": dense["few_shot"][task.name][d]},
            "cell_own_zero_shot": cell["zero_shot"][task.name],
            **{name: {"zero_shot": zero_shot(model, ctx, task, gates),
                      "few_shot": few_shot(model, ctx, task, DATA_SEED, gates)["test"]}
               for name, gates in routes.items()}}
    return {"seed": seed, "tasks": rows}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="the reproduce folder of the plateau run")
    p.add_argument("--seeds", default="0,1,2,3,4,5,6,7,8,9")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--dense_out", help="where config.json and the dense cells are (default: --out)")
    p.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE",
                   help="config overrides of the two-stage cells (e.g. stage2_tau_end=0.1)")
    p.add_argument("--results", default=str(HERE / "results.json"), help="where to write the results")
    args = p.parse_args()
    out, seeds = Path(args.out), [int(s) for s in args.seeds.split(",")]
    dense_out = Path(args.dense_out or args.out)
    overrides = dict(item.split("=", 1) for item in args.set)
    start = time.perf_counter()
    with mp.get_context("spawn").Pool(args.jobs) as pool:
        per_seed = pool.map(one_seed, [(out, dense_out, overrides, s) for s in seeds], chunksize=1)
        pool.close()
        pool.join()
    own_ok = all(r["own"]["zero_shot"] == r["cell_own_zero_shot"] for s in per_seed for r in s["tasks"].values())
    summary = {}
    for setting in ("zero_shot", "few_shot"):
        for name in ROUTES:
            diff = np.array([[100 * (r[name][setting] - r["dense"][setting]) for r in s["tasks"].values()]
                             for s in per_seed])  # [seeds tasks]
            summary[f"{setting} {name} - dense"] = float(diff.mean())
            print(f"{setting:>9} {name:>8} − dense: {diff.mean():+6.1f} pt  (per seed: "
                  + " ".join(f"{x:+.0f}" for x in diff.mean(1)) + ")")
    print("own route reproduces the committed zero-shot scores:", own_ok)
    extra = (f" --dense_out {args.dense_out}" if args.dense_out else "") + \
        (" --set " + " ".join(args.set) if args.set else "")
    result = {"command": "python lessons/results/route_swap/route_swap.py --out " + args.out + " --seeds "
              + args.seeds + extra + (f" --results {args.results}" if args.dense_out else ""),
              "wall_seconds": time.perf_counter() - start, "own_route_matches_cells": own_ok,
              "summary_points": summary, "per_seed": per_seed}
    Path(args.results).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
