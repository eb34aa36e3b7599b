#!/usr/bin/env bash
# Early-exit sweeps of the GLUE classifiers (scripts/train_glue.sh) on dev, then reports/classification.md.
set -euo pipefail
cd "$(dirname "$0")/.."
GLUE=${TOKEXIT_DATA_ROOT:-../shared/data}/glue
declare -A FOLDER=([mrpc]=MRPC [rte]=RTE [stsb]=STS-B [sst2]=SST-2)
# a task name ending in _mean sweeps the mean-pooling classifier (runs/<task>-minilm-l6-classifier-mean)
for task in ${TASKS:-mrpc rte stsb sst2 sst2_mean mrpc_mean rte_mean stsb_mean}; do
    base=${task%_mean}
    suffix=$([ "$task" = "$base" ] && echo "" || echo "-mean")
    .venv/bin/python scripts/sweep_classification.py --model-dir runs/$base-minilm-l6-classifier$suffix/model \
        --test-file "$GLUE/${FOLDER[$base]}/dev.tsv" --out reports/sweep_$task --threads ${THREADS:-2} --timing-repeats 3
done
[ "${REPORT:-1}" = 0 ] || .venv/bin/python scripts/classification_report.py --out reports/classification.md
