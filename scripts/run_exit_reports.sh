#!/usr/bin/env bash
# Early-exit curves on CoNLL-2003, UD EWT and WNUT-17 test sets from the trained MiniLM-L6 taggers
# (scripts/train_foundation.sh; WNUT-17 with experiment=wnut17_minilm). Run from the repo root.
set -euo pipefail
cd "$(dirname "$0")/.."
S=${TOKEXIT_DATA_ROOT:-../shared/data}
sweep() { .venv/bin/python scripts/sweep_exits.py --model-dir "runs/$1-minilm-l6/model" --test-file "$2" --out "reports/sweep_$1"; }
[ -d runs/conll2003-minilm-l6/model ] && sweep conll2003 "$S/conll2003/eng.testb"
[ -d runs/ewt-minilm-l6/model ] && sweep ewt "$S/ud_english_ewt/en_ewt-ud-test.conllu"
[ -d runs/wnut17-minilm-l6/model ] && sweep wnut17 "$S/wnut17/emerging.test.annotated"
