#!/usr/bin/env bash
# Regenerates every number in docs/RESULTS.md and the shipped checkpoints (resumable: rerun to continue).
# The two datasets train side by side, one thread each (faster in total than one two-thread run here).
# Per dataset: the paper preset (seed-0 checkpoints shipped), then the modern recipe at the same budget.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/datasets}
SEEDS=${SEEDS:-2}
PY=${PY:-python}
for d in mnist cifar10; do
  (
    "$PY" -m mscompare reproduce --dataset "$d" --data-root "$DATA" --seeds "$SEEDS" --threads 1 \
      --out docs/results --ship
    "$PY" -m mscompare reproduce --dataset "$d" --preset modern --data-root "$DATA" --seeds "$SEEDS" --threads 1 \
      --out docs/results
  ) &
done
wait
