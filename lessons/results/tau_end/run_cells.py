"""The tau_end studies' cells: `two_stage` with stage 2 ending at τ_end, seeds 0–9 (README.md).

    python lessons/results/tau_end/run_cells.py --out runs/tau_end                    # τ_end 0.1
    python lessons/results/tau_end/run_cells.py --tau_end 0.3 --out runs/tau_end_mid  # ../tau_end_mid

Writes OUT/seed{s}/two_stage.json through `minimoe.reproduce.run_cell` (finished cells are
reused). Copy each seed's pretrain.pt from the plateau10_epyc run into OUT/seed{s}/ first to skip
pre-training (it is deterministic, so recomputing it gives the same base).
"""

import argparse
import multiprocessing as mp
from pathlib import Path

from minimoe.presets import apply_overrides, get_preset
from minimoe.reproduce import _cell_job
from minimoe.suite import FEW_SHOT_SEEDS

if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--tau_end", type=float, default=0.1, help="stage2_tau_end (0.1: this study)")
    args = p.parse_args()
    cfg = apply_overrides(get_preset("repro"), {"steps": 2400, "threads": 1, "stage2_tau_end": args.tau_end})
    with mp.get_context("spawn").Pool(args.jobs) as pool:
        pool.map(_cell_job, [(cfg, "two_stage", s, FEW_SHOT_SEEDS, Path(args.out)) for s in range(10)],
                 chunksize=1)
        pool.close()
        pool.join()
