#!/usr/bin/env bash
# Early-exit sweeps of the GLUE classifiers (scripts/train_glue.sh) on dev, then reports/classification.md.
set -euo pipefail
cd "$(dirname "$0")/.."
GLUE=${TOKEXIT_DATA_ROOT:-../shared/data}/glue
declare -A FOLDER=([mrpc]=MRPC [rte]=RTE [stsb]=STS-B [sst2]=SST-2)
for task in ${TASKS:-mrpc rte stsb sst2}; do
    .venv/bin/python scripts/sweep_classification.py --model-dir runs/$task-minilm-l6-classifier/model \
        --test-file "$GLUE/${FOLDER[$task]}/dev.tsv" --out reports/sweep_$task --threads ${THREADS:-2} --timing-repeats 3
done
[ "${REPORT:-1}" = 0 ] || .venv/bin/python scripts/classification_report.py --out reports/classification.md
