"""`minimoe reproduce`: the paper's two findings, every method, several upstream seeds (its flags).

A study's config, folder, seeds and cells from the command line. The config is the preset
(`repro` by default), then the `--quick` budgets (QUICK: the same code path in minutes, numbers
meaningless), then `--set field=value` and `--field=value` overrides; every config field is a
flag, as for `minimoe train`. `--quick` writes to its own folder, so a smoke test never occupies
the real run's. The study itself: `minimoe/reproduce.py::reproduce`.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from minimoe.config import Config
from minimoe.errors import ConfigError, nearest
from minimoe.presets import apply_overrides, get_preset
from minimoe.repro_report import QUICK, QUICK_BANNER
from minimoe.reproduce import CELLS, DEFAULT_CELLS, reproduce
from minimoe.runner import add_config_flags, given_fields, new_parser
from minimoe.suite import FEW_SHOT_SEEDS

DEFAULT_OUT = "runs/reproduce"  # `--quick` writes to DEFAULT_OUT-quick: never mixed with a real run


def _int_list(flag: str, text: str) -> tuple[int, ...]:
    """"0,1,2" → (0, 1, 2); anything else is a ConfigError naming the flag."""
    try:
        values = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        values = ()
    if not values:
        raise ConfigError(f"{flag} {text!r} must be comma-separated integers, e.g. {flag} 0,1,2.")
    return values


def build_cli(name: str) -> argparse.ArgumentParser:
    """The options of `minimoe reproduce`, then one `--field=value` per config field (as `minimoe train`)."""
    p = new_parser(f"minimoe {name}", __doc__.splitlines()[0])
    p.add_argument("--preset", default="repro", help="base configuration (see minimoe/presets.py::PRESETS)")
    p.add_argument("--out", default=None,
                   help=f"output directory, resumable (default: {DEFAULT_OUT}, with --quick {DEFAULT_OUT}-quick)")
    p.add_argument("--seeds", default="0,1,2", help="upstream seeds (comma-separated; >= 3 recommended)")
    p.add_argument("--data_seeds", default=",".join(map(str, FEW_SHOT_SEEDS)), help="few-shot data seeds")
    p.add_argument("--cells", default=",".join(DEFAULT_CELLS),
                   help=f"which methods to run (all: {','.join(CELLS)}; oracle needs --groups >= 2)")
    p.add_argument("--quick", action="store_true", help="tiny budgets: the same code path in minutes")
    p.add_argument("--resplit", action="store_true",
                   help="a new seen/unseen task split per upstream seed (unseen tasks sampled with the seeds)")
    p.add_argument("--resume", action="store_true",
                   help="accepted for symmetry with train: a rerun always resumes finished cells and checkpoints")
    p.add_argument("--jobs", type=int, default=0,
                   help="cells trained in parallel processes (0 = one per CPU core)")
    p.add_argument("--set", nargs="*", default=[], metavar="field=value",
                   help="the same config overrides in another form (an alias): --set steps=2000 threads=1 "
                        "is --steps=2000 --threads=1")
    # Every config field but `out` (the --out above is the study's folder) and `seed` (--seeds sets it per cell).
    return add_config_flags(p, "repro", skip=("out", "seed"))


def config_and_out(args: argparse.Namespace) -> tuple[Config, Path]:
    """The study's config (preset, --quick budgets, then --set and --field=value overrides) and
    folder (--out; by default runs/reproduce, or runs/reproduce-quick with --quick, so a smoke
    test never occupies the real run's folder)."""
    cfg = get_preset(args.preset)
    if args.quick:
        cfg = apply_overrides(cfg, QUICK)
    cfg = apply_overrides(cfg, [s if s.startswith("--") else f"--{s}" for s in args.set])
    cfg = apply_overrides(cfg, given_fields(args))
    return cfg, Path(args.out or (f"{DEFAULT_OUT}-quick" if args.quick else DEFAULT_OUT))


def cli_main(name: str, args: argparse.Namespace) -> int:
    cfg, out = config_and_out(args)
    seeds = _int_list("--seeds", args.seeds)
    data_seeds = _int_list("--data_seeds", args.data_seeds)
    cells = tuple(c for c in args.cells.split(",") if c)
    unknown = [c for c in cells if c not in CELLS]
    if unknown:
        raise ConfigError(f"unknown cells {unknown}{nearest(unknown[0], CELLS)}")
    if args.jobs < 0:
        raise ConfigError(f"--jobs={args.jobs} must be >= 0 (0 = one process per CPU core).")
    # Each cell runs on one thread (config `threads`), so one process per core fills the machine.
    jobs = args.jobs or os.cpu_count() or 1
    banner = [QUICK_BANNER] if args.quick else []  # first and last on screen, and atop report.md
    for line in banner:
        print(line)
    summary = reproduce(cfg, out, seeds, data_seeds, cells, quiet=True, jobs=jobs,
                        resplit=args.resplit, quick=args.quick)
    print((out / "report.md").read_text(), *banner, sep="\n")
    return 0 if summary else 1
