#!/usr/bin/env bash
# DynaBERT on a multi-exit tagger (default: WNUT-17, teacher runs/wnut17-minilm-l6 from scripts/train_foundation.sh):
# stage 1 (rewiring + width distillation) and stage 2 (width x depth), EPOCHS (default 2) each. Stage 2's
# metrics.json scores every (width, depth) sub-network on the test set; then one narrow sub-network also exits
# token by token (tokexit.evaluate with subnetwork.* and exit=token_window), to reports/eval_<data>_dynabert_*.
# Skips finished stages. Run from the repo root.
set -euo pipefail
cd "$(dirname "$0")/.."
data=${DATA:-wnut17}
teacher=${TEACHER:-runs/$data-minilm-l6/model}
for stage in 1 2; do
    out=runs/$data-dynabert-stage$stage
    init=$([ "$stage" = 2 ] && echo "model.init_from=runs/$data-dynabert-stage1/model" || echo "")
    if [ ! -f "$out/metrics.json" ]; then
        .venv/bin/python -m tokexit.train data=$data model=dynabert model.teacher=$teacher model.stage=$stage $init \
            trainer.max_epochs=${EPOCHS:-2} output_dir=$out trainer.enable_progress_bar=false > "$out.log" 2>&1
    fi
    cp "$out/metrics.json" reports/dynabert_${data}_stage$stage.json  # test score of every sub-network
done
model=runs/$data-dynabert-stage2/model
for width in 1.0 0.5; do
    .venv/bin/python -m tokexit.evaluate data=$data model_dir=$model subnetwork.width=$width subnetwork.depth=1.0 \
        exit=token_window exit.window=${WINDOW:-5} exit.target_speedup=${SPEEDUP:-2} batch_size=32 \
        output_dir=reports/eval_${data}_dynabert_w${width}_tw
    rm -f reports/eval_${data}_dynabert_w${width}_tw/predictions.conll  # a run output, not a report
done
