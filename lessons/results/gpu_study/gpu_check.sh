#!/usr/bin/env bash
# One GPU check, run from the repository root on a CUDA machine (python3 with torch, einops,
# tqdm, matplotlib): (1) the hard/dense training step at a compute-bound size, grouped GEMM
# path (`minimoe bench --size xl`), and the study benchmark (`bench --study`); (2) the 36-seed
# replication design (dense, average, two_stage; a split per seed; 2,400
# steps) on one GPU, 16 cells at a time, for at most STUDY_SECONDS; finished cells are counted
# every 15 s, so the wall time of the whole design can be read off or extrapolated.
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/gpu_check}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/machine.txt" 2>&1
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0))" >> "$OUT/machine.txt" 2>&1
python3 -m minimoe bench --size xl --device cuda --rounds 10 --json "$OUT/bench_xl.json" > "$OUT/bench_xl.txt" 2>&1
python3 -m minimoe bench --study --device cuda --json "$OUT/bench_study.json" > "$OUT/bench_study.txt" 2>&1
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
