#!/usr/bin/env bash
# Early-exit curves on CoNLL-2003, UD EWT and WNUT-17 test sets from the trained MiniLM-L6 taggers
# (scripts/train_foundation.sh; WNUT-17 with experiment=wnut17_minilm). Run from the repo root.
set -euo pipefail
cd "$(dirname "$0")/.."
S=${TOKEXIT_DATA_ROOT:-../shared/data}
T=0.01,0.02,0.05,0.1,0.15,0.2,0.3,0.4,0.6
sweep() { .venv/bin/python scripts/sweep_exits.py --model-dir "runs/$1-minilm-l6/model" --test-file "$2" \
    --out "reports/sweep_$1" --thresholds $T --timing-repeats 2; }
[ -d runs/conll2003-minilm-l6/model ] && sweep conll2003 "$S/conll2003/eng.testb"
[ -d runs/conll2003-minilm-l6/model ] && .venv/bin/python scripts/sweep_exits.py --model-dir runs/conll2003-minilm-l6/model \
    --test-file "$S/conll2003/eng.testb" --out reports/sweep_conll2003_upper2 --windows 3,5 \
    --thresholds 0.01,0.02,0.05,0.1,0.15,0.2,0.3 --upper-factor 2 --timing-repeats 1
# stage 2: the self-sampling fine-tuned CoNLL-2003 model (python -m tokexit.train experiment=conll2003_selfsampling)
SS=runs/conll2003-minilm-l6-selfsampling/model
[ -d $SS ] && .venv/bin/python scripts/sweep_exits.py --model-dir $SS --test-file "$S/conll2003/eng.testb" \
    --out reports/sweep_conll2003_selfsampling --thresholds $T --timing-repeats 1 --threads 1
[ -d $SS ] && .venv/bin/python scripts/sweep_exits.py --model-dir $SS --test-file "$S/conll2003/eng.testb" \
    --out reports/sweep_conll2003_selfsampling_upper2 --windows 3,5 --thresholds 0.01,0.02,0.05,0.1,0.15,0.2,0.3 \
    --upper-factor 2 --timing-repeats 1 --threads 1
[ -d runs/ewt-minilm-l6/model ] && sweep ewt "$S/ud_english_ewt/en_ewt-ud-test.conllu"
[ -d runs/wnut17-minilm-l6/model ] && sweep wnut17 "$S/wnut17/emerging.test.annotated"
# the calibrated 3x setting of the self-sampled model (threshold chosen on eng.testa)
[ -d $SS ] && .venv/bin/python -m tokexit.evaluate model_dir=$SS data=conll2003 \
    output_dir=reports/eval_conll2003_selfsampling_3x batch_size=32 exit=token_window exit.window=3 \
    exit.upper_factor=2 exit.target_speedup=3 timing_repeats=1
rm -f reports/eval_conll2003_selfsampling_3x/predictions.conll
# wall-clock check of one setting (about 2x) at batch 32 and batch 1, three interleaved timings each
for bs in 32 1; do
    .venv/bin/python -m tokexit.evaluate model_dir=runs/conll2003-minilm-l6/model data=conll2003 \
        output_dir=reports/eval_conll2003_tw3_b$bs batch_size=$bs exit=token_window exit.window=3 \
        exit.threshold=0.02 timing_repeats=3
    rm -f reports/eval_conll2003_tw3_b$bs/predictions.conll
done
NOTE="Wall-clock columns of the two conll2003-minilm-l6-selfsampling sweeps and of the calibrated 3x run were \
measured with 1 thread while training jobs shared the 2 cores (session 2): their FLOPs speed-ups and scores are \
exact, their wall-clock speed-ups are noisy. The other sweeps were timed on a quiet machine."
.venv/bin/python scripts/early_exit_report.py --note "$NOTE" reports/sweep_conll2003.json reports/sweep_conll2003_upper2.json \
    reports/sweep_conll2003_selfsampling.json reports/sweep_conll2003_selfsampling_upper2.json reports/sweep_ewt.json reports/sweep_wnut17.json --out reports/early_exit.md \
    --eval reports/eval_conll2003_tw3_b32/metrics.json reports/eval_conll2003_tw3_b1/metrics.json \
    reports/eval_conll2003_selfsampling_3x/metrics.json
