#!/usr/bin/env bash
# DynaBERT on the GLUE classifiers of scripts/train_glue.sh: stage 1 (rewiring + width distillation) and stage 2
# (width x depth distillation) per task, EPOCHS (default 1) each, then the grid report of exported sub-networks
# (scripts/dynabert_grid.py; GRID=0 skips it).
# Skips finished runs. About an hour on 2 CPU cores. Run from the repo root after scripts/train_glue.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
GLUE=${TOKEXIT_DATA_ROOT:-../shared/data}/glue
declare -A FOLDER=([mrpc]=MRPC [rte]=RTE [stsb]=STS-B [sst2]=SST-2)
# CPU budget (2 cores): MRPC and RTE train on all their data; STS-B on half of it, SST-2 on a 5% slice per stage
declare -A EXTRA=([mrpc]="" [rte]="" [stsb]="trainer.limit_train_batches=0.5" [sst2]="trainer.limit_train_batches=0.05")
for task in ${TASKS:-mrpc rte stsb sst2}; do
    teacher=runs/$task-minilm-l6-classifier/model
    for stage in 1 2; do
        out=runs/$task-dynabert-stage$stage
        init=$([ "$stage" = 2 ] && echo "model.init_from=runs/$task-dynabert-stage1/model" || echo "")
        if [ ! -f "$out/metrics.json" ]; then
            .venv/bin/python -m tokexit.train data=$task model=dynabert model.teacher=$teacher model.stage=$stage \
                $init trainer.max_epochs=${EPOCHS:-1} ${EXTRA[$task]} ${DYNABERT_ARGS:-} output_dir=$out trainer.enable_progress_bar=false \
                > "$out.log" 2>&1
        fi
    done
    [ "${GRID:-1}" = 0 ] && continue  # GRID=0: train only (time the grids later on a quiet machine)
    .venv/bin/python scripts/dynabert_grid.py --model-dir runs/$task-dynabert-stage2/model --teacher "$teacher" \
        --test-file "$GLUE/${FOLDER[$task]}/dev.tsv" --out reports/dynabert_$task --threads ${THREADS:-2} --repeats ${REPEATS:-3}
done
