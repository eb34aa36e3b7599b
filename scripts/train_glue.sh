#!/usr/bin/env bash
# GLUE classifiers (MiniLM-L6, multi-exit, PABEE's joint loss) on SST-2, MRPC, RTE and STS-B from
# ${TOKEXIT_DATA_ROOT:-../shared/data}/glue, one after the other; skips runs that already have metrics.json.
# About 30 minutes on 2 CPU cores. Run from the repo root after scripts/setup.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p runs
for task in ${TASKS:-mrpc rte stsb sst2}; do
    if [ ! -f "runs/$task-minilm-l6-classifier/metrics.json" ]; then
        .venv/bin/python -m tokexit.train experiment=glue_$task trainer.enable_progress_bar=false \
            > "runs/$task-minilm-l6-classifier.log" 2>&1
    fi
done
# mean pooling instead of [CLS] (README rows "pooling=mean"; MiniLM's [CLS] is near-constant below layer 4,
# measured with scripts/cls_variation.py). SST-2 on 20% of its epoch for the CPU budget.
for task in ${MEAN_TASKS:-sst2 mrpc rte stsb}; do
    extra=$([ "$task" = sst2 ] && echo "trainer.limit_train_batches=0.2" || echo "")
    if [ ! -f "runs/$task-minilm-l6-classifier-mean/metrics.json" ]; then
        .venv/bin/python -m tokexit.train experiment=glue_$task model.pooling=mean $extra \
            output_dir=runs/$task-minilm-l6-classifier-mean trainer.enable_progress_bar=false \
            > "runs/$task-minilm-l6-classifier-mean.log" 2>&1
    fi
done
