#!/usr/bin/env bash
# One GPU check, run from the repository root on a CUDA machine (python3 with torch, einops,
# tqdm, matplotlib): (1) the hard/dense training step at a compute-bound size, grouped GEMM
# path; (2) the 36-seed replication design (dense, average, two_stage; a split per seed; 2,400
# steps) on one GPU, 16 cells at a time, for at most STUDY_SECONDS; finished cells are counted
# every 15 s, so the wall time of the whole design can be read off or extrapolated.
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/gpu_check}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/machine.txt" 2>&1
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0))" >> "$OUT/machine.txt" 2>&1
python3 - <<'PY' > "$OUT/bench_xl.txt" 2>&1
import dataclasses, json, os, torch
from minimoe.bench import SMALL, bench_size
cfg = dataclasses.replace(SMALL, d_model=512, n_heads=8, d_ff=2048, n_enc_layers=6, n_dec_layers=6, max_len=160)
r = bench_size(cfg, 64, 128, 32, 3, torch.device("cuda"), rounds=10, inner=1, peak_n=8192, compile_models=False)
keep = {k: r[k] for k in ("hard_over_dense", "hard_grouped_over_dense", "hard_sorted_over_dense",
                          "hard_general_over_dense", "soft_over_dense", "hard_over_dense_fwd_bwd", "mfu_by_variant", "ms")}
keep["size"] = "d_model 512, 8 heads, d_ff 2048, 6+6 layers, 3 experts, batch 64, source 128, target 32"
print(json.dumps(keep, indent=1))
json.dump(keep, open(os.environ.get("OUT", "/tmp/gpu_check") + "/bench_xl.json", "w"), indent=1)
PY
study=/tmp/replication36
( start=$(date +%s); while sleep 15; do
    echo "$(( $(date +%s) - start )) $(ls $study/seed*/*.json 2>/dev/null | wc -l)"; done ) > "$OUT/progress.txt" &
timeout "${STUDY_SECONDS:-360}" python3 -m minimoe reproduce --out $study --seeds $(seq -s, 0 35) \
    --cells dense,average,two_stage --resplit --jobs 16 --device cuda --set steps=2400 threads=1 \
    > "$OUT/study.log" 2>&1
echo "exit $?" >> "$OUT/study.log"
kill %1 2>/dev/null
python3 - <<'PY' > "$OUT/cells.txt" 2>&1
import glob, json
cells = [json.load(open(p)) for p in glob.glob("/tmp/replication36/seed*/*.json")]
print(len(cells), "cells finished; seconds per cell (each, 16 at a time):",
      sorted(round(c["seconds"]) for c in cells))
PY
cat "$OUT"/machine.txt "$OUT"/bench_xl.txt "$OUT"/progress.txt "$OUT"/cells.txt; tail -3 "$OUT/study.log"
