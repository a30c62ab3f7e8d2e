"""`minimoe bench --study`: one resplit seed's study cells, few-shot batched against unbatched.

A study cell (`minimoe/reproduce.py::run_cell`) trains upstream once, then fine-tunes and scores
every (unseen task, data seed) pair. This benchmark runs the dense, average and two_stage cells
of upstream seed 0 (`--resplit`) with `fs_batched` off and on, in one process, cell by cell in
alternating order (off, on; then on, off), so that load from other processes hits both; the
dense base is pre-trained once beforehand and copied into every run's folder (every cell shares
it in a study). It reports

- `study_speedup`: unbatched ÷ batched seconds of the three cells (median over rounds);
- `phases`: seconds per phase (`minimoe/phases.py`) of each variant, summed over the cells;
- `projected_speedup`: the same ratio with the upstream phase scaled to the preset's own steps
  (the benchmark trains fewer upstream steps; few-shot work does not depend on them);
- `ceiling_speedup`: the most any few-shot speedup can give at the preset's steps (Amdahl's law):
  the projected unbatched time ÷ the same without few-shot fine-tuning and evaluation. Beyond it
  only faster upstream training helps.

Every other option of `minimoe bench` still times models (`minimoe/bench.py`). Read next:
`minimoe/batched.py`, `lessons/09_efficiency.md` ("Batching a study").
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
from pathlib import Path

import torch

from minimoe import bench
from minimoe.crossfit_suite import load_suite
from minimoe.device import resolve_device
from minimoe.errors import ConfigError
from minimoe.flops import describe_machine
from minimoe.pipeline import make_context, pretrain
from minimoe.presets import apply_overrides, get_preset
from minimoe.reproduce import run_cell, seed_config
from minimoe.repro_report import QUICK
from minimoe.suite import FEW_SHOT_SEEDS

CELLS = ("dense", "average", "two_stage")
FEW_SHOT_PHASES = ("few_shot_tune", "few_shot_eval")  # what batching speeds up
STUDY_STEPS = 200  # upstream steps per cell here (the repro preset: 800); few-shot as the preset
SEED = 0


def run_study(preset: str = "repro", steps: int = STUDY_STEPS, rounds: int = 1, quick: bool = False,
              device: str = "auto") -> dict:
    """Time the CELLS of one resplit seed, fs_batched off and on, interleaved (module docstring)."""
    full = get_preset(preset)
    extra = {**(QUICK if quick else {}), "steps": steps, "eval_every": max(1, steps // 2), "threads": 1,
             "device": device}
    cfg = apply_overrides(full, extra)
    data_seeds = FEW_SHOT_SEEDS
    with tempfile.TemporaryDirectory(prefix="minimoe-study-") as tmp:
        base = Path(tmp) / "base"
        ctx = make_context(seed_config(cfg, SEED, resplit=True), load_suite(cfg.data), base / "work", quiet=True)
        ctx.pretrain_path = base / "pretrain.pt"
        pretrain(ctx)  # shared by every run below, as by every cell of a study seed
        runs: dict[str, list[list[dict]]] = {"unbatched": [], "batched": []}
        for r in range(rounds):
            for variant, cells in runs.items():
                cells.append([])
                (Path(tmp) / f"{variant}{r}" / f"seed{SEED}").mkdir(parents=True)
                shutil.copy(ctx.pretrain_path, Path(tmp) / f"{variant}{r}" / f"seed{SEED}" / "pretrain.pt")
            for j, name in enumerate(CELLS):  # cell by cell, the two variants in alternating order
                for variant in (("unbatched", "batched") if (r + j) % 2 == 0 else ("batched", "unbatched")):
                    on = apply_overrides(cfg, {"fs_batched": variant == "batched"})
                    runs[variant][r].append(run_cell(on, name, SEED, data_seeds, Path(tmp) / f"{variant}{r}", resplit=True))
    seconds = {v: [sum(c["seconds"] for c in cells) for cells in rs] for v, rs in runs.items()}
    phases = {v: _median_phases(rs) for v, rs in runs.items()}
    scale = full.train.steps / steps  # upstream time grows with the steps; nothing else does
    projected = {v: sum(s * (scale if k == "upstream" else 1.0) for k, s in p.items()) for v, p in phases.items()}
    unseen = len(runs["batched"][0][0]["few_shot"])
    return {
        "machine": describe_machine(resolve_device(cfg.train.device)), "preset": preset, "quick": quick,
        "size": {"cells": list(CELLS), "seed": SEED, "resplit": True, "upstream_steps": steps,
                 "preset_upstream_steps": full.train.steps, "unseen_tasks": unseen,
                 "data_seeds": list(data_seeds), "fs_steps": cfg.train.fs_steps, "fs_lrs": cfg.train.fs_lrs,
                 "fine_tunes_per_cell": unseen * len(data_seeds) * len(cfg.train.fs_lr_grid), "rounds": rounds},
        "seconds": seconds, "phases": phases,
        "study_speedup": statistics.median(u / b for u, b in zip(seconds["unbatched"], seconds["batched"])),
        "projected_speedup": projected["unbatched"] / projected["batched"],
        "ceiling_speedup": projected["unbatched"] / (projected["unbatched"] - sum(
            phases["unbatched"].get(k, 0.0) for k in FEW_SHOT_PHASES)),
        "same_few_shot_scores": all(u[i]["few_shot"] == b[i]["few_shot"] for u, b in
                                    zip(runs["unbatched"], runs["batched"]) for i in range(len(CELLS))),
    }


def _median_phases(rounds: list[list[dict]]) -> dict[str, float]:
    """Seconds per phase summed over one round's cells, median over rounds."""
    per_round = [{} for _ in rounds]
    for totals, cells in zip(per_round, rounds):
        for cell in cells:
            for k, s in cell["phase_seconds"].items():
                totals[k] = totals.get(k, 0.0) + s
    return {k: statistics.median(t.get(k, 0.0) for t in per_round) for k in per_round[0]}


def format_study(result: dict) -> str:
    """The table: the size, seconds per phase of both variants, the speedups."""
    s, p = result["size"], result["phases"]
    lines = [f"study benchmark: cells {', '.join(s['cells'])} of resplit seed {s['seed']}, preset "
             f"{result['preset']} with {s['upstream_steps']} upstream steps (preset: {s['preset_upstream_steps']}), "
             f"{s['unseen_tasks']} unseen tasks × {len(s['data_seeds'])} data seeds × {len(s['fs_lrs'].split(','))} lr, "
             f"{s['fs_steps']} few-shot steps; {s['rounds']} round(s), interleaved",
             f"  {'phase':20s}{'unbatched s':>13s}{'batched s':>11s}{'share (unb.)':>14s}"]
    total = sum(p["unbatched"].values()) or 1.0
    for k in p["unbatched"]:
        lines.append(f"  {k:20s}{p['unbatched'][k]:13.1f}{p['batched'].get(k, 0.0):11.1f}"
                     f"{p['unbatched'][k] / total:14.0%}")
    projected = ("" if s["upstream_steps"] == s["preset_upstream_steps"] else
                 f"projected to the preset's {s['preset_upstream_steps']} (few-shot work as run): "
                 f"{result['projected_speedup']:.2f}, and ")
    lines += [f"study_speedup (unbatched ÷ batched): {result['study_speedup']:.2f} at {s['upstream_steps']} "
              f"upstream steps; {projected}at most {result['ceiling_speedup']:.2f} if few-shot work took no "
              "time (Amdahl)",
              f"same few-shot scores: {result['same_few_shot_scores']}"]
    if result["quick"]:
        lines.append("--quick: tiny sizes and few steps; these ratios say nothing about a real study")
    return "\n".join(lines)


def build_cli(name: str = "bench") -> argparse.ArgumentParser:
    """`minimoe bench`'s options, plus --study and its size."""
    p = bench.build_cli(name)
    p.add_argument("--study", action="store_true",
                   help="time one resplit seed's dense/average/two_stage cells, few-shot batched vs unbatched")
    p.add_argument("--study_steps", type=int, default=STUDY_STEPS,
                   help="upstream steps per cell in --study (few-shot work is the preset's)")
    return p


def cli_main(name: str, args: argparse.Namespace) -> int:
    if not args.study:
        return bench.cli_main(name, args)
    if args.study_steps < 2:  # two_stage needs a step per stage
        raise ConfigError(f"--study_steps={args.study_steps} must be >= 2 (two_stage trains two stages); "
                          "use --study_steps=2 or more.")
    torch.set_num_threads(1)  # a study cell runs on one thread (config `threads`)
    result = run_study(steps=args.study_steps, rounds=args.rounds or 1, quick=args.quick, device=args.device)
    print(format_study(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
        print(f"wrote {args.json}")
    return 0
