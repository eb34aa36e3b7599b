#!/usr/bin/env bash
# Token fates (copy / drop / reduce) on real data: the models, the sweeps and the reports in reports/fates_*.
# Run from the repo root after scripts/setup.sh; about 1.5 hours on 2 CPU cores. The committed reports were made
# with these commands, run from a clone with the models under /work/runs (the paths in their JSON files).
set -euo pipefail
cd "$(dirname "$0")/.."
S=${TOKEXIT_DATA_ROOT:-../shared/data}
PY=.venv/bin/python
# stage-1 taggers (the foundation recipe)
[ -d runs/conll2003-minilm-l6/model ] || $PY -m tokexit.train experiment=conll2003_minilm
[ -d runs/conll2000-minilm-l6/model ] || $PY -m tokexit.train experiment=conll2000_minilm
# TR-BERT token reduction from the CoNLL-2003 stage-1 tagger, three trade-offs (30% of one epoch each)
for a in 0.2 0.6 1.5; do
  [ -d runs/conll2003-reduce-a$a/model ] || OMP_NUM_THREADS=1 $PY -m tokexit.train data=conll2003 \
    model=token_reduction model.backbone=runs/conll2003-minilm-l6/model model.alpha=$a model.rollouts=4 \
    model.warmup_steps=60 trainer.max_epochs=1 trainer.limit_train_batches=0.3 output_dir=runs/conll2003-reduce-a$a
done
common="--batch-size 32 --timing-repeats 1 --threads 2"
grid="--windows 3,5 --thresholds 0.01,0.03,0.06,0.1,0.2,0.4 --series token_window,static"
for fate in copy drop; do
  $PY scripts/sweep_exits.py --model-dir runs/conll2003-minilm-l6/model --test-file "$S/conll2003/eng.testb" \
    --out reports/fates_conll2003_$fate --fate $fate $grid $common
  $PY scripts/sweep_exits.py --model-dir runs/conll2000-minilm-l6/model --test-file "$S/conll2000/test.txt.gz" \
    --out reports/fates_conll2000_$fate --fate $fate $grid $common
  # wall clock on a quiet machine, best of 3
  $PY scripts/sweep_exits.py --model-dir runs/conll2003-minilm-l6/model --test-file "$S/conll2003/eng.testb" \
    --out reports/fates_conll2003_${fate}_w5_timed --fate $fate --series token_window --windows 5 \
    --thresholds 0.01,0.03,0.06,0.1,0.2,0.4 --batch-size 32 --timing-repeats 3 --threads 2
done
$PY scripts/sweep_exits.py --model-dir runs/conll2003-reduce-a0.2/model --test-file "$S/conll2003/eng.testb" \
  --out reports/fates_conll2003_reduce --fate reduce --keep-ratios 1.0,0.8,0.6,0.45,0.3 --series token_window \
  --windows 3 --thresholds 0.03,0.1,0.3 $common
for a in 0.6 1.5; do
  $PY -m tokexit.evaluate model_dir=runs/conll2003-reduce-a$a/model data=conll2003 fate=reduce batch_size=32 \
    timing_repeats=1 output_dir=reports/eval_conll2003_reduce_a$a
done
$PY -m tokexit.evaluate model_dir=runs/conll2003-minilm-l6/model data=conll2003 data.context=document \
  batch_size=32 timing_repeats=1 output_dir=reports/eval_conll2003_document_full
rm -f reports/eval_conll2003_*/predictions.conll
# the token fates at 512 subwords, batch 32 (mechanics: random heads, random selector)
OMP_NUM_THREADS=2 $PY scripts/benchmark_exit.py --backbones minilm-l6 --batch-sizes 32 --lengths 512 --repeats 5 \
  --no-onnx --threads 2 --fates copy,drop,reduce --out reports/benchmark_fates_512
$PY scripts/fates_report.py --data "CoNLL-2003 eng.testb, sentence inputs" reports/fates_conll2003_copy.json \
  reports/fates_conll2003_drop.json reports/fates_conll2003_reduce.json \
  --extra reports/eval_conll2003_reduce_a0.6 reports/eval_conll2003_reduce_a1.5 --out reports/fates_conll2003
$PY scripts/fates_report.py --data "CoNLL-2003 eng.testb, token window w=5, wall clock best of 3" \
  reports/fates_conll2003_copy_w5_timed.json reports/fates_conll2003_drop_w5_timed.json \
  --out reports/fates_conll2003_wall
$PY scripts/fates_report.py --data "CoNLL-2000 chunking test, sentence inputs" reports/fates_conll2000_copy.json \
  reports/fates_conll2000_drop.json --out reports/fates_conll2000
# a removed word's label: last head on the restored state vs its own layer's head, on dev
for lr in last_head exit_head; do
  $PY -m tokexit.evaluate model_dir=runs/conll2003-reduce-a0.2/model data=conll2003 data.test_file="$S/conll2003/eng.testa" \
    fate=reduce fate.label_removed=$lr batch_size=32 timing_repeats=1 output_dir=reports/eval_conll2003_reduce_dev_$lr
done
rm -f reports/eval_conll2003_reduce_dev_*/predictions.conll
# document context: a tagger trained on whole documents (2 epochs = 264 steps at batch 8: a first, undertrained run)
[ -d runs/conll2003-doc/model ] || $PY -m tokexit.train experiment=conll2003_minilm data.context=document \
  trainer.max_epochs=2 data.batch_size=8 output_dir=runs/conll2003-doc
for fate in copy drop; do
  $PY -m tokexit.evaluate model_dir=runs/conll2003-doc/model data=conll2003 data.context=document exit=token_window \
    exit.window=5 exit.threshold=0.03 fate=$fate batch_size=32 timing_repeats=2 \
    output_dir=reports/eval_conll2003_document_tw5_$fate
done
rm -f reports/eval_conll2003_document_tw5_*/predictions.conll
# inputs per context (the README figures)
$PY scripts/document_inputs.py "$S/conll2003/eng.testb"

# ---- EWT, CoNLL-2000 reduce, a document-mode tagger fine-tuned from the sentence tagger, MRPC and RTE --------------
# (trained with OMP_NUM_THREADS=1, several at once; sweeps with one thread while training ran: FLOPs exact, wall noisy)
one="--batch-size 32 --timing-repeats 1 --threads 1"
reduce_grid="--fate reduce --keep-ratios 1.0,0.8,0.6,0.45,0.3 --series token_window --windows 3 --thresholds 0.03,0.1,0.3"
[ -d runs/ewt-minilm-l6/model ] || $PY -m tokexit.train experiment=ewt_minilm
for d in ewt conll2000; do
  [ -d runs/$d-reduce-a0.2/model ] || $PY -m tokexit.train data=$d model=token_reduction \
    model.backbone=runs/$d-minilm-l6/model model.alpha=0.2 model.rollouts=4 model.warmup_steps=60 trainer.max_epochs=1 \
    trainer.limit_train_batches=0.5 output_dir=runs/$d-reduce-a0.2
done
[ -d runs/conll2003-doc-ft/model ] || $PY -m tokexit.train experiment=conll2003_minilm data.context=document \
  data.batch_size=8 trainer.max_epochs=2 model.backbone=runs/conll2003-minilm-l6/model output_dir=runs/conll2003-doc-ft
[ -d runs/conll2003-doc-reduce-a0.2/model ] || $PY -m tokexit.train data=conll2003 data.context=document \
  data.batch_size=8 model=token_reduction model.backbone=runs/conll2003-doc-ft/model model.alpha=0.2 model.rollouts=4 \
  model.warmup_steps=30 trainer.max_epochs=1 output_dir=runs/conll2003-doc-reduce-a0.2
for t in mrpc rte; do
  [ -d runs/$t-minilm-l6-classifier/model ] || $PY -m tokexit.train experiment=glue_$t
  [ -d runs/$t-reduce-a0.2/model ] || $PY -m tokexit.train data=$t model=token_reduction \
    model.backbone=runs/$t-minilm-l6-classifier/model model.alpha=0.2 model.rollouts=4 model.warmup_steps=60 \
    trainer.max_epochs=1 output_dir=runs/$t-reduce-a0.2
done
EWT="$S/ud_english_ewt/en_ewt-ud-test.conllu"
for fate in copy drop; do
  $PY scripts/sweep_exits.py --model-dir runs/ewt-minilm-l6/model --test-file "$EWT" --out reports/fates_ewt_$fate \
    --fate $fate $grid $one
  $PY scripts/sweep_exits.py --model-dir runs/conll2003-doc-ft/model --test-file "$S/conll2003/eng.testb" \
    --context document --out reports/fates_conll2003_document_$fate --fate $fate --windows 3,5 \
    --thresholds 0.01,0.03,0.06,0.1,0.2,0.4 --series token_window $one
done
$PY scripts/sweep_exits.py --model-dir runs/ewt-reduce-a0.2/model --test-file "$EWT" --out reports/fates_ewt_reduce \
  $reduce_grid $one
$PY scripts/sweep_exits.py --model-dir runs/conll2000-reduce-a0.2/model --test-file "$S/conll2000/test.txt.gz" \
  --out reports/fates_conll2000_reduce $reduce_grid $one
$PY scripts/sweep_exits.py --model-dir runs/conll2003-doc-reduce-a0.2/model --test-file "$S/conll2003/eng.testb" \
  --context document --out reports/fates_conll2003_document_reduce $reduce_grid $one
$PY scripts/sweep_classification.py --model-dir runs/mrpc-reduce-a0.2/model --test-file "$S/glue/MRPC/dev.tsv" \
  --out reports/sweep_mrpc_reduce --fate reduce --keep-ratios 1.0,0.8,0.6,0.45,0.3 $one
$PY scripts/sweep_classification.py --model-dir runs/rte-reduce-a0.2/model --test-file "$S/glue/RTE/dev.tsv" \
  --out reports/sweep_rte_reduce --fate reduce --keep-ratios 1.0,0.8,0.6,0.45,0.3 $one
$PY scripts/fates_report.py --data "UD English EWT test, sentence inputs" reports/fates_ewt_copy.json \
  reports/fates_ewt_drop.json reports/fates_ewt_reduce.json --out reports/fates_ewt
$PY scripts/fates_report.py --data "CoNLL-2000 chunking test, sentence inputs" reports/fates_conll2000_copy.json \
  reports/fates_conll2000_drop.json reports/fates_conll2000_reduce.json --out reports/fates_conll2000
$PY scripts/fates_report.py --data "CoNLL-2003 eng.testb, document inputs (up to 512 subwords)" \
  reports/fates_conll2003_document_copy.json reports/fates_conll2003_document_drop.json \
  reports/fates_conll2003_document_reduce.json --out reports/fates_conll2003_document
$PY scripts/classification_report.py --out reports/classification.md
