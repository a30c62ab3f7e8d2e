#!/usr/bin/env bash
# The pre-registered interference study: seeds outermost, so a budget that runs out leaves every
# level with the same whole seeds. Resumable: a rerun skips finished cells.
set -euo pipefail  # run from the repository root
here=lessons/results/interference
for seed in 0 1 2 3 4 5 6 7 8 9; do
  for level in 0 0.5 1.0; do
    python -m minimoe reproduce --out "$here/level_$level" --seeds "$seed" --data_seeds 100,13 \
      --cells dense,average,oracle,two_stage,learned --jobs 2 --threads=1 \
      --groups=2 --interference="$level" --expert_kind=ffn > /dev/null
    echo "$(date -u +%FT%TZ) seed $seed level $level done"
  done
done
